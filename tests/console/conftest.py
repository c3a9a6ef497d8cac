"""Fixtures for the console layer's tests: consoles over scripted counterparts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pytest_starlingx.console import Console
from pytest_starlingx.transport import Transport


@pytest.fixture
def artifacts(tmp_path: Path) -> Path:
    return tmp_path / "artifacts"


@pytest.fixture
def make_console(artifacts: Path) -> Iterator[Callable[..., Console]]:
    """Open a Console over a transport; all are closed at teardown."""
    opened: list[Console] = []

    def make(transport: Transport, node: str = "controller-0", **kwargs: object) -> Console:
        console = Console(transport, node, lab="simplex", artifacts=artifacts, **kwargs)
        opened.append(console.open())
        return console

    yield make
    for console in opened:
        console.close()
