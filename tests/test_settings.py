"""The environment knobs: one object, each variable's default when it is unset or empty."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_starlingx.settings import DEFAULT_STATE_DIR, env_settings

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


def test_defaults_when_nothing_is_set():
    knobs = env_settings({})
    assert knobs.state_dir == DEFAULT_STATE_DIR == Path("/var/lib/pytest-starlingx")
    assert (knobs.domain_type, knobs.vboxmanage) == ("auto", "VBoxManage")
    assert knobs.sim_cache == Path.home() / ".cache" / "pytest-starlingx" / "sim"


def test_each_variable_sets_its_field():
    knobs = env_settings(
        {
            "STX_STATE_DIR": "/srv/stx",
            "STX_LIBVIRT_DOMAIN_TYPE": "qemu",
            "STX_VBOXMANAGE": "/opt/vbox/VBoxManage",
            "XDG_CACHE_HOME": "/tmp/cache",
        }
    )
    assert knobs.state_dir == Path("/srv/stx")
    assert (knobs.domain_type, knobs.vboxmanage) == ("qemu", "/opt/vbox/VBoxManage")
    assert knobs.sim_cache == Path("/tmp/cache/pytest-starlingx/sim")
    assert env_settings({"STX_SIM_CACHE": "/c", "XDG_CACHE_HOME": "/x"}).sim_cache == Path("/c")


def test_empty_variables_count_as_unset_but_an_empty_domain_type_is_kept():
    knobs = env_settings({"STX_STATE_DIR": "", "STX_VBOXMANAGE": "", "STX_LIBVIRT_DOMAIN_TYPE": ""})
    assert (knobs.state_dir, knobs.vboxmanage) == (DEFAULT_STATE_DIR, "VBoxManage")
    assert knobs.domain_type == ""  # make_backend rejects it, naming the variable
