"""The pytest plugin: options, markers and fixtures (wiring only; the logic lives in the layers)."""

from pytest_starlingx.plugin.hooks import pytest_collection_modifyitems, pytest_configure
from pytest_starlingx.plugin.options import pytest_addoption

__all__ = ["pytest_addoption", "pytest_collection_modifyitems", "pytest_configure"]
