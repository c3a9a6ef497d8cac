"""The simulator's machine half, booted for real under libvirt (QEMU software emulation) and
driven over its serial console: boot menu, install, login, sudo, TMOUT, reboot, fault knobs
and network boot from controller-0.

The tests of this module run in order on one installed controller (``controller``).
"""

from __future__ import annotations

import logging
import re
import time

import pytest
from conftest import NodeFactory
from simvm import Console, ConsoleTimeout, Node

log = logging.getLogger(__name__)

PROMPT = r"sysadmin@localhost:~\$ "
NEW_PASSWORD = "St8rlingXCloud*"
COUNTDOWN = "Automatic boot in"  # ISOLINUX's vesamenu under its menu


def run(console: Console, command: str, timeout: float = 30) -> str:
    """Run a shell command at the prompt; return its output (without the echoed command)."""
    console.sendline(command)
    console.expect(PROMPT, timeout)
    return console.child.before.split("\n", 1)[-1].replace("\r", "")


def sudo(console: Console, command: str, timeout: float = 60) -> str:
    """``run`` under sudo, answering its password prompt when it asks."""
    console.sendline(f"sudo {command}")
    if console.expect([r"\[sudo\] password for sysadmin: ", PROMPT], timeout) == 0:
        console.sendline(NEW_PASSWORD)
        console.expect(PROMPT, timeout)
    return console.child.before


def login(console: Console, password: str) -> None:
    """Log in as sysadmin at the login prompt (already displayed) without a forced change."""
    console.sendline("sysadmin")
    console.expect("Password: ", 30)
    console.sendline(password)
    console.expect(PROMPT, 60)


def assert_silent(console: Console, pattern: str, seconds: float) -> None:
    """Fail when ``pattern`` appears on the console within ``seconds``."""
    with pytest.raises(ConsoleTimeout):
        console.expect(pattern, seconds)


@pytest.fixture(scope="module")
def controller(make_node: NodeFactory, sim_iso) -> Node:
    """Controller-0 installed from the ISO's All-in-one > Serial Console entry, at login."""
    node = make_node("c0", iso=sim_iso, disk_gib=8)
    c = node.console
    c.expect(COUNTDOWN, 60)
    menu_at = time.monotonic() - node.started
    c.select_menu("Debian All-in-one Install", "Serial Console")
    c.expect(r"StarlingX installer starting \(traits=controller,worker\)", 120)
    install_start = time.monotonic()
    c.expect("Installation complete.", 300)
    install = time.monotonic() - install_start
    c.expect("Restarting system", 60)
    disk_boot = time.monotonic()
    # getty shows StarlingX's /etc/issue: clear screen, release, node and tty, then its banner.
    c.expect(r"\x1b\[H\x1b\[2J\r?\nRelease 24\.09 localhost ttyS0\r\n-{72}\r\n"
             r"W A R N I N G \*\*\* W A R N I N G", 120)  # fmt: skip
    c.expect("localhost login: ", 30)
    log.info(
        "power-on to menu %.1fs, install %.1fs, disk boot to login %.1fs",
        menu_at, install, time.monotonic() - disk_boot,
    )  # fmt: skip
    return node


def test_login_rejects_bad_password(controller: Node) -> None:
    c = controller.console
    c.sendline("sysadmin")
    c.expect("Password: ", 30)
    c.sendline("wrong")
    c.expect(r"Login incorrect\r\nlocalhost login: ", 30)


def test_first_login_forces_a_password_change(controller: Node) -> None:
    c = controller.console
    c.sendline("sysadmin")
    c.expect("Password: ", 30)
    c.sendline("sysadmin")
    c.expect(r"You are required to change your password immediately \(administrator enforced\)", 30)
    c.expect("Changing password for sysadmin.", 10)
    c.expect("Current password: ", 10)
    c.sendline("sysadmin")
    for weak, complaint in (
        # StarlingX 10.0's pam_pwquality options, in libpwquality's order of checks
        ("abcdefgh", "The password contains less than 1 digits"),
        ("Xk9#mQ2$pL7", "The password is shorter than 12 characters"),
    ):
        c.expect("New password: ", 10)
        c.sendline(weak)
        c.expect(f"BAD PASSWORD: {complaint}", 10)
    c.expect("New password: ", 10)
    c.sendline(NEW_PASSWORD)
    c.expect("Retype new password: ", 10)
    c.sendline(NEW_PASSWORD)
    c.expect(PROMPT, 60)


def test_installed_node_facts(controller: Node) -> None:
    c = controller.console
    assert run(c, "cat /etc/platform/platform.conf").split() == [
        "nodetype=controller",
        "subfunction=controller,worker",
    ]
    boot = run(c, "cat /run/stx-sim/boot").split()
    assert boot == ["mode=disk", "mgmt_if=enp2s0", "oam_if=enp1s0"]
    assert "enp1s0" in run(c, "ls /sys/class/net")
    assert "reboot_after=0" in run(c, "cat /run/stx-sim/knobs").split()
    assert 'SW_VERSION="24.09"' in run(c, "cat /etc/build.info").split()


