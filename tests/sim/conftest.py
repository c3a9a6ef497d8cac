"""Fixtures for simulator boots under libvirt (software emulation): ISO, work dir, nodes."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from simvm import URI, Node, NodeSpec, isolated_network, remove_orphans, unique_prefix

from pytest_starlingx.sim import build

NodeFactory = Callable[..., Node]


@pytest.fixture(scope="session")
def sim_conn() -> Iterator[libvirt.virConnect]:
    conn = libvirt.open(URI)
    yield conn
    conn.close()


@pytest.fixture(scope="session")
def sim_workdir() -> Iterator[Path]:
    """Runtime files, reachable by QEMU running as libvirt-qemu (not under a 0700 dir)."""
    path = Path(tempfile.mkdtemp(prefix="stxsimtest-", dir="/var/tmp"))
    os.chmod(path, 0o777)  # QEMU creates the console sockets here
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def sim_iso(sim_workdir: Path) -> Path:
    """The simulator ISO (built or from the cache), copied where QEMU can read it."""
    iso = sim_workdir / build.ISO_NAME
    shutil.copyfile(build.build(), iso)
    return iso


@pytest.fixture(scope="session")
def sim_prefix(sim_conn: libvirt.virConnect) -> str:
    """This session's name prefix; what killed sessions left is removed first."""
    remove_orphans(sim_conn)
    return unique_prefix()


@pytest.fixture(scope="module")
def lab_networks(sim_conn: libvirt.virConnect, sim_prefix: str) -> Iterator[list[str]]:
    """Two isolated networks: OAM (first NIC) and management (second NIC)."""
    nets = []
    try:
        for role in ("oam", "mgmt"):
            nets.append(isolated_network(sim_conn, f"{sim_prefix}-{role}"))
        yield [n.name() for n in nets]
    finally:
        for net in nets:
            with contextlib.suppress(libvirt.libvirtError):
                net.destroy()


@pytest.fixture(scope="module")
def make_node(
    sim_conn: libvirt.virConnect,
    sim_workdir: Path,
    sim_prefix: str,
    lab_networks: list[str],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[NodeFactory]:
    """Start transient nodes on the lab networks; all are destroyed with the module.

    Console transcripts stay in pytest's temp dir (``consoles*``) for post-mortems.
    """
    transcripts = tmp_path_factory.mktemp("consoles")
    nodes: list[Node] = []

    def make(name: str, **kwargs: object) -> Node:
        kwargs.setdefault("networks", lab_networks)
        spec = NodeSpec(name=f"{sim_prefix}-{name}", workdir=sim_workdir, **kwargs)  # type: ignore[arg-type]
        node = Node(sim_conn, spec, transcripts)
        nodes.append(node)
        return node

    yield make
    for node in reversed(nodes):
        node.destroy()
