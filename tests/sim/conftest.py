"""Fixtures for simulator boots under libvirt (software emulation): ISO, work dir, nodes; and
for the image's sshd run on this host without a VM (``archive``, ``image``, ``server``)."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import libvirt
import pytest
from simvm import URI, Node, NodeSpec, isolated_network, remove_orphans, unique_prefix
from sshd_host import HOSTNAME, Image, Server, in_image, run_in_image, today

from pytest_starlingx.sim import build
from pytest_starlingx.waits import Deadline, poll

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


# ---- the image's sshd on this host, without a VM (sshd_host.py)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root filesystem archive of the simulator ISO (``/stx/rootfs.tgz``)."""
    out = tmp_path_factory.mktemp("iso") / "rootfs.tgz"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(build.build()),
                    "-extract", "/stx/rootfs.tgz", str(out)],
                   capture_output=True, check=True)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def image(archive: Path) -> Iterator[Image]:
    """The image's root filesystem with host keys made as install-to-disk makes them, the
    hostname a bootstrapped controller-0 has, and a known password for sysadmin."""
    with tempfile.TemporaryDirectory(prefix="stxsim-sshd-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # as the disk's root directory: sysadmin's sessions pass through
        subprocess.run(["tar", "-xzpf", str(archive), "-C", tmp, "--numeric-owner"], check=True)
        keygen = run_in_image(root, "/usr/bin/ssh-keygen", "-A")
        assert keygen.returncode == 0, keygen.stderr
        (root / "etc" / "hostname").write_text(f"{HOSTNAME}\n")
        img = Image(root, f"Sim-{secrets.token_urlsafe(12)}-7q")
        img.set_sysadmin(img.password, today())
        yield img


@pytest.fixture(scope="module")
def server(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The image's sshd, started as rc.sysinit starts it (in the foreground: ``-D``), alone in
    a new network namespace with only loopback up."""
    netns = f"stxsim-sshd-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    sshd = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        sshd = subprocess.Popen(in_image(image.root, "/usr/lib/stx-sim/sshd", "-D", netns=netns),
                                stdin=subprocess.DEVNULL)  # fmt: skip

        def listening() -> bool:
            assert sshd is not None and sshd.poll() is None, f"sshd exited: {image.auth_log()}"
            return "Server listening on 0.0.0.0 port 22." in image.auth_log()

        poll(listening, Deadline(30), "sshd to listen", poll_every=0.1)
        known_hosts = tmp_path_factory.mktemp("ssh") / "known_hosts"
        keys = sorted((image.root / "etc" / "ssh").glob("ssh_host_*_key.pub"))
        known_hosts.write_text("".join(
            "127.0.0.1 " + " ".join(key.read_text().split()[:2]) + "\n" for key in keys
        ))  # fmt: skip
        yield Server(image, netns, known_hosts)
    finally:
        if sshd is not None:
            sshd.terminate()
            sshd.wait(timeout=30)
        left = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
        for pid in left.stdout.split():  # sessions of ours still closing
            os.kill(int(pid), signal.SIGTERM)
        subprocess.run(["ip", "netns", "delete", netns], check=True)
