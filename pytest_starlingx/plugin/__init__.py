"""The pytest plugin: options, markers and fixtures (wiring only; the logic lives in the layers)."""

from pytest_starlingx.plugin.options import pytest_addoption

__all__ = ["pytest_addoption"]
