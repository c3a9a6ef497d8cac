"""Host-side harness for the simulator's platform programs (no tests of its own).

A `Node` is a temporary STXSIM_ROOT standing for one guest: fake sysfs (NICs, disks), the
machine hooks as recording fakes, knobs and boot facts. The platform's launchers run as real
subprocesses against it; sysinv-api and keystone listen on 127.0.0.1 only (a `Controller`'s
`urls` say where).
"""

from __future__ import annotations

import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pytest_starlingx.model import RELEASES
from pytest_starlingx.sim.build import DEFAULT_RELEASE, build_info, install_pxe_configs

ROOTFS = Path(__file__).resolve().parents[2] / "pytest_starlingx" / "sim" / "rootfs"
BIN = ROOTFS / "usr" / "bin"
RELEASE_FILES = ROOTFS.parent / "releases" / DEFAULT_RELEASE / "rootfs"
PXE_CONFIGS = ROOTFS.parent / "pxe-network-installer"
PLAYBOOK = "/usr/share/ansible/stx-ansible/playbooks/bootstrap.yml"
PASSWORD = "St8rlingXCloud*"
SLOW = "0.1"

OAM_ADDRESS = "10.10.10.3/24"  # controller-0 before its bootstrap, on its OAM port enp2s1
SIMPLEX_YML = """\
system_mode: simplex
dns_servers:
  - 8.8.8.8
  - 8.8.4.4
external_oam_subnet: 10.10.10.0/24
external_oam_gateway_address: 10.10.10.1
external_oam_floating_address: 10.10.10.2
admin_username: admin
admin_password: St8rlingXCloud*   # comment
ansible_become_pass: "St8rlingXCloud*"
"""
DUPLEX_YML = """\
system_mode: duplex
dns_servers: [8.8.8.8, 8.8.4.4]
external_oam_subnet: 10.10.10.0/24
external_oam_gateway_address: 10.10.10.1
external_oam_floating_address: 10.10.10.2
external_oam_node_0_address: 10.10.10.3
external_oam_node_1_address: 10.10.10.4
admin_username: admin
admin_password: 'St8rlingXCloud*'
ansible_become_pass: St8rlingXCloud*
management_subnet: 192.168.204.0/24
"""

# A hook fake records its name and arguments; install-to-disk also writes the identity
# files as the real one does.
HOOK = """#!/bin/sh
echo "$(basename "$0") $*" >> "$STXSIM_ROOT/run/stx-sim/hooks.log"
"""
INSTALL_HOOK = (
    HOOK
    + """mkdir -p "$STXSIM_ROOT/etc/platform"
printf 'nodetype=%s\\nsubfunction=%s\\n' "$1" "$2" > "$STXSIM_ROOT/etc/platform/platform.conf"
echo "$3" > "$STXSIM_ROOT/etc/hostname"
"""
)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse_table(text: str) -> list[dict[str, str]]:
    """The rows of a prettytable as dicts keyed by header; continuation lines are joined."""
    lines = [ln for ln in text.splitlines() if ln.startswith("|")]
    if not lines:
        raise AssertionError(f"no table in output:\n{text}")
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows: list[dict[str, str]] = []
    for line in lines[1:]:
        cells = [c.strip() for c in line[1:-1].split("|")]
        if rows and cells[0] == "" and not all(c == "" for c in cells):
            for key, value in zip(header, cells, strict=True):
                if value:
                    rows[-1][key] = f"{rows[-1][key]}\n{value}"
            continue
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def parse_show(text: str) -> dict[str, str]:
    """A `Property | Value` table as a dict."""
    return {row["Property"]: row["Value"] for row in parse_table(text)}


