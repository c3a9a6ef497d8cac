"""Lab description files: good ones resolve, bad ones name file, line, key path and a fix."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_starlingx.backends.base import NetworkSpec
from pytest_starlingx.errors import LabConfigError
from pytest_starlingx.labfile import lab_from_mapping, load_lab, parse_lab
from pytest_starlingx.labshow import describe_lab
from pytest_starlingx.model import BackendKind, Firmware, Profile, Topology, Uplink
from pytest_starlingx.resources import lab_resources

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

EXAMPLES = Path(__file__).parent.parent / "examples"


def problems(text: str) -> list[str]:
    """Every problem line reported for a lab file with this text."""
    with pytest.raises(LabConfigError) as info:
        parse_lab(textwrap.dedent(text), source="lab.yaml")
    return info.value.problems


def test_the_issue_example_file_resolves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    lab = load_lab(EXAMPLES / "storage.yaml")
    assert (lab.name, lab.topology, lab.backend) == ("lab1", Topology.STORAGE, BackendKind.LIBVIRT)
    assert (lab.workers, lab.storage_nodes) == (2, 2)
    assert lab.node("controller-0").memory_mib == 768
    assert lab.node("worker-1").memory_mib == 512
    assert str(lab.oam.floating) == "10.10.10.2"
    assert lab.passwords["sysadmin"].env == "STX_SYSADMIN_PASSWORD"
    assert lab.source == EXAMPLES / "storage.yaml"


@pytest.mark.parametrize("name", ["simplex", "duplex", "standard", "storage"])
def test_shipped_examples_resolve(name):
    assert load_lab(EXAMPLES / f"{name}.yaml").topology.value == name


def test_real_iso_example_takes_the_iso_from_the_environment(fake_iso, monkeypatch):
    monkeypatch.setenv("STX_ISO", str(fake_iso))
    lab = load_lab(EXAMPLES / "real-iso.yaml")
    assert lab.image == str(fake_iso)
    assert lab.profile is Profile.REAL
    assert lab.node("controller-0").memory_mib == 18 * 1024
    assert lab.passwords["admin"].generate
    assert lab.oam.uplink is Uplink.NAT


def test_only_topology_is_required():
    lab = parse_lab("topology: duplex\n")
    assert (lab.name, len(lab.nodes), lab.image) == ("duplex", 2, "sim")


def test_iso_path_is_relative_to_the_file(tmp_path, fake_iso):
    lab_file = tmp_path / "lab.yaml"
    lab_file.write_text(f"topology: simplex\nimage: {fake_iso.name}\n")
    assert load_lab(lab_file).image == str(fake_iso)


def test_mapping_source_validates_marker_overrides():
    assert lab_from_mapping({"topology": "standard", "workers": 3}).workers == 3
    with pytest.raises(LabConfigError, match=r"^<overrides>: workers: must be from 1 to 20"):
        lab_from_mapping({"topology": "standard", "workers": 99})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "lab.yaml: the file is empty; it needs at least `topology: "
             "simplex|duplex|standard|storage`"),
        ("- simplex\n", "lab.yaml:1: (top level): the lab description must be a mapping of keys"),
        ("topology: [simplex\n", "lab.yaml:2: the file is not valid YAML: expected ',' or ']'"),
        ("topology: simplex\ntopology: duplex\n",
         "lab.yaml:2: the file is not valid YAML: duplicate key 'topology'"),
        ("name: x\n", "lab.yaml:1: topology: missing; say which deployment option the lab is: "
                      "simplex, duplex, standard, storage"),
        ("topology: simplx\n", "lab.yaml:1: topology: 'simplx' is not allowed; use one of simplex,"
                               " duplex, standard, storage (did you mean 'simplex'?)"),
        ("topology: simplex\nbackend: vbox\n",
         "lab.yaml:2: backend: 'vbox' is not allowed; use one of libvirt, virtualbox"),
        ("topology: simplex\nname: Lab_1\n", "lab.yaml:2: name: 'Lab_1' is not a valid lab name: "
                                             "use 1-20 characters, lower-case letters"),
        ("topology: simplex\nname: abcdefghijklmnopqrstu\n", "lab.yaml:2: name: "
                                                             "'abcdefghijklmnopqrstu' is not a "
                                                             "valid lab name"),
        ("topology: simplex\nworkrs: 2\n", "lab.yaml:2: workrs: unknown key (did you mean "
                                           "'workers'?)"),
        ("topology: simplex\nflavour: big\n", "lab.yaml:2: flavour: unknown key; allowed keys: "
                                              "name, topology"),
        ("topology: duplex\nworkers: 2\n", "lab.yaml:2: workers: a duplex lab has no workers; "
                                           "remove the key or use topology standard or storage"),
        ("topology: standard\nstorage_nodes: 2\n", "lab.yaml:2: storage_nodes: a standard lab "
                                                   "has no storage nodes"),
        ("topology: standard\nworkers: -1\n", "lab.yaml:2: workers: must be from 1 to 20, got -1"),
        ("topology: storage\nworkers: 0\n", "lab.yaml:2: workers: must be from 1 to 20, got 0"),
        ("topology: standard\nworkers: two\n", "lab.yaml:2: workers: must be a whole number from "
                                               "1 to 20, got 'two'"),
        ("topology: standard\nworkers: 2.5\n", "lab.yaml:2: workers: must be a whole number"),
        ("topology: standard\nworkers: true\n", "lab.yaml:2: workers: must be a whole number"),
        ("topology: storage\nstorage_nodes: 1\n", "lab.yaml:2: storage_nodes: must be from 2 to "
                                                  "8, got 1"),
        ("topology: simplex\nnode_defaults: {memory_mib: 0}\n",
         "lab.yaml:2: node_defaults.memory_mib: must be from 256 to 1048576 MiB, got 0"),
        ("topology: simplex\nnode_defaults: {vcpus: 0}\n",
         "lab.yaml:2: node_defaults.vcpus: must be from 1 to 64, got 0"),
        ("topology: simplex\nnode_defaults: {memory: 512}\n",
         "lab.yaml:2: node_defaults.memory: unknown key (did you mean 'memory_mib'?)"),
        ("topology: simplex\nnode_defaults: 512\n",
         "lab.yaml:2: node_defaults: expected a mapping of keys (e.g. `memory_mib: ...`), got 512"),
        ("topology: simplex\nnodes:\n  controller-0: {disks_gib: []}\n",
         "lab.yaml:3: nodes.controller-0.disks_gib: expected a list of 1 to 8 disk sizes in GiB"),
        ("topology: simplex\nnodes:\n  controller-0:\n    disks_gib: [10, 0]\n",
         "lab.yaml:4: nodes.controller-0.disks_gib[1]: must be from 1 to 8192 GiB, got 0"),
        ("topology: standard\nnodes:\n  worker-7: {memory_mib: 768}\n",
         "lab.yaml:3: nodes.worker-7: no such node in this standard lab (it has controller-0, "
         "controller-1, worker-0, worker-1)"),
        ("topology: standard\nworkers: 8\nnodes:\n  worker-7: {memory_mib: 768}\n", None),
        ("topology: simplex\nnodes: [controller-0]\n",
         "lab.yaml:2: nodes: expected a mapping of node names to sizes"),
        ("topology: simplex\nimage: /does/not/exist.iso\n",
         "lab.yaml:2: image: no such ISO file: /does/not/exist.iso (use 'sim' for the built-in "
         "simulator, or a path to a StarlingX ISO)"),
        ("topology: simplex\nimage: /etc/hostname\n",
         "lab.yaml:2: image: /etc/hostname is not an ISO image (no ISO 9660 signature)"),
        ("topology: simplex\nimage: $STX_NO_SUCH_ISO_VAR\n",
         "lab.yaml:2: image: '$STX_NO_SUCH_ISO_VAR' names an environment variable that is not "
         "set"),
        ("topology: simplex\nprofile: huge\n", "lab.yaml:2: profile: 'huge' is not allowed; use "
                                               "one of real, sim"),
        ("topology: simplex\noam: {subnet: 10.10.10.1/24}\n",
         "lab.yaml:2: oam.subnet: '10.10.10.1/24' is not an IPv4 subnet such as 10.10.10.0/24; "
         "did you mean 10.10.10.0/24?"),
        ("topology: simplex\noam: {subnet: banana}\n", "lab.yaml:2: oam.subnet: 'banana' is not "
                                                       "an IPv4 subnet"),
        ("topology: duplex\noam:\n  gateway: 10.10.11.1\n",
         "lab.yaml:3: oam.gateway: 10.10.11.1 is not a usable address in the OAM subnet "
         "10.10.10.0/24; pick one inside it"),
        ("topology: duplex\noam:\n  controller_0: 10.10.10.2\n",
         "lab.yaml:3: oam.controller_0: 10.10.10.2 is already oam.floating; each OAM address "
         "must differ"),
        ("topology: duplex\noam:\n  floating: 10.10.10.255\n",
         "lab.yaml:3: oam.floating: 10.10.10.255 is not a usable address"),
        ("topology: duplex\noam:\n  floating: 10.10.10.300\n",
         "lab.yaml:3: oam.floating: '10.10.10.300' is not an IPv4 address"),
        ("topology: simplex\noam:\n  controller_1: 10.10.10.4\n",
         "lab.yaml:3: oam.controller_1: a simplex lab has no controller-1; remove the key"),
        ("topology: simplex\nmgmt: {subnet: 10.10.10.0/25}\n",
         "lab.yaml:2: mgmt.subnet: 10.10.10.0/25 overlaps the OAM subnet 10.10.10.0/24"),
        ("topology: simplex\nmgmt: {subnet: 192.168.204.0/30}\n",
         "lab.yaml:2: mgmt.subnet: 192.168.204.0/30 is too small"),
        ("topology: simplex\npasswords: {root: {env: X}}\n",
         "lab.yaml:2: passwords.root: unknown key; allowed keys: sysadmin, admin"),
        ("topology: simplex\npasswords: {sysadmin: {env: 1ABC}}\n",
         "lab.yaml:2: passwords.sysadmin.env: '1ABC' is not an environment variable name"),
        ("topology: simplex\npasswords: {sysadmin: {env: A, value: B}}\n",
         "lab.yaml:2: passwords.sysadmin: give exactly one of `env: VARIABLE`, `value: PASSWORD` "
         "or `generate: true`"),
        ("topology: simplex\npasswords: {admin: {generate: yes please}}\n",
         "lab.yaml:2: passwords.admin.generate: must be true"),
        ("topology: simplex\npasswords: {admin: {valu: x}}\n",
         "lab.yaml:2: passwords.admin.valu: unknown key (did you mean 'value'?)"),
        ("topology: simplex\ntimeouts: {instal: 10}\n",
         "lab.yaml:2: timeouts.instal: unknown key (did you mean 'install'?)"),
        ("topology: simplex\ntimeouts: {unlock: 0}\n",
         "lab.yaml:2: timeouts.unlock: must be a number above 0 and at most 604800 seconds, got 0"),
        ("topology: simplex\ntimeout_factor: -2\n",
         "lab.yaml:2: timeout_factor: must be a number above 0 and at most 100, got -2"),
        ("topology: simplex\nbootstrap:\n  docker_http_prxy: http://p:3128\n",
         "lab.yaml:3: bootstrap.docker_http_prxy: not a key of StarlingX's bootstrap overrides "
         "(did you mean 'docker_http_proxy'?)"),
        ("topology: simplex\nbootstrap:\n  external_oam_gateway_address: 10.10.10.9\n",
         "lab.yaml:3: bootstrap.external_oam_gateway_address: set from oam.gateway of the lab "
         "description, not here"),
        ("topology: simplex\nbootstrap:\n  admin_password: Secret*42x\n",
         "lab.yaml:3: bootstrap.admin_password: set from passwords.admin"),
        ("topology: simplex\nbootstrap:\n  timezone: 2024-01-01\n",
         "lab.yaml:3: bootstrap.timezone: values must be plain YAML (strings, numbers, booleans, "
         "lists, mappings), got a date"),
        ("topology: simplex\nbootstrap: [docker_http_proxy]\n",
         "lab.yaml:2: bootstrap: expected a mapping of localhost.yml keys"),
        ("topology: simplex\nfirmware: efi\n",
         "lab.yaml:2: firmware: 'efi' is not allowed; use one of bios, uefi"),
    ],
)  # fmt: skip
def test_bad_files_name_line_key_and_fix(text, expected):
    if expected is None:
        assert parse_lab(text).node("worker-7").memory_mib == 768
        return
    found = problems(text)
    assert len(found) == 1, found
    assert found[0].startswith(expected), found[0]


@pytest.mark.parametrize(
    ("password", "release", "missing"),
    [
        ("Ab1*", "9.0", "at least 7 characters"),
        ("St8rlingX*", "10.0", "at least 12 characters"),
        ("abcdefgh12*x", "10.0", "an upper-case letter"),
        ("Abcdefghij*x", "10.0", "a digit"),
    ],
)
def test_literal_passwords_follow_the_releases_rules_and_are_never_echoed(
    password, release, missing
):
    for text in (
        f"topology: simplex\nrelease: {release}\npasswords: {{sysadmin: '{password}'}}\n",
        f"topology: simplex\nrelease: '{release}'\npasswords:\n  admin: {{value: '{password}'}}\n",
    ):
        (line,) = problems(text)
        assert f"does not meet StarlingX {release}'s password rules (value hidden)" in line
        assert missing in line
        assert password not in line


def test_release_is_one_the_plugin_knows():
    assert parse_lab("topology: simplex\nrelease: 9.0\n").release == "9.0"
    assert parse_lab("topology: simplex\n").release == "10.0"
    assert parse_lab("topology: simplex\nimage: sim:9.0\n").release == "9.0"
    assert parse_lab("topology: simplex\nimage: sim:9.0\n").image == "sim"
    (line,) = problems("topology: simplex\nimage: sim:9.0\nrelease: 10.0\n")
    assert line == "lab.yaml:2: image: 'sim:9.0' contradicts release: 10.0; give one"
    (line,) = problems("topology: simplex\nrelease: 8.0\n")
    assert line.startswith("lab.yaml:2: release: '8.0' is not allowed; use one of 9.0, 10.0, 11.0")


def test_every_problem_is_reported_at_once_in_file_order():
    found = problems(
        """\
        name: Bad Name
        topology: standard
        workers: 30
        nodes:
          worker-9: {memory_mib: 100}
        oam: {gateway: 10.0.0.1}
        extra: 1
        """
    )
    assert [line.split(": ", 2)[:2] for line in found] == [
        ["lab.yaml:1", "name"],
        ["lab.yaml:3", "workers"],
        ["lab.yaml:5", "nodes.worker-9"],
        ["lab.yaml:6", "oam.gateway"],
        ["lab.yaml:7", "extra"],
    ]


def test_unreadable_file_is_a_config_error(tmp_path):
    with pytest.raises(LabConfigError, match="cannot read the lab description"):
        load_lab(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00topology")
    with pytest.raises(LabConfigError, match=r"binary\.yaml: cannot read"):
        load_lab(binary)


def test_bootstrap_overrides_reach_the_lab_and_their_secrets_are_known():
    lab = parse_lab(
        textwrap.dedent("""\
            topology: simplex
            bootstrap:
              dns_servers: [10.10.10.1]
              docker_http_proxy: http://10.10.10.1:3128
              docker_registries:
                defaults: {url: registry.local:9001, username: stx, password: R3g*secret}
              k8s_root_ca_key: KEYDATA
            """)
    )
    assert lab.bootstrap["dns_servers"] == ["10.10.10.1"]
    assert lab.bootstrap["docker_registries"]["defaults"]["url"] == "registry.local:9001"
    assert sorted(lab.bootstrap_secrets) == ["KEYDATA", "R3g*secret"]


def test_firmware_is_bios_unless_the_lab_asks_for_uefi():
    assert parse_lab("topology: simplex\n").firmware is Firmware.BIOS
    assert parse_lab("topology: duplex\nfirmware: uefi\n").firmware is Firmware.UEFI


@pytest.mark.parametrize(
    ("topology", "point"),
    [
        ("duplex", "controller-1:bootstrap"),
        ("simplex", "controller-1:unlock"),
        ("duplex", "worker-0:install"),
        ("standard", "controller-0:no-such-stage"),
    ],
)
def test_a_custom_stage_at_a_point_the_topology_lacks_is_rejected(topology, point):
    (problem,) = problems(
        f"""\
        topology: {topology}
        stages:
          - {{name: x, after: {point}, shell: [uptime]}}
        """
    )
    assert problem.startswith(
        f"lab.yaml:3: stages[0].after: {point!r} is not a pipeline point of a {topology} lab"
    )
    assert (
        "use one of bootstrapped, controller-0-configured, controller-0-unlocked, available, "
        "controller-0:install, controller-0:first-login" in problem
    )


def test_available_is_no_point_to_go_before():
    (problem,) = problems(
        """\
        topology: simplex
        stages:
          - {name: x, before: available, shell: [uptime]}
        """
    )
    assert (
        "'available' is not a pipeline point of a simplex lab (nodes controller-0) to go before"
        in (problem)
    )


def test_a_custom_stage_may_follow_an_earlier_one_of_the_file():
    lab = parse_lab(
        "topology: duplex\nstages:\n"
        "  - {name: first, after: controller-1:install, node: controller-1, shell: [uptime]}\n"
        "  - {name: second, after: controller-1:first, shell: [uptime]}\n"
    )
    assert [s.after for s in lab.stages] == ["controller-1:install", "controller-1:first"]


def test_a_custom_stage_named_like_a_pipeline_stage_of_its_node_is_rejected():
    found = problems(
        """\
        topology: duplex
        stages:
          - {name: unlock, node: controller-1, shell: [uptime]}
          - {name: labels, shell: [uptime]}
          - {name: labels, shell: [id]}
        """
    )
    assert found == [
        "lab.yaml:3: stages[0].name: stage controller-1:unlock clashes with a stage of the "
        "pipeline",
        "lab.yaml:5: stages[2].name: stage controller-0:labels clashes with a stage of the "
        "pipeline",
    ]


# ------------------------------------------------------------------ oam.uplink


def test_the_uplink_follows_the_image_nat_for_an_iso_isolated_for_the_simulator(fake_iso):
    assert parse_lab("topology: simplex\n").oam.uplink is Uplink.ISOLATED
    assert parse_lab("topology: simplex\nimage: sim\n").oam.uplink is Uplink.ISOLATED
    assert parse_lab(f"topology: simplex\nimage: {fake_iso}\n").oam.uplink is Uplink.NAT
    given = (
        f"topology: simplex\nimage: {fake_iso}\noam: {{subnet: 10.20.0.0/24, gateway: 10.20.0.1,"
    )
    lab = parse_lab(given + " floating: 10.20.0.2, controller_0: 10.20.0.3}\n")
    assert lab.oam.uplink is Uplink.NAT  # other OAM keys given, the uplink still follows


@pytest.mark.parametrize("uplink", ["nat", "isolated"])
def test_the_uplink_may_be_given_for_any_image(fake_iso, uplink):
    for image in ("sim", str(fake_iso)):
        lab = parse_lab(f"topology: duplex\nimage: {image}\noam: {{uplink: {uplink}}}\n")
        assert lab.oam.uplink is Uplink(uplink)
        assert str(lab.oam.gateway) == "10.10.10.1"  # the other OAM keys keep their defaults


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "nats",
            "oam.uplink: 'nats' is not allowed; use one of nat, isolated (did you mean 'nat'?)",
        ),
        ("bridged", "oam.uplink: 'bridged' is not allowed; use one of nat, isolated"),
        ("true", "oam.uplink: true is not allowed; use one of nat, isolated"),
    ],
)
def test_an_unknown_uplink_lists_the_allowed_ones(value, message):
    found = problems(f"topology: simplex\noam:\n  uplink: {value}\n")
    assert found == [f"lab.yaml:3: {message}"]


def test_the_uplink_makes_the_oam_network_a_nat_network_and_nothing_else(fake_iso):
    nat = parse_lab(f"topology: simplex\nimage: {fake_iso}\noam: {{subnet: 10.20.0.0/23, gateway: "
                    "10.20.1.254, floating: 10.20.0.2, controller_0: 10.20.0.3}\n")  # fmt: skip
    networks = {n.name: n for n in lab_resources(nat, "ab12", fake_iso).networks}
    assert networks["oam"] == NetworkSpec("oam", nat=True, gateway="10.20.1.254/23")
    assert [n for n in networks.values() if n.nat] == [networks["oam"]]
    isolated = lab_resources(parse_lab("topology: simplex\n"), "ab12", None).networks
    assert not any(n.nat or n.gateway for n in isolated)


def test_show_names_the_uplink(fake_iso):
    shown = describe_lab(parse_lab(f"topology: simplex\nimage: {fake_iso}\n"))
    assert "uplink    nat (the OAM gateway address and masquerading" in shown
    shown = describe_lab(parse_lab("topology: simplex\n"))
    assert "uplink    isolated (the lab reaches nothing outside it)" in shown
