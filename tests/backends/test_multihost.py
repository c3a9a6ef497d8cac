"""A lab over several libvirt hosts (``backends/multihost.py``) without libvirt: its ledger,
which host's part each machine's operation goes to, when the spans are mended, and teardown
past a host that cannot be reached."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_starlingx.backends import multihost
from pytest_starlingx.backends.base import (
    BootDevice,
    DiskSpec,
    LabResources,
    MachineSpec,
    NetworkSpec,
    NicSpec,
    Owner,
    PowerState,
)
from pytest_starlingx.backends.libvirt import Ledger, bridge_name
from pytest_starlingx.backends.multihost import LabHost, SpanLedger, SpanningLab
from pytest_starlingx.backends.span import HostCommands, plan_spans
from pytest_starlingx.errors import BackendError, LeakError

pytestmark = pytest.mark.fast

LAB_ID = "ab12cd34"
HERE = LabHost.of("here", "qemu:///system", "198.18.0.1")
HV2 = LabHost.of(
    "hv2", "qemu+unix:///system?socket=/x/sock", "198.18.0.2", ["ip", "netns", "exec", "hv2"]
)


def resources() -> LabResources:
    nic = (NicSpec("oam"), NicSpec("mgmt", boot=True))
    machines = tuple(
        MachineSpec(name, 256, 1, (DiskSpec(10),), nics=nic,
                    boot_order=(BootDevice.DISK, BootDevice.NETWORK))
        for name in ("controller-0", "controller-1", "worker-0")
    )  # fmt: skip
    networks = (NetworkSpec("oam", nat=True, gateway="10.10.10.1/24"), NetworkSpec("mgmt"))
    return LabResources("t", LAB_ID, networks, machines)


PLACEMENT = {"controller-0": "here", "controller-1": "here", "worker-0": "hv2"}


class FakeBackend:
    """What a spanning lab needs of the lab backend: its state directory and config."""

    def __init__(self, root: Path, uri: str = "qemu:///system") -> None:
        self.config = SimpleNamespace(uri=uri, state_dir=root)
        self.host_backends: dict[Any, Any] = {}

    def lab_dir(self, lab_id: str) -> Path:
        return self.config.state_dir / "labs" / lab_id

    def ledger_path(self, lab_id: str) -> Path:
        return self.lab_dir(lab_id) / "owner.json"


class FakePart:
    """A host's part: records every call, in one list shared by the parts."""

    def __init__(self, host: str, calls: list[tuple[str, ...]]) -> None:
        self.host = host
        self.calls = calls

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any) -> Any:
            self.calls.append((self.host, name, *map(str, args)))
            if name == "state":
                return PowerState.OFF
            if name == "mac_addresses":
                return (f"52:54:00:00:00:{self.host[-1]}",)
            return None

        return call


def spanning_lab(tmp_path: Path, monkeypatch, calls: list[tuple[str, ...]]) -> SpanningLab:
    """A spanning lab over HERE and HV2 whose parts are fakes; opening a span is recorded."""
    res = resources()
    bridges = [bridge_name(LAB_ID, i) for i in range(len(res.networks))]
    monkeypatch.setattr("pytest_starlingx.backends.span._vxlans", lambda cmd: {})
    planned = plan_spans(LAB_ID, bridges, [HERE.span_host(), HV2.span_host()])
    ledger = SpanLedger(
        tmp_path / "labs" / LAB_ID / multihost.SPAN_LEDGER, Owner("t", LAB_ID), res,
        hosts=[HERE.to_json(), HV2.to_json()], placement=PLACEMENT,
        spans=[s.to_json() for s in planned],
    )  # fmt: skip
    lab = SpanningLab(FakeBackend(tmp_path), ledger)  # type: ignore[arg-type]
    lab._parts = {"here": FakePart("here", calls), "hv2": FakePart("hv2", calls)}  # type: ignore[dict-item]
    monkeypatch.setattr(
        multihost, "open_span", lambda span, on=None: calls.append(("span", span.device, str(on)))
    )
    return lab


def test_a_host_runs_its_commands_behind_its_prefix_or_as_its_uri_says():
    assert HV2.commands == HostCommands("hv2", ("ip", "netns", "exec", "hv2"))
    assert HERE.commands == HostCommands("here")
    ssh = LabHost.of("hv3", "qemu+ssh://root@hv3/system", "198.18.0.3")
    assert ssh.commands.prefix[-1] == "root@hv3" and ssh.commands.remote_shell
    assert ssh.commands.host == "hv3"  # messages name the host as the lab file does
    assert LabHost.from_json(HV2.to_json()) == HV2
    with pytest.raises(BackendError, match=r"host hv5: .* qemu\+tcp://hv5/system is not one: "):
        LabHost.of("hv5", "qemu+tcp://hv5/system", "198.18.0.5")
    with pytest.raises(BackendError, match="host hv4: no underlay address"):
        LabHost.of("hv4", "qemu:///system", None).span_host()


def test_the_ledger_keeps_hosts_placement_and_spans_and_is_no_libvirt_ledger(tmp_path, monkeypatch):
    lab = spanning_lab(tmp_path, monkeypatch, [])
    lab.ledger.path.parent.mkdir(parents=True)
    lab.ledger.save()
    loaded = SpanLedger.load(lab.ledger.path)
    assert loaded.lab_hosts() == [HERE, HV2]
    assert loaded.placement == PLACEMENT
    assert loaded.network_spans() == lab.spans
    assert [s.hosts[1].commands.prefix for s in lab.spans] == [HV2.commands.prefix] * 2
    assert SpanLedger.is_ours(lab.ledger.path) and not Ledger.is_ours(lab.ledger.path)
    assert multihost.is_spanning(FakeBackend(tmp_path), LAB_ID)  # type: ignore[arg-type]


