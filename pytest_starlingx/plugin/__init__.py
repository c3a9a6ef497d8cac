"""The pytest plugin: options, markers and fixtures (wiring only; the logic lives in the layers)."""

from pytest_starlingx.plugin.fixtures import (
    stx_duplex,
    stx_lab,
    stx_lab_factory,
    stx_simplex,
    stx_standard,
    stx_storage,
)
from pytest_starlingx.plugin.hooks import (
    pytest_collection_modifyitems,
    pytest_configure,
    pytest_runtest_makereport,
    pytest_sessionfinish,
    pytest_terminal_summary,
)
from pytest_starlingx.plugin.options import pytest_addoption

__all__ = [
    "pytest_addoption",
    "pytest_collection_modifyitems",
    "pytest_configure",
    "pytest_runtest_makereport",
    "pytest_sessionfinish",
    "pytest_terminal_summary",
    "stx_duplex",
    "stx_lab",
    "stx_lab_factory",
    "stx_simplex",
    "stx_standard",
    "stx_storage",
]
