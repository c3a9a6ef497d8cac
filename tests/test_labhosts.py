"""A lab's libvirt hosts and node pins in lab files: good ones resolve, bad ones say what to fix."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest

from pytest_starlingx.errors import LabConfigError, StxError
from pytest_starlingx.lab import create_lab
from pytest_starlingx.labfile import lab_variant, parse_lab
from pytest_starlingx.model import HostSpec, lab_key, resolve_lab

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

TWO_HOSTS = """\
topology: standard
hosts:
  - {uri: qemu:///system, underlay: 198.18.0.1}
  - {name: hv2, uri: qemu+ssh://root@hv2.example/system, underlay: 198.18.0.2}
nodes:
  worker-0: {host: hv2}
  worker-1: {host: hv2, memory_mib: 768}
"""


def problems(text: str) -> list[str]:
    """Every problem line reported for a lab file with this text."""
    with pytest.raises(LabConfigError) as info:
        parse_lab(textwrap.dedent(text), source="lab.yaml")
    return info.value.problems


def test_hosts_and_pins_resolve_names_defaulting_to_the_uris_host():
    lab = parse_lab(TWO_HOSTS)
    assert lab.hosts == (
        HostSpec("localhost", "qemu:///system", ipaddress.IPv4Address("198.18.0.1")),
        HostSpec("hv2", "qemu+ssh://root@hv2.example/system", ipaddress.IPv4Address("198.18.0.2")),
    )
    assert lab.multi_host
    assert [(n.name, n.host) for n in lab.nodes] == [
        ("controller-0", None), ("controller-1", None), ("worker-0", "hv2"), ("worker-1", "hv2"),
    ]  # fmt: skip
    assert lab.node("worker-1").memory_mib == 768


def test_a_lab_without_hosts_is_a_single_host_lab_with_the_key_it_always_had():
    lab = parse_lab("topology: standard\n")
    assert lab.hosts == () and not lab.multi_host
    assert all(n.host is None for n in lab.nodes)
    # the key of a lab without hosts, as it was before labs had hosts (model.lab_key)
    assert lab_key(resolve_lab("simplex"), "x") == lab_key(parse_lab("topology: simplex"), "x")
    assert lab_key(lab, "x") != lab_key(parse_lab(TWO_HOSTS), "x")


def test_one_host_needs_no_underlay_and_may_be_named_by_its_uri_host():
    lab = parse_lab("topology: duplex\nhosts: [{uri: 'qemu+ssh://hv1/system'}]\n")
    assert lab.hosts == (HostSpec("hv1", "qemu+ssh://hv1/system"),)
    assert not lab.multi_host


def test_ipv6_underlays_are_addresses_too():
    lab = parse_lab(
        "topology: duplex\nhosts:\n  - {name: a, uri: 'qemu:///system', underlay: '2001:db8::1'}"
        "\n  - {name: b, uri: 'qemu+tcp://b/system', underlay: '2001:db8::2'}\n"
    )
    assert [h.underlay for h in lab.hosts] == [
        ipaddress.IPv6Address("2001:db8::1"), ipaddress.IPv6Address("2001:db8::2"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "hosts: []",
            "lab.yaml:2: hosts: expected a list of libvirt hosts, each like `{name: hv1, uri: "
            "qemu+ssh://root@hv1/system, underlay: 192.0.2.11}`, got []",
        ),
        (
            "hosts: [qemu:///system]",
            "lab.yaml:2: hosts[0]: expected a host like `{name: hv1, uri: "
            "qemu+ssh://root@hv1/system, underlay: 192.0.2.11}`, got 'qemu:///system'",
        ),
        (
            "hosts: [{name: hv1}]",
            "lab.yaml:2: hosts[0]: missing `uri:`, the host's libvirt URI (e.g. "
            "qemu+ssh://root@hv1/system)",
        ),
        (
            "hosts: [{uri: 'xen:///system'}]",
            "lab.yaml:2: hosts[0].uri: 'xen:///system' is not a URI of libvirt's QEMU driver, "
            "which labs run on (e.g. qemu:///system or qemu+ssh://root@hv1/system)",
        ),
        (
            "hosts: [{uri: 'qemu+sssh://hv1/system'}]",
            "lab.yaml:2: hosts[0].uri: 'sssh' in 'qemu+sssh://hv1/system' is not a libvirt "
            "transport; use one of unix, ssh, libssh, libssh2, tcp, tls, ext (did you mean "
            "'ssh'?)",
        ),
        (
            "hosts: [{uri: 'qemu+ssh://hv1'}]",
            "lab.yaml:2: hosts[0].uri: 'qemu+ssh://hv1' names no QEMU daemon: its path must be "
            "/system or /session (e.g. qemu:///system or qemu+ssh://root@hv1/system)",
        ),
        (
            "hosts: [{uri: 'qemu:///system', commands: 'ip netns exec hv2'}]",
            "lab.yaml:2: hosts[0].commands: expected the words of a command prefix that runs a "
            "command on the host without ssh, e.g. [ip, netns, exec, hv2], got "
            "'ip netns exec hv2'",
        ),
        (
            "hosts: [{uri: hv1}]",
            "lab.yaml:2: hosts[0].uri: 'hv1' is not a libvirt URI (e.g. qemu:///system or "
            "qemu+ssh://root@hv1/system)",
        ),
        (
            "hosts: [{uri: 'qemu+ssh://[2001:db8::5/system'}]",
            "lab.yaml:2: hosts[0].uri: 'qemu+ssh://[2001:db8::5/system' is not a libvirt URI "
            "(e.g. qemu:///system or qemu+ssh://root@hv1/system)",
        ),
        (
            "hosts: [{uri: 'qemu:///system', underlay: 3325296641}]",
            "lab.yaml:2: hosts[0].underlay: 3325296641 is not an IP address (e.g. 192.0.2.11): "
            "give the host's address on the network between the hosts, which the lab networks' "
            "tunnels use",
        ),
        (
            "hosts: [{uri: 'qemu+ssh://[2001:db8::5]/system'}]",
            "lab.yaml:2: hosts[0]: give the host a `name:` (e.g. hv1) for pins and messages; its "
            "URI's host '2001:db8::5' cannot be one",
        ),
        (
            "hosts: [{uri: 'qemu:///system', name: 'hv 1'}]",
            "lab.yaml:2: hosts[0].name: 'hv 1' is not a host name: 1-63 letters, digits, '.', "
            "'_' and '-', starting with a letter or digit",
        ),
        (
            "hosts: [{uri: 'qemu:///system', nmae: hv1}]",
            "lab.yaml:2: hosts[0].nmae: unknown key (did you mean 'name'?)",
        ),
        (
            "hosts: [{uri: 'qemu:///system', underlay: 198.18.0.1}, {uri: 'qemu+ssh://hv2/system'}]",
            "lab.yaml:2: hosts[1]: missing `underlay:`: with more than one host, each needs the "
            "address the tunnels of the lab networks reach it at (its address on the network "
            "between the hosts, e.g. 192.0.2.11)",
        ),
        (
            "hosts: [{uri: 'qemu:///system', underlay: 198.18.0.300}]",
            "lab.yaml:2: hosts[0].underlay: '198.18.0.300' is not an IP address (e.g. "
            "192.0.2.11): give the host's address on the network between the hosts, which the "
            "lab networks' tunnels use",
        ),
        (
            "hosts: [{uri: 'qemu:///system', underlay: 127.0.0.1}]",
            "lab.yaml:2: hosts[0].underlay: 127.0.0.1 cannot reach the host from the others; "
            "give the host's own address on the network between the hosts",
        ),
        (
            "hosts:\n- {uri: 'qemu:///system', underlay: 198.18.0.1}\n"
            "- {uri: 'qemu:///session', underlay: 198.18.0.2}",
            "lab.yaml:4: hosts[1].name: 'localhost' is already the name of hosts[0]; each host "
            "needs its own",
        ),
        (
            "hosts:\n- {name: a, uri: 'qemu+ssh://hv/system', underlay: 198.18.0.1}\n"
            "- {name: b, uri: 'qemu+ssh://hv/system', underlay: 198.18.0.1}",
            "lab.yaml:4: hosts[1].uri: 'qemu+ssh://hv/system' is already the uri of hosts[0]; "
            "each host needs its own\n"
            "lab.yaml:4: hosts[1].underlay: '198.18.0.1' is already the underlay of hosts[0]; "
            "each host needs its own",
        ),
        (
            "hosts:\n- {name: a, uri: 'qemu:///system', underlay: 198.18.0.1}\n"
            "- {name: b, uri: 'qemu+ssh://hv/system', underlay: '2001:db8::2'}",
            "lab.yaml:2: hosts: the underlay addresses mix IPv4 and IPv6; the tunnels between "
            "hosts need addresses of one family",
        ),
        (
            "backend: virtualbox\nhosts: [{uri: 'qemu:///system'}]",
            "lab.yaml:3: hosts: a lab spans several hosts on libvirt only; remove `hosts:` or "
            "use `backend: libvirt`",
        ),
        (
            "nodes: {worker-0: {host: hv2}}",
            "lab.yaml:2: nodes.worker-0.host: pins the node to a host, but the lab has no "
            "`hosts:`; list the libvirt hosts (e.g. `hosts: [{name: hv1, uri: "
            "qemu+ssh://root@hv1/system, underlay: 192.0.2.11}]`) or remove the pin",
        ),
        (
            "hosts:\n- {name: hv1, uri: 'qemu:///system', underlay: 198.18.0.1}\n"
            "- {name: hv2, uri: 'qemu+ssh://hv2/system', underlay: 198.18.0.2}\n"
            "nodes: {worker-0: {host: hv3}}",
            "lab.yaml:5: nodes.worker-0.host: no such host 'hv3' (the lab's hosts are hv1, hv2) "
            "(did you mean 'hv2'?)",
        ),
        (
            "hosts: [{name: hv1, uri: 'qemu:///system'}]\nnode_defaults: {host: hv1}",
            "lab.yaml:3: node_defaults.host: pin nodes one by one under `nodes: {worker-0: "
            "{host: ...}}`; for a lab on one host, list only that host under `hosts:`",
        ),
        (
            "hosts: [{name: hv1, uri: 'qemu:///system'}]\nnodes: {worker-0: {hots: hv1}}",
            "lab.yaml:3: nodes.worker-0.hots: unknown key (did you mean 'host'?)",
        ),
    ],
)
def test_bad_hosts_and_pins_say_what_to_fix(text, expected):
    assert problems(f"topology: standard\n{text}\n") == expected.split("\n")


def test_a_variant_keeps_the_hosts_and_drops_pins_of_nodes_it_lacks():
    import yaml

    base = yaml.safe_load(TWO_HOSTS)
    lab = lab_variant(base, "duplex", {}, source="marker")
    assert [h.name for h in lab.hosts] == ["localhost", "hv2"]
    assert [n.host for n in lab.nodes] == [None, None]


def test_show_gives_a_multi_host_lab_its_hosts_and_a_host_column():
    from pytest_starlingx.host.capacity import HostFree
    from pytest_starlingx.labshow import describe_lab
    from pytest_starlingx.placement import place

    lab = parse_lab(TWO_HOSTS)
    free = [HostFree("localhost", 8000, 2, 1), HostFree("hv2", 4000, 8)]
    lines = describe_lab(lab, place(lab.nodes, free), free).splitlines()
    assert lines[11:14] == [
        "hosts     localhost qemu:///system underlay 198.18.0.1: 2 nodes, 1152 MiB of 8000 MiB "
        "free, 2 CPUs (1 vCPUs running)",
        "          hv2 qemu+ssh://root@hv2.example/system underlay 198.18.0.2: 2 nodes, 1408 MiB "
        "of 4000 MiB free, 8 CPUs (0 vCPUs running)",
        "placement pins, then controller-0 first, each node on the host with the most free "
        "memory left (libvirt's figures, just read)",
    ]
    rows = {line.split()[0]: line.split() for line in lines[15:]}
    assert rows["node"][:3] == ["node", "host", "personality"]
    assert rows["controller-0"][1:3] == ["localhost", "controller"]
    assert rows["worker-1"][1:4] == ["hv2", "(pinned)", "worker"]
    unplaced = describe_lab(lab)  # before the hosts are read: the pins, and ? for the others
    assert "controller-1  ?" in unplaced and "worker-0      hv2 (pinned)" in unplaced


def test_show_of_a_single_host_lab_is_as_it_was_and_a_one_host_list_places_all_there():
    from pytest_starlingx.labshow import describe_lab

    plain = describe_lab(parse_lab("topology: duplex\n"))
    assert "hosts" not in plain and " host " not in plain.splitlines()[12]
    one = describe_lab(parse_lab("topology: duplex\nhosts: [{uri: 'qemu+ssh://hv1/system'}]\n"))
    assert "hosts     hv1 qemu+ssh://hv1/system\n" in one
    assert "controller-1  hv1   controller" in one


def test_stx_lab_show_places_a_multi_host_lab_on_what_its_hosts_have_free(
    tmp_path, monkeypatch, capsys
):
    from pytest_starlingx import cli
    from pytest_starlingx.host import capacity
    from pytest_starlingx.host.capacity import HostFree

    lab = tmp_path / "lab.yaml"
    lab.write_text(TWO_HOSTS)
    read = []

    def hosts_free(hosts):  # libvirt's answers, without a libvirt daemon
        read.extend(h.uri for h in hosts)
        return [HostFree("localhost", 4000, 2), HostFree("hv2", 1500, 2)]

    monkeypatch.setattr(capacity, "hosts_free", hosts_free)
    assert cli.main(["show", str(lab)]) == 0
    assert read == ["qemu:///system", "qemu+ssh://root@hv2.example/system"]
    rows = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()
            if line.startswith(("controller-", "worker-"))}  # fmt: skip
    assert rows == {"controller-0": "localhost", "controller-1": "localhost", "worker-0": "hv2",
                    "worker-1": "hv2"}  # fmt: skip

    tight = [HostFree("localhost", 600, 2), HostFree("hv2", 1500, 2)]
    monkeypatch.setattr(capacity, "hosts_free", lambda hosts: tight)
    assert cli.main(["show", str(lab)]) == 1
    out, err = capsys.readouterr()
    assert "controller-0  ?" in out
    assert err.startswith(
        "stx-lab show: cannot place the nodes: controller-1 fits on no host of the lab: it "
        "needs 576 MiB"
    )


class UntouchedBackend:
    """A backend no call may reach: any use fails the test."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the backend was used ({name})")


def test_a_host_reached_without_ssh_gives_its_command_prefix():
    lab = parse_lab(
        TWO_HOSTS.replace(
            "underlay: 198.18.0.2}", "underlay: 198.18.0.2, commands: [ip, netns, exec, hv2]}"
        )
    )
    assert [h.commands for h in lab.hosts] == [(), ("ip", "netns", "exec", "hv2")]


def test_a_lab_with_hosts_on_another_backend_is_refused_before_anything_is_made(
    tmp_path, monkeypatch
):
    monkeypatch.setenv("STX_STATE_DIR", str(tmp_path / "state"))
    spec = parse_lab(TWO_HOSTS, source="lab.yaml")
    with pytest.raises(StxError, match=r"a lab with `hosts:` runs on libvirt only"):
        create_lab(spec, UntouchedBackend(), tmp_path / "artifacts")  # type: ignore[arg-type]
    assert not (tmp_path / "state").exists()


def test_a_lab_whose_nodes_do_not_fit_its_hosts_is_refused_before_anything_is_made(
    tmp_path, monkeypatch
):
    from pytest_starlingx import lab as lab_module
    from pytest_starlingx.backends.libvirt import LibvirtBackend
    from pytest_starlingx.host.capacity import HostFree

    monkeypatch.setenv("STX_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(
        lab_module,
        "hosts_free",
        lambda hosts: [HostFree("localhost", 8000, 2), HostFree("hv2", 600, 2)],
    )
    backend = LibvirtBackend.__new__(LibvirtBackend)  # never connected: nothing may be asked
    spec = parse_lab(TWO_HOSTS, source="lab.yaml")
    with pytest.raises(
        StxError, match=r"worker-1 is pinned to hv2 \(nodes.worker-1.host\) but does not fit"
    ):
        create_lab(spec, backend, tmp_path / "artifacts")
    assert not (tmp_path / "state").exists()


def test_the_plugin_leaves_a_lab_with_hosts_to_its_placement_not_this_hosts_memory(monkeypatch):
    from pytest_starlingx.plugin import factory

    monkeypatch.setattr(factory, "mem_available_mib", lambda: 100)
    assert factory.memory_shortfall(parse_lab("topology: standard\n")) is not None
    assert factory.memory_shortfall(parse_lab(TWO_HOSTS)) is None
