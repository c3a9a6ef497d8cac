"""In-process checks of the platform's small parsers and renderers (guest code, host Python)."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_platform_support import ROOTFS, parse_table

sys.path.insert(0, str(ROOTFS / "usr" / "lib"))
from stxsim import miniyaml, table
from stxsim.sysinv import checks, commands, hosts, registry

assert commands.MODULES  # importing them registers every `system` subcommand

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


def test_localhost_yml_subset_parses_like_yaml() -> None:
    text = (
        "---\n"
        "# overrides\n"
        "system_mode: duplex   # trailing comment\n"
        "dns_servers: [8.8.8.8, '1.1.1.1']\n"
        "ntp:\n"
        "  - 0.pool.ntp.org\n"
        '  - "1.pool.ntp.org"\n'
        "empty:\n"
        "admin_password: 'Li69nux*#1'\n"
        "port: 6385\n"
        "flag: true\n"
    )
    assert miniyaml.loads(text) == {
        "system_mode": "duplex",
        "dns_servers": ["8.8.8.8", "1.1.1.1"],
        "ntp": ["0.pool.ntp.org", "1.pool.ntp.org"],
        "empty": None,
        "admin_password": "Li69nux*#1",
        "port": 6385,
        "flag": True,
    }


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("a:\n  b: c\n", "f.yml:2: nested mappings are not supported"),
        ("a: {b: c}\n", "f.yml:1: flow mappings must be written as JSON"),
        ("a: [b, [c]]\n", "f.yml:1: nested collections are not supported"),
        ("- a\n", "f.yml:1: list item outside a list"),
        ("a: 1\na: 2\n", "f.yml:2: duplicate key 'a'"),
        ("a: 'open\n", "f.yml:1: unterminated quoted string"),
        ("just words\n", "f.yml:1: expected 'key: value'"),
    ],
)
def test_unsupported_yaml_names_the_line(text: str, error: str) -> None:
    with pytest.raises(miniyaml.YamlError, match=error.replace("[", r"\[").replace("{", r"\{")):
        miniyaml.loads(text, "f.yml")


def test_table_renders_like_prettytable() -> None:
    out = table.render(["id", "hostname"], [[1, "controller-0"], [2, None]])
    assert out.splitlines() == [
        "+----+--------------+",
        "| id | hostname     |",
        "+----+--------------+",
        "| 1  | controller-0 |",
        "| 2  | None         |",
        "+----+--------------+",
    ]
    assert table.render(["uuid"], []).splitlines() == [  # measured with prettytable
        "+------+", "| uuid |", "+------+", "+------+",
    ]  # fmt: skip
    multi = table.render(["k", "caps"], [["a", "x: 1\ny: 2"]])
    assert parse_table(multi) == [{"k": "a", "caps": "x: 1\ny: 2"}]
    assert [table.cell(v) for v in (600.0, 19.999, ["p"], True)] == [
        "600.0",
        "19.999",
        "['p']",
        "True",
    ]


def _verdicts() -> list[tuple[str, str, str]]:
    """(verdict, command line, error line) from the real cgtsclient 10.0 parser's recording."""
    path = Path(__file__).with_name("data") / "cgtsclient-10.0-parse.tsv"
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    return [tuple([*ln.split("\t"), ""][:3]) for ln in lines]  # type: ignore[misc]


def _without_choices(message: str) -> str:
    """An argparse error line without its '(choose from ...)' list: the simulator implements
    fewer subcommands and personalities than cgtsclient lists."""
    return message.split(" (choose from ")[0]


@pytest.mark.parametrize(("verdict", "line", "message"), _verdicts(), ids=lambda v: v[:60])
def test_system_parses_command_lines_as_the_real_cgtsclient(verdict, line, message) -> None:
    """Usage errors as in StarlingX 10.0: --nowrap on list commands only, --column/--format on
    host-list and host-show, positional arguments and choices as each *_shell.py declares."""
    parser = registry.build()
    try:
        registry.parse(parser, shlex.split(line))
    except registry.ParserExit as exc:
        assert exc.status == 2, exc.text
        error = next(ln for ln in exc.text.splitlines() if ": error: " in ln)
        assert (verdict, _without_choices(error)) == ("USAGE", _without_choices(message))
    else:
        assert verdict == "OK", f"the real parser refuses {line!r}: {message}"


def test_unlock_is_refused_while_an_application_applies() -> None:
    """sysinv host.py check_unlock_application (r/stx.10.0): refused, and the reason."""
    now = 1000.0
    app = {"name": "platform-integ-apps", "status": "uploaded", "apply_at": now + 5}
    data = {"apps": [app]}
    host = {"id": 2, "hostname": "controller-1", "administrative": "locked"}
    assert hosts.app_status(app, now) == ("applying", "retrieving docker images")
    with pytest.raises(hosts.CommandError) as info:
        checks.check_unlock(data, host, now, force=False)
    assert str(info.value) == (
        "Rejected: Can not unlock host controller-1 while an application is being applied, "
        "updated or recovered. Please try again later."
    )
    assert hosts.app_status(app, now + 5) == ("applied", "completed")


