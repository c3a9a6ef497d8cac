"""A libvirt lab's gateway (``LibvirtLab.open_gateway``): the ledger records it before it is
made, ``destroy_lab`` removes it, even after a kill -9.

libvirt's own test driver (``test:///default``, in-process, per process, no daemon) holds the
lab's networks; it makes no bridges, so each test makes the lab network's bridge
(``stx<id>n1``) itself with a fake guest on it (``netns_helpers.FakeLab``). Lab ids start with
``tg``, and everything carrying the test's lab id is removed at teardown.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from netns_helpers import (
    GUEST,
    PORT,
    WAIT,
    FakeLab,
    ask,
    ip,
    links,
    namespaces,
    needs_netns,
    ping,
    read_line,
    refused,
    running,
    sweep,
)

from pytest_starlingx.backends.base import LabResources, MachineSpec, NetworkSpec, NicSpec
from pytest_starlingx.backends.gateway import (
    Gateway,
    GatewayRecord,
    state_path,
    uplink_state_path,
)
from pytest_starlingx.backends.libvirt import (
    DomainType,
    Ledger,
    LibvirtBackend,
    LibvirtConfig,
    LibvirtLab,
    bridge_name,
)
from pytest_starlingx.errors import BackendError
from pytest_starlingx.ownership import Holder
from pytest_starlingx.waits import Deadline

pytestmark = [pytest.mark.fast, needs_netns]  # no VM, no libvirt daemon; root and iproute2

ADDRESS = "10.10.10.1/24"
TARGETS = [(GUEST, PORT)]

#: Creates a lab on its own test driver, opens the oam gateway and waits to be killed; with
#: ``midway`` it kills itself once the gateway is made, before the ledger hears of it.
OPENER = """
import json, os, signal, sys
from pathlib import Path
from pytest_starlingx.backends import libvirt as lv
from pytest_starlingx.backends.base import LabResources, NetworkSpec

state_dir, lab_id, midway = sys.argv[1], sys.argv[2], sys.argv[3] == "midway"
nat = sys.argv[4:] == ["nat"]
if midway:
    real = lv.open_gateway

    def open_then_die(*args, **kwargs):
        real(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)

    lv.open_gateway = open_then_die
config = lv.LibvirtConfig("test:///default", Path(state_dir), domain_type=lv.DomainType.QEMU)
backend = lv.LibvirtBackend(config)
oam = NetworkSpec("oam", nat=nat, gateway="10.10.10.1/24" if nat else None)
resources = LabResources("gwtest", lab_id, (NetworkSpec("mgmt"), oam), ())
lab = backend.create_lab(resources)
gateway = lab.open_gateway("oam", "10.10.10.1/24", [("10.10.10.2", 7000)])
print(json.dumps(gateway.to_json()), flush=True)
sys.stdin.read()
"""


def on_test_driver(state_dir: Path) -> LibvirtBackend:
    """A backend on libvirt's in-process test driver (its objects are this process's own)."""
    return LibvirtBackend(LibvirtConfig("test:///default", state_dir, domain_type=DomainType.QEMU))


def resources(lab_id: str, nat: bool = False) -> LabResources:
    """Two isolated networks (oam is the second: bridge ``stx<id>n1``; with ``nat``, a NAT
    network with its gateway at ADDRESS), no machines."""
    oam = NetworkSpec("oam", nat=True, gateway=ADDRESS) if nat else NetworkSpec("oam")
    return LabResources("gwtest", lab_id, (NetworkSpec("mgmt"), oam), ())


@pytest.fixture
def lab_id() -> str:
    return f"tg{secrets.token_hex(3)[:5]}"


@pytest.fixture
def state_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def guest(lab_id: str, state_dir: Path) -> Iterator[FakeLab]:
    """The lab's oam bridge with a guest answering ``oam``; at teardown everything carrying
    the lab id goes."""
    lab = None
    try:
        lab = FakeLab.make("oam", bridge_name(lab_id, 1), f"stx-{lab_id}-guest", f"stx{lab_id}v")
        yield lab
    finally:
        if lab is not None:
            lab.stop()
        prefixes = (f"stx{lab_id}", f"stx-{lab_id}-", f"stx-gwtest-{lab_id}-")
        sweep(prefixes, state_dir / "labs" / lab_id / "run")


@pytest.fixture
def lab(guest: FakeLab, lab_id: str, state_dir: Path) -> Iterator[LibvirtLab]:
    backend = on_test_driver(state_dir)
    try:
        yield backend.create_lab(resources(lab_id))
    finally:
        backend.destroy_lab(lab_id)  # idempotent: a test may have destroyed it
        backend.close()


def recorded(lab: LibvirtLab) -> dict[str, GatewayRecord]:
    """The gateways in the lab's ledger on disk."""
    ledger = Ledger.load(lab.ledger.path)
    return {net: GatewayRecord.from_json(data) for net, data in ledger.gateways.items()}


