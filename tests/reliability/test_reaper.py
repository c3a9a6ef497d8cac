"""stx-lab gc on real libvirt: what it removes, and what it must leave alone."""

from __future__ import annotations

import contextlib
import os
import secrets
import string
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import libvirt
import pytest
from conftest import host_of, stx_lab

from pytest_starlingx.backends.base import OWNER_NAMESPACE, Owner
from pytest_starlingx.lifecycle.leases import LeaseKeeper
from pytest_starlingx.lifecycle.state import LabState
from pytest_starlingx.ownership import Holder, process_start


def _lab_id() -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(6))


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _domain(name: str, owner: Owner | None) -> str:
    root = ET.Element("domain", type="qemu")
    ET.SubElement(root, "name").text = name
    if owner is not None:
        ET.SubElement(ET.SubElement(root, "metadata"), f"{{{OWNER_NAMESPACE}}}owner",
                      owner.as_attributes())  # fmt: skip
    ET.SubElement(root, "memory", unit="MiB").text = "16"
    ET.SubElement(ET.SubElement(root, "os"), "type", arch="x86_64").text = "hvm"
    return ET.tostring(root, encoding="unicode")


def _network(name: str, bridge: str) -> str:
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "bridge", name=bridge)
    return ET.tostring(root, encoding="unicode")


@pytest.fixture
def conn() -> Iterator[libvirt.virConnect]:
    connection = libvirt.open("qemu:///system")
    yield connection
    connection.close()


def _names(conn: libvirt.virConnect) -> set[str]:
    return {d.name() for d in conn.listAllDomains()} | {n.name() for n in conn.listAllNetworks()}


def test_gc_removes_orphans_and_leaves_the_rest(conn, state_dir):
    ids = {k: _lab_id() for k in ("foreign", "orphan", "alive", "kept", "leased")}
    name = {k: f"stx-simplex-{i}-controller-0" for k, i in ids.items()}
    dead = _dead_pid()
    here = host_of(state_dir)  # other sessions' gc leaves the labs to the test's own

    def owner(key: str, pid: int) -> Owner:
        return Owner("simplex", ids[key], here, pid, state_dir=str(state_dir))

    foreign_net = f"stx-simplex-{ids['foreign']}-mgmt"
    conn.defineXML(_domain(name["foreign"], None))  # named like ours, no owner record
    conn.networkDefineXML(_network(foreign_net, f"stx{ids['foreign']}n0"))
    try:
        conn.defineXML(_domain(name["orphan"], owner("orphan", dead)))
        conn.defineXML(_domain(name["alive"], owner("alive", os.getpid())))
        for key in ("kept", "leased"):
            conn.defineXML(_domain(name[key], owner(key, dead)))
            state = LabState(ids[key], "simplex", "simplex", "libvirt", owner_pid=dead,
                             owner_host=here, status="ready", kept=key == "kept")  # fmt: skip
            state.save()
        keeper = LeaseKeeper(Holder(here, os.getpid(), process_start(os.getpid())))
        keeper.take(state_dir / "labs" / ids["leased"], "test")

        listed = stx_lab("list", state=state_dir, own_host=True)
        assert listed.returncode == 0, listed.stderr
        for key in ("orphan", "alive", "kept", "leased"):
            assert ids[key] in listed.stdout
        assert ids["foreign"] not in listed.stdout

        result = stx_lab("gc", state=state_dir, own_host=True)
        assert result.returncode == 0, result.stderr
        left = _names(conn)
        assert name["orphan"] not in left
        assert f"removed lab 'simplex' (id {ids['orphan']})" in result.stdout
        for key in ("foreign", "alive", "kept", "leased"):
            assert name[key] in left, (key, result.stdout)
        assert foreign_net in left

        keeper.release(state_dir / "labs" / ids["leased"])
        keeper.stop()
        result = stx_lab("gc", state=state_dir, own_host=True)
        assert name["leased"] not in _names(conn), result.stdout
        assert not (state_dir / "labs" / ids["leased"]).exists()
        assert name["kept"] in _names(conn)
        down = stx_lab("down", ids["kept"], state=state_dir, own_host=True)
        assert down.returncode == 0, down.stderr
    finally:
        for key in ("foreign", "alive", "kept", "orphan", "leased"):
            with contextlib.suppress(libvirt.libvirtError):
                conn.lookupByName(name[key]).undefine()
        conn.networkLookupByName(foreign_net).undefine()
