"""pytest-xdist: the workers of one run share each lab, built once, torn down once.

Everything lives in a directory shared by the run's workers (xdist's "making session-scoped
fixtures execute only once": ``tmp_path_factory.getbasetemp().parent``)::

    stx-shared/registry.json   workers of the run, and per lab key: id, status, error, kept
    stx-shared/registry.lock   guards registry.json (held for milliseconds)
    stx-shared/<key>.lock      held by the worker building that lab, for the whole bring-up
    stx-shared/<id>-<node>.console.lock   whose turn it is at a node's serial console

Lifecycle. Every worker registers at session start (before any test runs). The first worker to
need a lab takes ``<key>.lock`` and builds it; the others block on that lock and then attach to
the lab it recorded, or fail at once with the builder's error if the bring-up failed (or the
builder died while building). The lab is held by one lease in the name of the xdist controller,
so it outlives a worker that finishes early; the last worker to leave the session (dead workers
are pruned) destroys every lab of the run that is not kept.

Consoles. A libvirt serial socket takes one client at a time, so workers take turns: a turn is
a file lock per node plus the connection, opened when the turn starts and closed when it ends.
``Bringup``'s per-node console lock *is* the turn, so ``node.run``, ``lab.system``,
``lab.host_list`` and ``lab.wait_available`` take turns by themselves (one command, or one
poll, per turn). The builder holds every turn during the bring-up. Code that drives a console
directly (``node.console.expect``) does so inside ``with console_turn(lab, node):``; tests that
reboot or power nodes off belong on a private lab (``@pytest.mark.stx(private=True)``), which
is not shared.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from pytest_starlingx.backends.base import Backend, LabHandle, LabResources
from pytest_starlingx.errors import BackendError, StxError
from pytest_starlingx.files import write_json_atomic
from pytest_starlingx.lab import Lab
from pytest_starlingx.lifecycle.state import LabStatus
from pytest_starlingx.model import LabSpec, lab_key
from pytest_starlingx.ownership import Holder
from pytest_starlingx.transport import Transport

log = logging.getLogger("pytest_starlingx.plugin")


def worker_id(config: pytest.Config) -> str | None:
    """``gw0``... in an xdist worker, None otherwise.

    Read from the worker's config, not the environment: a pytest run started from inside a
    worker (e.g. by pytester) inherits ``PYTEST_XDIST_WORKER`` without being a worker.
    """
    workerinput = getattr(config, "workerinput", None)
    return workerinput["workerid"] if workerinput else None


# --------------------------------------------------------------------------- consoles


class GatedTransport:
    """A console transport that is connected only during this worker's turn."""

    def __init__(self, inner: Transport, node: str) -> None:
        self._inner = inner
        self._node = node
        self._open = threading.Event()
        self._io = threading.Lock()
        self._wanted = False  # the console layer opened us (the machine has been powered on)

    def connect(self) -> None:
        """Connect now if it is our turn; otherwise when the turn starts."""
        self._wanted = True
        if self._open.is_set():
            self._inner.connect()

    def read(self, size: int, timeout: float) -> bytes:
        """Bytes during our turn; nothing (after ``timeout``) between turns."""
        if not self._open.wait(timeout):
            return b""
        with self._io:
            if not self._open.is_set():
                return b""
            return self._inner.read(size, timeout)

    def write(self, data: bytes) -> None:
        """Send during our turn; between turns that is a usage error."""
        if not self._open.is_set():
            raise BackendError(
                f"console of {self._node}: this xdist worker does not hold the console turn; "
                f"wrap direct console use in `with console_turn(lab, {self._node!r}):`"
            )
        self._inner.write(data)

    def open_gate(self) -> None:
        """The turn starts: connect (once the console layer has asked for a connection)."""
        with self._io:
            if self._wanted:
                self._inner.connect()
            self._open.set()

    def close_gate(self) -> None:
        """The turn ends: disconnect, so that another worker can connect."""
        self._open.clear()
        with self._io:
            self._inner.close()

    def close(self) -> None:
        """Close for good (the console is closed)."""
        self.close_gate()


class ConsoleTurn:
    """A worker's turn at one node's console; reentrant within the worker."""

    def __init__(self, lock_path: Path, transport: GatedTransport) -> None:
        self._local = threading.RLock()
        self._file = FileLock(lock_path)
        self._transport = transport
        self._depth = 0

    def __enter__(self) -> ConsoleTurn:
        self._local.acquire()
        try:
            if self._depth == 0:
                self._file.acquire()
                try:
                    self._transport.open_gate()
                except BaseException:
                    self._file.release()
                    raise
            self._depth += 1
        except BaseException:
            self._local.release()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._depth -= 1
            if self._depth == 0:
                self._transport.close_gate()
                self._file.release()
        finally:
            self._local.release()


class _SharedHandle:
    """A lab handle whose consoles are gated by turns (everything else passes through)."""

    def __init__(self, handle: LabHandle, turns: Turns) -> None:
        self._handle = handle
        self._turns = turns

    def console(self, machine: str) -> Transport:
        return self._turns.gate(machine, self._handle.console(machine))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


class _SharedBackend:
    """A backend whose lab handles have shared consoles."""

    def __init__(self, backend: Backend, turns: Turns) -> None:
        self._backend = backend
        self._turns = turns

    def create_lab(self, resources: LabResources) -> LabHandle:
        self._turns.lab_id = resources.lab_id
        handle = _SharedHandle(self._backend.create_lab(resources), self._turns)
        return handle

    def open_lab(self, lab_id: str) -> LabHandle:
        self._turns.lab_id = lab_id
        return _SharedHandle(self._backend.open_lab(lab_id), self._turns)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)


