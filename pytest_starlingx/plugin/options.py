"""Command-line and ini options of the plugin, in one group named ``starlingx``."""

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``starlingx`` option group."""
    group = parser.getgroup("starlingx", "StarlingX labs (pytest-starlingx)")
    group.addoption(
        "--stx-config",
        dest="stx_config",
        metavar="FILE",
        default=None,
        help="lab description (YAML) that topology fixtures use as their base",
    )
    parser.addini("stx_config", "lab description (YAML) used as the base of topology fixtures")
