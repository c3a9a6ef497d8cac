"""The simulator's SSH server run on this host without a VM: the built image's root filesystem
(as install-to-disk leaves it on a node's disk), entered with chroot, its sshd in a private
network namespace. Shared by the sshd tests and the SSH client tests (fixtures ``archive``,
``image``, ``server`` in conftest.py); needs root (mounts, chroot, network namespaces)."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

HOSTNAME = "controller-0"
#: Runs "$@" chrooted into the image as init and install-to-disk leave it: /proc, /dev with
#: its own ptys (sshd's sessions), the node's hostname. The mounts stay in the private mount
#: namespace ``unshare`` makes.
IN_IMAGE = """set -e
root=$1; shift
mount -t proc proc "$root/proc"
mount -o bind /dev "$root/dev"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
mount -o bind "$root/dev/pts/ptmx" "$root/dev/ptmx"
hostname -F "$root/etc/hostname"
exec chroot "$root" "$@"
"""


def in_image(root: Path, *argv: str, netns: str | None = None) -> list[str]:
    """The command line running ``argv`` inside the image (in network namespace ``netns``)."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return [*prefix, "unshare", "--mount", "--uts", "--propagation", "private",
            "sh", "-c", IN_IMAGE, "sh", str(root), *argv]  # fmt: skip


def run_in_image(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(in_image(root, *argv), capture_output=True, text=True, check=False)


@dataclass
class Image:
    """The ISO's root filesystem, unpacked as install-to-disk leaves it on a node's disk."""

    root: Path
    password: str  # sysadmin's, set by the test (the image's own is the forced-change one)

    def set_sysadmin(self, password: str, last_change: int) -> None:
        """sysadmin's shadow entry: ``password``, changed on day ``last_change`` (0: expired)."""
        hashed = sha512_crypt(password)
        shadow = self.root / "etc" / "shadow"
        lines = []
        for line in shadow.read_text().splitlines():
            fields = line.split(":")
            if fields[0] == "sysadmin":
                fields[1:3] = [hashed, str(last_change)]
            lines.append(":".join(fields))
        shadow.write_text("\n".join(lines) + "\n")

    def shadow_entry(self, user: str) -> list[str]:
        lines = (self.root / "etc" / "shadow").read_text().splitlines()
        return next(line.split(":") for line in lines if line.startswith(f"{user}:"))

    def auth_log(self) -> str:
        log = self.root / "var" / "log" / "auth.log"
        return log.read_text(errors="replace") if log.exists() else ""


def sha512_crypt(password: str) -> str:
    """A shadow hash of ``password`` (the password goes through stdin, not argv)."""
    done = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def today() -> int:
    """Today as shadow counts days (since the epoch, UTC)."""
    return int(time.time() // 86400)


@dataclass
class Server:
    """The image's sshd, listening on port 22 in network namespace ``netns`` (loopback only);
    ``known_hosts`` pins its host keys for 127.0.0.1."""

    image: Image
    netns: str
    known_hosts: Path
