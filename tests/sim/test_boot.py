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
BOLD = r"(?:\x1b\[[\d;]*m)*"  # menu.c32 writes a countdown's number in bold
SUDO_PROMPT = r"(?<!\S)Password: "  # config-files sudo-config sysadmin.sudo: passprompt


def run(console: Console, command: str, timeout: float = 30) -> str:
    """Run a shell command at the prompt; return its output (without the echoed command)."""
    console.sendline(command)
    console.expect(PROMPT, timeout)
    return console.child.before.split("\n", 1)[-1].replace("\r", "")


def sudo(console: Console, command: str, timeout: float = 60) -> str:
    """``run`` under sudo, answering its password prompt (StarlingX's ``Defaults
    passprompt="Password: "``) when it asks."""
    console.sendline(f"sudo {command}")
    if console.expect([SUDO_PROMPT, PROMPT], timeout) == 0:
        console.sendline(NEW_PASSWORD)
        console.expect(PROMPT, timeout)
    return console.child.before.split("\n", 1)[-1].replace("\r", "")


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
    # the installed disk's GRUB passes what a KVM guest's kernel sets itself (DESIGN.md)
    assert "no_timer_check" in run(c, "cat /proc/cmdline").split()


def test_sysadmin_is_unprivileged_and_uses_sudo(controller: Node) -> None:
    """sysadmin is an ordinary user (metal kickstart: useradd -G sudo) and gets root through
    Debian's sudo with StarlingX's sudoers and PAM stacks."""
    c = controller.console
    ids = run(c, "id").strip()
    assert ids.startswith("uid=1000(sysadmin) gid=1000(sysadmin) groups=")
    assert {"27(sudo)", "345(sys_protected)"} <= set(ids.split("groups=")[1].split(","))
    assert "Permission denied" in run(c, "touch /etc/stx-test; cat /etc/shadow")
    c.sendline("sudo -k; sudo cat /etc/hostname")
    c.expect(SUDO_PROMPT, 30)
    c.sendline("wrong")
    c.expect(rf"Sorry, try again.\r\n{SUDO_PROMPT}", 30)
    c.sendline(NEW_PASSWORD)
    c.expect(PROMPT, 30)
    assert "localhost" in c.child.before
    assert run(c, "sudo id -u").strip() == "0"  # no password asked again: cached
    assert run(c, "sudo -k; echo wrong | sudo -S -p '' true; echo status $?").split()[-2:] == [
        "status",
        "1",
    ]


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
    c.expect(SUDO_PROMPT, 30)
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
    """controller-0 serves DHCP, TFTP and HTTP on mgmt; a diskless node network-boots from it
    with Debian's pxelinux: metal's "Waiting for this node to be configured." menu retries
    until a file of its own (as sysinv writes it from metal's template) is there, which boots
    the network install. A third node with the no_netboot knob stalls in its installer.
    """
    c = controller.console
    sudo(c, "ip address add 192.168.204.3/24 dev enp2s0")
    sudo(c, "ip address add 169.254.202.1/24 dev enp2s0")
    sudo(c, "ln -s ../pxelinux.cfg.files/default /var/pxeboot/pxelinux.cfg/default")
    start = "/usr/lib/stx-sim/netboot-server start enp2s0 192.168.204.3/24 169.254.202.1/24"
    daemons = "cat /run/stx-sim/dnsmasq.pid /run/stx-sim/netboot-httpd.pid; ps | grep -c [d]nsmasq"
    sudo(c, start)
    running = run(c, daemons).split()
    sudo(c, start)  # idempotent
    assert run(c, daemons).split() == running
    assert len(running) == 3
    node = make_node("n1", netboot=True)
    stalled = make_node("n2", netboot=True, knobs={"no_netboot": "1"})
    # pxelinux, on the serial port its configuration names: metal's `default`, retrying.
    node.console.expect("Waiting for this node to be configured.", 120)
    node.console.expect("controller node in order to proceed.", 10)
    node.console.expect(rf"Automatic retry in {BOLD}\d+", 10)
    log.info("PXE node: power-on to pxelinux's menu %.1fs", time.monotonic() - node.started)
    leases = run(c, "cat /var/lib/stx/dnsmasq.leases")
    macs = re.findall(r"^\d+ ([0-9a-f:]{17}) (169\.254\.202\.\d+) ", leases, re.M)
    assert len(macs) == 2, leases  # both firmwares took a pxeboot lease
    node.console.expect("Waiting for this node to be configured.", 30)  # the retry
    # What sysinv does for a worker: metal's template, filled as pxeboot-update.sh does (and
    # the simulator's no_timer_check, DESIGN.md "Emulation"), for each node; the retrying menu
    # then boots it.
    options = "instdev=/dev/sda console=ttyS0,115200 user_namespace.enable=1 no_timer_check"
    fill = (
        f"sed -e 's#xxxAPPEND_OPTIONSxxx#{options}#;"
        "s#xxxBASE_URLxxx#http://pxecontroller:8080#g' "
        "/var/pxeboot/pxelinux.cfg.files/pxe-worker-install-24.09"
    )
    for mac, _ in macs:
        sudo(c, f'sh -c "{fill} > /var/pxeboot/pxelinux.cfg/01-{mac.replace(":", "-")}"')
    # and the first node's static mgmt address, for dnsmasq's static-only mgmt range
    mac = re.findall(r"<mac address='([0-9a-f:]{17})'/>", node.dom.XMLDesc())[1]
    sudo(c, f"sh -c 'echo {mac},192.168.204.5 > /var/lib/stx/dhcp-hosts'")
    sudo(c, "kill -HUP $(cat /run/stx-sim/dnsmasq.pid)")
    configured = time.monotonic()
    node.console.expect("Worker", 30)
    node.console.expect(rf"Automatic boot in {BOLD}\d+", 30)
    node.console.expect(r"lease of 192\.168\.204\.5 obtained from 192\.168\.204\.3", 120)
    node.console.expect(r"stx-sim: network boot from 192\.168\.204\.3 done on enp2s0", 90)
    log.info("PXE node: configured to its root filesystem %.1fs", time.monotonic() - configured)
    assert_silent(stalled.console, r"udhcpc|lease of|stx-sim", 20)
    dnsmasq = sudo(c, "cat /var/log/dnsmasq.log")
    for name in ("pxelinux.0", "ldlinux.c32", "menu.c32", "pxelinux.cfg/default",
                 "rel-24.09/bzImage-std", "rel-24.09/initrd"):  # fmt: skip
        assert re.search(rf"sent /var/pxeboot/{re.escape(name)} to 169\.254\.202\.\d+", dnsmasq)
    httpd = run(c, "cat /var/log/netboot-httpd.log")
    # the feed served the installer, at its static mgmt address, its root filesystem
    assert re.search(r"192\.168\.204\.5\]:\d+: response:200", httpd), httpd


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
