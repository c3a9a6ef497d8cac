"""What stages are, what they get to work with, and the runner that orders and resumes them."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping, MutableSet
from dataclasses import dataclass, field
from typing import Protocol, TypedDict, Unpack

from pytest_starlingx.console import CommandFailed, Console
from pytest_starlingx.errors import StageError, StxError
from pytest_starlingx.model import LabSpec
from pytest_starlingx.platform_api import ApiUnavailable
from pytest_starlingx.stages.shells import Shells, retry_while
from pytest_starlingx.system_output import parse_table, parse_yaml_properties
from pytest_starlingx.timings import StepRecorder
from pytest_starlingx.waits import Deadline, WaitTimeout, poll

log = logging.getLogger("pytest_starlingx.stages")


class HostStates(TypedDict, total=False):
    """Wanted values of ``system host-list``'s state columns."""

    administrative: str
    operational: str
    availability: str


AVAILABLE: HostStates = {
    "administrative": "unlocked",
    "operational": "enabled",
    "availability": "available",
}
AVAILABLE_TEXT = "unlocked | enabled | available"
#: What the system CLI says while sysinv's API is not listening (a controller still booting).
API_DOWN = "Unable to establish connection"
#: sysinv's refusal of ``host-unlock`` while an application is applied (``host.py``,
#: ``check_unlock_application``); it passes by itself, and starlingx/test's unlock retries.
UNLOCK_WHILE_APPLYING = "while an application is being applied"
UNLOCK_RETRY_EVERY = 10.0  # seconds between unlocks refused for an applying application
#: A failed host's task while maintenance re-enables it by itself (starlingx/metal
#: mtce-common ``nodeBase.h``, e.g. MTC_TASK_MAIN_CONFIG_FAIL "Configuration Failed,
#: re-enabling", after ``ar_config_interval`` of ``mtce/src/scripts/mtc.conf``); once
#: auto-recovery gives up the task says "..., threshold reached, Lock/Unlock to retry".
RE_ENABLING = "re-enabling"
POLL_HOSTS_EVERY = 5.0  # seconds between host-list polls of a thread waiting for hosts
API_RETRY_AFTER = 30.0  # seconds of console host-lists after the REST API did not answer


class Machine(Protocol):
    """The hardware side of a node, as stages may use it (no hypervisor words)."""

    def power_on(self) -> None:
        """Start the node with its console attached before it runs."""

    def is_running(self) -> bool:
        """True while the node is powered on."""

    def reset(self) -> None:
        """Hard reset (the console stays attached)."""

    def mac(self, network: str) -> str:
        """MAC address of the node's NIC on ``network`` (oam, mgmt, data0, data1)."""


class HostsApi(Protocol):
    """sysinv's REST API from the host (``platform_api.PlatformApi``)."""

    def hosts(self) -> list[dict[str, str]]:
        """host-list's rows; ``ApiUnavailable`` when the API does not answer."""


class Done(Protocol):
    """Which stages are finished; persisted by the lab layer so a re-run resumes."""

    def __contains__(self, key: object) -> bool: ...

    def add(self, key: str) -> None: ...


