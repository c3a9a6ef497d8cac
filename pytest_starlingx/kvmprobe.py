"""Does hardware virtualisation really work here? Ask a real guest, not ``/dev/kvm``.

On some hosts ``/dev/kvm`` exists and even runs trivial code, yet a Linux guest hangs under
KVM without printing a byte. So the probe boots the host's own Linux kernel under
``-accel kvm`` and waits for its first console line; the answer is cached per host boot.
"""

from __future__ import annotations

import glob
import json
import os
import select
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

QEMU = "qemu-system-x86_64"
PROBE_TIMEOUT = 10.0
_BANNER = b"Linux version"


@dataclass(frozen=True)
class KvmProbe:
    """Whether KVM works, and why not when it does not."""

    works: bool
    reason: str


def cache_dir() -> Path:
    """The user's cache directory for pytest-starlingx."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "pytest-starlingx"


def kvm_works(refresh: bool = False) -> KvmProbe:
    """:func:`probe_kvm`, remembered until the host reboots."""
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    cached = cache_dir() / f"kvm-probe-{boot_id}.json"
    if not refresh and cached.exists():
        return KvmProbe(**json.loads(cached.read_text()))
    result = probe_kvm()
    cached.parent.mkdir(parents=True, exist_ok=True)
    cached.write_text(json.dumps(asdict(result)))
    return result


def probe_kvm(timeout: float = PROBE_TIMEOUT) -> KvmProbe:
    """Boot the host's kernel under KVM and report whether it printed its banner in time."""
    if not os.path.exists("/dev/kvm"):
        return KvmProbe(False, "/dev/kvm does not exist")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return KvmProbe(False, "/dev/kvm is not accessible to this user")
    qemu = shutil.which(QEMU)
    kernels = sorted(glob.glob("/boot/vmlinuz-*"))
    if qemu is None or not kernels:
        return KvmProbe(False, f"cannot probe: needs {QEMU} and a kernel in /boot")
    argv = [
        qemu, "-accel", "kvm", "-machine", "q35", "-m", "128", "-nodefaults",
        "-display", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", kernels[-1], "-append", "console=ttyS0 panic=-1",
    ]  # fmt: skip
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    try:
        seen = _read_until(child.stdout.fileno(), _BANNER, time.monotonic() + timeout)
    finally:
        child.kill()
        _, stderr = child.communicate()
    if seen:
        return KvmProbe(True, "a KVM guest booted")
    if child.returncode not in (None, -9):
        lines = stderr.decode(errors="replace").strip().splitlines()
        return KvmProbe(False, f"a KVM guest failed: {lines[-1] if lines else 'no output'}")
    return KvmProbe(False, f"a KVM guest printed nothing within {timeout:.0f} s (it hangs)")


def _read_until(fd: int, needle: bytes, deadline: float) -> bool:
    buffer = b""
    while (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buffer += chunk
        if needle in buffer:
            return True
    return False