class Turns:
    """The console turns of one shared lab in this worker."""

    def __init__(self, root: Path, hold: bool) -> None:
        self.root = root
        self.lab_id = ""
        self.turns: dict[str, ConsoleTurn] = {}
        self._hold = hold  # the builder holds every turn until the bring-up is over
        self._held = ExitStack()

    def gate(self, node: str, transport: Transport) -> GatedTransport:
        """Wrap a node's transport; the builder takes the node's turn right away."""
        gated = GatedTransport(transport, node)
        lock = self.root / f"{self.lab_id}-{node}.console.lock"
        self.turns[node] = ConsoleTurn(lock, gated)
        if self._hold:
            self._held.enter_context(self.turns[node])
        return gated

    def install(self, lab: Lab) -> None:
        """Hand the turns to the lab's bring-up (its per-node console locks) and let go."""
        lab.bringup.shells.locks.update(self.turns)
        self.release()

    def release(self) -> None:
        """Let go of the turns held since the bring-up began."""
        self._held.close()
        self._hold = False


@contextmanager
def console_turn(lab: Lab, node: str) -> Iterator[None]:
    """Use ``node``'s console directly (``expect``/``sendline``) in a lab shared by workers."""
    with lab.bringup.shells.lock(node):
        yield


# --------------------------------------------------------------------------- registry


class Registry:
    """The run's shared state: workers and labs, in a JSON file under a file lock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.path = root / "registry.json"
        self._lock = FileLock(root / "registry.lock")

    @contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        """The registry, locked; changes are written back."""
        with self._lock:
            try:
                data = json.loads(self.path.read_text())
            except FileNotFoundError:
                data = {"workers": {}, "labs": {}}
            yield data
            write_json_atomic(self.path, data)

    def read(self) -> dict[str, Any]:
        """A snapshot of the registry."""
        with self.edit() as data:
            return json.loads(json.dumps(data))

    def leave(self, worker: str, workers: int) -> list[dict[str, Any]]:
        """A worker's session ends; the last of ``workers`` gets the run's labs to remove."""
        with self.edit() as data:
            left = set(data.setdefault("left", []))
            left.add(worker)
            data["left"] = sorted(left)
            if len(left) < workers:
                return []
            labs = [lab for lab in data["labs"].values() if lab["status"] == LabStatus.READY]
            for lab in labs:
                lab["status"] = LabStatus.RELEASED
            return labs


class SharedLabs:
    """The labs of this worker that all workers of the run share."""

    def __init__(self, root: Path, worker: str) -> None:
        self.root = root
        self.worker = worker
        self.registry = Registry(root)

    def get(
        self,
        spec: LabSpec,
        backend: Backend,
        build: Callable[[Backend], Lab],
        attach: Callable[[Backend, str], Lab],
        stack: ExitStack,
    ) -> Lab:
        """The run's lab for ``spec``: built here if no worker built it yet, else attached.

        ``build(backend)`` brings a lab up (removing it again if that fails); ``attach(backend,
        lab_id)`` opens one that another worker built. ``stack`` closes the consoles; the lab
        itself is removed by the last worker (:func:`leave_run`).
        """
        key = lab_key(spec)
        with FileLock(self.root / f"{key}.lock"):
            entry = self.registry.read()["labs"].get(key)
            if entry is None or entry["status"] == LabStatus.RELEASED:
                return self._build(key, spec, backend, build, stack)
            if entry["status"] == LabStatus.FAILED:
                raise StxError(
                    f"the bring-up of lab {spec.name!r} failed in xdist worker "
                    f"{entry['builder']}:\n{entry['error']}"
                )
            if entry["status"] == LabStatus.BUILDING:
                raise StxError(
                    f"xdist worker {entry['builder']} ({entry['holder']}) died while building "
                    f"lab {spec.name!r} (id {entry.get('lab_id') or 'unknown'}); see its output"
                )
            turns = Turns(self.root, hold=False)
            lab = attach(_SharedBackend(backend, turns), entry["lab_id"])
            turns.install(lab)
            stack.callback(lab.close)
            log.info("%s: attached to lab %s built by %s", self.worker, lab.lab_id,
                     entry["builder"])  # fmt: skip
            return lab

    def _build(
        self,
        key: str,
        spec: LabSpec,
        backend: Backend,
        build: Callable[[Backend], Lab],
        stack: ExitStack,
    ) -> Lab:
        with self.registry.edit() as data:
            data["labs"][key] = {"status": LabStatus.BUILDING, "builder": self.worker,
                                 "holder": str(Holder.me()), "name": spec.name}  # fmt: skip
        turns = Turns(self.root, hold=True)
        try:
            lab = build(_SharedBackend(backend, turns))
        except BaseException as exc:
            turns.release()
            with self.registry.edit() as data:
                data["labs"][key].update(status=LabStatus.FAILED, error=str(exc) or repr(exc))
            raise
        turns.install(lab)
        stack.callback(lab.close)
        with self.registry.edit() as data:
            data["labs"][key].update(status=LabStatus.READY, lab_id=lab.lab_id, kept=lab.state.kept,
                                     backend=lab.state.backend)  # fmt: skip
        return lab


def shared_root(config: pytest.Config) -> Path:
    """The directory the run's workers share: the parent of each worker's basetemp."""
    return Path(config.getoption("basetemp")).resolve().parent / "stx-shared"


def leave_run(config: pytest.Config) -> list[dict[str, Any]]:
    """This worker's session ends; the labs to remove when it is the last one to end."""
    worker = worker_id(config)
    if worker is None:
        return []
    workers = int(config.workerinput["workercount"])  # type: ignore[attr-defined]
    return Registry(shared_root(config)).leave(worker, workers)
