"""Parsing ``system`` CLI output: tables by header, wrapped cells, noise around; yaml shows."""

from __future__ import annotations

import pytest

from pytest_starlingx.system_output import (
    TableError,
    parse_properties,
    parse_table,
    parse_yaml_properties,
)

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

HOST_LIST = """\
[sysadmin@controller-0 ~(keystone_admin)]$ system host-list
+----+--------------+-------------+----------------+-------------+--------------+
| id | hostname     | personality | administrative | operational | availability |
+----+--------------+-------------+----------------+-------------+--------------+
| 1  | controller-0 | controller  | unlocked       | enabled     | available    |
| 2  | None         | None        | locked         | disabled    | offline      |
+----+--------------+-------------+----------------+-------------+--------------+
[sysadmin@controller-0 ~(keystone_admin)]$ """


def test_rows_are_mapped_by_header():
    rows = parse_table(HOST_LIST)
    assert rows == [
        {"id": "1", "hostname": "controller-0", "personality": "controller",
         "administrative": "unlocked", "operational": "enabled", "availability": "available"},
        {"id": "2", "hostname": "None", "personality": "None",
         "administrative": "locked", "operational": "disabled", "availability": "offline"},
    ]  # fmt: skip


def test_crlf_and_kernel_noise_after_the_table_are_ignored():
    text = HOST_LIST.replace("\n", "\r\n") + "\r\n[  123.4] random: crng init done\r\n"
    assert [r["hostname"] for r in parse_table(text)] == ["controller-0", "None"]


def test_empty_table_has_no_rows():
    text = "+------+------+\n| uuid | name |\n+------+------+\n+------+------+\n"
    assert parse_table(text) == []


def test_wrapped_cells_are_joined():
    text = """\
+--------+--------------------------+
| name   | uuid                     |
+--------+--------------------------+
| enp0s3 | 6d7a5a0e-1b2c-4d3e-8f90- |
|        | 0123456789ab             |
| enp0s8 | 11111111-2222            |
+--------+--------------------------+"""
    assert parse_table(text) == [
        {"name": "enp0s3", "uuid": "6d7a5a0e-1b2c-4d3e-8f90-0123456789ab"},
        {"name": "enp0s8", "uuid": "11111111-2222"},
    ]


def test_host_show_properties():
    text = """\
+-----------------+--------------------------------------+
| Property        | Value                                |
+-----------------+--------------------------------------+
| hostname        | controller-1                         |
| install_state   | completed                            |
| mgmt_mac        | 52:54:00:12:34:56                    |
+-----------------+--------------------------------------+"""
    props = parse_properties(text)
    assert props["install_state"] == "completed"
    assert props["mgmt_mac"] == "52:54:00:12:34:56"


def test_properties_refuse_a_row_table():
    with pytest.raises(TableError, match=r"not a Property \| Value table"):
        parse_properties(HOST_LIST)


def test_host_show_yaml_properties():
    # cgtsclient's --format yaml is yaml.safe_dump(default_flow_style=False): sorted keys.
    text = """\
[sysadmin@controller-0 ~(keystone_admin)]$ system host-show 2 --format yaml\r
capabilities:\r
  Personality: Controller-Standby\r
id: 2\r
install_state: completed\r
location: {}\r
mgmt_mac: '52:54:00:12:34:56'\r
serialid: null\r
"""
    props = parse_yaml_properties(text.split("\n", 1)[1])
    assert props["install_state"] == "completed" and props["id"] == "2"
    assert props["mgmt_mac"] == "52:54:00:12:34:56" and props["serialid"] == "None"
    assert props["capabilities"] == "{Personality: Controller-Standby}"


@pytest.mark.parametrize("text", ["Host not found", HOST_LIST, "a: [unclosed"])
def test_yaml_properties_refuse_other_text(text):
    with pytest.raises(TableError, match=r"not a yaml mapping|not yaml"):
        parse_yaml_properties(text)


@pytest.mark.parametrize(
    "text",
    ["Host not found: worker-9", "", "+---+\n| a |\n+---+\n| 1 | 2 |\n+---+\n"],
)
def test_no_or_broken_table_is_an_error_quoting_the_text(text):
    with pytest.raises(TableError):
        parse_table(text)
