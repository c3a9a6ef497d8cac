"""A shell on a console: logging in, telling a prompt from a boot, and framed commands.

:class:`Shell` works on a :class:`~pytest_starlingx.console.link.ConsoleLink`; the login dialog
itself is in :mod:`~pytest_starlingx.console.login`.
"""

from __future__ import annotations

import base64
import logging
import re
import shlex
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from pytest_starlingx.console.errors import CommandFailed, LoginError, NodeRebooted, secs
from pytest_starlingx.console.link import TAIL_LINES, ConsoleLink
from pytest_starlingx.console.login import LoginDialog
from pytest_starlingx.console.patterns import (
    AUTO_LOGOUT,
    LOGIN,
    PASSWORD,
    PROMPT,
    REBOOTED,
    SUDO_PASSWORD,
)
from pytest_starlingx.console.transcript import strip_ansi
from pytest_starlingx.waits import Deadline

log = logging.getLogger("pytest_starlingx.console")

#: How long login() lets a quiet console show a prompt by itself before waking it.
PROMPT_GRACE = 30.0
#: Silence after which a console without a prompt counts as idle, unless it is booting.
BOOT_QUIET = 8.0
#: Longest command line :meth:`Shell.run` sends; longer input goes through write_file().
MAX_COMMAND = 1000

_KERNEL_MESSAGE = re.compile(r"\[ *\d+\.\d+\] [^\n]*\n")
_KERNEL_MESSAGE_TAIL = re.compile(r"\[ *\d+\.\d+\] .*")  # a printk to the end of a line
#: A line printed by a machine on its way up: firmware, network boot, boot loader, kernel, systemd.
_BOOT_OUTPUT = re.compile(
    r"^\[ *(?:\d+\.\d+|OK) *\]|^(?:SeaBIOS|iPXE|Booting |Loading |ISOLINUX |PXELINUX )|GRUB"
)


def clean_output(text: str, kernel_messages: bool = False) -> str:
    """Command output as a program would see it: no escapes, ``\\n`` line ends, no printk lines."""
    text = strip_ansi(text.replace("\r\n", "\n"))
    if not kernel_messages:
        text = _KERNEL_MESSAGE.sub("", text)
    return text


@dataclass(frozen=True)
class Result:
    """A finished command: what it printed (escapes stripped, ``\\n`` line ends; on a serial
    console stderr arrives in it too) and its exit status, named as subprocess, invoke and
    paramiko name them."""

    command: str
    stdout: str
    exit_status: int

    @property
    def ok(self) -> bool:
        """True when the exit status is 0."""
        return self.exit_status == 0


