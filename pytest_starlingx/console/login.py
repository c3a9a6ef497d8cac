"""The login dialog on a console: login and password prompts, the forced password change, and
a shell that is already there.

One :class:`LoginDialog` per login: it waits for whichever prompt comes next and answers it,
step by step, until a shell of the user is reached. What it remembers between steps is which
password is being tried and what it sent last, so that 'Login incorrect' and a second 'New
password:' are read right.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from pytest_starlingx.console.errors import ConsoleTimeout, LoginError
from pytest_starlingx.console.link import Match
from pytest_starlingx.console.patterns import (
    CURRENT_PASSWORD,
    LOGIN,
    LOGIN_INCORRECT,
    NEW_PASSWORD,
    PASSWORD,
    PASSWORD_REJECTED,
    RETYPE_PASSWORD,
)
from pytest_starlingx.waits import Deadline

if TYPE_CHECKING:
    from pytest_starlingx.console.shell import Shell

log = logging.getLogger("pytest_starlingx.console")

#: Most prompts one login answers before it gives up.
MAX_STEPS = 40
#: Wake-ups (Ctrl-C, Enter) of a console that stays quiet (a lost Ctrl-C, say); until a prompt
#: is seen, each wait for one lasts at most :data:`PROBE_WAIT` seconds.
PROBES = 3
PROBE_WAIT = 5.0

Answer = Callable[[Match, Deadline], bool]


class LoginDialog:
    """Logs ``user`` in on ``shell``'s console, trying ``password`` and then ``new_password``,
    and giving ``new_password`` when a password change is forced."""

    def __init__(self, shell: Shell, user: str, password: str, new_password: str | None) -> None:
        self.shell = shell
        self.console = shell.console
        self.user = user
        self.new_password = new_password
        self.candidates = [password] + ([new_password] if new_password else [])
        self.tried = 0  # candidates refused so far
        self.current = password  # the password valid once the dialog ends
        self.sent_password = False  # a candidate was sent since the last login prompt
        self.sent_new = False  # the new password was typed twice: a change is under way
        # Each prompt by name: its pattern and its answer, in the order expect() gets them.
        self.prompts: dict[str, tuple[str, Answer]] = {
            "prompt": (shell.prompt, self._at_shell),
            "login": (LOGIN, self._at_login),
            "incorrect": (LOGIN_INCORRECT, self._login_incorrect),
            "rejected": (PASSWORD_REJECTED, self._rejected),
            "retype": (RETYPE_PASSWORD, self._at_retype),
            "new": (NEW_PASSWORD, self._at_new),
            "current": (CURRENT_PASSWORD, self._at_current),
            "password": (PASSWORD, self._at_password),
        }

    def run(self, deadline: Deadline) -> str:
        """Answer prompts until ``user`` has a shell; return the password now valid.

        Until the first prompt shows, a quiet console is woken again (:data:`PROBES` times);
        after that every wait lasts until ``deadline``.
        """
        names = list(self.prompts)
        patterns = [pattern for pattern, _ in self.prompts.values()]
        probes = 0
        for _ in range(MAX_STEPS):
            try:
                step = self.console.expect(
                    patterns,
                    deadline.within(PROBE_WAIT) if probes < PROBES else deadline,
                    what=f"a login or shell prompt for {self.user}",
                )
            except ConsoleTimeout:
                if probes >= PROBES or deadline.expired:
                    raise
                probes += 1
                self.shell.wake(deadline)
                continue
            probes = PROBES
            state = names[step.index]
            if state not in ("incorrect", "rejected"):
                self.console.discard()  # a prompt waits for input: what followed it is stale
            _, answer = self.prompts[state]
            if answer(step, deadline):
                return self.current
        raise self.console.error(LoginError, f"login as {self.user} did not reach a shell")

    # ---- answers: each returns True once the dialog is over

    def _at_login(self, step: Match, deadline: Deadline) -> bool:
        self.sent_password = False
        self.console.sendline(self.user)
        return False

    def _at_password(self, step: Match, deadline: Deadline) -> bool:
        if self.tried >= len(self.candidates):
            raise self.console.error(LoginError, f"no password left to try for {self.user}")
        self.current = self.candidates[self.tried]
        self.sent_password = True
        self.console.send_secret(self.current)
        return False

    def _login_incorrect(self, step: Match, deadline: Deadline) -> bool:
        """The password sent was refused: the next candidate is for the next password prompt."""
        if self.sent_password:
            self.tried += 1
            self.sent_password = False
            if self.tried >= len(self.candidates):
                raise self.console.error(
                    LoginError,
                    f"login as {self.user} refused: 'Login incorrect' for every password",
                )
        return False

    def _at_current(self, step: Match, deadline: Deadline) -> bool:
        self.console.send_secret(self.current)
        return False

    def _at_new(self, step: Match, deadline: Deadline) -> bool:
        if self.new_password is None:
            raise self.console.error(
                LoginError,
                f"the console demands a new password for {self.user}; pass new_password",
            )
        if self.sent_new:
            raise self.console.error(LoginError, "the new password was rejected (asked again)")
        self.console.send_secret(self.new_password)
        return False

    def _at_retype(self, step: Match, deadline: Deadline) -> bool:
        assert self.new_password is not None
        self.sent_new = True
        self.console.send_secret(self.new_password)
        self.current = self.new_password
        return False

    def _rejected(self, step: Match, deadline: Deadline) -> bool:
        message = self.console.mask(step.text.strip())
        raise self.console.error(LoginError, f"the new password was rejected: {message}")

    def _at_shell(self, step: Match, deadline: Deadline) -> bool:
        """A shell: done if it is ``user``'s, else left with ``exit`` for a login prompt.

        TMOUT is readonly from 11.0: the shell may time out all the same (Shell.logged_out).
        """
        whoami = self.shell.run(
            "export TMOUT=0 2>/dev/null; stty echo; id -un", deadline
        ).stdout.strip()
        if whoami == self.user:
            return True
        log.info(
            "%s: shell belongs to %r, leaving it", self.console.node, whoami,
            extra=self.console.log_extra,
        )  # fmt: skip
        self.console.expect(self.shell.prompt, deadline)  # the prompt after the command, then exit
        self.console.discard()
        self.console.sendline("exit")
        return False
