"""XML built by the libvirt backend, checked without a daemon."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pytest_starlingx.backends.base import (
    BootDevice,
    DiskSpec,
    LabResources,
    MachineSpec,
    NetworkSpec,
    NicSpec,
    Owner,
)
from pytest_starlingx.backends.libvirt import (
    DomainPlan,
    DomainType,
    bridge_name,
    domain_xml,
    network_xml,
    owner_from_xml,
    set_boot_order,
    set_oem_strings,
    volume_xml,
)

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

OWNER = Owner("lab", "ab12cd34")


def worker() -> tuple[MachineSpec, DomainPlan]:
    spec = MachineSpec(
        name="worker-0",
        memory_mib=512,
        vcpus=2,
        disks=(DiskSpec(200), DiskSpec(200)),
        nics=(NicSpec("oam", "e1000"), NicSpec("mgmt", "e1000", boot=True), NicSpec("d", "virtio")),
        boot_order=(BootDevice.DISK, BootDevice.NETWORK),
    )
    plan = DomainPlan(
        name="stx-lab-ab12cd34-worker-0",
        domain_type=DomainType.KVM,
        volumes=("/p/a.qcow2", "/p/b.qcow2"),
        networks=("n-oam", "n-mgmt", "n-d"),
        socket=Path("/run/w.sock"),
        log=Path("/run/w.log"),
        disk_cache="unsafe",
    )
    return spec, plan


def boot_orders(root: ET.Element) -> dict[str, str]:
    return {
        f"{el.tag}:{el.get('device') or el.find('source').get('network')}": el.find("boot").get(
            "order"
        )
        for el in root.find("devices")
        if el.find("boot") is not None
    }


def test_worker_domain_without_cdrom_boots_disk_then_mgmt_nic():
    spec, plan = worker()
    root = ET.fromstring(domain_xml(spec, plan, OWNER))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"
    assert root.find("devices/disk[@device='cdrom']") is None
    assert boot_orders(root) == {"disk:disk": "1", "interface:n-mgmt": "2"}
    assert root.find("sysinfo") is None and root.find("os/smbios") is None
    assert owner_from_xml(ET.tostring(root, encoding="unicode")) == OWNER


def test_a_weighted_machine_gets_that_many_default_cpu_shares():
    spec, plan = worker()
    assert ET.fromstring(domain_xml(spec, plan, OWNER)).find("cputune") is None
    weighted = dataclasses.replace(spec, cpu_weight=8)
    root = ET.fromstring(domain_xml(weighted, plan, OWNER))
    assert root.findtext("cputune/shares") == "8192"
    with pytest.raises(ValueError, match=r"cpu_weight must be 1\.\.64, got 0"):
        dataclasses.replace(spec, cpu_weight=0)


def test_boot_order_and_oem_strings_can_be_changed_in_place():
    spec, plan = worker()
    root = ET.fromstring(domain_xml(spec, plan, OWNER))
    set_boot_order(root, [BootDevice.NETWORK, BootDevice.CDROM, BootDevice.DISK], spec.boot_nic)
    assert boot_orders(root) == {"interface:n-mgmt": "1", "disk:disk": "2"}
    set_oem_strings(root, ["stx-sim:slow=2", "other"])
    set_oem_strings(root, ["stx-sim:slow=3"])
    assert [e.text for e in root.findall("sysinfo/oemStrings/entry")] == ["stx-sim:slow=3"]
    assert len(root.findall("os/smbios")) == 1
    assert list(root).index(root.find("sysinfo")) < list(root).index(root.find("os"))
    set_oem_strings(root, [])
    assert root.find("sysinfo") is None and root.find("os/smbios") is None


def test_networks_are_isolated_nat_ones_too():
    """No host address on a lab network, ever: a NAT network's way out is its gateway
    namespace (backends/gateway.py), not libvirt's <forward mode='nat'> with an <ip>."""
    bridge = bridge_name("ab12cd34", 1)
    isolated = ET.fromstring(network_xml(NetworkSpec("mgmt"), "n", bridge, OWNER))
    assert isolated.find("ip") is None and isolated.find("forward") is None
    assert isolated.find("bridge").get("name") == "stxab12cd34n1"
    nat = ET.fromstring(
        network_xml(NetworkSpec("oam", nat=True, gateway="10.10.10.1/24"), "n", "b", OWNER)
    )
    assert nat.find("ip") is None and nat.find("forward") is None


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"nat": True}, "nat=True needs a gateway address"),
        ({"nat": True, "gateway": "10.10.10.1"}, "with its prefix length"),
        ({"nat": True, "gateway": "10.10.10.0/24"}, "must be an IPv4 host address"),
        ({"gateway": "fd00::1/64"}, "gateway"),
    ],
)
def test_a_nat_network_needs_a_gateway_host_address(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NetworkSpec("oam", **kwargs)


def test_a_ledger_of_before_the_gateway_field_still_loads():
    assert NetworkSpec.from_json({"name": "oam", "nat": False, "host_address": None}) == (
        NetworkSpec("oam")
    )


def test_volumes_are_sparse_qcow2():
    vol = ET.fromstring(volume_xml("v.qcow2", DiskSpec(600)))
    assert (vol.findtext("capacity"), vol.find("capacity").get("unit")) == ("600", "GiB")
    assert vol.findtext("allocation") == "0"
    assert vol.find("target/format").get("type") == "qcow2"


def test_foreign_or_malformed_metadata_is_not_an_owner():
    assert owner_from_xml("<domain><name>x</name></domain>") is None
    assert (
        owner_from_xml(
            "<domain><metadata><o:owner xmlns:o='urn:pytest-starlingx:owner:1' lab='x'/>"
            "</metadata></domain>"
        )
        is None
    )


def test_specs_reject_what_a_backend_cannot_build():
    with pytest.raises(ValueError, match="no NIC is marked"):
        MachineSpec("m", 256, 1, nics=(NicSpec("a"),))
    with pytest.raises(ValueError, match="unknown network"):
        machine = MachineSpec("m", 256, 1, nics=(NicSpec("a", boot=True),))
        LabResources("lab", "ab12", (), (machine,))
    with pytest.raises(ValueError, match="lab id"):
        LabResources("lab", "AB-12", (), ())
