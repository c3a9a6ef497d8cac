"""What the plugin keeps on pytest's config and items (light: imported on every pytest run)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from pytest_starlingx.plugin.factory import LabFactory
    from pytest_starlingx.plugin.options import Settings
    from pytest_starlingx.plugin.requests import LabRequest

#: The checked options of the session.
SETTINGS: pytest.StashKey[Settings] = pytest.StashKey()
#: A test's lab request, from its ``stx`` marker.
LAB_REQUEST: pytest.StashKey[LabRequest] = pytest.StashKey()
#: The session's labs, once a test asked for one.
FACTORY: pytest.StashKey[LabFactory] = pytest.StashKey()
