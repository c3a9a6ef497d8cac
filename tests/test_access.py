"""What the host reaches of a lab: its endpoints, and the lab as a starlingx/test
configuration."""

from __future__ import annotations

import json
from pathlib import Path

import json5
import pytest

from pytest_starlingx.access import (
    LabFacts,
    endpoint_targets,
    endpoints,
    open_endpoints,
    starlingx_test_config,
)
from pytest_starlingx.backends.gateway import Gateway
from pytest_starlingx.errors import BackendError
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.ownership import Holder

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


PASSWORDS = {"sysadmin": "Sys@dmin-1", "admin": "Adm1n@pass"}


def _facts(**description):
    return LabFacts.of(lab_from_mapping(description), PASSWORDS)


def _ports(facts, first=40000):
    targets = endpoint_targets(facts).values()
    return {target: first + i for i, target in enumerate(sorted(set(targets)))}


def test_a_simplex_lab_is_reached_at_its_floating_address_only():
    assert endpoint_targets(_facts(name="s", topology="simplex")) == {
        "ssh": ("10.10.10.2", 22),
        "sysinv": ("10.10.10.2", 6385),
        "keystone": ("10.10.10.2", 5000),
    }


def test_each_controller_of_a_duplex_lab_is_reached_at_its_own_address_too():
    facts = _facts(name="d", topology="duplex", oam={"subnet": "10.20.0.0/24",
                   "gateway": "10.20.0.1", "floating": "10.20.0.5", "controller_0": "10.20.0.6",
                   "controller_1": "10.20.0.7"})  # fmt: skip
    facts = LabFacts.from_json(json.loads(json.dumps(facts.to_json())))  # as the state keeps them
    targets = endpoint_targets(facts)
    assert targets["ssh"] == ("10.20.0.5", 22)
    assert targets["ssh-controller-0"] == ("10.20.0.6", 22)
    assert targets["ssh-controller-1"] == ("10.20.0.7", 22)


def test_the_starlingx_test_file_loads_as_json5_and_names_the_loopback_ports():
    facts = _facts(name="std", topology="standard", workers=1)
    ports = _ports(facts)
    found = endpoints(facts, ports)
    text = json.dumps(starlingx_test_config(facts, found), indent=2)
    config = json5.loads(text)
    assert (config["floating_ip"], config["ssh_port"]) == ("127.0.0.1", ports[("10.10.10.2", 22)])
    assert config["lab_type"] == "Standard"
    assert config["admin_credentials"] == {"user_name": "sysadmin", "password": "Sys@dmin-1"}
    assert config["rest_credentials"]["password"] == "Adm1n@pass"
    nodes = config["nodes"]
    assert nodes["controller-1"]["ssh_port"] == ports[("10.10.10.4", 22)]
    assert nodes["controller-1"]["node_type"] == "Controller"
    assert nodes["worker-0"] == {"ip": "worker-0", "node_type": "Compute", "node_capabilities": []}


class _Handle:
    """A lab handle whose recorded gateway cannot be handed back until it is closed."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def open_gateway(self, network, address, targets):
        self.calls.append(f"open {network} {address}")
        if "close" not in " ".join(self.calls):
            raise BackendError("the gateway is recorded but its relay is gone")
        return Gateway("ns", "veth", Holder.me(), {t: 41000 + i for i, t in enumerate(targets)},
                       Path("/nonexistent"))  # fmt: skip

    def close_gateway(self, network):
        self.calls.append(f"close {network}")


def test_a_gateway_the_backend_will_not_hand_back_is_closed_and_opened_anew(tmp_path):
    handle = _Handle()
    found = open_endpoints(_facts(name="s", topology="simplex"), handle, tmp_path)  # type: ignore[arg-type]
    assert handle.calls == ["open oam 10.10.10.1/24", "close oam", "open oam 10.10.10.1/24"]
    assert found["ssh"].url.startswith("http://127.0.0.1:41")