def gone(gateway: Gateway) -> bool:
    """Whether nothing of the gateway is left."""
    return (
        gateway.namespace not in namespaces()
        and gateway.host_veth not in links()
        and not running(gateway.relay)
        and refused(gateway.ports[(GUEST, PORT)])
    )


def test_open_records_reuses_and_destroy_removes(lab, lab_id, state_dir):
    gateway = lab.open_gateway("oam", ADDRESS, TARGETS)
    assert (gateway.namespace, gateway.host_veth) == (
        f"stx-gwtest-{lab_id}-gw-oam",
        f"stx{lab_id}g1",
    )
    assert ask(gateway.ports[(GUEST, PORT)], "hi") == "oam from 10.10.10.1: hi\n"
    targets = ((GUEST, PORT),)
    assert recorded(lab) == {
        "oam": GatewayRecord(gateway.namespace, gateway.host_veth, ADDRESS, targets, gateway)
    }
    # the same gateway again, from this handle or a new one: the open one
    assert lab.open_gateway("oam", ADDRESS, TARGETS) == gateway
    assert on_test_driver(state_dir).open_lab(lab_id).open_gateway("oam", ADDRESS, TARGETS) == (
        gateway
    )
    # anything else is refused, and the open one is left as it is
    with pytest.raises(BackendError, match=r"open at 10.10.10.1/24 .* close_gateway\('oam'\)"):
        lab.open_gateway("oam", ADDRESS, [(GUEST, 22)])
    assert running(gateway.relay)
    on_test_driver(state_dir).destroy_lab(lab_id)
    assert gone(gateway)
    assert not lab.ledger.path.exists()


def test_close_then_open_again(lab):
    first = lab.open_gateway("oam", ADDRESS, TARGETS)
    lab.close_gateway("oam")
    assert gone(first)
    assert recorded(lab) == {}
    lab.close_gateway("oam")  # nothing to close is fine
    second = lab.open_gateway("oam", ADDRESS, TARGETS)
    assert ask(second.ports[(GUEST, PORT)], "back") == "oam from 10.10.10.1: back\n"
    assert second.relay != first.relay


def test_an_unknown_network_is_named(lab):
    with pytest.raises(BackendError, match=r"no network 'ext' \(has mgmt, oam\)"):
        lab.open_gateway("ext", ADDRESS, TARGETS)


def test_a_remote_libvirt_host_is_refused(lab):
    lab.backend.config = replace(lab.backend.config, uri="qemu+ssh://elsewhere/system")
    with pytest.raises(BackendError, match="qemu\\+ssh://elsewhere/system is remote"):
        lab.open_gateway("oam", ADDRESS, TARGETS)
    assert recorded(lab) == {}


def test_a_failed_open_leaves_no_record(lab):
    with pytest.raises(BackendError, match="not an IP address"):
        lab.open_gateway("oam", ADDRESS, [("controller-0", 22)])
    assert recorded(lab) == {}


def test_names_taken_by_others_are_left_alone(lab, lab_id):
    squatter = f"stx{lab_id}g1"
    ip("link", "add", squatter, "type", "bridge")
    with pytest.raises(BackendError, match=f"link {squatter} exist and are not recorded as ours"):
        lab.open_gateway("oam", ADDRESS, TARGETS)
    assert recorded(lab) == {}
    assert squatter in links()


