"""One node's console as callers use it: the link, with its boot menu and its shell."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path

from pytest_starlingx.console.link import ConsoleLink
from pytest_starlingx.console.menus import BootMenu
from pytest_starlingx.console.patterns import PROMPT
from pytest_starlingx.console.shell import Result, Shell
from pytest_starlingx.transport import Transport
from pytest_starlingx.waits import Deadline


class Console(ConsoleLink):
    """One node's serial console: the link's I/O (``expect``, ``send*``, transcript), plus
    :attr:`menus` for boot menus and :attr:`shell` (at ``prompt``) for login and commands.

    The menu and shell methods here hand over to those two objects.
    """

    def __init__(
        self,
        transport: Transport,
        node: str,
        *,
        lab: str = "",
        artifacts: Path | None = None,
        alive: Callable[[], bool] | None = None,
        poll_every: float = 5.0,
        ring_lines: int = 2000,
        prompt: str = PROMPT,
    ) -> None:
        super().__init__(
            transport, node, lab=lab, artifacts=artifacts, alive=alive, poll_every=poll_every,
            ring_lines=ring_lines,
        )  # fmt: skip
        self.menus = BootMenu(self)
        self.shell = Shell(self, prompt)

    @property
    def password(self) -> str | None:
        """The password valid after :meth:`login`; it answers sudo prompts."""
        return self.shell.password

    @password.setter
    def password(self, value: str | None) -> None:
        self.shell.password = value

    def select_menu(
        self, *path: str | re.Pattern[str], deadline: Deadline, settle: float = 3.0
    ) -> None:
        """Select a boot-menu entry by its text (:meth:`BootMenu.select`)."""
        self.menus.select(*path, deadline=deadline, settle=settle)

    def login(
        self,
        user: str,
        password: str,
        deadline: Deadline,
        new_password: str | None = None,
        *,
        booting: bool = True,
    ) -> str:
        """Log in; return the password now valid (:meth:`Shell.login`)."""
        return self.shell.login(user, password, deadline, new_password, booting=booting)

    def logged_out(self) -> bool:
        """True when the shell timed out since the last login (:meth:`Shell.logged_out`)."""
        return self.shell.logged_out()

    def run(
        self,
        command: str,
        deadline: Deadline,
        *,
        secrets: Sequence[str] = (),
        kernel_messages: bool = False,
    ) -> Result:
        """Run one command line at the prompt (:meth:`Shell.run`)."""
        return self.shell.run(command, deadline, secrets=secrets, kernel_messages=kernel_messages)

    def run_checked(self, command: str, deadline: Deadline, *, secrets: Sequence[str] = ()) -> str:
        """Run a command; its output, or :class:`CommandFailed` (:meth:`Shell.run_checked`)."""
        return self.shell.run_checked(command, deadline, secrets=secrets)

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
        """Write ``content`` to ``path`` on the node (:meth:`Shell.write_file`)."""
        self.shell.write_file(path, content, deadline, mode=mode, secret=secret, chunk=chunk)
