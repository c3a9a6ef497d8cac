"""The simulator's platform on the host: bootstrap, `system` on controller-0, its unlock.

Real processes (the guest launchers) against temporary STXSIM_ROOTs; sysinv-api on
127.0.0.1. Multi-node flows are in test_platform_nodes.py.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_platform_support import (
    DUPLEX_YML,
    PASSWORD,
    SIMPLEX_YML,
    SLOW,
    Controller,
    free_port,
    parse_show,
    parse_table,
)

from pytest_starlingx.errors import StageError
from pytest_starlingx.stages.controller0 import check_recap

RECAP = re.compile(
    r"^localhost\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=0\s+failed=(\d+)\s+"
    r"skipped=(\d+)\s+rescued=0\s+ignored=0$",
    re.M,
)


@pytest.fixture
def c0(tmp_path: Path) -> Iterator[Controller]:
    """A fresh controller-0 (not bootstrapped); everything it starts is stopped after."""
    node = Controller(tmp_path, "controller-0", f"http://127.0.0.1:{free_port()}")
    yield node
    node.stop()


@pytest.fixture
def simplex(c0: Controller) -> Controller:
    """A bootstrapped AIO-SX controller-0."""
    assert c0.bootstrap().returncode == 0
    return c0


# --- bootstrap -------------------------------------------------------------------------


def test_bootstrap_prints_the_play_and_sets_up_controller_0(c0: Controller) -> None:
    proc = c0.bootstrap()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "PLAY [bootstrap playbook]" in proc.stdout
    assert len(re.findall(r"^TASK \[.+\] \*+$", proc.stdout, re.M)) >= 10
    ok, changed, failed, skipped = map(int, RECAP.search(proc.stdout).groups())
    assert failed == 0 and ok >= changed > 0 and skipped > 0
    assert (c0.root / "etc/hostname").read_text() == "controller-0\n"
    assert "system_mode=simplex" in (c0.root / "etc/platform/platform.conf").read_text()
    ops = c0.sysops()[3:]  # after the OAM configuration of the install guides
    assert ops[:2] == ["hostname controller-0", "ip route replace default via 10.10.10.1"]
    assert "ip address add 192.168.204.3/24 dev enp2s2" in ops
    assert "ip address add 169.254.202.1/24 dev enp2s2" in ops  # pxeboot, untagged on mgmt
    assert c0.hook_calls() == ["netboot-server start enp2s2 192.168.204.2/24 169.254.202.1/24"]
    for name in ("default", "grub.cfg"):  # pxelinux's and UEFI GRUB's menus for blank nodes
        link = c0.root / "var/pxeboot/pxelinux.cfg" / name
        assert os.readlink(link) == f"../pxelinux.cfg.files/{name}"
    assert (
        "menuentry 'Waiting for this node to be configured.'"
        in (c0.root / "var/pxeboot/pxelinux.cfg/grub.cfg").read_text()
    )
    rc = c0.openrc_env()
    assert rc["OS_USERNAME"] == "admin" and rc["OS_PASSWORD"] == PASSWORD
    assert rc["PS1"] == r"[\u@\h \W(keystone_$OS_USERNAME)]\$ "
    assert c0.table("host-list") == [
        {
            "id": "1",
            "hostname": "controller-0",
            "personality": "controller",
            "administrative": "locked",
            "operational": "disabled",
            "availability": "online",
        }
    ]


def test_bootstrap_fails_without_an_oam_address_as_the_real_playbook(c0: Controller) -> None:
    """ansible-playbooks setup_default_route.yml: `ip route replace default via <gateway>`
    needs an address on the gateway's subnet; iproute2 refuses the next hop otherwise."""
    proc = c0.bootstrap(oam=False)
    assert proc.returncode == 2
    task = "TASK [bootstrap/bringup-essential-services : Configure the default route]"
    fatal = proc.stdout.split(task, 1)[1]
    assert re.search(r"^fatal: \[localhost\]: FAILED! => .*non-zero return code", fatal, re.M)
    assert "Error: Nexthop has invalid gateway." in fatal
    assert "ip route replace default via 10.10.10.1" in fatal
    assert int(RECAP.search(proc.stdout).group(3)) == 1
    assert not (c0.root / "etc/platform/openrc").exists()  # nothing applied