def test_each_part_holds_its_hosts_machines_and_every_network_nat_on_the_first_host_only(
    tmp_path, monkeypatch
):
    lab = spanning_lab(tmp_path, monkeypatch, [])
    first, second = lab.part_resources(lab.hosts[0]), lab.part_resources(lab.hosts[1])
    assert [m.name for m in first.machines] == ["controller-0", "controller-1"]
    assert [m.name for m in second.machines] == ["worker-0"]
    assert first.networks == lab.resources.networks
    assert second.networks == (NetworkSpec("oam"), NetworkSpec("mgmt"))  # the gateway is here
    assert lab.host("worker-0") == HV2


def test_machine_operations_go_to_the_part_on_the_machines_host(tmp_path, monkeypatch):
    calls: list[tuple[str, ...]] = []
    lab = spanning_lab(tmp_path, monkeypatch, calls)
    assert lab.mac_addresses("worker-0") == ("52:54:00:00:00:2",)
    lab.set_boot_order("controller-1", [BootDevice.NETWORK])
    lab.console("worker-0")
    lab.open_gateway("oam", "10.10.10.1/24", [("10.10.10.2", 22)])
    assert [c[:2] for c in calls] == [
        ("hv2", "mac_addresses"), ("here", "set_boot_order"), ("hv2", "console"),
        ("here", "open_gateway"),
    ]  # fmt: skip


def test_power_on_mends_the_spans_on_the_machines_host_while_it_is_paused(tmp_path, monkeypatch):
    calls: list[tuple[str, ...]] = []
    lab = spanning_lab(tmp_path, monkeypatch, calls)
    lab.power_on("worker-0", before_resume=lambda m: calls.append(("console", m)))
    spans = [("span", s.device, "['hv2']") for s in lab.spans]
    assert calls == [
        ("hv2", "state", "worker-0"),
        ("hv2", "_start_paused", "worker-0"),
        *spans,  # the VXLAN devices on the bridges libvirt may have made anew ...
        ("console", "worker-0"),
        ("hv2", "_resume", "worker-0", "resuming worker-0"),  # ... before the guest runs
    ]


def test_an_error_on_a_part_names_its_host(tmp_path, monkeypatch):
    lab = spanning_lab(tmp_path, monkeypatch, [])

    class Gone:
        def reset(self, machine: str) -> None:
            raise BackendError("connecting to libvirt at qemu+unix:///...: no such file")

    lab._parts["hv2"] = Gone()  # type: ignore[assignment]
    with pytest.raises(BackendError) as caught:
        lab.reset("worker-0")
    assert str(caught.value) == (
        f"host hv2 ({HV2.uri}): connecting to libvirt at qemu+unix:///...: no such file"
    )


def test_the_first_host_must_be_this_machines_libvirt_at_the_backends_uri():
    res = resources()

    def problem(hosts: list[LabHost], placement: dict[str, str], uri: str = "qemu:///system"):
        with pytest.raises(BackendError) as caught:
            multihost._check(FakeBackend(Path("/nonexistent"), uri), res, hosts, placement)  # type: ignore[arg-type]
        return str(caught.value)

    remote = LabHost.of("here", "qemu+ssh://root@hv1/system", "198.18.0.1")
    assert "the first host, here, is at qemu+ssh://root@hv1/system: it runs the lab's gateways" in (
        problem([remote, HV2], PLACEMENT)
    )
    assert "but the lab's libvirt backend is at qemu:///session" in problem(
        [HERE, HV2], PLACEMENT, "qemu:///session"
    )
    assert "machine worker-0 is placed on None, not one of the lab's hosts (here, hv2)" in problem(
        [HERE, HV2], {"controller-0": "here", "controller-1": "here"}
    )


def test_teardown_goes_on_past_a_host_it_cannot_reach_and_keeps_the_ledger(tmp_path, monkeypatch):
    calls: list[tuple[str, ...]] = []
    lab = spanning_lab(tmp_path, monkeypatch, calls)
    lab.ledger.path.parent.mkdir(parents=True)
    lab.ledger.save()

    class Part:
        def __init__(self, host: LabHost) -> None:
            self.host = host

        def destroy_lab(self, lab_id: str) -> None:
            if self.host.name == "hv2":
                raise BackendError(f"connecting to libvirt at {self.host.uri}: no such file")
            calls.append(("destroyed", self.host.name))

    monkeypatch.setattr(multihost, "host_backend", lambda backend, lab_id, host, first: Part(host))
    monkeypatch.setattr(
        multihost, "remove_span", lambda span: [f"host hv2: removing {span.device}: gone"]
    )
    with pytest.raises(LeakError) as caught:
        multihost.destroy_lab(lab.backend, LAB_ID)
    message = str(caught.value)
    assert message.startswith(
        f"lab {LAB_ID} over hosts here, hv2: could not remove everything on hv2;"
    )
    assert f"host hv2 ({HV2.uri}): connecting to libvirt at {HV2.uri}: no such file" in message
    assert calls == [("destroyed", "here")]  # the first host's part went all the same
    assert lab.ledger.path.exists()  # the next gc tries hv2 again

    monkeypatch.setattr(multihost, "remove_span", lambda span: [])
    Part.destroy_lab = lambda self, lab_id: calls.append(("destroyed", self.host.name))  # type: ignore[method-assign]
    multihost.destroy_lab(lab.backend, LAB_ID)
    assert calls[1:] == [("destroyed", "hv2"), ("destroyed", "here")]
    assert not lab.ledger.path.parent.exists()
