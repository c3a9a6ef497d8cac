"""A lab over this host and a second libvirt host (``backends/multihost.py``): made, opened and
removed on both, collected after kill -9 mid-creation, and a host lost mid bring-up named in
one error. The tiny guest, no StarlingX; root, iproute2 and libvirt's daemons."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from libvirt_helpers import READY, everything, lab_resources, new_lab_id, ours, read_until
from second_host import NEEDS_SECOND_HOST, SYSTEM_URI, TEST_ROOT, SecondHost, run, second_host

from pytest_starlingx.backends import multihost
from pytest_starlingx.backends.libvirt import DomainType, LibvirtBackend, LibvirtConfig
from pytest_starlingx.backends.multihost import LabHost, SpanningLab
from pytest_starlingx.errors import BackendError, LeakError
from pytest_starlingx.lifecycle.gc import Backends, collect, survey

pytestmark = NEEDS_SECOND_HOST

HERE = "here"
CHILD = """
import json, sys, time
from pathlib import Path
from pytest_starlingx.backends import multihost
from pytest_starlingx.backends.base import LabResources
from pytest_starlingx.backends.libvirt import DomainType, LibvirtBackend, LibvirtConfig

data = json.loads(sys.argv[1])
backend = LibvirtBackend(LibvirtConfig(state_dir=Path(data["state"]), domain_type=DomainType.QEMU))
hosts = [multihost.LabHost.from_json(h) for h in data["hosts"]]
resources = LabResources.from_json(data["resources"])
multihost.create_lab(backend, resources, hosts, data["placement"])
print("created", flush=True)
time.sleep(600)
"""


@pytest.fixture
def state(token: str) -> Iterator[Path]:
    """A state directory of the test's own, short enough for the second host's console
    sockets (``labs/<id>/hosts/<token>/labs/<id>/run/``), reachable by libvirt's QEMU user."""
    path = TEST_ROOT / f"s{token[3:]}"
    path.mkdir(mode=0o755, parents=True)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def lab_hosts(host2: SecondHost) -> list[LabHost]:
    """This host (first) and the second host, joined by the second host's underlay."""
    return [
        LabHost.of(HERE, SYSTEM_URI, host2.local_underlay),
        LabHost.of(host2.token, host2.uri, host2.underlay, host2.commands.prefix),
    ]


def backend_at(state: Path) -> LibvirtBackend:
    return LibvirtBackend(
        LibvirtConfig(
            uri=SYSTEM_URI, state_dir=state, domain_type=DomainType.QEMU, reconnect_timeout=3
        )
    )


def vxlans(ip_prefix: list[str], lab_id: str) -> dict[str, str | None]:
    """The lab's VXLAN devices in a namespace (``[]``: this host's) and their bridges."""
    links = json.loads(run("ip", *ip_prefix, "-j", "-d", "link", "show", "type", "vxlan"))
    return {
        link["ifname"]: link.get("master")
        for link in links
        if link["ifname"].startswith(f"stx{lab_id}v")
    }


def assert_nothing_left(host2: SecondHost, state: Path, lab_id: str) -> None:
    """No libvirt object or VXLAN device of the lab on either host, no state of it here."""
    assert objects(SYSTEM_URI, lab_id) == set() and objects(host2.uri, lab_id) == set()
    assert vxlans([], lab_id) == {} and vxlans(["-n", host2.namespace], lab_id) == {}
    assert not (state / "labs" / lab_id).exists()


def objects(uri: str, lab_id: str) -> set[str]:
    conn = libvirt.open(uri)
    try:
        return ours(everything(conn), lab_id)
    finally:
        conn.close()


def test_a_lab_spans_both_hosts_and_is_removed_from_both(
    host2: SecondHost, tiny_iso: Path, state: Path
) -> None:
    backend = backend_at(state)
    lab_id = new_lab_id()
    # node-0 (with the ISO) on the second host, node-1 here
    placement = {"node-0": host2.token, "node-1": HERE}
    try:
        lab = multihost.create_lab(
            backend, lab_resources(2, lab_id, cdrom=tiny_iso), lab_hosts(host2), placement
        )
        assert isinstance(lab, SpanningLab)
        assert (state / "labs" / lab_id / "hosts.json").exists()
        bridges = {f"stx{lab_id}v{i}": f"stx{lab_id}n{i}" for i in range(4)}
        assert vxlans([], lab_id) == bridges
        assert vxlans(["-n", host2.namespace], lab_id) == bridges
        assert {o.split()[1] for o in objects(host2.uri, lab_id) if o.startswith("domain")} == {
            f"stx-t-{lab_id}-node-0"
        }
        assert {o.split()[1] for o in objects(SYSTEM_URI, lab_id) if o.startswith("domain")} == {
            f"stx-t-{lab_id}-node-1"
        }

        # A network restarted on the second host loses its VXLAN device with its bridge; the
        # power-on of a machine there puts it back before the machine runs.
        conn = libvirt.open(host2.uri)
        try:
            conn.networkLookupByName(f"stx-t-{lab_id}-mgmt").destroy()
        finally:
            conn.close()
        opened = backend.open_lab(lab_id)  # from the ledgers, as another process would
        assert isinstance(opened, SpanningLab)
        transport = opened.console("node-0")
        try:
            seen: list[dict[str, str | None]] = []
            opened.power_on(
                "node-0",
                before_resume=lambda _: (
                    seen.append(vxlans(["-n", host2.namespace], lab_id)),
                    transport.connect(),
                ),
            )
            assert seen == [bridges]
            read_until(transport, READY)
        finally:
            transport.close()
        assert opened.state("node-0").value == "running"
        assert len(opened.mac_addresses("node-1")) == 4

        # Snapshots are taken on each machine's host, restored together; the running one is
        # resumed with its span on the bridge (the revert restarts its QEMU process).
        opened.snapshot("s1")
        assert {(i.machine, i.running) for i in opened.snapshots()} == {
            ("node-0", True), ("node-1", False),
        }  # fmt: skip
        seen.clear()
        opened.revert(
            "s1", before_resume=lambda _: seen.append(vxlans(["-n", host2.namespace], lab_id))
        )
        assert seen == [bridges]
        assert (opened.state("node-0").value, opened.state("node-1").value) == ("running", "off")
        opened.delete_snapshot("s1")
        assert opened.snapshots() == []
    finally:
        backend.destroy_lab(lab_id)
        backend.close()
    assert_nothing_left(host2, state, lab_id)