def test_the_plugins_localhost_yml_reads_the_same_in_the_simulator_and_in_yaml() -> None:
    """What the plugin writes (its keys, then the lab's bootstrap: overrides, nested ones as
    JSON flow collections) is read alike by PyYAML (Ansible) and the simulator's parser."""
    import yaml

    from pytest_starlingx.labfile import lab_from_mapping
    from pytest_starlingx.stages.base import Bringup
    from pytest_starlingx.stages.controller0 import localhost_yml
    from pytest_starlingx.timings import StepRecorder

    registries = {"defaults": {"url": "registry.local:9001", "password": "it's*S3cret"}}
    spec = lab_from_mapping({"topology": "duplex", "bootstrap": {
        "docker_registries": registries, "dns_servers": ["10.10.10.1"], "wipe_ceph_osds": True,
    }})  # fmt: skip
    passwords = {"admin": "Adm1n*'quoted'", "sysadmin": "Sys4dmin*#1"}
    text = localhost_yml(Bringup(spec, {}, {}, passwords, StepRecorder(spec.name)))
    parsed = miniyaml.loads(text)
    assert parsed == yaml.safe_load(text)
    assert parsed["docker_registries"] == registries and parsed["dns_servers"] == ["10.10.10.1"]
    assert parsed["admin_password"] == passwords["admin"] and parsed["wipe_ceph_osds"] is True
    assert parsed["external_oam_node_1_address"] == "10.10.10.4"


POLICY_CHECK = """
import sys
sys.path.insert(0, sys.argv[1])
import passwords
passwords.COMMON_PASSWORD = sys.argv[2]
print(passwords.retries())
for new in sys.argv[3:]:
    print(passwords.policy_error(new, "sysadmin", "sysadmin"))
"""


@pytest.mark.parametrize(
    ("release", "verdicts"),
    [
        ("10.0", {
            "abc": "The password contains less than 1 digits",
            "Xk9#mQ2$pL7": "The password is shorter than 12 characters",
            "xk9#mq2$pl7w": "The password contains less than 1 uppercase letters",
            "Sysadmin#123x": "The password contains the user name in some form",
            "Aa1!Aa1!Aa1!": "The password fails the dictionary check - it does not contain "
                            "enough DIFFERENT characters",
            "Xk9#mQ2$pL7w": "None",
        }),
        ("9.0", {"Ab1!": "The password is shorter than 7 characters", "Xk9#mQ2": "None"}),
    ],
)  # fmt: skip
def test_login_checks_passwords_with_libpwquality_under_the_releases_rules(release, verdicts):
    """The release's pam_pwquality options (config-files common-password) in Debian's
    libpwquality, as the guest's login runs it (the host's python3-pwquality is the guest's)."""
    rules = ROOTFS.parent / "releases" / release / "rootfs" / "etc" / "pam.d" / "common-password"
    out = subprocess.run(
        ["/usr/bin/python3.11", "-c", POLICY_CHECK, str(ROOTFS / "usr" / "lib" / "stx-sim"),
         str(rules), *verdicts],
        capture_output=True, text=True, check=True,
    ).stdout.splitlines()  # fmt: skip
    assert out == ["3", *verdicts.values()]


def test_each_controller_of_a_duplex_system_has_its_own_oam_address() -> None:
    """Bootstrap's ``external_oam_node_<N>_address`` is controller-N's own OAM address (with
    the subnet's prefix), once an interface of it carries the oam network; a simplex system
    has none, nor has a worker."""
    from stxsim import endpoints

    oam = {"external_oam_subnet": "10.10.10.0/24", "external_oam_floating_address": "10.10.10.2"}
    duplex = {
        "external_oam_node_0_address": "10.10.10.3",
        "external_oam_node_1_address": "10.10.10.4",
    }
    hosts = [{"hostname": f"controller-{n}", "uuid": f"c{n}"} for n in (0, 1)]
    links = [
        {"host_uuid": "c0", "network_type": "oam"},
        {"host_uuid": "c1", "network_type": "mgmt"},
    ]
    data = {"system": {"oam": {**oam, **duplex}}, "hosts": hosts, "interface_networks": links}
    assert endpoints.oam_unit(data, "controller-0") == "10.10.10.3/24"
    assert endpoints.oam_unit(data, "controller-1") is None  # no interface carries oam yet
    links.append({"host_uuid": "c1", "network_type": "oam"})
    assert endpoints.oam_unit(data, "controller-1") == "10.10.10.4/24"
    assert endpoints.oam_unit(data, "worker-0") is None
    simplex = {"system": {"oam": oam}, "hosts": hosts, "interface_networks": links}
    assert endpoints.oam_unit(simplex, "controller-0") is None
