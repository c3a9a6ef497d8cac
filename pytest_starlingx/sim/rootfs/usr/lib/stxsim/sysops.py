"""Changes to the running node: machine hooks, hostname, addresses, background daemons.

Hooks are the machine half's programs in `/usr/lib/stx-sim/` (DESIGN.md); they are looked up
under STXSIM_ROOT, so host tests install recording fakes there. `hostname` and `ip` change
the kernel's state: on the guest they run for real, in host tests (STXSIM_ROOT is not `/`)
they are only appended to `/run/stx-sim/sysops.log` so a test never touches its host.
"""

from __future__ import annotations

import os
import subprocess
import sys

from stxsim import env

HOOK_DIR = "/usr/lib/stx-sim"


class HookError(RuntimeError):
    """A machine hook or system command failed."""


def hook(name: str, *args: str, wait: bool = True) -> None:
    """Run machine hook `name` with `args` (inheriting the console); raise on failure."""
    argv = [env.path(f"{HOOK_DIR}/{name}"), *args]
    if not wait:
        subprocess.Popen(argv, start_new_session=True)
        return
    try:
        rc = subprocess.run(argv, check=False).returncode
    except OSError as exc:
        raise HookError(f"{name}: {exc}") from exc
    if rc != 0:
        raise HookError(f"{name} {' '.join(args)} exited with status {rc}")


def system(*argv: str) -> None:
    """Run a system command (`hostname`, `ip`) on the guest; record it in host tests."""
    if not env.is_guest():
        log = env.path("/run/stx-sim/sysops.log")
        os.makedirs(os.path.dirname(log), exist_ok=True)
        with open(log, "a", encoding="utf-8") as f:
            f.write(" ".join(argv) + "\n")
        return
    proc = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise HookError(f"{' '.join(argv)}: {proc.stderr.strip() or proc.returncode}")


def ipv4_addresses() -> list[str]:
    """The node's IPv4 addresses as ``address/prefix``: `ip -4 -o address show` on the guest;
    in host tests, the ``ip address add`` lines of `/run/stx-sim/sysops.log` (what a test or
    the platform "ran")."""
    if env.is_guest():
        out = subprocess.run(
            ["ip", "-4", "-o", "address", "show"], capture_output=True, text=True, check=False
        ).stdout
        return [line.split()[3] for line in out.splitlines() if len(line.split()) > 3]
    try:
        with open(env.path("/run/stx-sim/sysops.log"), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return []
    return [ln.split()[3] for ln in lines if ln.startswith(("ip address add ", "ip addr add "))]


def add_address(iface: str, cidr: str) -> None:
    """Bring `iface` up and add `cidr` to it (idempotent: an existing address is fine)."""
    system("ip", "link", "set", iface, "up")
    try:
        system("ip", "address", "add", cidr, "dev", iface)
    except HookError as exc:
        if "exists" not in str(exc):
            raise


def daemon(name: str, argv: list[str]) -> int:
    """Start `argv` detached, logging to /var/log/<name>.log; pid in /run/stx-sim/<name>.pid."""
    log_path = env.path(f"/var/log/{name}.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    pid_path = env.path(f"/run/stx-sim/{name}.pid")
    os.makedirs(os.path.dirname(pid_path), exist_ok=True)
    with open(pid_path, "w", encoding="utf-8") as f:
        f.write(f"{proc.pid}\n")
    return proc.pid


def launcher(name: str) -> list[str]:
    """argv prefix running one of our `/usr/bin` launchers with this interpreter."""
    here = os.path.dirname(os.path.abspath(__file__))
    return [sys.executable, os.path.normpath(os.path.join(here, "..", "..", "bin", name))]
