"""What every backend promises (``base.Backend``, ``base.LabHandle``), checked on each one:
libvirt on the real daemon, VirtualBox through the VBoxManage emulator (both QEMU, TCG).

Backend-specific checks (domain XML, VBoxManage argv, registry contents) live in
``test_libvirt*.py`` and ``test_virtualbox*.py``.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import libvirt
import pytest
from libvirt_helpers import (
    LOADER,
    READY,
    everything,
    lab_resources,
    log_holding,
    new_lab_id,
    ours,
    read_until,
    shell,
)
from vbox_helpers import (  # noqa: F401
    EMULATOR_DIR,
    Emulator,
    emulator,
    monkeypatch_module,
    vbox,
    vbox_env,
    vbox_lab_factory,
)

import pytest_starlingx.backends as backends_pkg
from pytest_starlingx.backends.base import (
    Backend,
    BootDevice,
    LabHandle,
    LabResources,
    PowerState,
)
from pytest_starlingx.backends.common import LabBackendBase
from pytest_starlingx.backends.libvirt import LibvirtBackend, LibvirtLab
from pytest_starlingx.backends.virtualbox import VirtualBoxBackend, VirtualBoxLab
from pytest_starlingx.errors import BackendError
from pytest_starlingx.lifecycle import gc as lab_gc
from pytest_starlingx.ownership import Holder


@dataclass
class Harness:
    """One backend under test, with what only its own hypervisor can tell."""

    kind: str
    backend: LabBackendBase
    make: Callable[[LabResources], LabHandle]  # destroyed at the end of the test
    used: Callable[[str], None]  # a lab id the test creates objects for, other than by make
    leftovers: Callable[[str], set[str]]  # hypervisor objects whose names carry the lab id
    foreign_machine: Callable[[str], contextlib.AbstractContextManager[str]]
    machine_kind: str  # how owned_objects calls a machine
    labelled_networks: bool  # whether networks carry an owner record (are owned objects)


@pytest.fixture(params=["libvirt", "libvirt-remote-files", "virtualbox"])
def harness(request: pytest.FixtureRequest) -> Harness:
    """Each backend in turn; libvirt also in remote-files mode (console stream, uploaded CD,
    pools through the API), against the local libvirtd."""
    if request.param == "libvirt":
        return _libvirt_harness(request, "backend", "lab_factory")
    if request.param == "libvirt-remote-files":
        return _libvirt_harness(request, "remote_backend", "remote_lab_factory")
    return _virtualbox_harness(request)


def _libvirt_harness(request: pytest.FixtureRequest, backend_name: str, factory: str) -> Harness:
    backend: LibvirtBackend = request.getfixturevalue(backend_name)
    used: set[str] = request.getfixturevalue("used_lab_ids")

    @contextlib.contextmanager
    def foreign_machine(name: str) -> Iterator[str]:
        dom = backend.conn.defineXML(
            f"<domain type='qemu'><name>{name}</name><memory>65536</memory>"
            "<os><type arch='x86_64'>hvm</type></os></domain>"
        )
        try:
            yield f"domain {name}"
        finally:
            dom.undefine()

    return Harness(
        kind="libvirt",
        backend=backend,
        make=request.getfixturevalue(factory),
        used=used.add,
        leftovers=lambda lab_id: ours(everything(backend.conn), lab_id),
        foreign_machine=foreign_machine,
        machine_kind="domain",
        labelled_networks=True,
    )


def _virtualbox_harness(request: pytest.FixtureRequest) -> Harness:
    emu: Emulator = request.getfixturevalue("emulator")

    @contextlib.contextmanager
    def foreign_machine(name: str) -> Iterator[str]:
        folder = str(emu.home.parent / "foreign")
        created = emu("createvm", "--name", name, "--basefolder", folder, "--register")
        assert created.returncode == 0, created.stderr
        try:
            yield f"VM {name}"
        finally:
            emu("unregistervm", name, "--delete")

    return Harness(
        kind="virtualbox",
        backend=request.getfixturevalue("vbox"),
        make=request.getfixturevalue("vbox_lab_factory"),
        used=lambda _lab_id: None,
        leftovers=lambda lab_id: set(emu.leftovers(lab_id)),
        foreign_machine=foreign_machine,
        machine_kind="VM",
        labelled_networks=False,
    )


def _owned(backend: Backend, lab_id: str) -> set[tuple[str, str]]:
    return {(kind, name) for kind, name, owner in backend.owned_objects() if owner.lab_id == lab_id}


# ------------------------------------------------------------------ the protocols


def _typed(
    libvirt_backend: LibvirtBackend,
    libvirt_lab: LibvirtLab,
    vbox_backend: VirtualBoxBackend,
    vbox_lab: VirtualBoxLab,
) -> list[Backend | LabHandle]:
    """Never called: mypy checks that each class meets its protocol (`tox -e mypy`)."""
    backends: list[Backend] = [libvirt_backend, vbox_backend]
    labs: list[LabHandle] = [libvirt_lab, vbox_lab]
    return [*backends, *labs]


def test_backend_and_lab_meet_the_protocols(harness):
    lab = harness.make(lab_resources(1, new_lab_id()))
    assert isinstance(harness.backend, Backend)
    assert isinstance(lab, LabHandle)
    assert harness.backend.software_emulated() in (True, False)


# ------------------------------------------------------------------ create and destroy


@pytest.mark.parametrize("machines", [1, 2, 4])
def test_create_lists_and_destroy_leaves_nothing(harness, machines):
    lab_id = new_lab_id()
    res = lab_resources(machines, lab_id)
    lab = harness.make(res)
    prefix = f"stx-t-{lab_id}-"
    expected = {(harness.machine_kind, prefix + m.name) for m in res.machines}
    if harness.labelled_networks:
        expected |= {("network", prefix + n.name) for n in res.networks}
    assert _owned(harness.backend, lab_id) == expected
    assert lab_id in harness.backend.lab_ids()
    assert harness.backend.lab_ids() == sorted(set(harness.backend.lab_ids()))
    for spec in res.machines:
        assert lab.state(spec.name) is PowerState.OFF
        assert len(set(lab.mac_addresses(spec.name))) == len(spec.nics)
    assert harness.backend.lab_dir(lab_id).is_dir()

    lab.destroy()
    assert harness.leftovers(lab_id) == set()
    assert _owned(harness.backend, lab_id) == set()
    assert not harness.backend.lab_dir(lab_id).exists()
    assert lab_id not in harness.backend.lab_ids()
    lab.destroy()  # idempotent


def test_reopened_lab_destroys_only_our_files(harness):
    lab_id = new_lab_id()
    lab = harness.make(lab_resources(2, lab_id))
    reopened = harness.backend.open_lab(lab_id)  # another process would do this
    assert reopened.resources == lab.resources
    other_layer_file = harness.backend.lab_dir(lab_id) / "lab.json"
    other_layer_file.write_text("{}")
    reopened.destroy()
    assert sorted(p.name for p in harness.backend.lab_dir(lab_id).iterdir()) == ["lab.json"]
    other_layer_file.unlink()
    assert harness.leftovers(lab_id) == set()
    assert lab_id not in harness.backend.lab_ids()
    with pytest.raises(BackendError, match="missing or unreadable"):
        harness.backend.open_lab(lab_id)


def test_lab_id_in_use_is_refused(harness):
    res = lab_resources(1, new_lab_id())
    harness.make(res)
    with pytest.raises(BackendError, match="already exists"):
        harness.backend.create_lab(res)


def test_objects_with_our_names_but_not_ours_are_left_alone(harness):
    lab_id = new_lab_id()
    harness.used(lab_id)
    with harness.foreign_machine(f"stx-t-{lab_id}-node-0") as foreign:
        before = harness.leftovers(lab_id)
        assert before
        with pytest.raises(BackendError, match="left alone") as err:
            harness.backend.create_lab(lab_resources(1, lab_id))
        assert foreign in str(err.value)
        assert harness.leftovers(lab_id) == before  # nothing created, nothing removed
        assert not harness.backend.lab_dir(lab_id).exists()
        assert _owned(harness.backend, lab_id) == set()
        harness.backend.destroy_lab(lab_id)  # finds nothing of ours
        assert harness.leftovers(lab_id) == before


def test_two_labs_side_by_side(harness):
    first_id, second_id = new_lab_id(), new_lab_id()
    first = harness.make(lab_resources(2, first_id))
    second = harness.make(lab_resources(2, second_id))  # same lab name, same machine names
    assert first.mac_addresses("node-0") != second.mac_addresses("node-0")
    second.destroy()
    assert harness.leftovers(second_id) == set()
    machines = {n for k, n in _owned(harness.backend, first_id) if k == harness.machine_kind}
    assert machines == {f"stx-t-{first_id}-node-0", f"stx-t-{first_id}-node-1"}
    assert first.state("node-0") is PowerState.OFF


# ------------------------------------------------------------------ power, console, snapshots


def test_boot_console_power_snapshots_and_boot_order(harness, tiny_iso):
    lab = harness.make(lab_resources(2, new_lab_id(), cdrom=tiny_iso))
    console = lab.console("node-0")
    started = time.monotonic()
    lab.power_on("node-0", before_resume=lambda _m: console.connect())
    try:
        first = read_until(console, READY)
        boot_seconds = time.monotonic() - started
        assert b"Booting `tiny'" in first  # nothing missed: GRUB's output from its first line
        assert LOADER.encode() in first
        assert lab.state("node-0") is PowerState.RUNNING
        assert lab.state("node-1") is PowerState.OFF
        log_holding(lambda: lab.console_log("node-0"), (LOADER, READY))
        out = shell(console, "strings /sys/firmware/dmi/entries/11-0/raw")
        assert b"stx-sim:node=0,fail=none" in out  # the spec's SMBIOS OEM strings
        lab.power_on("node-0")  # already running: left alone
        assert lab.state("node-0") is PowerState.RUNNING

        # Whole-lab snapshot: node-0 running (memory included), node-1 off.
        shell(console, "echo before > /mnt/t/marker")
        t0 = time.monotonic()
        lab.snapshot("s1")
        snapshot_seconds = time.monotonic() - t0
        assert {(i.machine, i.name, i.running) for i in lab.snapshots()} == {
            ("node-0", "s1", True),
            ("node-1", "s1", False),
        }
        assert [i.machine for i in lab.snapshots("node-1")] == ["node-1"]
        shell(console, "echo after > /mnt/t/marker")
        t0 = time.monotonic()
        lab.revert("s1", before_resume=lambda _m: console.connect())
        revert_seconds = time.monotonic() - t0
        assert lab.state("node-0") is PowerState.RUNNING
        assert lab.state("node-1") is PowerState.OFF
        out = shell(console, "cat /mnt/t/marker")
        assert b"before" in out and b"after\r\n" not in out
        with pytest.raises(BackendError):
            lab.revert("no-such-snapshot", ["node-1"])
        lab.delete_snapshot("s1")
        lab.delete_snapshot("s1")  # nothing left to delete: fine
        assert lab.snapshots() == []

        # Reset keeps the VM process: the same connection sees the boot loader again.
        lab.reset("node-0")
        read_until(console, LOADER, timeout=60)
        read_until(console, READY)

        # Power off: the console reports end of file; power on again reconnects.
        lab.power_off("node-0")
        assert lab.state("node-0") is PowerState.OFF
        with pytest.raises(EOFError):
            for _ in range(50):
                console.read(4096, 0.2)
        lab.set_oem_strings("node-0", ["stx-sim:fail=install"])
        lab.set_boot_order("node-0", [BootDevice.CDROM, BootDevice.DISK])
        lab.power_on("node-0", before_resume=lambda _m: console.connect())
        read_until(console, READY)
        out = shell(console, "strings /sys/firmware/dmi/entries/11-0/raw")
        assert b"stx-sim:fail=install" in out  # the guest sees the new SMBIOS OEM strings
        print(
            f"\n{harness.kind}: boot to shell {boot_seconds:.1f}s, lab snapshot "
            f"{snapshot_seconds:.1f}s, revert {revert_seconds:.1f}s"
        )
    finally:
        console.close()
    lab.power_off("node-0")
    lab.power_off("node-0")  # already off: fine
    assert lab.state("node-0") is PowerState.OFF


def test_power_on_failure_in_callback_leaves_machine_paused(harness, tiny_iso):
    lab = harness.make(lab_resources(1, new_lab_id(), cdrom=tiny_iso))

    def broken(_machine: str) -> None:
        raise RuntimeError("console did not attach")

    with pytest.raises(RuntimeError):
        lab.power_on("node-0", before_resume=broken)
    assert lab.state("node-0") is PowerState.PAUSED
    lab.power_off("node-0")
    assert lab.state("node-0") is PowerState.OFF


def test_unknown_machine_is_named(harness):
    lab = harness.make(lab_resources(1, new_lab_id()))
    for call in (
        lambda: lab.state("node-9"),
        lambda: lab.console("node-9"),
        lambda: lab.snapshot("s", ["node-9"]),
    ):
        with pytest.raises(KeyError, match="no machine 'node-9' \\(has node-0\\)"):
            call()
    assert lab.snapshots() == []  # the refused snapshot took no part


# ------------------------------------------------------------------ gc


def test_gc_removes_the_lab_of_a_dead_owner_through_the_protocol(harness, monkeypatch):
    lab_id = new_lab_id()
    res = lab_resources(1, lab_id)
    harness.make(res)
    root = harness.backend.config.state_dir
    backends = {harness.kind: harness.backend}

    def records() -> list[lab_gc.LabRecord]:
        # only this lab: the libvirt host holds other sessions' labs too
        return [r for r in lab_gc.survey(backends, root) if r.lab_id == lab_id]

    (record,) = records()
    assert record.backends == [harness.kind]
    assert set(record.objects) == {f"{k} {n}" for k, n in _owned(harness.backend, lab_id)}
    assert record.verdict() == (False, f"owner pid {os.getpid()} is running")
    kept = lab_gc.collect(records(), lambda kind, _root: backends[kind])
    assert [r.lab_id for r, _ in kept.kept] == [lab_id] and not kept.removed

    real_alive = Holder.alive  # this process plays a dead owner, for this test only
    monkeypatch.setattr(Holder, "alive", lambda self: self.pid != os.getpid() and real_alive(self))
    result = lab_gc.collect(records(), lambda kind, _root: backends[kind])
    assert [(r.lab_id, why) for r, why in result.removed] == [
        (lab_id, f"no lab state; owner pid {os.getpid()} is gone")
    ]
    assert harness.leftovers(lab_id) == set()
    assert not harness.backend.lab_dir(lab_id).exists()
    assert records() == []


def test_gc_on_a_virtualbox_only_host_never_opens_libvirt(
    vbox,  # noqa: F811
    vbox_env,  # noqa: F811
    vbox_lab_factory,  # noqa: F811
    monkeypatch,
    tmp_path,
):
    monkeypatch.setattr(backends_pkg, "LIBVIRT_RUN_DIR", tmp_path)  # no libvirt daemon here
    assert backends_pkg.usable_kinds() == ["virtualbox"]

    def no_libvirt(*_args: object) -> None:
        raise AssertionError("gc opened libvirt on a host without it")

    monkeypatch.setattr(libvirt, "open", no_libvirt)
    monkeypatch.setattr(libvirt, "openAuth", no_libvirt)
    lab_id = new_lab_id()
    vbox_lab_factory(lab_resources(1, lab_id))
    real_alive = Holder.alive
    monkeypatch.setattr(Holder, "alive", lambda self: self.pid != os.getpid() and real_alive(self))
    result = lab_gc.gc()
    removed = {r.lab_id: r.backend for r, _ in result.removed}
    assert removed[lab_id] == "virtualbox"
    assert vbox_env.leftovers(lab_id) == []
    assert not (vbox_env.state_dir / "labs" / lab_id).exists()


@pytest.mark.parametrize(
    ("daemon", "vboxmanage", "uri", "kinds"),
    [
        (True, False, None, ["libvirt"]),
        (True, True, None, ["libvirt", "virtualbox"]),
        (False, True, None, ["virtualbox"]),
        (False, False, None, []),
        (False, False, "qemu+ssh://elsewhere/system", ["libvirt"]),
    ],
)
def test_usable_kinds_follow_what_the_host_has(
    monkeypatch, tmp_path, daemon, vboxmanage, uri, kinds
):
    run = tmp_path / "run"
    run.mkdir()
    if daemon:
        (run / "libvirt-sock").touch()
    monkeypatch.setattr(backends_pkg, "LIBVIRT_RUN_DIR", run)
    monkeypatch.delenv("STX_VBOXMANAGE", raising=False)
    monkeypatch.setenv("PATH", str(EMULATOR_DIR if vboxmanage else tmp_path))
    assert backends_pkg.usable_kinds(uri) == kinds


def test_gc_on_a_host_without_backends_removes_leftover_files_only(monkeypatch, tmp_path):
    opened: list[str] = []
    monkeypatch.setattr(lab_gc, "usable_kinds", lambda _uri: [])
    monkeypatch.setattr(lab_gc, "make_backend", lambda kind, *_a: opened.append(kind))
    monkeypatch.setenv("STX_STATE_DIR", str(tmp_path / "state"))
    (tmp_path / "state" / "labs" / "abcd").mkdir(parents=True)
    (tmp_path / "state" / "labs" / "abcd" / "run").mkdir()
    result = lab_gc.gc()
    assert opened == []  # a host with neither backend: files only, no hypervisor asked
    assert result.lines() == [
        "removed lab '?' (id abcd): leftover files only (no lab state, no objects, no ledger)"
    ]
    assert not (tmp_path / "state" / "labs" / "abcd").exists()
