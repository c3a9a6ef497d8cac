"""Two pytest sessions on one host, each with ``-n 2``, never collide and never tear down each
other's labs (issue 10, item 3).

One state dir, as on a real host. Session A runs for the whole test; while it holds its lab,
session B1 (the same description, so its own lab of the same name) and then session B2 (a
different description) come and go. Only two labs run at a time. Each test writes down what it
used (lab id, domain, networks and bridges, console socket and log, disks, transcript) and the
sessions wait for each other through marker files, so that:

* A and B1 start together (start-up gc, ISO placement and bring-up race for real) and are both
  up at one moment, when the host holds exactly their two labs;
* B1 and then B2 are torn down, B2 also starts up (gc included), while A's lab is in use;
  A's last test then runs a command on its node;
* at the end nothing of either session is left in the host or the state dir.

B2 also runs with known passwords in STX_SYSADMIN_PASSWORD and STX_ADMIN_PASSWORD, and they
must leak nowhere: during the whole test every process's argv (``/proc/*/cmdline``) and every
file of the labs' state (serial logs, ledger) are sampled; afterwards B2's output, JUnit report,
DEBUG log and every artifact are searched. Not searched: the 0600 ``lab.json`` (it holds
*generated* passwords so that a resumed lab can log in) and the guests' disk images (what the
guest itself stores, e.g. StarlingX's bootstrap overrides; removed with the lab).

Same description across sessions: each session builds a lab of its own (distinct id, same
name and spec key); a lab is shared only by the workers of one run, or taken over from a kept
lab with ``--stx-reuse``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import objects_of

from pytest_starlingx.lab import image_path
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.model import generate_password

WAIT = 1500.0  # seconds for a session to get its lab up (two bring-ups at once, loaded host)

CONFTEST = '''
import json
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

EXCHANGE = Path(os.environ["TWO_SESSIONS_DIR"])
SESSION = os.environ["TWO_SESSIONS_NAME"]


def record(lab, test):
    """What this test's lab uses on the host, as libvirt and the plugin report it."""
    conn = libvirt.open("qemu:///system")
    try:
        domain = lab.handle.domain_name("controller-0")
        root = ET.fromstring(conn.lookupByName(domain).XMLDesc(0))
        networks = [i.find("source").get("network") for i in root.iter("interface")]
        bridges = [conn.networkLookupByName(n).bridgeName() for n in networks]
    finally:
        conn.close()
    serial = root.find("devices/serial")
    data = {
        "session": SESSION, "test": test, "worker": os.environ["PYTEST_XDIST_WORKER"],
        "lab_id": lab.lab_id, "name": lab.name, "key": lab.state.key,
        "lab_dir": str(lab.state.path.parent), "domain": domain, "networks": networks,
        "bridges": bridges, "socket": serial.find("source").get("path"),
        "serial_log": serial.find("log").get("file"),
        "disks": [d.find("source").get("file") for d in root.iter("disk")
                  if d.get("device") == "disk"],
        "transcript": str(lab.node("controller-0").console.transcript_path),
    }
    (EXCHANGE / f"{SESSION}-{test}.json").write_text(json.dumps(data))


def signal(name):
    (EXCHANGE / name).touch()


def wait_for(name, timeout=1800.0):
    deadline = time.monotonic() + timeout
    while not (EXCHANGE / name).exists():
        if time.monotonic() > deadline:
            pytest.fail(f"session {SESSION}: no {name!r} after {timeout:.0f}s")
        time.sleep(0.5)


def hostname(lab):
    return lab.node("controller-0").run("hostname").stdout.strip()
