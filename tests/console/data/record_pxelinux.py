"""Record what a network-booting StarlingX node shows on its serial port, for the console tests
(run by hand; needs QEMU with its iPXE ROMs and Debian's pxelinux and syslinux-common packages).

    python record_pxelinux.py OUT.json

Serves a TFTP root as StarlingX's controller-0 does (starlingx/metal pxe-network-installer:
pxelinux.0 and the menu modules, metal's ``default`` as ``pxelinux.cfg/default``) from QEMU's
own user-mode network (``restrict=on``: nothing leaves the guest but DHCP and TFTP), and boots a
diskless VM from it: a VGA device, no SeaBIOS serial console. Steps:

* boot: metal's "Waiting for this node to be configured." menu and its first countdown tick;
* enter (once ``pxelinux.cfg/01-<mac>`` is there, metal's worker template filled as sysinv
  does): pxelinux reloads and shows that menu ("Worker") and its first tick;
* enter: it loads the kernel (any /boot/vmlinuz-*) and initrd; stops at the kernel's load.

Each step's bytes are stored base64-encoded; a step ends at its marker plus up to 1.5 s of
further output.
"""

import base64
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pexpect

SIM = Path(__file__).resolve().parents[3] / "pytest_starlingx" / "sim"
MODULES = Path("/usr/lib/syslinux/modules/bios")
MAC = "52:54:00:5a:4e:01"
QUIET = 1.5
OPTIONS = "instdev=/dev/sda console=ttyS0,115200 user_namespace.enable=1"
QEMU = ["-accel", "tcg", "-m", "256", "-display", "none", "-serial", "stdio", "-monitor", "none",
        "-vga", "std", "-boot", "n"]  # fmt: skip


def tftp_root(tmp: Path) -> Path:
    root = tmp / "pxeboot"
    (root / "pxelinux.cfg").mkdir(parents=True)
    (root / "rel-24.09").mkdir()
    shutil.copy("/usr/lib/PXELINUX/pxelinux.0", root)
    for name in ("ldlinux.c32", "menu.c32", "libcom32.c32", "libutil.c32"):
        shutil.copy(MODULES / name, root)
    shutil.copy(SIM / "pxe-network-installer" / "default", root / "pxelinux.cfg" / "default")
    shutil.copy(sorted(Path("/boot").glob("vmlinuz-*"))[-1], root / "rel-24.09" / "bzImage-std")
    (root / "rel-24.09" / "initrd").write_bytes(bytes(4096))
    return root


def configure(root: Path) -> None:
    """What sysinv writes for a worker: metal's template through pxeboot-update.sh's sed."""
    template = (SIM / "pxe-network-installer" / "debian-pxe-worker-install").read_text()
    text = template.replace("xxxSW_VERSIONxxx", "24.09").replace("xxxAPPEND_OPTIONSxxx", OPTIONS)
    text = text.replace("xxxBASE_URLxxx", "http://pxecontroller:8080")
    (root / "pxelinux.cfg" / f"01-{MAC.replace(':', '-')}").write_text(text)


def drain(child: pexpect.spawn, until: bytes, count: int = 1) -> bytes:
    """Output up to the ``count``-th ``until``, then on until quiet for QUIET s."""
    data = b""  # read_nonblocking only: expect() would keep the bytes past its match twice
    while data.count(until) < count:
        data += child.read_nonblocking(4096, timeout=120)
    end = time.monotonic() + QUIET
    while (left := end - time.monotonic()) > 0:
        try:
            data += child.read_nonblocking(4096, timeout=left)
        except pexpect.TIMEOUT:
            break
    return data


def record(root: Path) -> list[tuple[str, bytes]]:
    net = f"user,id=n0,restrict=on,tftp={root},bootfile=pxelinux.0"
    args = [*QEMU, "-netdev", net, "-device", f"virtio-net-pci,netdev=n0,mac={MAC}"]
    child = pexpect.spawn("qemu-system-x86_64", args, timeout=120)
    steps = [("boot", drain(child, b"Automatic retry in"))]
    configure(root)
    child.send(b"\r")
    steps.append(("enter", drain(child, b"Automatic boot in")))
    child.send(b"\r")
    steps.append(("enter", drain(child, b"Loading rel-24.09/initrd")))
    child.close(force=True)
    return steps


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        steps = record(tftp_root(Path(tmp)))
    Path(sys.argv[1]).write_text(
        json.dumps([(label, base64.b64encode(d).decode()) for label, d in steps], indent=1)
    )


if __name__ == "__main__":
    main()
