"""Record what a StarlingX ISO's UEFI boot menu sends to the serial port, for the console tests
(run by hand; needs QEMU, OVMF, xorriso, and Debian's grub-efi-amd64-bin, dosfstools and mtools).

    python record_grub_efi.py OUT.json

Builds a UEFI ISO as the simulator's build does (its GRUB image and efi.img, and the 10.0
``grub.cfg``: LAT's header around StarlingX's ``iso-grub-entry``) with any /boot/vmlinuz-* as
/bzImage-std and a dummy initrd, and boots it in QEMU under OVMF (Debian's ``ovmf``, loaded as a
ROM as the libvirt backend does; a VGA device, OVMF copying its console to the serial port):
power-on, then down, up, down, enter (the All-in-one submenu), enter (its Serial Console
entry: stops once GRUB has cleared the screen to boot it).

Each step's bytes are stored base64-encoded. A step ends at its marker plus up to 1.5 s of
quiet, at most 2.5 s (GRUB redraws its countdown every second until the first key).
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pexpect
from record_isolinux import drain, save  # the same steps: a marker, then quiet or settled

from pytest_starlingx.backends.libvirt import OVMF_ROM
from pytest_starlingx.sim import build

COUNTDOWN = b"executed automatically in"
ROWS_DRAWN = b"\x1b[06;03H"  # GRUB's move to the second entry's row, written on every redraw
KEYS = [("down", b"\x1b[B", ROWS_DRAWN), ("up", b"\x1b[A", ROWS_DRAWN),
        ("down", b"\x1b[B", ROWS_DRAWN), ("enter", b"\r", b"Graphical Console")]  # fmt: skip
BOOTING = b"\x1b[2J"  # GRUB clears the screen and boots (no "Booting" line inside a submenu)
QEMU = ["-accel", "tcg", "-m", "512", "-machine", "q35", "-bios", str(OVMF_ROM), "-nic", "none",
        "-display", "none", "-serial", "stdio", "-monitor", "none", "-vga", "std"]  # fmt: skip


def build_iso(tmp: Path) -> Path:
    root = tmp / "iso"
    loader = tmp / "bootx64.efi"
    build._grub_efi(loader)
    (root / "EFI/BOOT").mkdir(parents=True)
    shutil.copy(loader, root / "EFI/BOOT/bootx64.efi")
    shutil.copy(build.SIM_DIR / "releases/10.0/grub.cfg", root / "EFI/BOOT/grub.cfg")
    build._fat_image(root / build.EFI_BOOT_IMAGE, root / "EFI", "EFIimg")
    shutil.copy(sorted(Path("/boot").glob("vmlinuz-*"))[-1], root / "bzImage-std")
    (root / "initrd.img").write_bytes(bytes(4096))
    iso = tmp / "menu.iso"
    subprocess.run(
        ["xorriso", "-as", "mkisofs", "-o", str(iso), "-V", build.ISO_LABEL,
         "-eltorito-alt-boot", "-e", build.EFI_BOOT_IMAGE, "-no-emul-boot", str(root)],
        check=True,
    )  # fmt: skip
    return iso


def record(iso: Path) -> list[tuple[str, bytes]]:
    child = pexpect.spawn("qemu-system-x86_64", [*QEMU, "-cdrom", str(iso)], timeout=120)
    steps = [("boot", drain(child, COUNTDOWN))]
    for label, key, until in KEYS:
        child.send(key)
        steps.append((label, drain(child, until)))
    child.send(b"\r")
    steps.append(("enter", drain(child, BOOTING)))
    child.close(force=True)
    return steps


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        save(sys.argv[1], record(build_iso(Path(tmp))))


if __name__ == "__main__":
    main()
