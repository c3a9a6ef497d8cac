"""Record GRUB's serial menu output for test_screen.py (run by hand; needs QEMU and grub-mkrescue).

    python record_grub.py OUT.json   # builds an ISO from grub.cfg next to this file

Power-on, then down, down, up, Enter, down, Enter; each step's bytes are stored base64-encoded.
"""

import base64
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pexpect

KEYS = [("down", b"\x1b[B"), ("down", b"\x1b[B"), ("up", b"\x1b[A"), ("enter", b"\r"),
        ("down", b"\x1b[B"), ("enter", b"\r")]  # fmt: skip


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        grub = Path(tmp, "iso", "boot", "grub")
        grub.mkdir(parents=True)
        shutil.copy(Path(__file__).with_name("grub.cfg"), grub / "grub.cfg")
        iso = Path(tmp, "menu.iso")
        subprocess.run(["grub-mkrescue", "-o", str(iso), str(grub.parents[1])], check=True)
        child = pexpect.spawn(
            "qemu-system-x86_64",
            ["-nographic", "-m", "256", "-cdrom", str(iso), "-boot", "d", "-serial", "mon:stdio"],
            timeout=60,
        )
        steps = []

        def drain(label: str, until: bytes) -> None:
            child.expect_exact(until)
            data = child.before + child.after + child.buffer  # all, even past the match
            child.buffer = b""
            while True:
                try:
                    data += child.read_nonblocking(4096, timeout=1.5)
                except pexpect.TIMEOUT:
                    break
            steps.append((label, data))

        drain("boot", b"executed automatically in")
        for label, key in KEYS:
            child.send(key)
            drain(label, b"\x1b[m")
        child.kill(9)
    Path(sys.argv[1]).write_text(
        json.dumps([(label, base64.b64encode(d).decode()) for label, d in steps], indent=1)
    )


if __name__ == "__main__":
    main()
