"""Console errors: each names lab, node and stage and shows the console's last lines."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeVar

from pytest_starlingx.errors import ConsoleError

if TYPE_CHECKING:
    from pytest_starlingx.console.shell import Result


def secs(seconds: float) -> str:
    """``0.5s``, ``12s``, ``3600s``: durations for messages."""
    return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"


class NodeConsoleError(ConsoleError):
    """A console problem with its context: lab, node, stage and the console's last lines."""

    def __init__(
        self, summary: str, *, lab: str, node: str, stage: str | None, tail: Sequence[str]
    ) -> None:
        self.summary = summary
        self.lab = lab
        self.node = node
        self.stage = stage
        self.tail = list(tail)
        where = f"lab {lab!r} node {node}" if lab else f"node {node}"
        lines = "\n".join(f"    | {line}" for line in self.tail) or "    (no output)"
        during = f"stage {stage!r}" if stage else "no stage"
        super().__init__(
            f"{where}: {during}: {summary}\n  last {len(self.tail)} console lines:\n{lines}"
        )


class ConsoleTimeout(NodeConsoleError):
    """The awaited output did not come in time."""


class ConsoleClosed(NodeConsoleError):
    """The console closed (EOF) or the VM stopped while output was awaited."""


class KernelPanic(NodeConsoleError):
    """The node's kernel panicked and the console has been silent since: it will not go on."""


class MenuError(NodeConsoleError):
    """The boot menu on screen has no entry with the wanted text."""


class LoginError(NodeConsoleError):
    """Login failed: password refused, new password rejected, or no new password given."""


class NodeRebooted(NodeConsoleError):
    """The node's login prompt appeared while a command ran: it rebooted (or lost its shell)."""


class CommandFailed(NodeConsoleError):
    """A command run with :meth:`Shell.run_checked` exited non-zero (see ``result``)."""

    result: Result | None = None


E = TypeVar("E", bound=NodeConsoleError)