@dataclass
class Bringup:
    """Everything a stage works with: the lab, consoles, machines, passwords, timings, and the
    sysadmin shells on the consoles (:attr:`shells`)."""

    spec: LabSpec
    consoles: Mapping[str, Console]
    machines: Mapping[str, Machine]
    passwords: Mapping[str, str]  # sysadmin, admin
    recorder: StepRecorder
    done: Done | MutableSet[str] = field(default_factory=set)
    facts: dict[str, str] = field(default_factory=dict)  # e.g. interface names found
    cancelled: threading.Event = field(default_factory=threading.Event)
    #: sysinv's REST API from the host, where the lab has a way in: host lists without
    #: starting the CLI on the controller (whose CPU serves the network boots meanwhile).
    api: HostsApi | None = None
    shells: Shells = field(init=False)
    #: The last ``host-list``: when it was asked (monotonic) and its rows, shared by the
    #: threads that wait for hosts so that N waiting nodes cost one listing, not N.
    _host_list: tuple[float, list[dict[str, str]]] | None = None
    _host_list_lock: threading.Lock = field(default_factory=threading.Lock)
    _api_quiet_until = 0.0  # monotonic time before which the API is not asked again

    def __post_init__(self) -> None:
        self.shells = Shells(self.consoles, self.passwords, self.done, self.deadline)

    def deadline(self, phase: str) -> Deadline:
        """A fresh deadline for ``phase`` with the lab's timeouts and factor (the stage that
        asks now waits for ``phase``: the live status line shows what is left of it)."""
        timeout = self.spec.timeout(phase)
        self.recorder.phase(phase, timeout)
        return Deadline(timeout, what=phase)

    def shell(self, node: str, command: str, phase: str = "command") -> str:
        """Run ``command`` on ``node`` as sysadmin; raise unless 0 (:meth:`Shells.shell`)."""
        return self.shells.shell(node, command, phase)

    def system(self, args: str, phase: str = "command") -> str:
        """``system <args>`` on the active controller (:meth:`Shells.system`)."""
        return self.shells.system(args, phase)

    def unlock_host(self, host: str, phase: str) -> None:
        """``system host-unlock <host>``, again every 10 s while sysinv refuses it because an
        application (platform-integ-apps after controller-0's unlock) is being applied."""
        retry_while(
            lambda: self.system(f"host-unlock {host}", phase), UNLOCK_WHILE_APPLYING,
            self.deadline(phase), host, f"sysinv to accept {host}'s unlock", UNLOCK_RETRY_EVERY,
        )  # fmt: skip

    def hosts(self, fresh_within: float = 0.0) -> list[dict[str, str]]:
        """``system host-list`` as records: from sysinv's REST API where it answers (:attr:`api`;
        the rows also carry ``mgmt_mac``), else on the console. With ``fresh_within``, a
        listing another thread asked for at most that many seconds before this call is shared
        instead of listing again: every ``system`` command costs the controller seconds of CPU
        (cgtsclient's start-up), which the controller's other work (serving network boots)
        needs."""
        asked = time.monotonic()
        with self._host_list_lock:
            if self._host_list and self._host_list[0] >= asked - fresh_within:
                return self._host_list[1]
            started = time.monotonic()
            rows = self._api_hosts()
            if rows is None:
                rows = parse_table(self.system("host-list --nowrap"))
            self._host_list = (started, rows)
            return rows

    def _api_hosts(self) -> list[dict[str, str]] | None:
        """The host list from the REST API; None where it does not answer (the console's
        ``system host-list`` then says why: the API is down, a controller reboots)."""
        if self.api is None or time.monotonic() < self._api_quiet_until:
            return None
        try:
            return self.api.hosts()
        except ApiUnavailable as exc:
            # not up yet, or rebooting: the console for a while, not a failed request per poll
            self._api_quiet_until = time.monotonic() + API_RETRY_AFTER
            log.debug("%s: host-list over the API: %s; on the console", self.spec.name, exc)
            return None

    def host_show(self, host: str) -> dict[str, str]:
        """``system host-show`` as a mapping (read as yaml: no wrapped cells)."""
        return parse_yaml_properties(self.system(f"host-show {host} --format yaml"))

    def wait_hosts(
        self,
        hosts: Iterable[str],
        phase: str,
        what: str,
        timeout: float | None = None,
        **wanted: Unpack[HostStates],
    ) -> None:
        """Poll ``host-list`` until every host has the wanted column values.

        ``wanted`` maps host-list columns to values, e.g. ``availability="available"``; the
        wait lasts ``phase``'s timeout unless ``timeout`` is given. A host in ``failed``
        availability fails the wait at once, unless its task says maintenance is re-enabling
        it (auto-recovery), which is waited out.
        """
        hosts = list(hosts)
        deadline = Deadline(timeout, what) if timeout else self.deadline(phase)

        def ready() -> bool:
            self.check_cancelled()
            try:
                rows = {row["hostname"]: row for row in self.hosts(fresh_within=POLL_HOSTS_EVERY)}
            except CommandFailed as exc:
                if API_DOWN not in str(exc):
                    raise
                log.info("%s: the platform API is not up yet; polling on", self.spec.name)
                return False
            for host in hosts:
                row = rows.get(host)
                if row is not None and row["availability"] == "failed":
                    show = self.host_show(host)
                    if show.get("availability") != "failed":
                        continue  # the listing (shared, or just older) predates a re-enable
                    task = show.get("task", "None")
                    if RE_ENABLING not in task:
                        raise StageError(
                            f"{host} became {_state(row)} while waiting for {what}"
                            + (f" (task: {task})" if task != "None" else "")
                        )
                    log.info("%s: %s, task %r: maintenance re-enables it", host, _state(row), task)
            return all(
                host in rows and all(rows[host].get(k) == v for k, v in wanted.items())
                for host in hosts
            )

        try:
            poll(ready, deadline, what, poll_every=POLL_HOSTS_EVERY, logger=log)
        except WaitTimeout as exc:
            rows = {row["hostname"]: row for row in self.hosts()}
            states = ", ".join(f"{h} {_state(rows[h]) if h in rows else 'missing'}" for h in hosts)
            raise StageError(f"{exc}; host-list says: {states}") from None

    def check_cancelled(self) -> None:
        """Raise when another stage failed and the bring-up is being abandoned."""
        if self.cancelled.is_set():
            raise StageError("abandoned: another stage of the bring-up failed")


