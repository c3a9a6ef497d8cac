"""A standard (controller storage) lab from blank VMs to every host available, under UEFI, over
two libvirt hosts: the controllers on this host, the workers on a second libvirt host the test
makes (``tests/multihost/second_host.py``), the lab networks spanning both (slow)."""

import json
import secrets
import sys
from pathlib import Path

import libvirt
import pytest
from e2e_helpers import bring_up_and_check_every_host

sys.path.insert(0, str(Path(__file__).parent.parent / "multihost"))

from second_host import SYSTEM_URI, run, second_host

pytestmark = pytest.mark.slow


def test_every_host_becomes_available(lab_name, tmp_path):
    """Under UEFI firmware: controller-0 from the ISO's GRUB menu, the others by GRUB's network
    boot, the workers across the VXLAN tunnel from the second host. With controller-0's platform
    filesystem coming up 20 s into its unlock boot: openrc refuses to load the credentials
    until then, and the bring-up waits it out; and with the worker failing its first enable,
    which maintenance recovers. Torn down, nothing of the lab is left on either host."""
    knobs = {"controller-0": {"platform_fs": 20}, "worker-0": {"enable_fail": 1}}
    workers = ["worker-0", "worker-1"]
    with second_host(f"tmh{secrets.token_hex(3)}") as host2:
        hosts = [
            {"name": "here", "uri": SYSTEM_URI, "underlay": host2.local_underlay},
            {"name": host2.token, "uri": host2.uri, "underlay": host2.underlay,
             "commands": list(host2.commands.prefix)},
        ]  # fmt: skip
        pins = {"controller-0": "here", "controller-1": "here"} | dict.fromkeys(
            workers, host2.token
        )
        bring_up_and_check_every_host(
            "standard", {"controller": 2, "worker": len(workers)}, lab_name, tmp_path, knobs=knobs,
            settings={"workers": len(workers), "firmware": "uefi", "hosts": hosts,
                      "nodes": {node: {"host": host} for node, host in pins.items()}},
        )  # fmt: skip
        conn = libvirt.open(host2.uri)
        try:
            left = [d.name() for d in conn.listAllDomains() + conn.listAllNetworks()]
        finally:
            conn.close()
        assert [name for name in left if name.startswith(f"stx-{lab_name}-")] == []
        for ip, local in (([], host2.local_underlay), (["-n", host2.namespace], host2.underlay)):
            links = json.loads(run("ip", *ip, "-j", "-d", "link", "show", "type", "vxlan"))
            tunnels = [
                x["ifname"] for x in links if x["linkinfo"]["info_data"].get("local") == local
            ]
            assert tunnels == []  # the lab's VXLAN devices, on this test's underlay
    logs = {p.name.split(".")[0]: p.read_text() for p in tmp_path.rglob("*.console.log")}
    assert (
        "Openstack Admin credentials can only be loaded from the active controller."
        in (logs["controller-0"])
    )
    assert "UEFI Debian Controller Install" in logs["controller-0"]  # GRUB's menu, not ISOLINUX's
    for node in ("controller-1", *workers):  # metal's UEFI menus, then the node's own
        assert "Waiting for this node to be configured." in logs[node]
        assert "PXELINUX" not in logs[node]
