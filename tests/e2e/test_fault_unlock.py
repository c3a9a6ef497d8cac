"""A failing unlock, and a node that never installs, each named with their stage."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_helpers import failed_bring_up, spec

from pytest_starlingx.lab import create_lab, destroy_lab

pytestmark = pytest.mark.usefixtures("lab_name")


def test_unlock_failure_is_reported_at_the_unlock_stage(backend, lab_name, tmp_path):
    """Two failed enables: maintenance re-enables the first, then gives up (metal mtc.conf
    ar_config_threshold), and only then is the stage failed, naming the host's task."""
    lab = create_lab(spec(lab_name), backend, tmp_path, knobs={"controller-0": {"enable_fail": 2}})
    try:
        message, _ = failed_bring_up(lab)
        assert message.startswith(f"lab {lab_name!r} node controller-0: stage 'unlock' failed")
        assert "controller-0 became unlocked | disabled | failed" in message
        assert "(task: Configuration failure, threshold reached, Lock/Unlock to retry)" in message
    finally:
        lab.close()
        destroy_lab(backend, lab.lab_id)


def test_a_node_that_never_installs_is_named(backend, lab_name, tmp_path: Path):
    """controller-1's network install stalls (no_netboot): it is listed, as its firmware's DHCP
    lease reached controller-0, but never comes online; its install stage says so."""
    lab = create_lab(spec(lab_name, "duplex", node_install=40), backend, tmp_path,
                     knobs={"controller-1": {"no_netboot": 1}})  # fmt: skip
    try:
        message, _ = failed_bring_up(lab)
        assert message.startswith(f"lab {lab_name!r} node controller-1: stage 'install' failed")
        assert "controller-1 installed and online" in message
        assert "controller-1 locked | disabled | offline" in message
        assert "waited 4" in message  # the 40 s node_install timeout, give or take a poll
    finally:
        lab.close()
        destroy_lab(backend, lab.lab_id)