def _state(row: Mapping[str, str]) -> str:
    return f"{row['administrative']} | {row['operational']} | {row['availability']}"


StageAction = Callable[[Bringup], None]


@dataclass(frozen=True)
class Stage:
    """One named unit of work on one node, run once its prerequisites are done."""

    name: str
    node: str
    action: StageAction
    after: tuple[str, ...] = ()  # keys of stages that must be done first

    def __post_init__(self) -> None:
        # a pipeline stage's name is a StageName: plain text in keys, records and messages
        object.__setattr__(self, "name", str(self.name))

    @property
    def key(self) -> str:
        """``node:stage``, the stage's identity in the done-list and in ``after``."""
        return f"{self.node}:{self.name}"


CheckpointHook = Callable[[str], None]
"""Called with a stage's key after it is done, while no other stage runs (e.g. a snapshot)."""


def run_stages(
    stages: list[Stage],
    bringup: Bringup,
    max_parallel: int = 4,
    checkpoint: CheckpointHook | None = None,
) -> None:
    """Run ``stages`` as their prerequisites allow, several at once; skip those already done.

    ``checkpoint`` is called after a stage is done whenever no other stage is running, so
    what it records (a snapshot of the lab) matches the done-list exactly.

    The first failure stops the bring-up: no new stage starts, the running ones are told to give
    up (their threads are daemons, and tearing the lab down ends their waits), and a
    :class:`StageError` naming the lab, node and stage is raised with the cause chained.
    """
    keys = {stage.key for stage in stages}
    for stage in stages:
        missing = [k for k in stage.after if k not in keys]
        if missing:
            raise ValueError(f"stage {stage.key} waits for unknown stages {missing}")
    for stage in stages:
        if stage.key in bringup.done:
            bringup.recorder.skipped(stage.name, stage.node)
    pending = [s for s in stages if s.key not in bringup.done]
    results: queue.Queue[tuple[Stage, BaseException | None]] = queue.Queue()
    running = 0
    while pending or running:
        ready = [s for s in pending if all(k in bringup.done for k in s.after)]
        for stage in ready[: max_parallel - running]:
            pending.remove(stage)
            running += 1
            threading.Thread(
                target=_run_one, args=(stage, bringup, results), name=f"stage-{stage.key}",
                daemon=True,
            ).start()  # fmt: skip
        if not running:
            blocked = ", ".join(s.key for s in pending)
            raise StageError(f"lab {bringup.spec.name!r}: stages can never run: {blocked}")
        stage, error = results.get()
        running -= 1
        if error is not None:
            bringup.cancelled.set()
            raise _stage_error(bringup, stage, error) from error
        bringup.done.add(stage.key)
        if checkpoint is not None and not running:
            checkpoint(stage.key)


def _run_one(
    stage: Stage, bringup: Bringup, results: queue.Queue[tuple[Stage, BaseException | None]]
) -> None:
    try:
        _run_stage(stage, bringup)
    except BaseException as exc:  # handed to the runner, which raises it
        results.put((stage, exc))
    else:
        results.put((stage, None))


def _run_stage(stage: Stage, bringup: Bringup) -> None:
    bringup.check_cancelled()
    console = bringup.consoles.get(stage.node)
    with bringup.recorder.step(stage.name, stage.node, stage.after):
        if console is None:
            stage.action(bringup)
        else:
            with console.stage(stage.name):
                stage.action(bringup)


def _stage_error(bringup: Bringup, stage: Stage, error: BaseException) -> StageError:
    """One error naming lab, node and stage; console errors already carry the console tail."""
    if isinstance(error, StageError) and str(error).startswith(f"lab {bringup.spec.name!r}"):
        return error
    text = str(error) if isinstance(error, StxError) else f"{type(error).__name__}: {error}"
    message = f"lab {bringup.spec.name!r} node {stage.node}: stage {stage.name!r} failed: {text}"
    console = bringup.consoles.get(stage.node)
    if console is not None and "console lines:" not in text:
        tail = "\n".join(f"    | {line}" for line in console.tail())
        message += f"\n  last console lines of {stage.node}:\n{tail}"
    return StageError(message)