class Node:
    """One simulated guest rooted at a temporary directory."""

    def __init__(
        self,
        base: Path,
        name: str,
        api: str,
        nics: int = 4,
        disks: tuple[int, ...] = (600, 200, 200),
        **knobs: str,
    ) -> None:
        self.name = name
        self.urls = {"STXSIM_API": api}
        self.root = base / name
        self.home = self.root / "home" / "sysadmin"
        self.home.mkdir(parents=True)
        self.procs: list[subprocess.Popen] = []
        self.macs = []
        for i in range(nics):
            nic = f"enp2s{i + 1}"
            tag = zlib.crc32(name.encode()) & 0xFFFF
            mac = f"52:54:{tag >> 8:02x}:{tag & 0xFF:02x}:00:{i + 1:02x}"
            self.macs.append(mac)
            pci = self.root / "sys" / "devices" / "pci0000:00" / f"0000:02:0{i + 1}.0"
            driver = "e1000" if i < 2 else "virtio_net"
            (self.root / "sys" / "bus" / "drivers" / driver).mkdir(parents=True, exist_ok=True)
            dev = pci / "virtio0" if driver == "virtio_net" else pci
            dev.mkdir(parents=True)
            (dev / "driver").symlink_to(self.root / "sys" / "bus" / "drivers" / driver)
            net = self.root / "sys" / "class" / "net" / nic
            net.mkdir(parents=True)
            (net / "address").write_text(mac + "\n")
            (net / "device").symlink_to(dev)
        for i, size in enumerate(disks):
            block = self.root / "sys" / "block" / f"sd{chr(97 + i)}"
            block.mkdir(parents=True)
            (block / "size").write_text(f"{size * 1024 * 1024 * 2}\n")
        hooks = self.root / "usr" / "lib" / "stx-sim"
        hooks.mkdir(parents=True)
        for hook in ("reboot", "netboot-server", "dhcp-client", "install-to-disk"):
            (hooks / hook).write_text(INSTALL_HOOK if hook == "install-to-disk" else HOOK)
            (hooks / hook).chmod(0o755)
        shutil.copytree(RELEASE_FILES, self.root, dirs_exist_ok=True)
        (self.root / "etc" / "build.info").write_text(build_info(DEFAULT_RELEASE))
        install_pxe_configs(self.root, PXE_CONFIGS, RELEASES[DEFAULT_RELEASE])
        self.write_run("knobs", {"slow": SLOW, **knobs})
        self.write_run("boot", {"mode": "disk", "oam_if": "enp2s1", "mgmt_if": "enp2s2"})

    def write_run(self, name: str, values: dict[str, str]) -> None:
        """Write `/run/stx-sim/<name>` as KEY=VALUE lines."""
        run = self.root / "run" / "stx-sim"
        run.mkdir(parents=True, exist_ok=True)
        (run / name).write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    def install_identity(self, nodetype: str, subfunction: str) -> None:
        """What the ISO installer leaves: platform.conf and hostname `localhost`."""
        (self.root / "etc" / "platform").mkdir(parents=True, exist_ok=True)
        (self.root / "etc" / "platform" / "platform.conf").write_text(
            f"nodetype={nodetype}\nsubfunction={subfunction}\n"
        )
        (self.root / "etc" / "hostname").write_text("localhost\n")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
        env.update(STXSIM_ROOT=str(self.root), HOME=str(self.home), **self.urls)
        env.update(extra)
        return env

    def run(
        self, program: str, *args: str, timeout: float = 30, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """Run a launcher to completion."""
        return subprocess.run(
            [sys.executable, str(BIN / program), *args],
            env=self.env(**extra),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start(self, program: str, *args: str) -> subprocess.Popen[str]:
        """Start a long-running launcher (killed by `stop`)."""
        proc = subprocess.Popen(
            [sys.executable, str(BIN / program), *args],
            env=self.env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.procs.append(proc)
        return proc

    def hook_calls(self) -> list[str]:
        log = self.root / "run" / "stx-sim" / "hooks.log"
        return [ln.strip() for ln in log.read_text().splitlines()] if log.exists() else []

    def sysops(self) -> list[str]:
        log = self.root / "run" / "stx-sim" / "sysops.log"
        return [ln.strip() for ln in log.read_text().splitlines()] if log.exists() else []

    def kill_services(self) -> None:
        """Stop this node's keystone and sysinv-api (as its reboot would)."""
        for name in ("keystone-api", "sysinv-api"):
            pid_file = self.root / "run" / "stx-sim" / f"{name}.pid"
            if pid_file.exists():
                pid = int(pid_file.read_text().split()[0])
                try:
                    os.kill(pid, 15)
                    os.waitpid(pid, 0)
                except (ProcessLookupError, ChildProcessError):
                    pass
                pid_file.unlink()

    def stop(self) -> None:
        """Kill everything this node started."""
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.procs.clear()
        self.kill_services()


class Controller(Node):
    """controller-0: bootstrap it, then drive `system` as sysadmin with openrc sourced.

    Its keystone and the OAM frontends (once unlocked) get ports of their own: `urls`."""

    def __init__(self, base: Path, name: str, api: str, **kwargs: Any) -> None:
        super().__init__(base, name, api, **kwargs)
        for var in ("STXSIM_KEYSTONE", "STXSIM_PUBLIC_API", "STXSIM_PUBLIC_KEYSTONE"):
            self.urls[var] = f"http://127.0.0.1:{free_port()}"

    def bootstrap(
        self, yml: str = SIMPLEX_YML, subfunction: str = "controller,worker", oam: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Install, configure the OAM interface as the install guides do (unless not ``oam``),
        write localhost.yml and run the bootstrap playbook."""
        self.install_identity("controller", subfunction)
        if oam:
            self.configure_oam()
        (self.home / "localhost.yml").write_text(yml)
        return self.run("ansible-playbook", PLAYBOOK)

    def configure_oam(self) -> None:
        """The guides' commands before bootstrap (address, link up, default route), as the
        simulator sees commands in host tests: lines of its sysops log."""
        log = self.root / "run" / "stx-sim" / "sysops.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("a") as f:
            f.write(f"ip address add {OAM_ADDRESS} dev enp2s1\n")
            f.write("ip link set up dev enp2s1\n")
            f.write("ip route add default via 10.10.10.1 dev enp2s1\n")

    def openrc_env(self) -> dict[str, str]:
        """The variables `source /etc/platform/openrc` sets."""
        script = f". {shlex.quote(str(self.root / 'etc/platform/openrc'))} && env"
        out = subprocess.run(
            ["sh", "-c", script],
            capture_output=True,
            text=True,
            check=True,
            env={"PATH": os.environ["PATH"]},
        ).stdout
        return dict(
            line.split("=", 1) for line in out.splitlines() if line.startswith(("OS_", "PS1="))
        )

    def system(self, *args: str, program: str = "system") -> subprocess.CompletedProcess[str]:
        """`system ARGS` (or another client, e.g. `fm`) with the openrc variables."""
        creds = {k: v for k, v in self.openrc_env().items() if k.startswith("OS_")}
        return self.run(program, *args, **creds)

    def ok(self, *args: str) -> str:
        """`system ARGS`, which must succeed; its stdout."""
        proc = self.system(*args)
        assert proc.returncode == 0, f"system {' '.join(args)}: {proc.stderr}{proc.stdout}"
        return proc.stdout

    def fails(self, *args: str) -> str:
        """`system ARGS`, which must fail with status 1; its stderr."""
        proc = self.system(*args)
        assert proc.returncode == 1, f"system {' '.join(args)} succeeded: {proc.stdout}"
        return proc.stderr.strip()

    def table(self, *args: str) -> list[dict[str, str]]:
        return parse_table(self.ok(*args))

    def show(self, *args: str) -> dict[str, str]:
        return parse_show(self.ok(*args))

    def host(self, name: str) -> dict[str, str]:
        """The host-list row of `name` (hostname or id)."""
        for row in self.table("host-list"):
            if name in (row["hostname"], row["id"]):
                return row
        raise AssertionError(f"{name} not in host-list")

    def wait(self, what: str, check: Callable[[], bool], timeout: float = 20) -> None:
        """Poll `check` until true; fail naming `what` and the host list."""
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}:\n{self.ok('host-list')}")
            time.sleep(0.1)

    def wait_state(self, name: str, admin: str, oper: str, avail: str, timeout: float = 20) -> None:
        want = (admin, oper, avail)
        self.wait(
            f"{name} {want}",
            lambda: (
                tuple(self.host(name)[k] for k in ("administrative", "operational", "availability"))
                == want
            ),
            timeout,
        )

    def reboot(self) -> subprocess.CompletedProcess[str]:
        """What a reboot does to controller-0's platform: its services die, stx-platform-boot
        runs."""
        self.kill_services()
        return self.run("stx-platform-boot")
