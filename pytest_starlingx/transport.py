"""The byte channel between a node's serial console and the console layer.

A backend hands out a :class:`Transport` per node; it knows nothing of prompts or StarlingX.
"""

from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    """Raw bytes to and from one serial console."""

    def connect(self) -> None:
        """Open the channel; raises ``BackendError`` when it cannot be opened."""

    def read(self, size: int, timeout: float) -> bytes:
        """Up to ``size`` bytes; ``b""`` when nothing came within ``timeout`` seconds.

        Raises ``EOFError`` when the other end has closed the channel for good.
        """

    def write(self, data: bytes) -> None:
        """Send ``data`` to the console."""

    def close(self) -> None:
        """Close the channel; idempotent."""
