"""The sysadmin shells on a lab's consoles, as stages and lab handles use them.

One :class:`Shells` per bring-up knows which nodes have a shell logged in, which password is
valid (the first login on controller-0 changes it), where openrc is sourced, and which lock
serialises each node's console.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Container, Mapping
from contextlib import AbstractContextManager

from pytest_starlingx.console import CommandFailed, Console, Result
from pytest_starlingx.model import ACTIVE_CONTROLLER, StageName
from pytest_starlingx.waits import Deadline, poll

log = logging.getLogger("pytest_starlingx.stages")

OPENRC = "/etc/platform/openrc"
USER = "sysadmin"
FIRST_PASSWORD = "sysadmin"  # until the forced change at the first login
#: What openrc says while the platform filesystem holding the admin keyring is not mounted yet
#: (a controller still booting; stx-puppet ``platform/templates/openrc.admin.erb``), returning 1.
OPENRC_NOT_READY = "Openstack Admin credentials can only be loaded from the active controller."
#: What openrc says when the keyring script exists but printed nothing. openrc runs the script
#: first and tests whether it exists afterwards, so a platform filesystem mounted in between
#: says this once; said twice in a row, it is true (openrc.admin.erb as above).
OPENRC_RACED = "Not enough privileges to read keyring password."
OPENRC_RETRY_EVERY = 1.0  # seconds between openrc tries while the keyring is not mounted


class Shells:
    """Logged-in sysadmin shells on ``consoles``, one command at a time per node.

    ``done`` tells whether controller-0's first login (the password change) has happened;
    ``deadline`` makes a fresh deadline for a phase (login, command, ...).
    """

    def __init__(
        self,
        consoles: Mapping[str, Console],
        passwords: Mapping[str, str],
        done: Container[str],
        deadline: Callable[[str], Deadline],
    ) -> None:
        self.consoles = consoles
        self.passwords = passwords
        self.done = done
        self.deadline = deadline
        #: Per-node locks serialising console use; a lab shared by xdist workers puts
        #: cross-process console turns here (plugin/xdist.py).
        self.locks: dict[str, AbstractContextManager[object]] = {}
        self._logged_in: set[str] = set()
        self._openrc: set[str] = set()

    def lock(self, node: str) -> AbstractContextManager[object]:
        """The lock that serialises commands on ``node``'s console."""
        return self.locks.setdefault(node, threading.Lock())

    def login(self, node: str, *, booting: bool = True) -> None:
        """Log in as sysadmin on ``node``'s console: first login, again after a reboot, or after
        a revert (``booting=False``: the node runs on, no boot to wait for)."""
        with self.lock(node):
            self._login(node, booting=booting)

    def _login(self, node: str, *, booting: bool = True) -> None:
        """Once controller-0's first login changed sysadmin's password, that password is the
        only one on every node (StarlingX gives it to the others), and a wrong first try costs
        a failed-login delay and a failed-login record."""
        if f"{ACTIVE_CONTROLLER}:{StageName.FIRST_LOGIN}" in self.done:
            password, new_password = self.passwords["sysadmin"], None
        else:
            password, new_password = FIRST_PASSWORD, self.passwords["sysadmin"]
        self.consoles[node].login(
            USER, password, self.deadline("login"), new_password=new_password, booting=booting
        )
        self._logged_in.add(node)
        self._openrc.discard(node)

    def logged_in(self, node: str) -> Console:
        """``node``'s console with a shell on it (logging in first if needed); hold the lock."""
        self._shell_ready(node)
        return self.consoles[node]

    def _shell_ready(self, node: str) -> None:
        """Log in on ``node`` unless a shell is there: first, and again after the shell's idle
        timeout ended it (TMOUT, which 11.0 makes readonly); openrc is sourced afresh then."""
        if node in self._logged_in and self.consoles[node].logged_out():
            log.info("%s: the shell timed out while idle (TMOUT); logging in again", node)
            self.forget(node)
            self._login(node, booting=False)
        elif node not in self._logged_in:
            self._login(node)

    def forget(self, node: str) -> None:
        """The node rebooted or lost power: its next command needs a login and openrc."""
        self._logged_in.discard(node)
        self._openrc.discard(node)

    def shell(self, node: str, command: str, phase: str = "command") -> str:
        """Run ``command`` on ``node``'s console (logging in first if needed); raise unless 0."""
        with self.lock(node):
            self._shell_ready(node)
            return self.consoles[node].run_checked(command, self.deadline(phase))

    def run(self, node: str, command: str, deadline: Deadline) -> Result:
        """Run ``command`` on ``node`` (logging in first if needed); any exit status."""
        with self.lock(node):
            self._shell_ready(node)
            return self.consoles[node].run(command, deadline)

    def system(self, args: str, phase: str = "command") -> str:
        """Run ``system <args>`` on the active controller with openrc sourced."""
        node = ACTIVE_CONTROLLER
        with self.lock(node):
            self._shell_ready(node)
            console = self.consoles[node]
            if node not in self._openrc:
                self._source_openrc(console, self.deadline(phase))
                self._openrc.add(node)
            return console.run_checked(f"system {args}", self.deadline(phase))

    def _source_openrc(self, console: Console, deadline: Deadline) -> None:
        """``source /etc/platform/openrc``, again every few seconds while it says the admin
        credentials cannot be loaded yet (a booting controller), until ``deadline``."""

        def source() -> None:
            try:
                console.run_checked(f"source {OPENRC}", deadline)
            except CommandFailed as exc:
                if exc.result is None or OPENRC_RACED not in exc.result.stdout:
                    raise
                log.info("%s: %r: the platform filesystem came up meanwhile; once more",
                         console.node, OPENRC_RACED)  # fmt: skip
                console.run_checked(f"source {OPENRC}", deadline)

        retry_while(
            source, OPENRC_NOT_READY, deadline, console.node,
            f"{OPENRC} to load the admin credentials", OPENRC_RETRY_EVERY,
        )  # fmt: skip


def retry_while(
    command: Callable[[], object],
    transient: str,
    deadline: Deadline,
    node: str,
    what: str,
    every: float,
) -> None:
    """Run ``command`` until it succeeds, again every ``every`` seconds while it fails saying
    ``transient`` (a normal passing state of StarlingX; logged each time) until ``deadline``;
    any other failure is raised at once."""

    def done() -> bool:
        try:
            command()
        except CommandFailed as exc:
            if exc.result is None or transient not in exc.result.stdout:
                raise
            log.info("%s: waiting for %s: %r; trying again", node, what, transient)
            return False
        return True

    poll(done, deadline, what, poll_every=every, logger=log)
