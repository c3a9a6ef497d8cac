"""The lab model: topologies, node names, sizes, NIC order, passwords."""

from __future__ import annotations

import pytest

from pytest_starlingx.model import (
    NETWORKS,
    Personality,
    Profile,
    Topology,
    generate_password,
    password_problems,
    resolve_lab,
)


@pytest.mark.parametrize(
    ("topology", "names"),
    [
        ("simplex", ["controller-0"]),
        ("duplex", ["controller-0", "controller-1"]),
        ("standard", ["controller-0", "controller-1", "worker-0", "worker-1"]),
        (
            "storage",
            ["controller-0", "controller-1", "storage-0", "storage-1", "worker-0", "worker-1"],
        ),
    ],
)
def test_topologies_have_starlingx_node_names(topology, names):
    assert [n.name for n in resolve_lab(topology).nodes] == names


def test_all_in_one_controllers_are_workers_too():
    duplex = resolve_lab("duplex")
    assert all(n.all_in_one and n.personality is Personality.CONTROLLER for n in duplex.nodes)
    standard = resolve_lab("standard")
    assert not standard.node("controller-0").all_in_one
    assert standard.node("worker-1").personality is Personality.WORKER


def test_only_controller_0_installs_from_the_iso():
    lab = resolve_lab("storage")
    assert [n.name for n in lab.nodes if n.installs_from_iso] == ["controller-0"]


def test_nics_follow_starlingx_order_and_mgmt_boots():
    node = resolve_lab("standard").node("worker-0")
    assert tuple(nic.network for nic in node.nics) == NETWORKS == ("oam", "mgmt", "data0", "data1")
    assert [nic.model for nic in node.nics] == ["e1000", "e1000", "virtio", "virtio"]
    assert node.nics[node.boot_nic_index].network == "mgmt"


def test_real_profile_uses_documented_minimums():
    lab = resolve_lab("simplex", profile="real")
    aio = lab.node("controller-0")
    assert (aio.memory_mib, aio.vcpus, aio.disks_gib) == (18 * 1024, 6, (600, 200, 200))
    std = resolve_lab("standard", profile=Profile.REAL)
    assert std.node("controller-1").disks_gib == (250, 200)
    assert std.node("worker-0").memory_mib == 16 * 1024


def test_sim_profile_is_small_and_default_for_the_simulator():
    lab = resolve_lab("storage")
    assert lab.profile is Profile.SIM
    assert all(n.memory_mib <= 512 and n.vcpus == 1 for n in lab.nodes)
    assert lab.memory_mib == 6 * 512


def test_counts_shape_standard_and_storage_labs():
    lab = resolve_lab("storage", workers=3, storage_nodes=4)
    assert (lab.workers, lab.storage_nodes) == (3, 4)
    assert resolve_lab("simplex", workers=5).workers == 0


def test_system_mode_is_duplex_for_every_multi_node_option():
    assert [t.system_mode for t in Topology] == ["simplex", "duplex", "duplex", "duplex"]


def test_node_lookup_names_what_exists():
    with pytest.raises(KeyError, match="has controller-0, controller-1"):
        resolve_lab("duplex").node("worker-0")


def test_real_hardware_timeouts_follow_the_field_reports():
    lab = resolve_lab("simplex", profile="real")
    assert (lab.timeout("install"), lab.timeout("bootstrap"), lab.timeout("unlock")) == (
        3600,
        5400,
        9000,
    )


def test_timeouts_scale_by_the_lab_factor():
    lab = resolve_lab("simplex", timeouts={"install": 100}, timeout_factor=2.5)
    assert lab.timeout("install") == 250
    assert lab.timeout("unlock") == lab.timeouts["unlock"] * 2.5


@pytest.mark.parametrize(
    ("password", "release", "user", "missing"),
    [
        ("St8rlingXCloud*", "10.0", "sysadmin", []),  # ansible-playbooks 10.0's default
        ("St8rlingX*", "9.0", "admin", []),  # and 9.0's
        ("St8rlingX*", "10.0", "admin", ["at least 12 characters"]),
        (
            "short",
            "9.0",
            "sysadmin",
            ["at least 7 characters", "an upper-case letter", "a digit", "a symbol"],
        ),
        ("LOWERCASE12*x".upper(), "10.0", "sysadmin", ["a lower-case letter"]),
        ("lowercase12*x", "10.0", "sysadmin", ["an upper-case letter"]),
        ("NoDigits*Here", "10.0", "sysadmin", ["a digit"]),
        ("NoSymbol1Here", "10.0", "sysadmin", ["a symbol"]),
        ("My-Sysadmin-1", "10.0", "sysadmin", ["not to contain the user name 'sysadmin'"]),
        ("My-Nimdasys-1", "10.0", "sysadmin", ["not to contain the user name 'sysadmin'"]),
        ("My-Sysadmin-1", "10.0", "admin", []),  # keystone has no user-name check
        ("St8rlingXCloud/", "10.0", "admin", ["a symbol of !@#$%^&*()<>{}+=_\\[]-?|~`,.;:"]),
        ("St8rlingX'Cloud*", "10.0", "admin", ["no quote (' or \")"]),
    ],
)
def test_password_policy(password, release, user, missing):
    assert password_problems(password, release, user) == missing


def test_generated_passwords_meet_the_policy_and_differ():
    passwords = {generate_password() for _ in range(50)}
    assert len(passwords) == 50
    assert all(password_problems(p) == [] for p in passwords)


def test_literal_password_is_not_in_repr():
    from pytest_starlingx.model import PasswordSource

    assert "Secret99*" not in repr(PasswordSource(value="Secret99*"))


def test_env_password_resolves_from_the_environment():
    from pytest_starlingx.model import PasswordSource

    source = PasswordSource(env="STX_PW")
    assert source.resolve({"STX_PW": "Abcdef1*"}) == "Abcdef1*"
    assert source.resolve({}) is None
