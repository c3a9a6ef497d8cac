"""``stx-lab host-setup``: install what labs need and start libvirt, without systemd.

Standard library only: this runs on a host where nothing else is installed yet.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from pytest_starlingx.errors import HostError

# QEMU and libvirt (daemon, client, headers for building libvirt-python), Python's venv and
# headers, and what the simulator guest build takes its kernel, busybox, ISOLINUX, GRUB and iPXE
# from.
HOST_PACKAGES: tuple[str, ...] = (
    "qemu-system-x86",
    "qemu-utils",
    "libvirt-daemon-system",
    "libvirt-clients",
    "libvirt-dev",
    "pkg-config",
    "gcc",
    "python3-dev",
    "python3-venv",
    "procps",
    "vde2",  # the VBoxManage emulator wires internal networks with vde_switch
    "mtools",  # grub-mkrescue, which the tests' small boot ISO is made with, may call mformat
    "ovmf",  # UEFI firmware for labs with `firmware: uefi`
    "slirp4netns",  # the way out of a NAT lab's gateway namespace (`oam.uplink: nat`)
    "nftables",  # its masquerading, in that namespace only (the host's tables are not touched)
)
LIBVIRT_SOCKET = Path("/run/libvirt/libvirt-sock")
DAEMONS: tuple[tuple[str, str], ...] = (
    ("virtlogd", "/usr/sbin/virtlogd"),
    ("libvirtd", "/usr/sbin/libvirtd"),
)
SOCKET_WAIT = 30.0
#: The simulator build copies sshd out of Debian's openssh-server, whose installation would
#: start an SSH server on the host: while this file exists neither Debian's ssh.service
#: (ConditionPathExists) nor /etc/init.d/ssh starts one.
SSHD_NOT_TO_BE_RUN = Path("/etc/ssh/sshd_not_to_be_run")


def required_packages() -> tuple[str, ...]:
    """Every Debian package the project needs on the host, the simulator build's included."""
    from pytest_starlingx.sim.build import BUILD_PACKAGES

    return tuple(dict.fromkeys((*HOST_PACKAGES, *BUILD_PACKAGES)))


def missing_packages(packages: tuple[str, ...]) -> list[str]:
    """The packages of ``packages`` that dpkg does not list as installed."""
    query = subprocess.run(
        ["dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\n", *packages],
        capture_output=True,
        text=True,
        check=False,
    )
    installed = {
        line.split()[0] for line in query.stdout.splitlines() if line.endswith(" installed")
    }
    return [p for p in packages if p not in installed]


def host_setup() -> Iterator[str]:
    """Install missing packages and start the daemons; yields one line per thing done."""
    missing = missing_packages(required_packages())
    if missing:
        _require_root(f"install {' '.join(missing)}")
        if "openssh-server" in missing:
            SSHD_NOT_TO_BE_RUN.parent.mkdir(parents=True, exist_ok=True)
            SSHD_NOT_TO_BE_RUN.touch()
            yield f"created {SSHD_NOT_TO_BE_RUN}: the new openssh-server starts no sshd here"
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        yield f"installing {len(missing)} Debian packages: {' '.join(missing)}"
        _run(["apt-get", "update", "-qq"], env)
        _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env)
    else:
        yield "Debian packages: all installed"
    for name, binary in DAEMONS:
        if _running(name):
            yield f"{name}: already running"
            continue
        _require_root(f"start {name}")
        _run([binary, "--daemon"], dict(os.environ))
        yield f"{name}: started"
    _wait_for_socket()
    yield f"libvirt: answering on {LIBVIRT_SOCKET}"


def restart_libvirtd() -> None:
    """Stop libvirtd and start it again (guests keep running): systemd's way, or ours."""
    _require_root("restart libvirtd")
    if Path("/run/systemd/system").is_dir():
        _run(["systemctl", "restart", "libvirtd"], dict(os.environ))
    else:
        for pid in _pids("libvirtd"):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + SOCKET_WAIT
        while _running("libvirtd"):
            if time.monotonic() > deadline:
                raise HostError(f"libvirtd did not exit within {SOCKET_WAIT:.0f} s of SIGTERM")
            time.sleep(0.2)
        _run([dict(DAEMONS)["libvirtd"], "--daemon"], dict(os.environ))
    _wait_for_socket()


def _pids(name: str) -> list[int]:
    found = subprocess.run(["pgrep", "-x", name], capture_output=True, text=True, check=False)
    return [int(pid) for pid in found.stdout.split()]


def _running(name: str) -> bool:
    return bool(_pids(name))


def _require_root(what: str) -> None:
    if os.geteuid() != 0:
        raise HostError(f"need root to {what}: run `sudo stx-lab host-setup`")


def _run(argv: list[str], env: dict[str, str]) -> None:
    if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
        raise HostError(f"{argv[0]} is not available on this host (is it Debian?)")
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-10:])
        raise HostError(f"`{' '.join(argv)}` failed with exit status {done.returncode}:\n{tail}")


def _wait_for_socket() -> None:
    deadline = time.monotonic() + SOCKET_WAIT
    while not LIBVIRT_SOCKET.exists():
        if time.monotonic() > deadline:
            raise HostError(
                f"libvirtd started but {LIBVIRT_SOCKET} did not appear within {SOCKET_WAIT:.0f} s;"
                " see /var/log/libvirt/libvirtd.log"
            )
        time.sleep(0.2)
