"""A StarlingX (Debian era) serial console, played on a pty for the console layer's tests.

Login prompt, forced password change with a pwquality-like policy, a real bash behind the prompt
``sysadmin@localhost:~$ `` (which, like busybox ash, sends ``ESC[6n`` after it), a fake ``sudo``
asking ``[sudo] password for sysadmin:``, and optional kernel messages written straight to the
terminal, as printk does on a serial console.
"""

from __future__ import annotations

import argparse
import getpass
import os
import select
import signal
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

SUDO = """#!/bin/sh
stored=$(cat "$FAKE_STX_STATE/password")
stty -echo < /dev/tty; printf '[sudo] password for sysadmin: ' > /dev/tty
read -r given < /dev/tty; stty echo < /dev/tty; echo > /dev/tty
[ "$given" = "$stored" ] || { echo 'Sorry, try again.' > /dev/tty; exit 1; }
[ "$1" = "-i" ] && set -- bash --norc --noprofile -i
FAKE_USER=root PS1='root@localhost:~# ' exec "$@"
"""
# The tests run as whatever user; the console sees the user it would on StarlingX.
ID = """#!/bin/sh
[ "$1" = "-un" ] && { echo "${FAKE_USER:-sysadmin}"; exit 0; }
exec /usr/bin/id "$@"
"""


def out(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def policy_problem(password: str) -> str | None:
    """pam_pwquality-like checks, with its messages."""
    if len(password) < 8:
        return "BAD PASSWORD: The password is shorter than 8 characters"
    if not any(c.isdigit() for c in password) or not any(c.isupper() for c in password):
        return "BAD PASSWORD: The password contains less than 1 digits"
    return None


def change_password(state: Path) -> bool:
    stored = (state / "password").read_text()
    out("You are required to change your password immediately (administrator enforced).\n")
    out("Changing password for sysadmin.\n")
    if getpass.getpass("Current password: ") != stored:
        out("passwd: Authentication token manipulation error\n")
        return False
    for _ in range(3):
        new = getpass.getpass("New password: ")
        problem = policy_problem(new)
        if problem:
            out(problem + "\n")
            continue
        if getpass.getpass("Retype new password: ") != new:
            out("Sorry, passwords do not match.\n")
            continue
        (state / "password").write_text(new)
        (state / "forced").unlink(missing_ok=True)
        return True
    out("passwd: Have exhausted maximum number of retries for service\n")
    return False


def shell(state: Path) -> None:
    """Run bash on this terminal until it exits; Ctrl-C reaches bash's jobs, not us. With a
    ``readonly-tmout`` file, TMOUT is readonly with its value, as StarlingX 11.0's custom.sh
    makes it."""
    env = dict(os.environ)
    env.update(
        PS1="sysadmin@localhost:~$ \\[\\033[6n\\]",
        PATH=f"{state / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
        FAKE_STX_STATE=str(state),
        HOME=str(state),
        TMOUT="900",
    )
    previous = signal.signal(signal.SIGINT, lambda *_: None)  # reset to default in bash's jobs
    try:
        readonly = state / "readonly-tmout"
        if readonly.exists():
            rc = state / "bashrc"
            rc.write_text(f"readonly TMOUT={readonly.read_text()} ; export TMOUT\n")
            argv = ["bash", "--rcfile", str(rc), "--noprofile", "-i"]
        else:
            argv = ["bash", "--norc", "--noprofile", "-i"]
        subprocess.run(argv, env=env, check=False)
    finally:
        signal.signal(signal.SIGINT, previous)


def login_loop(state: Path) -> None:
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C restarts the dialog
    while True:
        try:
            user = input("localhost login: ").strip()
            if not user:
                continue
            password = getpass.getpass("Password: ")
        except KeyboardInterrupt:
            out("\n")
            continue
        except EOFError:
            return
        if user != "sysadmin" or password != (state / "password").read_text():
            out("\nLogin incorrect\n")
            continue
        if (state / "forced").exists() and not change_password(state):
            continue
        out("Last login: Tue Nov 25 17:31:56 UTC 2026 on ttyS0\n")
        shell(state)


def kernel_messages(every: float) -> None:
    """printk on the serial console: whole lines, written whenever, between anything."""
    tick = threading.Event()
    n = 0
    while not tick.wait(every):
        n += 1
        os.write(1, f"[ {100 + n * every:11.6f}] eth1000: link flapped ({n})\r\n".encode())


def pause_boot(seconds: float, state: Path) -> None:
    """A boot silent for ``seconds`` after the kernel's last line; then, as agetty, drop what was
    typed meanwhile, and keep it in ``typeahead`` for the test to see."""
    time.sleep(seconds)
    typed = b""
    while select.select([0], [], [], 0)[0]:
        typed += os.read(0, 1024)
    (state / "typeahead").write_bytes(typed)
    termios.tcflush(0, termios.TCIFLUSH)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--password", default="sysadmin")
    parser.add_argument("--forced", action="store_true", help="first login forces a change")
    parser.add_argument("--shell", action="store_true", help="start logged in")
    parser.add_argument("--kmsg", type=float, default=0.0, help="kernel message every N s")
    parser.add_argument("--boot-pause", type=float, default=0.0, help="silent boot for N s")
    parser.add_argument("--readonly-tmout", type=int, default=0, help="readonly TMOUT=N")
    args = parser.parse_args()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a booting machine shrugs off Ctrl-C
    state: Path = args.state
    (state / "bin").mkdir(parents=True, exist_ok=True)
    for name, text in (("sudo", SUDO), ("id", ID)):
        (state / "bin" / name).write_text(text)
        (state / "bin" / name).chmod(0o755)
    (state / "password").write_text(args.password)
    if args.forced:
        (state / "forced").touch()
    if args.readonly_tmout:
        (state / "readonly-tmout").write_text(str(args.readonly_tmout))
    if args.kmsg:
        threading.Thread(target=kernel_messages, args=(args.kmsg,), daemon=True).start()
    out("[    0.000000] Linux version 6.1.0-28-amd64 (debian-kernel@lists.debian.org)\n")
    if args.boot_pause:
        pause_boot(args.boot_pause, state)
    out("Debian GNU/Linux 11 localhost ttyS0\n\n")
    if args.shell:
        shell(state)
    login_loop(state)


if __name__ == "__main__":
    main()
