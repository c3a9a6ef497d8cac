"""The simulator's accounts: /etc/shadow checks and updates, and StarlingX's password policy.

sysadmin starts with password ``sysadmin`` and a last-change day of 0, which (as ``chage -d 0``
does on the real system) forces a change at the first login.
"""

from __future__ import annotations

import crypt
import os
import sys
import termios
import time

SHADOW = "/etc/shadow"
USER = "sysadmin"
MIN_LENGTH = 7


def _entries() -> list[list[str]]:
    with open(SHADOW, encoding="utf-8") as f:
        return [line.split(":") for line in f.read().splitlines() if line]


def _entry(user: str) -> list[str] | None:
    return next((e for e in _entries() if e[0] == user), None)


def verify(user: str, password: str) -> bool:
    """True when ``password`` is ``user``'s (only sysadmin can log in)."""
    entry = _entry(user)
    if user != USER or entry is None or not entry[1].startswith("$"):
        return False
    return crypt.crypt(password, entry[1]) == entry[1]


def must_change(user: str) -> bool:
    """True when the password was expired by the administrator (last change day 0)."""
    entry = _entry(user)
    return entry is not None and entry[2] == "0"


def set_password(user: str, password: str) -> None:
    """Store a new SHA-512 hash and today's change day, durably (fsync, atomic rename)."""
    entries = _entries()
    for e in entries:
        if e[0] == user:
            e[1] = crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
            e[2] = str(int(time.time() // 86400))
    tmp = SHADOW + "+"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write("".join(":".join(e) + "\n" for e in entries))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, SHADOW)
    os.sync()


def policy_error(new: str, old: str) -> str | None:
    """pam_pwquality's complaint about ``new`` under StarlingX's policy, or None.

    Policy (StarlingX docs): at least 7 characters, an upper-case letter, a digit and a
    non-alphanumeric character. The messages are pwquality's; its order of checks is assumed.
    """
    if new == old:
        return "The password is the same as the old one"
    if len(new) < MIN_LENGTH:
        return f"The password is shorter than {MIN_LENGTH} characters"
    if not any(c.isupper() for c in new):
        return "The password contains less than 1 uppercase letters"
    if not any(c.isdigit() for c in new):
        return "The password contains less than 1 digits"
    if all(c.isalnum() for c in new):
        return "The password contains less than 1 non-alphanumeric characters"
    return None


def read_line(fd: int, prompt: str, echo: bool = True) -> str:
    """Print ``prompt`` on ``fd`` and read one line (without echo for secrets); exit on EOF.

    Echo goes off before the prompt is printed, so a fast typist's secret is never echoed;
    typed-ahead input is kept (TCSADRAIN), as sudo does.
    """
    attrs = termios.tcgetattr(fd)
    if not echo:
        quiet = list(attrs)
        quiet[3] &= ~termios.ECHO
        termios.tcsetattr(fd, termios.TCSADRAIN, quiet)
    os.write(fd, prompt.encode())
    try:
        line = b""
        while not line.endswith(b"\n"):
            chunk = os.read(fd, 1024)
            if not chunk:
                sys.exit(1)
            line += chunk
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, attrs)
    if not echo:
        os.write(fd, b"\n")
    return line.decode(errors="replace").strip("\r\n")