class Shell:
    """The shell on one console: :meth:`login`, then :meth:`run` commands at its prompt."""

    def __init__(self, console: ConsoleLink, prompt: str = PROMPT) -> None:
        self.console = console
        self.prompt = prompt
        #: The password valid after :meth:`login`; it answers sudo prompts.
        self.password: str | None = None
        self._timed_out = False  # bash's TMOUT ended the shell since the last login

    # ---- login

    def login(
        self,
        user: str,
        password: str,
        deadline: Deadline,
        new_password: str | None = None,
        *,
        booting: bool = True,
    ) -> str:
        """Log in on the console and return the password that is now valid.

        Handles the forced password change (Debian and CentOS prompts), a console already at a
        shell (as ``user``), logged out, or busy with a command (Ctrl-C). When ``password`` is
        refused and ``new_password`` is given, it tries ``new_password`` (a lab resumed after the
        change). Afterwards ``TMOUT`` is off and sudo prompts are answered with the password.
        ``booting=False`` says the node is known to be up (resumed from a memory snapshot), so
        there is no waiting for a booting node to print its prompt by itself.
        """
        self.console.user = user
        self._timed_out = False
        for secret in (password, new_password):
            if secret and secret != user:
                self.console.add_secret(secret)
        dialog = LoginDialog(self, user, password, new_password)
        if booting:
            self._await_prompt(deadline.within(PROMPT_GRACE))
        self.wake(deadline)
        current = dialog.run(deadline)
        self.password = current
        log.info("%s: logged in as %s", self.console.node, user, extra=self.console.log_extra)
        return current

    def logged_out(self) -> bool:
        """True when bash's ``TMOUT`` ended the shell since the last login (its message came
        while the console was idle); what the caller then does is log in again."""
        if not self._timed_out:
            if not self.console.found_now(AUTO_LOGOUT):
                return False
            self._timed_out = True
        return True

    def wake(self, deadline: Deadline) -> None:
        """Ctrl-C, let the output settle, then Enter for one fresh prompt.

        Waiting for silence before Enter matters: answering a prompt that was already under way
        types into the wrong dialog.
        """
        sent = time.monotonic()
        self.console.interrupt()
        # the answer to the Ctrl-C included:
        self.console.settle(0.5, deadline.within(5.0), since=sent)
        if self._at_prompt():
            return  # a prompt already waits (the Ctrl-C gave one): an Enter would add another
        self.console.discard()
        self.console.sendline()

    def _await_prompt(self, deadline: Deadline) -> None:
        """Give a node that is still booting the time to print its prompt by itself: keys
        typed before its login program runs are queued and answer the wrong prompt later.

        A console quiet for a while is woken early, unless its last news is a boot: on a slow
        host a boot can fall silent for long after the kernel's last line.
        """
        console = self.console
        with console.changed:
            while not (
                self._at_prompt()
                or deadline.expired
                or console.closed_reason is not None
                or (time.monotonic() - console.last_output > BOOT_QUIET and not self._booting())
            ):
                console.changed.wait(min(0.5, deadline.remaining))

    def _booting(self) -> bool:
        """True when the console shows boot output with no prompt printed since."""
        prompt = self._any_prompt()
        for line in reversed(self.console.tail(self.console.ring_lines)):
            if re.search(prompt, line):
                return False
            if _BOOT_OUTPUT.search(line):
                return True
        return False

    def _at_prompt(self) -> bool:
        """True when the console's last line is a login or shell prompt waiting for input.

        Kernel messages printed since (on lines of their own, or run onto the prompt's line)
        do not count, however many: the prompt still waits.
        """
        for line in reversed(self.console.tail(self.console.ring_lines)):
            line = _KERNEL_MESSAGE_TAIL.sub("", line).rstrip()
            if line:
                return bool(re.search(rf"{self._any_prompt()}$", line))
        return False

    def _any_prompt(self) -> str:
        """A login or shell prompt (its trailing blank optional)."""
        return rf"(?:{LOGIN}|{self.prompt.rstrip()})"

    # ---- commands

    def run(
        self,
        command: str,
        deadline: Deadline,
        *,
        secrets: Sequence[str] = (),
        kernel_messages: bool = False,
    ) -> Result:
        """Run one shell command line at the prompt; return its output and exit status.

        The output is framed by unique markers whose echoed form cannot match, so echoed input
        never counts as output. Escape sequences and (unless ``kernel_messages``) printk lines
        interleaved by the kernel are removed. Commands holding ``secrets`` are sent with the
        terminal's echo off and masked everywhere. Sudo prompts are answered with
        :attr:`password`. ``command`` must be one line (no trailing ``&``, no ``#`` comment);
        longer input goes through :meth:`write_file`.
        """
        command = command.strip().rstrip(";").rstrip()
        if "\n" in command or "\r" in command:
            raise ValueError("run() sends one line; write scripts with write_file()")
        if len(command) > MAX_COMMAND:
            raise ValueError(
                f"command of {len(command)} characters; over {MAX_COMMAND} use write_file()"
            )
        if re.search(r"(?<!&)&$", command):
            raise ValueError("run() waits for the command; do not end it with '&'")
        for secret in secrets:
            self.console.add_secret(secret)
        hidden = bool(secrets) or self.console.holds_secret(command)
        if hidden:
            self.run("stty -echo", deadline)
        token = uuid.uuid4().hex[:16]
        begin = f"__STX_{token}_B__"
        line = f"echo __STX_{token}''_B__; {command}; echo __STX_{token}''_E_$?__"
        if hidden:
            line += "; stty echo"
            self.console.note(f"run (echo off): {self.console.mask(command)}")
        log.debug(
            "%s: run %s",
            self.console.node,
            self.console.mask(command),
            extra=self.console.log_extra,
        )
        self.console.sendline(line)
        sent = time.monotonic()
        sudo = [SUDO_PASSWORD] + ([PASSWORD] if "sudo" in command else [])
        captured = ""
        asked = 0
        while True:
            step = self.console.expect(
                [rf"__STX_{token}_E_(\d+)__", REBOOTED, *sudo],
                deadline,
                what=f"the end of command {self.console.mask(command)!r}",
            )
            before = step.before
            if asked:  # sudo's line end after the hidden password
                before = before.removeprefix("\r\n").removeprefix("\n")
            captured += before
            if step.index == 0:
                break
            if step.index == 1:
                raise self.console.error(
                    NodeRebooted,
                    f"the node rebooted while running {self.console.mask(command)!r}: its login "
                    f"prompt appeared {secs(time.monotonic() - sent)} after it was sent",
                )
            asked += 1
            if self.password is None or asked > 1:
                self.console.interrupt()
                problem = "no password is known" if self.password is None else "it was refused"
                raise self.console.error(LoginError, f"sudo asked for a password and {problem}")
            self.console.send_secret(self.password)
        _, found, output = captured.partition(begin)
        if not found:  # the begin marker was mangled (a printk in the middle): drop the echo
            output = captured.split("\n", 1)[-1]
        output = clean_output(output, kernel_messages)
        output = output.removeprefix("\n").removesuffix("\n")
        return Result(command, output, int(step.match.group(1)))

    def run_checked(self, command: str, deadline: Deadline, *, secrets: Sequence[str] = ()) -> str:
        """Like :meth:`run`; return the output, raise :class:`CommandFailed` unless status 0."""
        result = self.run(command, deadline, secrets=secrets)
        if not result.ok:
            out = "\n".join(result.stdout.splitlines()[-TAIL_LINES:])
            error = self.console.error(
                CommandFailed,
                f"command {command!r} exited with status {result.exit_status}; output:\n{out}",
            )
            error.result = result
            raise error
        return result.stdout

    def write_file(
        self,
        path: str,
        content: str | bytes,
        deadline: Deadline,
        *,
        mode: str | None = None,
        secret: bool = False,
        chunk: int = 256,
    ) -> None:
        """Write ``content`` to ``path`` on the node, in base64 chunks of one short line each.

        Each chunk waits for its command to finish, so a serial line is never flooded and no
        line reaches the terminal's 4 KiB limit. With ``secret`` (or when the content holds a
        registered secret) the chunks are sent with echo off and masked, and the file is created
        with umask 077.
        """
        data = content.encode("utf-8") if isinstance(content, str) else content
        secret = secret or self.console.holds_secret(data.decode("utf-8", "replace"))
        encoded = base64.b64encode(data).decode("ascii")
        target, staging = shlex.quote(path), shlex.quote(f"{path}.stx-b64")
        # umask 077 in a subshell only: the login shell's umask (which sudo adds to its own)
        # stays as it was for everything run after.
        umask = "umask 077; " if secret else ""
        self.console.note(f"write_file {path} ({len(data)} bytes{', secret' if secret else ''})")
        self.run_checked(f"({umask}: > {staging})", deadline)
        for start in range(0, len(encoded), chunk):
            piece = encoded[start : start + chunk]
            self.run_checked(
                f"printf %s {piece} >> {staging}", deadline, secrets=[piece] if secret else ()
            )
        finish = f"({umask}base64 -d {staging} > {target}) && rm -f {staging}"
        if mode:
            finish += f" && chmod {shlex.quote(mode)} {target}"
        self.run_checked(finish, deadline)
