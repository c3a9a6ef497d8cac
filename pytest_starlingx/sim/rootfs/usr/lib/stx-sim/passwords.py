"""The simulator's accounts: /etc/shadow checks and updates, and the release's password policy.

sysadmin starts with password ``sysadmin`` and a last-change day of 0, which (as ``chage -d 0``
does on the real system) forces a change at the first login.
"""

from __future__ import annotations

import contextlib
import crypt
import os
import sys
import termios
import time

import pwquality

COMMON_PASSWORD = "/etc/pam.d/common-password"
SHADOW = "/etc/shadow"
USER = "sysadmin"


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


def pwquality_options() -> list[str]:
    """The options of the ``pam_pwquality.so`` line in /etc/pam.d/common-password (the
    release's rules up to 10.0; 11.0 keeps only ``retry=`` there)."""
    with open(COMMON_PASSWORD, encoding="utf-8") as f:
        for line in f:
            words = line.split()
            if len(words) > 2 and words[0] == "password" and words[2] == "pam_pwquality.so":
                return words[3:]
    return []


def retries() -> int:
    """How many new passwords one change may try (pam_pwquality's ``retry=``, default 1)."""
    tries = [o.split("=", 1)[1] for o in pwquality_options() if o.startswith("retry=")]
    return int(tries[-1]) if tries else 1


def policy_error(new: str, old: str | None, user: str) -> str | None:
    """libpwquality's complaint about ``new``, or None: Debian's library itself, with
    /etc/security/pwquality.conf and pwquality.conf.d/ (where 11.0 keeps its rules) and the
    options of the release's pam_pwquality line (9.0, 10.0), as pam_pwquality sets them
    (options that are pam_pwquality's own, such as ``debug`` or ``try_first_pass``, are
    unknown to the library and skipped)."""
    settings = pwquality.PWQSettings()
    with contextlib.suppress(pwquality.PWQError):  # no config file: the library's defaults
        settings.read_config()
    for option in pwquality_options():
        with contextlib.suppress(AttributeError):
            settings.set_option(option)
    try:
        settings.check(new, old, user)
    except pwquality.PWQError as exc:
        return str(exc.args[1])
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