def test_sudo_asks_for_the_password(controller: Node) -> None:
    c = controller.console
    c.sendline("sudo -k; sudo cat /etc/hostname")
    c.expect(r"\[sudo\] password for sysadmin: ", 30)
    c.sendline("wrong")
    c.expect(r"Sorry, try again.\r\n\[sudo\] password for sysadmin: ", 30)
    c.sendline(NEW_PASSWORD)
    c.expect(PROMPT, 30)
    assert "localhost" in c.child.before


def test_idle_login_times_out(controller: Node) -> None:
    c = controller.console
    assert run(c, "echo $TMOUT").strip() == "900"
    assert run(c, "export TMOUT=0; echo $TMOUT").strip() == "0"
    c.sendline("TMOUT=2")
    c.expect("timed out waiting for input: auto-logout", 30)
    c.expect("localhost login: ", 30)


def test_new_password_survives_a_reboot(controller: Node) -> None:
    c = controller.console
    login(c, NEW_PASSWORD)
    c.sendline("sudo -k; sudo reboot")
    c.expect(r"\[sudo\] password for sysadmin: ", 30)
    c.sendline(NEW_PASSWORD)
    c.expect("Restarting system", 30)
    c.expect("localhost login: ", 120)
    c.sendline("sysadmin")
    c.expect("Password: ", 30)
    c.sendline("sysadmin")
    c.expect("Login incorrect", 30)
    c.expect("localhost login: ", 30)
    login(c, NEW_PASSWORD)


def test_netboot_of_a_second_node(controller: Node, make_node: NodeFactory) -> None:
    """controller-0 serves DHCP + HTTP on mgmt; a diskless node network-boots from it.

    The second node runs without the no_netboot knob, a third with it: it must stall.
    """
    c = controller.console
    sudo(c, "/usr/lib/stx-sim/netboot-server start enp2s0 192.168.204.3 24")
    sudo(c, "/usr/lib/stx-sim/netboot-server start enp2s0 192.168.204.3 24")  # idempotent
    pids = run(c, "cat /run/stx-sim/dnsmasq.pid /run/stx-sim/netboot-httpd.pid").split()
    assert len(pids) == 2
    assert run(c, "ps | grep -c '[d]nsmasq --conf-file'").strip() == "1"
    node = make_node("n1", netboot=True)
    stalled = make_node("n2", netboot=True, knobs={"no_netboot": "1"})
    # iPXE writes to the screen only (no serial BIOS console): its requests are in the logs.
    node.console.expect(r"lease of (192\.168\.204\.\d+) obtained", 120)
    assert int(node.console.child.match.group(1).rsplit(".", 1)[1]) >= 128  # dynamic range
    node.console.expect(r"stx-sim: network boot from 192\.168\.204\.3 done on enp2s0", 90)
    log.info("PXE node: power-on to its root filesystem %.1fs", time.monotonic() - node.started)
    assert_silent(stalled.console, r"udhcpc|lease of|stx-sim", 20)
    # iPXE of both: boot.ipxe, vmlinuz, initrd.img; the node's initramfs then: rootfs.tgz.
    deadline = time.monotonic() + 60
    while (http_log := run(c, "cat /var/log/netboot-httpd.log")).count("response:200") < 7:
        assert time.monotonic() < deadline, f"not every boot file was served:\n{http_log}"
        time.sleep(2)  # a poll of the boot service's log, not a wait for an event
    clients = re.findall(r"^([\d.]+):\d+: response:200", http_log, re.M)
    assert sorted(clients.count(ip) for ip in set(clients)) == [3, 4]
    assert re.search(r"DHCPACK\(enp2s0\)", run(c, "cat /var/log/dnsmasq.log"))


def test_reboot_after_knob(controller: Node, make_node: NodeFactory) -> None:
    """The installed disk under a new power-on with knobs: reboots S s after the login prompt."""
    controller.destroy()
    node = make_node(
        "c0-knobs", knobs={"reboot_after": "15", "slow": "2"}, disk_image=controller.spec.disk_path
    )
    c = node.console
    c.expect("localhost login: ", 120)
    prompt_at = time.monotonic()
    login(c, NEW_PASSWORD)
    knobs = run(c, "cat /run/stx-sim/knobs").split()
    assert {"reboot_after=15", "slow=2", "hang_install=0"} <= set(knobs)
    c.expect("Restarting system", 60)
    assert time.monotonic() - prompt_at >= 14
    c.expect("localhost login: ", 120)


def test_hang_install_and_slow_knobs(make_node: NodeFactory, sim_iso) -> None:
    """slow=4 stretches each install step; hang_install=10 silences the install for good.

    Also checks the menu's default submenu and its Graphical Console choice.
    """
    node = make_node("hang", iso=sim_iso, disk_gib=8, knobs={"slow": "4", "hang_install": "10"})
    c = node.console
    c.expect(COUNTDOWN, 60)
    c.select_menu("Debian Controller Install", "Graphical Console")
    c.expect(r"installer starting \(traits=controller\)", 120)
    started = time.monotonic()
    c.expect("Checking installation media", 30)
    c.expect("Installing StarlingX", 30)
    assert time.monotonic() - started >= 6  # two steps of 1 s each, times 4
    assert_silent(c, "Partitioning", 20)
