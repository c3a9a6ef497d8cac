"""Bad input: generated lab descriptions, valid and broken, through the real validator.

Every broken description must raise LabConfigError naming the broken key (and nothing else);
every valid one must resolve. A tripwire makes any attempt to reach a hypervisor fail the test.
"""

from __future__ import annotations

import re
import string
from typing import Any

import hypothesis.strategies as st
import pytest
import yaml
from hypothesis import HealthCheck, given, settings

from pytest_starlingx import backends
from pytest_starlingx.errors import LabConfigError
from pytest_starlingx.labfile import (
    DISK_RANGE,
    MAX_STORAGE_NODES,
    MAX_WORKERS,
    MEMORY_RANGE,
    MIN_STORAGE_NODES,
    NODE_KEYS,
    TOP_KEYS,
    VCPU_RANGE,
    parse_lab,
)
from pytest_starlingx.model import PASSWORD_USERS, TIMEOUT_PHASES, LabSpec, Topology, node_names

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

VALID_CASES = 500
BROKEN_CASES = 800
GARBAGE_CASES = 300


def fuzz(cases: int) -> settings:
    """Hypothesis settings for ``cases`` examples, no per-example deadline, no database."""
    return settings(max_examples=cases, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


@pytest.fixture(autouse=True)
def no_hypervisor(monkeypatch):
    """Validation must never reach a hypervisor."""

    def tripwire(*args: object, **kwargs: object) -> None:
        raise AssertionError("lab validation tried to open a backend")

    monkeypatch.setattr(backends, "make_backend", tripwire)
    libvirt = pytest.importorskip("libvirt")
    monkeypatch.setattr(libvirt, "open", tripwire)


names = st.from_regex(r"[a-z][a-z0-9-]{0,19}", fullmatch=True)
words = st.text(string.ascii_lowercase + "_", min_size=1, max_size=12)
node_size = st.fixed_dictionaries(
    {},
    optional={
        "memory_mib": st.integers(*MEMORY_RANGE),
        "vcpus": st.integers(*VCPU_RANGE),
        "disks_gib": st.lists(st.integers(*DISK_RANGE), min_size=1, max_size=8),
    },
)
password = st.one_of(
    st.just({"generate": True}),
    st.from_regex(r"[A-Z_][A-Z0-9_]{0,15}", fullmatch=True).map(lambda v: {"env": v}),
)


@st.composite
def valid_labs(draw: st.DrawFn) -> dict[str, Any]:
    """A valid lab mapping built from the real keys and their allowed values."""
    topology = draw(st.sampled_from([t.value for t in Topology]))
    lab: dict[str, Any] = {"topology": topology}
    workers = storage = 0
    if topology in ("standard", "storage") and draw(st.booleans()):
        workers = draw(st.integers(1, MAX_WORKERS))
        lab["workers"] = workers
    if topology == "storage" and draw(st.booleans()):
        storage = draw(st.integers(MIN_STORAGE_NODES, MAX_STORAGE_NODES))
        lab["storage_nodes"] = storage
    optional = {
        "name": names,
        "backend": st.sampled_from(["libvirt", "virtualbox"]),
        "profile": st.sampled_from(["real", "sim"]),
        "node_defaults": node_size,
        "timeouts": st.dictionaries(
            st.sampled_from(TIMEOUT_PHASES), st.floats(1, 100_000), max_size=3
        ),
        "timeout_factor": st.floats(0.01, 100),
        "add_hosts": st.sampled_from(["discover", "host-add"]),
        "passwords": st.dictionaries(st.sampled_from(PASSWORD_USERS), password, max_size=2),
        "mgmt": st.just({"subnet": "192.168.204.0/24"}),
        "oam": st.sampled_from([{"uplink": "nat"}, {"uplink": "isolated"}]),
        "stages": st.just([{"name": "my-stage", "after": "available", "shell": ["true"]}]),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            lab[key] = draw(strategy)
    if draw(st.booleans()):
        existing = [n for n, _ in node_names(Topology(topology), workers or 2, storage or 2)]
        if "workers" not in lab or "storage_nodes" not in lab:
            existing = [n for n in existing if n.startswith("controller")]
        chosen = draw(st.lists(st.sampled_from(existing), unique=True, max_size=2))
        lab["nodes"] = {n: draw(node_size) for n in chosen}
    return lab


def _set(lab: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    target = lab
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = value
    return lab


@st.composite
def broken_labs(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid lab with one key broken; returns the lab and the key path the error must name."""
    lab = draw(valid_labs())
    bad_number = st.one_of(st.integers(-(10**6), 0), st.text(max_size=5), st.booleans())
    kind = draw(st.sampled_from([
        "unknown", "topology", "name", "memory", "vcpus", "disks", "node_key", "node_name",
        "timeout", "timeout_phase", "factor", "password_env", "password_user", "oam", "mgmt",
        "backend", "profile", "add_hosts", "section_type", "stage", "workers", "uplink",
    ]))  # fmt: skip
    if kind == "unknown":
        key = draw(words.filter(lambda w: w not in TOP_KEYS))
        return _set(lab, (key,), 1), key
    if kind == "topology":
        value = draw(words.filter(lambda w: w not in [t.value for t in Topology]))
        return _set(lab, ("topology",), value), "topology"
    if kind == "name":
        value = draw(
            st.one_of(
                st.from_regex(r"[A-Z0-9 _.]{1,5}", fullmatch=True),
                st.text(string.ascii_lowercase, min_size=21, max_size=30),
            )
        )
        return _set(lab, ("name",), value), "name"  # fmt: skip
    if kind in ("memory", "vcpus", "disks"):
        key = {"memory": "memory_mib", "vcpus": "vcpus", "disks": "disks_gib"}[kind]
        value = draw(bad_number if kind != "disks" else st.one_of(
            st.just([]), st.lists(st.integers(DISK_RANGE[1] + 1, 10**6), min_size=1, max_size=2),
            st.text(max_size=3)))  # fmt: skip
        return _set(lab, ("node_defaults", key), value), f"node_defaults.{key}"
    if kind == "node_key":
        key = draw(words.filter(lambda w: w not in NODE_KEYS))
        return _set(lab, ("node_defaults", key), 1), f"node_defaults.{key}"
    if kind == "node_name":
        node = draw(st.sampled_from(["worker-99", "storage-42", "controller-7", "nodex"]))
        return _set(lab, ("nodes", node), {}), f"nodes.{node}"
    if kind == "timeout":
        phase = draw(st.sampled_from(TIMEOUT_PHASES))
        value = draw(st.one_of(st.floats(-1e6, 0), st.text(max_size=4)))
        return _set(lab, ("timeouts", phase), value), f"timeouts.{phase}"
    if kind == "timeout_phase":
        phase = draw(words.filter(lambda w: w not in TIMEOUT_PHASES))
        return _set(lab, ("timeouts", phase), 10), f"timeouts.{phase}"
    if kind == "factor":
        value = draw(st.one_of(st.floats(-100, 0), st.floats(100.001, 1e9), st.text(max_size=3)))
        return _set(lab, ("timeout_factor",), value), "timeout_factor"
    if kind == "password_env":
        user = draw(st.sampled_from(PASSWORD_USERS))
        value = draw(st.from_regex(r"[0-9-][A-Z0-9-]{0,8}", fullmatch=True))
        return _set(lab, ("passwords", user), {"env": value}), f"passwords.{user}.env"
    if kind == "password_user":
        user = draw(words.filter(lambda w: w not in PASSWORD_USERS))
        return _set(lab, ("passwords", user), {"generate": True}), f"passwords.{user}"
    if kind == "uplink":
        value = draw(st.one_of(words.filter(lambda w: w not in ("nat", "isolated")),
                               st.integers(), st.booleans()))  # fmt: skip
        return _set(lab, ("oam", "uplink"), value), "oam.uplink"
    if kind in ("oam", "mgmt"):
        value = draw(st.sampled_from(["nope", "300.1.1.0/24", "10.0.0.1/33", "", "x/y"]))
        return _set(lab, (kind, "subnet"), value), f"{kind}.subnet"
    if kind in ("backend", "profile", "add_hosts"):
        value = draw(words.filter(lambda w: w not in ("libvirt", "virtualbox", "real", "sim",
                                                      "discover")))  # fmt: skip
        return _set(lab, (kind,), value), kind
    if kind == "section_type":
        key = draw(st.sampled_from(["node_defaults", "nodes", "oam", "mgmt", "passwords",
                                    "timeouts"]))  # fmt: skip
        value = draw(st.one_of(st.integers(), st.text(max_size=4), st.lists(st.integers())))
        return _set(lab, (key,), value), key
    if kind == "stage":
        return _set(lab, ("stages",), [{"name": "my-stage"}]), "stages[0]"
    # workers: out of range, wrong type, or on a topology without workers
    if lab["topology"] in ("standard", "storage"):
        value = draw(st.one_of(st.integers(MAX_WORKERS + 1, 10**6), st.integers(-10**6, 0),
                               st.text(max_size=3)))  # fmt: skip
    else:
        value = draw(st.integers(1, MAX_WORKERS))
    return _set(lab, ("workers",), value), "workers"


def _load(lab: dict[str, Any]) -> LabSpec:
    return parse_lab(yaml.safe_dump(lab, sort_keys=False), source="fuzz.yaml")


@fuzz(VALID_CASES)
@given(valid_labs())
def test_every_valid_description_resolves(lab):
    spec = _load(lab)
    assert spec.topology.value == lab["topology"]


@fuzz(BROKEN_CASES)
@given(broken_labs())
def test_every_broken_description_names_its_key(case):
    lab, key = case
    with pytest.raises(LabConfigError) as info:
        _load(lab)
    assert re.search(rf"\b{re.escape(key)}[:\[ .]", str(info.value)), (key, str(info.value))


@fuzz(GARBAGE_CASES)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1"))))
def test_arbitrary_text_is_a_lab_or_a_config_error(text):
    try:
        _load_text(text)
    except LabConfigError as exc:
        assert str(exc).startswith("fuzz.yaml")


def _load_text(text: str) -> LabSpec:
    return parse_lab(text, source="fuzz.yaml")