def _killed_opener(state_dir: Path, lab_id: str, when: str, *kind: str) -> Gateway | None:
    """Run :data:`OPENER` until it is killed by SIGKILL: by this test once it reports the open
    gateway (``opened``, which is returned), by itself ``midway``."""
    opener = subprocess.Popen(
        [sys.executable, "-c", OPENER, str(state_dir), lab_id, when, *kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    gateway = None
    try:
        if when == "opened":
            gateway = Gateway.from_json(json.loads(read_line(opener.stdout, Deadline(WAIT))))
            opener.send_signal(signal.SIGKILL)
        assert opener.wait(WAIT) == -signal.SIGKILL
    finally:
        opener.kill()
        opener.wait()
    return gateway


@pytest.mark.parametrize("when", ["opened", "midway"])
def test_kill_9_of_the_opener_then_destroy_lab_leaves_nothing(guest, lab_id, state_dir, when):
    """``opened``: killed once the gateway is open and recorded; ``midway``: killed once it is
    made, before the ledger hears of it (the relay is found from its state file)."""
    gateway = _killed_opener(state_dir, lab_id, when)
    lab_dir = state_dir / "labs" / lab_id
    record = GatewayRecord.from_json(Ledger.load(lab_dir / "owner.json").gateways["oam"])
    if when == "midway":
        assert record.gateway is None  # recorded before it was made
        state = json.loads(state_path(lab_dir / "run", record.namespace).read_text())
        relay = Holder(state["host"], state["pid"], state["start"])
        ports = {(host, port): local for host, port, local in state["ports"]}
        gateway = Gateway(record.namespace, record.host_veth, relay, ports, lab_dir / "run")
    assert gateway is not None
    assert running(gateway.relay)
    assert ask(gateway.ports[(GUEST, PORT)], "orphan") == "oam from 10.10.10.1: orphan\n"
    backend = on_test_driver(state_dir)
    assert lab_id in backend.lab_ids()
    backend.destroy_lab(lab_id)
    assert gone(gateway)
    assert not lab_dir.exists()


def test_a_ledger_from_before_gateways_still_loads(lab):
    data = json.loads(lab.ledger.path.read_text())
    del data["gateways"]
    lab.ledger.path.write_text(json.dumps(data))
    assert Ledger.is_ours(lab.ledger.path)
    assert Ledger.load(lab.ledger.path).gateways == {}


# ------------------------------------------------------------------ NAT networks

needs_uplink_tools = pytest.mark.skipif(
    shutil.which("slirp4netns") is None or shutil.which("nft") is None,
    reason="an uplink needs slirp4netns and nft (stx-lab host-setup installs them)",
)


@pytest.fixture
def nat_lab(guest: FakeLab, lab_id: str, state_dir: Path) -> Iterator[LibvirtLab]:
    backend = on_test_driver(state_dir)
    try:
        yield backend.create_lab(resources(lab_id, nat=True))
    finally:
        backend.destroy_lab(lab_id)
        backend.close()


@needs_uplink_tools
def test_a_nat_network_has_its_gateway_from_creation_and_gets_its_relay_later(
    nat_lab, guest, lab_id, state_dir
):
    record = recorded(nat_lab)["oam"]
    assert (record.uplink, record.address, record.targets) == (True, ADDRESS, ())
    first = record.gateway
    assert first is not None and first.relay is None and first.uplink is not None
    assert running(first.uplink.process)
    assert ping(guest.guest, "10.10.10.1")  # the lab reaches its gateway before any endpoint
    gateway = nat_lab.open_gateway("oam", ADDRESS, TARGETS)
    assert (gateway.namespace, gateway.uplink) == (first.namespace, first.uplink)
    assert ask(gateway.ports[(GUEST, PORT)], "hi") == "oam from 10.10.10.1: hi\n"
    assert recorded(nat_lab)["oam"] == GatewayRecord(
        first.namespace, first.host_veth, ADDRESS, ((GUEST, PORT),), gateway, uplink=True
    )
    assert nat_lab.open_gateway("oam", ADDRESS, TARGETS) == gateway
    with pytest.raises(BackendError, match=r"NAT network with its gateway at 10\.10\.10\.1/24"):
        nat_lab.open_gateway("oam", "10.10.10.254/24", TARGETS)
    on_test_driver(state_dir).destroy_lab(lab_id)
    assert gone(gateway) and not running(first.uplink.process)


@needs_uplink_tools
def test_a_nat_gateway_whose_uplink_died_is_opened_anew(nat_lab, guest):
    first = recorded(nat_lab)["oam"].gateway
    assert first is not None and first.uplink is not None
    os.kill(first.uplink.process.pid, signal.SIGKILL)  # as a host reboot would leave it
    deadline = Deadline(WAIT)
    while first.uplink.process.alive():  # until init has reaped it
        assert not deadline.expired, f"{first.uplink.process} still there"
        time.sleep(0.05)
    # a handle whose lab has a machine on the network (the test driver cannot start one, so
    # it is not defined): what its power-on does before it starts the domain
    machine = MachineSpec("m0", 64, 1, nics=(NicSpec("oam"), NicSpec("mgmt", boot=True)))
    with_machine = replace(nat_lab.resources, machines=(machine,))
    handle = LibvirtLab(nat_lab.backend, replace(nat_lab.ledger, resources=with_machine))
    handle._start_networks("m0")
    second = recorded(nat_lab)["oam"].gateway
    assert second is not None and second.uplink is not None
    assert second.uplink.process != first.uplink.process
    assert running(second.uplink.process)
    assert ping(guest.guest, "10.10.10.1")
    handle._start_networks("m0")
    assert recorded(nat_lab)["oam"].gateway == second  # open and running: left as it is


@needs_uplink_tools
def test_kill_9_of_the_creator_of_a_nat_lab_then_destroy_lab_leaves_nothing(
    guest, lab_id, state_dir
):
    gateway = _killed_opener(state_dir, lab_id, "opened", "nat")
    assert gateway is not None and gateway.uplink is not None
    assert running(gateway.uplink.process) and running(gateway.relay)
    run_dir = state_dir / "labs" / lab_id / "run"
    assert uplink_state_path(run_dir, gateway.namespace).exists()
    on_test_driver(state_dir).destroy_lab(lab_id)  # what stx-lab gc does for a dead owner
    assert gone(gateway) and not running(gateway.uplink.process)
    assert not (state_dir / "labs" / lab_id).exists()


def test_a_nat_network_on_a_remote_libvirt_host_is_refused(lab):
    lab.backend.config = replace(lab.backend.config, uri="qemu+ssh://elsewhere/system")
    with pytest.raises(BackendError, match="a NAT network's way out is its gateway"):
        lab._open_uplink(NetworkSpec("oam", nat=True, gateway=ADDRESS))


@needs_uplink_tools
def test_kill_9_while_a_nat_lab_is_created_then_destroy_lab_leaves_nothing(
    guest, lab_id, state_dir
):
    """Killed once the NAT network's gateway is made, before the ledger hears of it: the
    uplink process is found from its state file."""
    opener = subprocess.Popen(
        [sys.executable, "-c", OPENER, str(state_dir), lab_id, "midway", "nat"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert opener.wait(WAIT) == -signal.SIGKILL
    finally:
        opener.kill()
        opener.wait()
    lab_dir = state_dir / "labs" / lab_id
    record = GatewayRecord.from_json(Ledger.load(lab_dir / "owner.json").gateways["oam"])
    assert (record.gateway, record.uplink) == (None, True)  # recorded before it was made
    state = json.loads(uplink_state_path(lab_dir / "run", record.namespace).read_text())
    uplink = Holder(state["host"], state["pid"], state["start"])
    assert running(uplink)
    assert ping(guest.guest, "10.10.10.1")
    on_test_driver(state_dir).destroy_lab(lab_id)
    assert not running(uplink)
    assert record.namespace not in namespaces() and record.host_veth not in links()
    assert not lab_dir.exists()


def test_a_nat_lab_on_a_remote_libvirt_host_is_refused_before_anything_is_made(lab_id, state_dir):
    backend = on_test_driver(state_dir)
    backend.config = replace(backend.config, uri="qemu+ssh://elsewhere/system")  # never dialled
    try:
        with pytest.raises(BackendError, match=r"NAT network oam: libvirt at qemu\+ssh://else"):
            backend._check_host(resources(lab_id, nat=True))
    finally:
        backend.close()


def test_a_nat_lab_without_the_uplink_programs_is_refused_before_anything_is_made(
    lab_id, state_dir, monkeypatch
):
    from pytest_starlingx.backends import libvirt as lv

    monkeypatch.setattr(lv.shutil, "which", lambda program: None)
    backend = on_test_driver(state_dir)
    try:
        with pytest.raises(BackendError, match="NAT network oam needs slirp4netns, nft on this"):
            backend.create_lab(resources(lab_id, nat=True))
        assert backend.lab_ids() == [] and not (state_dir / "labs" / lab_id).exists()
        backend._check_host(resources(lab_id))  # an isolated lab needs neither
    finally:
        backend.close()
