"""libvirtd restarted mid-run: the backend reconnects, the bring-up and the suite go on.

The fast tests put a relay socket between the backend and the real libvirtd and drop it, as
a dying libvirtd drops its clients; the slow one restarts the host's libvirtd for real while
a simplex lab installs.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import libvirt
import pytest
from conftest import objects_of
from libvirt_relay import Relay

from pytest_starlingx.backends.libvirt import DomainType, LibvirtBackend, LibvirtConfig, probe_kvm
from pytest_starlingx.errors import BackendError
from pytest_starlingx.host.setup import restart_libvirtd
from pytest_starlingx.waits import Deadline, poll

EXAMPLES = Path(__file__).parent.parent.parent / "conftest_examples"
INSTALLING = b"StarlingX installer starting"


@pytest.fixture
def relay(tmp_path: Path) -> Relay:
    relay = Relay(tmp_path / "libvirt.sock")
    relay.start()
    yield relay
    relay.stop()


def test_a_lost_connection_is_reopened_and_the_call_repeated(relay, tmp_path, caplog):
    backend = LibvirtBackend(LibvirtConfig(uri=relay.uri, state_dir=tmp_path))
    backend.owned_objects()
    first = backend.conn
    relay.stop()  # libvirtd goes away ...
    threading.Timer(2.0, relay.start).start()  # ... and is back 2 s later
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, "pytest_starlingx.backend"):
        backend.owned_objects()
    assert 1.5 < time.monotonic() - started < 30
    assert backend.conn is not first and backend.conn.isAlive()
    assert f"libvirt connection to {relay.uri} lost" in caplog.text
    assert f"reconnected to libvirt at {relay.uri}" in caplog.text
    backend.close()


def test_libvirtd_gone_for_good_is_a_clear_error(relay, tmp_path):
    backend = LibvirtBackend(LibvirtConfig(uri=relay.uri, state_dir=tmp_path, reconnect_timeout=2))
    relay.stop()
    started = time.monotonic()
    with pytest.raises(BackendError) as failed:
        backend.lab_ids()
    assert time.monotonic() - started < 10
    assert f"libvirtd at {relay.uri} is unreachable" in str(failed.value)
    assert "within 2 s" in str(failed.value)
    assert "stx-lab host-setup" in str(failed.value)


def test_a_kvm_probe_cut_off_by_a_lost_connection_is_repeated(relay, new_state_dir, caplog):
    state = new_state_dir()
    (state / "kvm-probe.json").unlink(missing_ok=True)  # probe, do not take the host's answer
    backend = LibvirtBackend(LibvirtConfig(uri=relay.uri, state_dir=state, kvm_probe_timeout=5))
    direct = libvirt.open("qemu:///system")
    probe_name = f"stx-kvm-probe-{os.getpid()}"

    def probe_guests() -> list[str]:
        return [d.name() for d in direct.listAllDomains() if d.name() == probe_name]

    def cut_while_the_probe_runs() -> None:
        poll(probe_guests, Deadline(60, "the probe guest"), "the KVM probe's guest", 0.1)
        relay.stop()
        threading.Timer(1.0, relay.start).start()

    cutter = threading.Thread(target=cut_while_the_probe_runs)
    cutter.start()
    try:
        with caplog.at_level(logging.WARNING, "pytest_starlingx.backend"):
            kind = backend.domain_type()
        cutter.join()
        assert f"libvirt connection to {relay.uri} lost" in caplog.text
        assert f"reconnected to libvirt at {relay.uri}" in caplog.text
        assert probe_guests() == []
        undisturbed = probe_kvm(direct, state / "probe", 5)
        assert kind is (DomainType.KVM if undisturbed else DomainType.QEMU)
        [cached] = json.loads((state / "kvm-probe.json").read_text()).values()
        assert cached["kvm"] is undisturbed
    finally:
        backend.close()
        direct.close()
        shutil.rmtree(state)


def _wait_for_install(state: Path, session: subprocess.Popen[bytes], out: Path) -> None:
    """Until controller-0's installer prints its first line."""

    def installing() -> bool:
        assert session.poll() is None, out.read_text()
        logs = (state / "labs").glob("*/run/controller-0.serial.log")
        return any(INSTALLING in log.read_bytes() for log in logs)

    poll(installing, Deadline(600, "the install"), "controller-0's installer", poll_every=0.5)


@pytest.mark.host_exclusive
@pytest.mark.skipif(os.geteuid() != 0, reason="restarting libvirtd needs root")
def test_simplex_bringup_survives_a_libvirtd_restart(state_dir, tmp_path):
    out = tmp_path / "session.log"
    with out.open("wb") as sink:
        session = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v",
             "-o", "log_cli=true", "--log-cli-level=WARNING",
             f"--stx-artifacts={tmp_path / 'artifacts'}", str(EXAMPLES / "simplex")],
            env={**os.environ, "STX_STATE_DIR": str(state_dir)}, stdout=sink,
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        _wait_for_install(state_dir, session, out)
        started = time.monotonic()
        restart_libvirtd()
        print(f"libvirtd restarted in {time.monotonic() - started:.1f} s")
        status = session.wait(timeout=1200)
    finally:
        if session.poll() is None:
            os.killpg(session.pid, signal.SIGTERM)
            session.wait(timeout=300)
    text = out.read_text()
    assert status == 0, text
    collected = re.search(r"collected (\d+) items", text)
    assert collected, text
    assert f"{collected[1]} passed" in text, text
    assert "libvirt connection to qemu:///system lost" in text, text
    assert "reconnected to libvirt at qemu:///system" in text, text
    assert objects_of(state_dir) == set()