def test_kill_9_mid_creation_then_gc_leaves_nothing_on_either_host(
    host2: SecondHost, tiny_iso: Path, state: Path
) -> None:
    lab_id = new_lab_id()
    data = {
        "state": str(state),
        "hosts": [h.to_json() for h in lab_hosts(host2)],
        "resources": lab_resources(2, lab_id, cdrom=tiny_iso).to_json(),
        "placement": {"node-0": HERE, "node-1": host2.token},
    }
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(data)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        # killed as soon as the second host has the lab's domain (the spans maybe not yet)
        while not any(o.startswith("domain") for o in objects(host2.uri, lab_id)):
            assert child.poll() is None, child.communicate()[0]
            assert time.monotonic() < deadline, "the second host's domain did not appear"
            time.sleep(0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert objects(SYSTEM_URI, lab_id) != set()

    backends = Backends(SYSTEM_URI)
    try:
        records = [r for r in survey(backends.usable(state), state) if r.lab_id == lab_id]
        result = collect(records, backends)
    finally:
        backends.close()
    assert [r.lab_id for r, _ in result.removed] == [lab_id], result.lines()
    assert_nothing_left(host2, state, lab_id)


def test_a_host_lost_mid_bring_up_is_one_error_naming_it(
    tiny_iso: Path, token: str, state: Path
) -> None:
    backend = backend_at(state)
    lab_id = new_lab_id()
    try:
        with second_host(token) as host2:
            lab = multihost.create_lab(
                backend,
                lab_resources(2, lab_id, cdrom=tiny_iso),
                lab_hosts(host2),
                {"node-0": HERE, "node-1": host2.token},
            )
            uri = host2.uri
        # the second host is gone (its daemons, namespace and objects)
        with pytest.raises(BackendError) as caught:
            lab.power_on("node-1")
        assert str(caught.value).startswith(f"host {token} ({uri}): ")
        lab.power_off("node-0")  # the first host's machines are unaffected

        with pytest.raises(LeakError) as leak:
            backend.destroy_lab(lab_id)
        assert f"could not remove everything on {token};" in str(leak.value)
        assert objects(SYSTEM_URI, lab_id) == set() and vxlans([], lab_id) == {}
        assert (state / "labs" / lab_id / "hosts.json").exists()  # for the next gc
    finally:
        backend.close()


def test_a_part_on_a_host_elsewhere_keeps_its_files_there(
    host2: SecondHost, tiny_iso: Path, state: Path
) -> None:
    """The second host's part in remote-files mode, as a qemu+ssh:// host's would be: its
    disks in a pool there, the ISO uploaded to its image cache, its console over libvirt's
    stream."""
    backend = backend_at(state)
    lab_id = new_lab_id()
    here, there = lab_hosts(host2)
    hosts = [here, dataclasses.replace(there, remote_files=True)]
    try:
        lab = multihost.create_lab(
            backend,
            lab_resources(2, lab_id, cdrom=tiny_iso),
            hosts,
            {"node-0": host2.token, "node-1": HERE},
        )
        transport = lab.console("node-0")
        try:
            lab.power_on("node-0", before_resume=lambda _: transport.connect())
            read_until(transport, READY)
        finally:
            transport.close()
        conn = libvirt.open(host2.uri)
        try:
            xml = conn.lookupByName(f"stx-t-{lab_id}-node-0").XMLDesc(0)
        finally:
            conn.close()
        devices = ET.fromstring(xml).find("devices")
        assert devices is not None
        sources = [s.get("file", "") for s in devices.iterfind("disk/source")]
        assert sources[-1].startswith("/var/lib/libvirt/images/stx-image-cache/")  # the CD
        assert all(s.startswith("/var/lib/libvirt/images/") for s in sources)  # on that host
        assert [s.get("type") for s in devices.iterfind("serial")] == ["pty"]  # its stream
    finally:
        backend.destroy_lab(lab_id)
        backend.close()
    assert_nothing_left(host2, state, lab_id)