@pytest.mark.parametrize("password", ["St8rlingX*", "St8rlingX'Cloud1", "St8rlingXCloud/"])
def test_an_admin_password_keystone_refuses_fails_store_passwd(c0: Controller, password) -> None:
    """ansible-playbooks roles/bootstrap/store-passwd: 10.0's keystone rule (12 characters, a
    special character of its list) and no quotes, before anything is applied."""
    proc = c0.bootstrap(
        SIMPLEX_YML.replace(f"admin_password: {PASSWORD}", f'admin_password: "{password}"')
    )
    assert proc.returncode == 2
    task = "Fail if provided admin password does not meet required complexity]"
    fatal = proc.stdout.split(task, 1)[1]
    assert re.search(
        r"^fatal: \[localhost\]: FAILED! => .*\"msg\": \"ADMIN_PASSWORD:  Password must have a "
        r"minimum length of 12 characters, .*excluding ' \(single quote\)",
        fatal,
        re.M,
    ), fatal
    assert not (c0.root / "etc/platform/openrc").exists()


def test_bootstrap_without_its_images_fails_as_the_real_download(tmp_path: Path) -> None:
    """images_fail: ansible-playbooks push-docker-images' retries, then download_images.py's
    'Failed to download images [...]'."""
    c0 = Controller(tmp_path, "controller-0", f"http://127.0.0.1:{free_port()}", images_fail="1")
    try:
        proc = c0.bootstrap()
    finally:
        c0.stop()
    assert proc.returncode == 2
    task = "Download images and push to local registry"
    assert f"TASK [common/push-docker-images : {task}]" in proc.stdout
    assert proc.stdout.count(f"FAILED - RETRYING: [localhost]: {task} (") == 10
    fatal = next(ln for ln in proc.stdout.splitlines() if ln.startswith("fatal: [localhost]"))
    assert '"attempts": 10' in fatal and "Exception: Failed to download images [" in fatal
    assert int(RECAP.search(proc.stdout).group(3)) == 1
    with pytest.raises(StageError) as info:  # what the plugin makes of it
        check_recap(proc.stdout)
    assert "could not download its container images" in str(info.value)
    assert "docker_registries" in str(info.value) and "docker_https_proxy" in str(info.value)


