"""Record ISOLINUX's serial menu output for the screen tests (run by hand; needs QEMU, xorriso and
Debian's isolinux and syslinux-common packages).

    python record_isolinux.py OUT_CLEAN.json OUT_DOUBLED.json

Builds a BIOS ISO from isolinux-10.0.cfg next to this file (the menu StarlingX 10.0 writes), with
any /boot/vmlinuz-* as /bzImage-std (only loaded at the very end), and boots it twice in QEMU:

* clean: a VGA device and no SeaBIOS serial console (as StarlingX's libvirt templates): power-on,
  then esc, down, up, down, enter, down, up, enter (boots label 3; stops at its Loading lines);
* doubled: no video and ``graphics=off`` (libvirt's ``<bios useserial='yes'/>``), so SeaBIOS
  copies the screen to the serial port too: power-on only.

Each step's bytes are stored base64-encoded. A step ends when the output has been quiet for
1.5 s or 2.5 s after its marker, whichever comes first (the countdown redraws every second).
"""

import base64
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pexpect

MODULES = Path("/usr/lib/syslinux/modules/bios")
QUIET, SETTLE = 1.5, 2.5
END_OF_DRAW = b"\x1b[29;1H"  # vesamenu's last move after drawing rows and help area
KEYS = [("esc", b"\x1b", b"Select kernel options and boot kernel"),
        ("down", b"\x1b[B", END_OF_DRAW), ("up", b"\x1b[A", END_OF_DRAW),
        ("down", b"\x1b[B", END_OF_DRAW), ("enter", b"\r", END_OF_DRAW),
        ("down", b"\x1b[B", END_OF_DRAW), ("up", b"\x1b[A", END_OF_DRAW)]  # fmt: skip
LOADED = b"Loading /initrd.img...ok\r\r\n"
QEMU = ["-accel", "tcg", "-m", "256", "-display", "none", "-serial", "stdio", "-monitor", "none"]
CLEAN = ["-vga", "std"]
DOUBLED = ["-vga", "none", "-machine", "graphics=off"]


def build_iso(tmp: Path) -> Path:
    root = tmp / "iso"
    (root / "isolinux").mkdir(parents=True)
    shutil.copy("/usr/lib/ISOLINUX/isolinux.bin", root / "isolinux")
    for name in ("ldlinux.c32", "vesamenu.c32", "libcom32.c32", "libutil.c32"):
        shutil.copy(MODULES / name, root / "isolinux")
    shutil.copy(Path(__file__).with_name("isolinux-10.0.cfg"), root / "isolinux" / "isolinux.cfg")
    shutil.copy(sorted(Path("/boot").glob("vmlinuz-*"))[-1], root / "bzImage-std")
    (root / "initrd.img").write_bytes(bytes(4096))
    iso = tmp / "menu.iso"
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-o", str(iso), "-b", "isolinux/isolinux.bin",
         "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
         str(root)],
        check=True,
    )  # fmt: skip
    return iso


def drain(child: pexpect.spawn, until: bytes, settle: bool = True) -> bytes:
    """Output up to `until`, then on until quiet for QUIET s or SETTLE s have passed."""
    data = b""  # read_nonblocking only: expect() would keep the bytes past its match twice
    while until not in data:
        data += child.read_nonblocking(4096, timeout=60)
    if not settle:
        return data[: data.index(until) + len(until)]
    end = time.monotonic() + SETTLE
    while (left := end - time.monotonic()) > 0:
        try:
            data += child.read_nonblocking(4096, timeout=min(QUIET, left))
        except pexpect.TIMEOUT:
            break
    return data


def record(iso: Path, video: list[str], keys: bool) -> list[tuple[str, bytes]]:
    args = [*QEMU, *video, "-cdrom", str(iso), "-boot", "d"]
    child = pexpect.spawn("qemu-system-x86_64", args, timeout=60)
    steps = [("boot", drain(child, b"seconds..."))]
    if keys:
        for label, key, until in KEYS:
            child.send(key)
            steps.append((label, drain(child, until)))
        child.send(b"\r")
        steps.append(("enter", drain(child, LOADED, settle=False)))
    child.close(force=True)
    return steps


def save(path: str, steps: list[tuple[str, bytes]]) -> None:
    Path(path).write_text(
        json.dumps([(label, base64.b64encode(d).decode()) for label, d in steps], indent=1)
    )


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        iso = build_iso(Path(tmp))
        save(sys.argv[1], record(iso, CLEAN, keys=True))
        save(sys.argv[2], record(iso, DOUBLED, keys=False))


if __name__ == "__main__":
    main()