'''

SUITE = """
from conftest import hostname, record, signal, wait_for


def test_first(stx_simplex):
    record(stx_simplex, "first")
    assert hostname(stx_simplex) == "controller-0"


def test_last(stx_simplex):
    record(stx_simplex, "last")
    assert hostname(stx_simplex) == "controller-0"
    wait_for("{session}-first.json")  # the other worker has the lab too
    signal("{session}-up")
    wait_for("{session}-go")
    assert hostname(stx_simplex) == "controller-0"
"""


class Session:
    """One ``pytest -n 2`` run of its own suite directory, against the shared state dir."""

    def __init__(
        self,
        name: str,
        root: Path,
        exchange: Path,
        state: Path,
        *options: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir()
        (self.dir / "conftest.py").write_text(CONFTEST)
        (self.dir / f"test_{name}.py").write_text(SUITE.format(session=name))
        self.log = self.dir / "debug.log"
        self.out = (self.dir / "output.txt").open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pytest", "-n", "2", "-p", "no:cacheprovider", "-v", "-rA",
             f"--log-file={self.log}", "--log-file-level=INFO", "--log-file-mode=a", *options],
            cwd=self.dir, stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, "STX_STATE_DIR": str(state), "TWO_SESSIONS_DIR": str(exchange),
                 "TWO_SESSIONS_NAME": name, **(env or {})},
        )  # fmt: skip

    def output(self) -> str:
        self.out.flush()
        return (self.dir / "output.txt").read_text()

    def finish(self, timeout: float) -> str:
        """Wait for the session to end; it must pass. Its output."""
        self.proc.wait(timeout)
        output = self.output()
        assert self.proc.returncode == 0, f"session {self.name} failed:\n{output}"
        assert "2 passed" in output, output
        return output

    def stop(self) -> None:
        """SIGTERM a session still running, workers included (each tears its labs down),
        kill it if that hangs; the ``state_dir`` fixture collects what is left."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            deadline = time.monotonic() + 300
            while _group_alive(self.proc.pid) and time.monotonic() < deadline:
                self.proc.poll()  # reaps the controller; its workers go on tearing down
                time.sleep(1)
            if _group_alive(self.proc.pid):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.out.close()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def wait_for(marker: Path, *sessions: Session, timeout: float = WAIT) -> None:
    """Wait for ``marker``; fail at once with its output if a session ends before."""
    deadline = time.monotonic() + timeout
    while not marker.exists():
        for session in sessions:
            if session.proc.poll() is not None:
                raise AssertionError(f"session {session.name} ended before {marker.name}:\n"
                                     f"{session.output()}")  # fmt: skip
        assert time.monotonic() < deadline, f"no {marker.name} after {timeout:.0f}s"
        time.sleep(1)


def used(exchange: Path, session: str) -> dict[str, dict]:
    """What each test of ``session`` recorded: {test: record}."""
    return {
        t: json.loads((exchange / f"{session}-{t}.json").read_text()) for t in ("first", "last")
    }


def lab_of(records: dict[str, dict]) -> dict:
    """The one lab both workers of a session used."""
    assert sorted(r["worker"] for r in records.values()) == ["gw0", "gw1"], records
    assert len({r["lab_id"] for r in records.values()}) == 1, records
    return records["last"]


def resources(lab: dict) -> set[str]:
    """Every host resource a lab's records name."""
    return {lab["domain"], lab["lab_dir"], lab["socket"], lab["serial_log"], lab["transcript"],
            *lab["networks"], *(f"bridge {b}" for b in lab["bridges"]), *lab["disks"]}  # fmt: skip


def objects_of_lab(objects: set[str], lab_id: str) -> set[str]:
    """The objects (as listed by ``objects_of``) whose name or path carries ``lab_id``."""
    return {o for o in objects if f"-{lab_id}-" in o or f"/labs/{lab_id}" in o}


def check_both_up(state: Path, one: dict, other: dict) -> set[str]:
    """The host holds exactly the two labs, each complete; returns ``one``'s objects."""
    objects = objects_of(state)
    mine, theirs = objects_of_lab(objects, one["lab_id"]), objects_of_lab(objects, other["lab_id"])
    assert objects == mine | theirs and not mine & theirs, sorted(objects)
    for lab, found in ((one, mine), (other, theirs)):
        kinds = [o.split()[0] for o in found]
        assert (kinds.count("domain"), kinds.count("network"), kinds.count("pool")) == (1, 4, 1)
        assert f"domain {lab['domain']}" in found
        assert {f"network {n}" for n in lab["networks"]} <= found
        assert {f"volume {d}" for d in lab["disks"]} <= found
        assert f"file {lab['socket']}" in found
    return mine


class Sampler(threading.Thread):
    """Looks for the secrets in every process's argv and the labs' state files."""

    def __init__(self, secrets: list[str], state: Path) -> None:
        super().__init__(daemon=True)
        self.secrets = [s.encode() for s in secrets]
        self.state = state
        self.leaks: set[str] = set()
        self.argv_seen = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.3):
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    argv = cmdline.read_bytes()
                except OSError:
                    continue
                self.argv_seen += 1
                if any(s in argv for s in self.secrets):
                    self.leaks.add(f"argv of pid {cmdline.parent.name}: {argv[:80]!r}")
            # os.walk, not glob: labs' directories come and go while it walks
            for top, dirs, names in os.walk(self.state / "labs"):
                if "disks" in dirs:
                    dirs.remove("disks")
                for path in (Path(top) / n for n in names if n != "lab.json"):
                    try:
                        data = path.read_bytes() if path.is_file() else b""  # no socket, FIFO
                    except OSError:
                        continue
                    if any(s in data for s in self.secrets):
                        self.leaks.add(str(path))


def test_two_sessions_never_collide(state_dir, tmp_path):
    exchange = tmp_path / "exchange"
    exchange.mkdir()
    other = tmp_path / "other.yaml"
    other.write_text("name: other\ntopology: simplex\n")
    secrets = [generate_password(), generate_password()]
    b2_dir = tmp_path / "b2"

    def start(name: str, *options: str, env: dict[str, str] | None = None) -> Session:
        return Session(name, tmp_path, exchange, state_dir, *options, env=env)

    sampler = Sampler(secrets, state_dir)
    sampler.start()
    sessions = [start("a"), start("b1")]
    try:
        a, b1 = sessions
        # A and B1, the same description, both up at once
        wait_for(exchange / "a-up", a, b1)
        wait_for(exchange / "b1-up", a, b1)
        lab_a, lab_b1 = lab_of(used(exchange, "a")), lab_of(used(exchange, "b1"))
        assert lab_a["name"] == lab_b1["name"] == "simplex"
        assert lab_a["key"] == lab_b1["key"]  # the same description ...
        assert lab_a["lab_id"] != lab_b1["lab_id"]  # ... yet a lab of each session's own
        assert not resources(lab_a) & resources(lab_b1)
        objects_a = check_both_up(state_dir, lab_a, lab_b1)

        # B1 ends while A uses its lab
        (exchange / "b1-go").touch()
        b1.finish(WAIT)
        assert objects_of(state_dir) == objects_a

        # B2, another description, comes and goes while A uses its lab
        sessions.append(
            start("b2", f"--stx-config={other}", f"--stx-artifacts={b2_dir / 'artifacts'}",
                  f"--junitxml={b2_dir / 'report.xml'}", "--log-file-level=DEBUG",
                  env={"STX_SYSADMIN_PASSWORD": secrets[0], "STX_ADMIN_PASSWORD": secrets[1]})
        )  # fmt: skip
        b2 = sessions[2]
        wait_for(exchange / "b2-up", a, b2)
        lab_b2 = lab_of(used(exchange, "b2"))
        assert lab_b2["name"] == "other" and lab_b2["key"] != lab_a["key"]
        assert not resources(lab_a) & resources(lab_b2)
        assert not resources(lab_b1) & resources(lab_b2)  # no name reused after B1's teardown
        assert check_both_up(state_dir, lab_a, lab_b2) == objects_a
        (exchange / "b2-go").touch()
        b2.finish(WAIT)
        assert objects_of(state_dir) == objects_a

        # A's lab still answers; then A ends and nothing is left
        (exchange / "a-go").touch()
        a.finish(WAIT)
    finally:
        sampler.stop.set()
        sampler.join()
        for session in sessions:
            session.stop()
    assert objects_of(state_dir) == set()

    # B2's passwords: nowhere
    assert sampler.argv_seen > 1000
    assert not sampler.leaks, sampler.leaks
    files = [b2_dir / "report.xml", b2_dir / "debug.log", b2_dir / "output.txt",
             *(p for p in (b2_dir / "artifacts").rglob("*") if p.is_file())]  # fmt: skip
    assert any(p.name.endswith(".console.log") for p in files)
    for secret in secrets:
        for path in files:
            assert secret.encode() not in path.read_bytes(), path
    assert not (state_dir / "labs").exists() or not any((state_dir / "labs").iterdir())

    # each session removed its own lab, once, and no other (its start-up gc included)
    labs = {"a": lab_a, "b1": lab_b1, "b2": lab_b2}
    for name, session in zip(labs, sessions, strict=True):
        log = session.log.read_text()
        for other_name, lab in labs.items():
            removals = log.count(f"destroyed lab {lab['lab_id']}")
            assert removals == (1 if other_name == name else 0), (name, other_name, log)


def _place(state: str, iso: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    os.environ["STX_STATE_DIR"] = state
    spec = lab_from_mapping({"topology": "simplex", "image": iso}, source="lab.yaml")
    barrier.wait(timeout=60)
    image_path(spec)


def test_sessions_place_the_iso_at_once(tmp_path):
    """Sessions starting together put the same ISO into the state dir at the same moment.

    All used one temporary name: one process's rename took another's file away
    (FileNotFoundError, or a stray temporary file, within a few rounds).
    """
    iso = tmp_path / "stx.iso"
    iso.write_bytes(b"\0" * 0x8001 + b"CD001" + b"\0" * 4096)  # an ISO 9660 signature
    context = multiprocessing.get_context("fork")
    for round_ in range(100):
        state = tmp_path / f"state-{round_}"
        state.mkdir()
        barrier = context.Barrier(6)
        procs = [context.Process(target=_place, args=(str(state), str(iso), barrier))
                 for _ in range(6)]  # fmt: skip
        for proc in procs:
            proc.start()
        for proc in procs:
            proc.join(120)
        assert [p.exitcode for p in procs] == [0] * 6, f"round {round_}"
        placed = list((state / "images").rglob("*"))
        assert [p.name for p in placed if p.is_file()] == ["stx.iso"], placed