def test_openrc_fails_until_the_platform_filesystem_is_there(simplex: Controller) -> None:
    """stx-puppet openrc.admin.erb: no keyring on /opt/platform (not mounted yet after a boot):
    the message, the plain prompt and status 1."""
    keyring = simplex.root / "opt/platform/.keyring/24.09/.CREDENTIAL"
    hidden = keyring.with_name("hidden")
    keyring.rename(hidden)
    script = f'. {simplex.root / "etc/platform/openrc"}; echo "status $? ${{PS1@P}}"'
    run = subprocess.run(["bash", "-c", script], capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin"}, check=True)  # fmt: skip
    message, status = run.stdout.splitlines()
    assert message == "Openstack Admin credentials can only be loaded from the active controller."
    assert status.startswith("status 1 ") and "keystone" not in status  # PS1 '\\h:\\w\\$ '
    hidden.rename(keyring)


def test_openrc_gives_the_keystone_prompt(simplex: Controller) -> None:
    openrc = simplex.root / "etc/platform/openrc"
    out = subprocess.run(
        ["bash", "-c", f'. {openrc}; echo "${{PS1@P}}"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin", "USER": "sysadmin"},
    ).stdout
    # `\$` is `$` for sysadmin (`#` where this test runs as root).
    assert re.fullmatch(r"\[\w+@\S+ \S+\(keystone_admin\)\][$#] \n", out)


@pytest.mark.parametrize(
    ("edit", "key"),
    [
        (
            lambda y: y.replace("external_oam_floating_address: 10.10.10.2\n", ""),
            "external_oam_floating_address",
        ),
        (lambda y: y.replace("10.10.10.2", "10.10.20.2"), "external_oam_floating_address"),
        (lambda y: y.replace("system_mode: simplex", "system_mode: triplex"), "system_mode"),
        (lambda y: y.replace("8.8.4.4", "8.8.4"), "dns_servers"),
        (lambda y: y.replace("192.168.204.0/24", "192.168.204.0/33"), "management_subnet"),
        (
            lambda y: y.replace("external_oam_node_1_address: 10.10.10.4\n", ""),
            "external_oam_node_1_address",
        ),
    ],
)
def test_bad_localhost_yml_fails_the_play_naming_the_key(c0: Controller, edit, key) -> None:
    proc = c0.bootstrap(edit(DUPLEX_YML if "node_1" in key or "management" in key else SIMPLEX_YML))
    assert proc.returncode == 2
    fatal = re.search(r"^fatal: \[localhost\]: FAILED! => (\{.*\})$", proc.stdout, re.M)
    assert fatal and key in fatal.group(1), proc.stdout
    assert int(RECAP.search(proc.stdout).group(3)) == 1
    assert not (c0.root / "var/lib/stx/sysinv.json").exists()
    assert not (c0.root / "etc/platform/openrc").exists()


def test_unsupported_yaml_is_a_clear_failure(c0: Controller) -> None:
    proc = c0.bootstrap(SIMPLEX_YML + "docker_registries:\n  k8s.gcr.io:\n    url: x\n")
    assert proc.returncode == 2
    assert "localhost.yml:" in proc.stdout and "not supported" in proc.stdout


def test_bootstrap_fail_knob_fails_a_late_task(c0: Controller) -> None:
    c0.write_run("knobs", {"slow": "0.1", "bootstrap_fail": "1"})
    proc = c0.bootstrap()
    assert proc.returncode == 2
    tasks = re.findall(r"^TASK \[(.+)\]", proc.stdout, re.M)
    assert len(tasks) > 8 and "manifest" in tasks[-1]
    assert int(RECAP.search(proc.stdout).group(3)) == 1


def test_wrong_playbook_path_is_refused(c0: Controller) -> None:
    proc = c0.run("ansible-playbook", "/tmp/bootstrap.yml")
    assert proc.returncode == 1 and "could not be found" in proc.stderr


# --- the system CLI --------------------------------------------------------------------


def test_system_refuses_to_run_without_openrc(simplex: Controller) -> None:
    proc = simplex.run("system", "host-list")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "You must provide a username via either --os-username or via env[OS_USERNAME]"
    )
    creds = {k: v for k, v in simplex.openrc_env().items() if k.startswith("OS_")}
    proc = simplex.run("system", "host-list", **{**creds, "OS_PASSWORD": "wrong"})
    assert proc.returncode == 1 and proc.stderr.strip() == "Invalid Identity credentials."


def test_errors_and_usage(simplex: Controller) -> None:
    assert simplex.fails("host-show", "worker-9") == "host not found: worker-9"
    assert (
        simplex.fails("host-if-modify", "controller-0", "eth9", "-c", "platform")
        == "Interface not found: host controller-0 if eth9"
    )
    proc = simplex.system("host-frobnicate")
    assert proc.returncode == 2 and "invalid choice" in proc.stderr
    proc = simplex.system("host-show")
    assert proc.returncode == 2 and proc.stderr.startswith("usage: system host-show")
    assert "host-unlock" in simplex.ok("--help")
    assert simplex.fails(
        "host-add", "-n", "worker-0", "-p", "worker", "-m", "52:54:00:00:00:99"
    ) == ("Host-add Rejected: Adding a host on a simplex system is not allowed.")


def test_host_show_and_tables(simplex: Controller) -> None:
    show = simplex.show("host-show", "1")
    assert show["hostname"] == "controller-0" and show["subfunctions"] == "controller,worker"
    assert show["rootfs_device"] == "/dev/sda" and show["mgmt_ip"] == "192.168.204.3"
    assert list(show) == sorted(show)
    ports = simplex.table("host-port-list", "controller-0", "--nowrap")
    assert [p["name"] for p in ports] == ["enp2s1", "enp2s2", "enp2s3", "enp2s4"]
    assert ports[2]["device type"] == "Virtio network device"
    assert ports[0]["pci address"] == "0000:02:01.0"
    ifs = simplex.table("host-if-list", "controller-0")
    assert [(i["name"], i["class"], i["type"]) for i in ifs] == [("lo", "platform", "virtual")]
    assert len(simplex.table("host-if-list", "-a", "controller-0", "--nowrap")) == 5
    nets = simplex.table("interface-network-list", "controller-0")
    assert sorted((n["ifname"], n["network_name"]) for n in nets) == [
        ("lo", "cluster-host"),
        ("lo", "mgmt"),
    ]
    disks = simplex.table("host-disk-list", "controller-0")
    assert [(d["device_node"], d["size_gib"]) for d in disks] == [
        ("/dev/sda", "600.0"),
        ("/dev/sdb", "200.0"),
        ("/dev/sdc", "200.0"),
    ]
    apps = {a["application"]: a["status"] for a in simplex.table("application-list")}
    assert apps["platform-integ-apps"] == "uploaded"


def _aio_sx_provisioning(c0: Controller) -> None:
    """starlingx.md 5.2 on controller-0: OAM, Ceph + OSD, data interfaces, labels, nova-local."""
    c0.ok("host-if-modify", "controller-0", "enp2s1", "-c", "platform")
    show = parse_show(c0.ok("interface-network-assign", "controller-0", "enp2s1", "oam"))
    ntp = c0.show("ntp-modify", "ntpservers=0.pool.ntp.org,1.pool.ntp.org")
    assert ntp["ntpservers"] == "0.pool.ntp.org,1.pool.ntp.org"
    assert show["network_name"] == "oam" and show["ifname"] == "enp2s1"
    warning = c0.fails("storage-backend-add", "ceph")
    assert "WARNING : THIS OPERATION IS NOT REVERSIBLE AND CANNOT BE CANCELLED" in warning
    backends = parse_table(c0.ok("storage-backend-add", "ceph", "--confirmed"))
    assert backends[0]["backend"] == "ceph" and backends[0]["name"] == "ceph-store"
    sdb = next(
        d["uuid"]
        for d in c0.table("host-disk-list", "controller-0")
        if d["device_node"] == "/dev/sdb"
    )
    stor = parse_show(c0.ok("host-stor-add", "controller-0", sdb))
    assert stor["state"] == "configuring-on-unlock" and stor["tier_name"] == "storage"
    assert c0.fails("host-stor-add", "controller-0", sdb) == "Disk already assigned."
    for net in ("physnet0", "physnet1"):
        c0.ok("datanetwork-add", net, "vlan")
    assert [d["name"] for d in c0.table("datanetwork-list")] == ["physnet0", "physnet1"]
    ifs = {i["name"]: i["uuid"] for i in c0.table("host-if-list", "-a", "controller-0")}
    for n, port in enumerate(("enp2s3", "enp2s4")):
        out = c0.ok(
            "host-if-modify",
            "-m",
            "1500",
            "-n",
            f"data{n}",
            "-c",
            "data",
            "controller-0",
            ifs[port],
        )
        assert parse_show(out)["ifname"] == f"data{n}"
        c0.ok("interface-datanetwork-assign", "controller-0", ifs[port], f"physnet{n}")
    assert len(c0.table("interface-datanetwork-list", "controller-0")) == 2
    for label in ("openstack-control-plane=enabled", "openstack-compute-node=enabled"):
        c0.ok("host-label-assign", "controller-0", label)
    assert len(c0.table("host-label-list", "controller-0")) == 2
    root_disk = c0.show("host-show", "controller-0")["rootfs_device"]
    root_uuid = next(
        d["uuid"]
        for d in c0.table("host-disk-list", "controller-0", "--nowrap")
        if root_disk in (d["device_node"], d["device_path"])
    )
    part = parse_show(
        c0.ok("host-disk-partition-add", "-t", "lvm_phys_vol", "controller-0", root_uuid, "34")
    )
    assert part["status"] == "Creating" and part["device_node"] == "/dev/sda5"
    assert "nova-local volume group" in c0.fails("host-unlock", "controller-0")
    c0.ok("host-lvg-add", "controller-0", "nova-local")
    c0.ok("host-pv-add", "controller-0", "nova-local", part["uuid"])
    c0.wait(
        "partition Ready",
        lambda: (
            c0.table("host-disk-partition-list", "controller-0", "--nowrap")[0]["status"] == "Ready"
        ),
    )


def test_aio_sx_unlock_refused_then_done_reboots_to_available(simplex: Controller) -> None:
    c0 = simplex
    assert c0.fails("host-unlock", "controller-0") == (
        "Can not unlock a controller host without an oam interface. "
        "Add an oam interface before re-attempting this command."
    )
    _aio_sx_provisioning(c0)
    c0.wait("ceph configured", lambda: c0.table("storage-backend-list")[0]["state"] == "configured")
    show = c0.show("host-unlock", "controller-0")
    assert show["administrative"] == "unlocked"
    c0.wait("reboot hook", lambda: "reboot" in c0.hook_calls(), timeout=5)
    c0.write_run("knobs", {"slow": SLOW, "app_apply": "100"})  # 10 s of applying
    boot = c0.reboot()
    assert boot.returncode == 0, boot.stderr
    assert c0.host("controller-0")["availability"] == "available"
    assert c0.table("host-stor-list", "controller-0")[0]["state"] == "configured"
    # sysinv raises 750.004 while platform-integ-apps applies (fm alarm-list, fmclient's table)
    alarms = c0.system("alarm-list", "--uuid", program="fm")
    assert alarms.returncode == 0, alarms.stderr
    (alarm,) = parse_table(alarms.stdout)
    assert list(alarm) == ["UUID", "Alarm ID", "Reason Text", "Entity ID", "Severity", "Time Stamp"]
    assert (alarm["Alarm ID"], alarm["Reason Text"], alarm["Entity ID"], alarm["Severity"]) == (
        "750.004", "Application Apply In Progress", "k8s_application=platform-integ-apps",
        "warning",
    )  # fmt: skip
    assert c0.system("alarm-list", "--nowrap", "-q", "alarm_id=100.114", program="fm").stdout == (
        "+----------+-------------+-----------+----------+------------+\n"
        "| Alarm ID | Reason Text | Entity ID | Severity | Time Stamp |\n"
        "+----------+-------------+-----------+----------+------------+\n"
        "+----------+-------------+-----------+----------+------------+\n"
    )
    c0.wait(
        "platform-integ-apps applied",
        lambda: (
            {a["application"]: a["status"] for a in c0.table("application-list")}[
                "platform-integ-apps"
            ]
            == "applied"
        ),
    )
    assert "750.004" not in c0.system("alarm-list", program="fm").stdout  # cleared
    assert c0.fails("host-unlock", "controller-0") == (
        "Avoiding 'unlock' action on already 'unlocked' host controller-0"
    )
    show = c0.show("host-lock", "controller-0")
    assert (show["administrative"], show["availability"]) == ("locked", "online")


def test_a_failed_enable_is_recovered_once_then_auto_recovery_gives_up(simplex: Controller) -> None:
    """metal mtc.conf ar_config_threshold=2: one failure is re-enabled after the interval, with
    nodeBase.h's task meanwhile; the second leaves the host failed, auto-recovery disabled."""
    c0 = simplex
    c0.ok("host-if-modify", "controller-0", "enp2s1", "-c", "platform")
    c0.ok("interface-network-assign", "controller-0", "enp2s1", "oam")
    c0.ok("host-unlock", "controller-0")
    c0.write_run("knobs", {"slow": "0.4", "enable_fail": "1"})
    c0.kill_services()
    boot = c0.start("stx-platform-boot")

    def show() -> dict[str, str]:  # {} while sysinv-api is coming up
        proc = c0.system("host-show", "controller-0")
        return parse_show(proc.stdout) if proc.returncode == 0 else {}

    c0.wait("the failed enable", lambda: show().get("availability") == "failed")
    assert show()["task"] == "Configuration Failed, re-enabling"
    assert boot.wait(30) == 0
    assert c0.host("controller-0")["availability"] == "available"
    c0.write_run("knobs", {"slow": "0.1", "enable_fail": "2"})
    assert c0.reboot().returncode == 0
    show = c0.show("host-show", "controller-0")
    assert (show["operational"], show["availability"]) == ("disabled", "failed")
    assert show["task"] == "Configuration failure, threshold reached, Lock/Unlock to retry"


def test_duplex_controller_0_needs_real_mgmt_and_cluster_host(c0: Controller) -> None:
    assert c0.bootstrap(DUPLEX_YML).returncode == 0
    c0.ok("host-if-modify", "controller-0", "enp2s1", "-c", "platform")
    c0.ok("interface-network-assign", "controller-0", "enp2s1", "oam")
    assert c0.fails("host-unlock", "controller-0") == (
        "Cannot unlock host controller-0 when management interface is configured on a "
        "virtual interface."
    )
    c0.ok("host-if-modify", "controller-0", "lo", "-c", "none")
    assert c0.fails("interface-network-assign", "controller-0", "enp2s2", "mgmt") == (
        "An interface with interface class 'None' cannot assign platform networks."
    )
    c0.ok("host-if-modify", "controller-0", "enp2s2", "-c", "platform")
    assert c0.fails("interface-network-assign", "controller-0", "enp2s2", "mgmt") == (
        "An interface with 'mgmt' network type is already provisioned on this node"
    )
    for link in c0.table("interface-network-list", "controller-0"):
        if link["ifname"] == "lo":
            assert c0.ok("interface-network-remove", link["uuid"]).strip() == (
                f"Deleted Interface Network: {link['uuid']}"
            )
    c0.ok("interface-network-assign", "controller-0", "enp2s2", "mgmt")
    assert c0.fails("host-unlock", "controller-0") == (
        "Cannot unlock host controller-0 without configuring a cluster-host interface."
    )
    c0.ok("interface-network-assign", "controller-0", "enp2s2", "cluster-host")
    c0.ok("storage-backend-add", "ceph", "--confirmed")
    assert c0.fails("host-unlock", "controller-0") == (
        "Ceph is configuring. All storage backends must be configured before operation is allowed."
    )
    c0.wait("ceph configured", lambda: c0.table("storage-backend-list")[0]["state"] == "configured")
    assert c0.fails("host-unlock", "controller-0") == (
        "Can not unlock node until at least one OSD is configured."
    )
    mons = c0.table("ceph-mon-list")
    assert [m["hostname"] for m in mons] == ["controller-0"]
    assert c0.fails("host-swact", "controller-0") == ("Controller is Locked ; No services to Swact")
