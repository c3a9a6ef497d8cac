"""pytest hooks: the marker, the checked settings, and marker checks at collection."""

from __future__ import annotations

import pytest

from pytest_starlingx.errors import LabConfigError
from pytest_starlingx.plugin.options import Settings, settings_from_config
from pytest_starlingx.plugin.requests import MARKER, MARKER_HELP, LabRequest, request_from_marker

SETTINGS = pytest.StashKey[Settings]()
LAB_REQUEST = pytest.StashKey[LabRequest]()


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``stx`` marker and check every option once."""
    config.addinivalue_line("markers", MARKER_HELP)
    config.stash[SETTINGS] = settings_from_config(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Turn each ``@pytest.mark.stx`` into a lab request; a bad one fails collection."""
    settings = config.stash[SETTINGS]
    errors = []
    for item in items:
        marker = item.get_closest_marker(MARKER)
        if marker is None:
            continue
        try:
            item.stash[LAB_REQUEST] = request_from_marker(
                marker.args, marker.kwargs, item.nodeid, settings.base
            )
        except LabConfigError as exc:
            errors += [f"{item.nodeid}: {problem}" for problem in exc.problems]
    if errors:
        raise pytest.UsageError("invalid stx markers:\n" + "\n".join(errors))
