"""A StarlingX lab as tests see it: its nodes, the ``system`` CLI, waits, snapshots.

This module makes and opens labs (:func:`create_lab`, :func:`open_lab`, :func:`build_lab`) and
removes them (:func:`destroy_lab`); how a user acquires one (fresh, reused, golden, kept) is
:mod:`pytest_starlingx.lifecycle.acquire`'s::

    with Lifecycle(Policy()).acquire(spec, backend, artifacts) as lab:   # built, torn down
        lab.system("host-list")
        lab.node("controller-0").run("uptime", check=True)
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pytest_starlingx.access import Endpoint, LabFacts, open_endpoints
from pytest_starlingx.backends.base import Backend, LabHandle, PowerState
from pytest_starlingx.console import LOGIN, Console, Result
from pytest_starlingx.errors import BackendError, StxError
from pytest_starlingx.files import place
from pytest_starlingx.host.capacity import hosts_free, parallel_cap
from pytest_starlingx.lifecycle.state import (
    DoneStages,
    LabState,
    LabStatus,
    forget_lab,
    new_lab_id,
    state_dir,
)
from pytest_starlingx.model import (
    NETWORKS,
    LabSpec,
    Personality,
    generate_password,
    lab_key,
    password_problems,
)
from pytest_starlingx.placement import place as place_nodes
from pytest_starlingx.platform_api import ApiUnavailable, PlatformApi
from pytest_starlingx.resources import lab_resources
from pytest_starlingx.ssh import ANSWER_TIMEOUT, LabSsh, SshSession
from pytest_starlingx.stages.base import (
    AVAILABLE,
    AVAILABLE_TEXT,
    Bringup,
    CheckpointHook,
    Stage,
    run_stages,
)
from pytest_starlingx.stages.custom import from_lab_file, insert, registered
from pytest_starlingx.stages.pipelines import pipeline
from pytest_starlingx.timings import StepRecorder
from pytest_starlingx.waits import Deadline

if TYPE_CHECKING:
    from pytest_starlingx.backends.libvirt import LibvirtBackend
    from pytest_starlingx.backends.multihost import LabHost

log = logging.getLogger("pytest_starlingx.lab")

#: sysinv's ``Personality`` host capability of the active controller, ``Controller-Standby``
#: on the other (starlingx/config sysinv ``api/controllers/v1/host.py``, host capabilities).
ACTIVE_CAPABILITY = "Controller-Active"


@dataclass(frozen=True)
class Host:
    """One row of ``system host-list``."""

    id: int
    hostname: str
    personality: str
    administrative: str
    operational: str
    availability: str


class _Machine:
    """A node's power, as stages see it; attaches the console before the node runs."""

    def __init__(self, handle: LabHandle, name: str, console: Console) -> None:
        self._handle = handle
        self._name = name
        self._console = console
        self._opened = False

    def _attach(self, _machine: str) -> None:
        if not self._opened:
            self._console.open()
            self._opened = True

    def power_on(self) -> None:
        self._handle.power_on(self._name, before_resume=self._attach)

    def is_running(self) -> bool:
        return self._handle.state(self._name) is PowerState.RUNNING

    def reset(self) -> None:
        self._handle.reset(self._name)

    def mac(self, network: str) -> str:
        return self._handle.mac_addresses(self._name)[NETWORKS.index(network)]

    def attach(self) -> None:
        """Open the console of a node that is already running (a reused lab)."""
        self._attach(self._name)


class Node:
    """One node of a lab: its console, a shell on it, and its power."""

    def __init__(self, lab: Lab, name: str) -> None:
        self.lab = lab
        self.name = name
        self.personality: Personality = lab.spec.node(name).personality

    @property
    def console(self) -> Console:
        """The pexpect-like console (``expect``, ``sendline``, ``run``)."""
        return self.lab.bringup.consoles[self.name]

    @property
    def mgmt_mac(self) -> str:
        """MAC address of the node's management (network-boot) NIC."""
        return self.lab.machines[self.name].mac("mgmt")

    def run(
        self,
        command: str,
        timeout: float | None = None,
        check: bool = False,
        via: Literal["ssh", "console"] | None = None,
    ) -> Result:
        """Run a shell command on the node as sysadmin; ``check`` raises on failure.

        ``via``: ``"ssh"`` (the node's SSH endpoint: a controller), ``"console"`` (its serial
        console), or None: SSH when the node has an SSH endpoint and SSH answers there, else
        the console (a node installing, booting, or with SSH down). SSH sessions are cached
        per node; commands over SSH on different nodes, or on one, run at the same time.
        """
        if via not in (None, "ssh", "console"):
            raise ValueError(f"via={via!r}: use 'ssh', 'console' or None (SSH when it answers)")
        deadline = Deadline(timeout or self.lab.spec.timeout("command"), what=command)
        ssh = self.lab.ssh_access
        if via == "ssh" or (
            via is None and ssh.answers(self.name, deadline.within(ANSWER_TIMEOUT))
        ):
            result = ssh.run(self.name, command, deadline)
        else:
            result = self.lab.bringup.shells.run(self.name, command, deadline)
        if check and not result.ok:
            raise StxError(
                f"lab {self.lab.name!r} node {self.name}: {command!r} exited with status "
                f"{result.exit_status}:\n{result.stdout}"
            )
        return result

    def power_off(self) -> None:
        """Pull the plug."""
        self.lab.handle.power_off(self.name)
        self.lab.bringup.shells.forget(self.name)
        self.lab.ssh_access.forget(self.name)

    def power_on(self) -> None:
        """Power the node on (console attached first)."""
        self.lab.machines[self.name].power_on()

    def reset(self) -> None:
        """Hard reset."""
        self.lab.handle.reset(self.name)
        self.lab.bringup.shells.forget(self.name)
        self.lab.ssh_access.forget(self.name)

    def reboot_and_wait(self, timeout: float | None = None) -> None:
        """Reset the node, wait for its login prompt and for every host to be available."""
        self.console.discard()
        self.reset()
        deadline = Deadline(timeout or self.lab.spec.timeout("boot"), what="reboot")
        self.console.expect(LOGIN, deadline, what=f"the login prompt of {self.name} after reset")
        self.lab.wait_available(timeout)


class Lab:
    """A lab on a backend: its nodes, the ``system`` CLI, waits, snapshots."""

    def __init__(
        self,
        spec: LabSpec,
        handle: LabHandle,
        state: LabState,
        passwords: Mapping[str, str],
        artifacts: Path,
    ) -> None:
        self.spec = spec
        self.handle = handle
        self.state = state
        self.artifacts = artifacts
        self.lab_id = state.lab_id
        consoles = {
            n.name: Console(
                handle.console(n.name),
                n.name,
                lab=spec.name,
                artifacts=artifacts,
                alive=self._alive(n.name),
            )
            for n in spec.nodes
        }
        for console in consoles.values():
            for password in passwords.values():
                console.add_secret(password)
        self.machines = {n.name: _Machine(handle, n.name, consoles[n.name]) for n in spec.nodes}
        self.bringup = Bringup(
            spec, consoles, self.machines, passwords, StepRecorder(spec.name), DoneStages(state),
            api=PlatformApi(self._api_urls, passwords["admin"]),
        )  # fmt: skip
        self._no_way_in: str | None = None  # why the lab has no gateway, once known
        self.nodes = {n.name: Node(self, n.name) for n in spec.nodes}
        #: Stages run at once; the host's CPU and memory decide (see capacity.py).
        self.max_parallel = parallel_cap(spec)
        #: Called after each stage while no other stage runs (per-stage snapshots).
        self.checkpoint: CheckpointHook | None = None
        self._endpoints: dict[str, Endpoint] | None = None
        controllers = [n.name for n in spec.nodes if n.personality is Personality.CONTROLLER]
        #: SSH to the controllers (``lab.ssh()``, ``node.run(via="ssh")``); host keys in the
        #: lab's ``known_hosts``, transcripts next to the consoles'.
        self.ssh_access = LabSsh(
            spec.name, lambda: self.endpoints, controllers, passwords["sysadmin"],
            state.path.parent / "known_hosts", artifacts, secrets=passwords.values(),
        )  # fmt: skip

    def _alive(self, name: str):
        return lambda: self.handle.state(name) is PowerState.RUNNING

    @property
    def name(self) -> str:
        """The lab's name."""
        return self.spec.name

    @property
    def topology(self) -> str:
        """simplex, duplex, standard or storage."""
        return self.spec.topology.value

    def node(self, name: str) -> Node:
        """The node called ``name``."""
        if name not in self.nodes:
            raise KeyError(f"lab {self.name!r} has no node {name!r} (has {', '.join(self.nodes)})")
        return self.nodes[name]

    @property
    def controller(self) -> Node:
        """The active controller's node: the one whose ``system host-show`` capabilities say
        ``Controller-Active`` (sysinv's ``Personality`` capability, which a swact moves);
        a simplex lab's only controller without asking."""
        names = [n.name for n in self.spec.nodes if n.personality is Personality.CONTROLLER]
        if len(names) == 1:
            return self.nodes[names[0]]
        for name in names:
            if ACTIVE_CAPABILITY in self.bringup.host_show(name).get("capabilities", ""):
                return self.nodes[name]
        raise StxError(f"lab {self.name!r}: no controller is {ACTIVE_CAPABILITY} in host-show")

    def provision(self, registered_stages: bool = True) -> None:
        """Run every stage not done yet; record progress in the lab's state.

        ``registered_stages=False`` leaves out the stages added with ``stx_stage`` (a golden lab
        is snapshotted without them; they run after each restore).
        """
        self.state.status = LabStatus.PROVISIONING
        self.state.save()
        try:
            stages = plan_stages(self.spec, registered_stages)
            with self.bringup.recorder.bring_up():
                run_stages(stages, self.bringup, self.max_parallel, self.checkpoint)
        except BaseException:
            self.state.status = LabStatus.FAILED
            self.state.save()
            raise
        self.state.status = LabStatus.READY
        self.state.save()

    def system(self, args: str) -> str:
        """``system <args>`` on the active controller; raises with the command and output."""
        return self.bringup.shells.system(args)

    def host_list(self) -> list[Host]:
        """``system host-list`` as records."""
        return [
            Host(int(r["id"]), r["hostname"], r["personality"], r["administrative"],
                 r["operational"], r["availability"])
            for r in self.bringup.hosts()
        ]  # fmt: skip

    def wait_available(self, timeout: float | None = None) -> None:
        """Wait until every host is ``unlocked | enabled | available``."""
        hosts = [n.name for n in self.spec.nodes]
        self.bringup.wait_hosts(
            hosts, "node_unlock", f"all hosts {AVAILABLE_TEXT}", timeout=timeout, **AVAILABLE
        )

    def snapshot(self, name: str) -> None:
        """Snapshot every node at one instant."""
        self.handle.snapshot(name)

    @property
    def passwords(self) -> Mapping[str, str]:
        """The ``sysadmin`` (SSH, console) and ``admin`` (keystone) passwords of the lab."""
        return self.bringup.passwords

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        """The platform's endpoints from the host (SSH, sysinv, keystone) at loopback ports,
        by name (:mod:`pytest_starlingx.access`). The first use opens the lab's OAM gateway,
        which stays with the lab until it is removed; StarlingX serves them once controller-0
        is unlocked."""
        if self._endpoints is None:
            facts = LabFacts.of(self.spec, self.passwords)
            self._endpoints = open_endpoints(facts, self.handle, self.state.path.parent)
        return self._endpoints

    def _api_urls(self) -> tuple[str, str]:
        """keystone's and sysinv's URLs from the host; :class:`ApiUnavailable` (for good) where
        the backend gives the lab no gateway."""
        if self._no_way_in is None:
            try:
                endpoints = self.endpoints
            except BackendError as exc:
                self._no_way_in = str(exc)
                log.info("lab %s: %s; host lists on the console", self.name, exc)
            else:
                return endpoints["keystone"].url, endpoints["sysinv"].url
        raise ApiUnavailable(self._no_way_in)

    def ssh(self, node: str | None = None, timeout: float | None = None) -> SshSession:
        """A new SSH session as sysadmin (a context manager; ``.run(command, deadline)``, and
        ``.client``, the ``paramiko.SSHClient``, for SFTP and the rest): to the OAM floating
        address (the active controller), or to controller ``node``'s own address. Workers and
        storage nodes have none (:class:`~pytest_starlingx.ssh.SshUnavailable`)."""
        if node is not None:
            self.node(node)  # a name the lab does not have is a KeyError naming those it has
        deadline = Deadline(timeout or self.spec.timeout("login"), what="ssh login")
        return self.ssh_access.connect(node, deadline)

    def restore(self, name: str) -> None:
        """Bring every node back to snapshot ``name``; consoles reconnect, logins are redone."""
        self.handle.revert(name)
        for node in self.nodes:
            self.bringup.shells.forget(node)
            self.ssh_access.forget(node)

    def close(self) -> None:
        """Close the consoles and SSH sessions (the lab stays up)."""
        self.ssh_access.close()
        for console in self.bringup.consoles.values():
            console.close()

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def timings(self) -> str:
        """The stage-timing table of this bring-up."""
        return self.bringup.recorder.table()


def plan_stages(spec: LabSpec, registered_stages: bool = True) -> list[Stage]:
    """``spec``'s pipeline with its lab file's custom stages and (unless told otherwise) those
    added with ``stx_stage``; :class:`~pytest_starlingx.errors.LabConfigError` names any
    custom stage at a point the lab lacks."""
    custom = from_lab_file(spec.stages)
    if registered_stages:
        custom += registered()
    return insert(spec, pipeline(spec), custom)


def lab_passwords(spec: LabSpec, state: LabState) -> dict[str, str]:
    """sysadmin and admin passwords: from the description, else generated once per lab.

    A password from an environment variable that the lab's release would refuse is an error
    here, before any VM exists (the lab file's literals were checked when it was read).
    """
    passwords = {}
    for user, source in spec.passwords.items():
        value = source.resolve()
        if value is None:  # asked to generate, or the variable is unset
            value = state.passwords.setdefault(user, generate_password())
        elif source.env is not None and (missing := password_problems(value, spec.release, user)):
            raise StxError(
                f"lab {spec.name!r}: the {user} password in ${source.env} does not meet "
                f"StarlingX {spec.release}'s password rules: it needs {', '.join(missing)}"
            )
        passwords[user] = value
    return passwords


def image_path(spec: LabSpec) -> Path:
    """The ISO the lab installs, placed where the hypervisor's own user can read it.

    The simulator's ISO is built (or found in the cache); either ISO is then hard-linked (or
    copied) into the host's state directory, since a user's home is often closed to QEMU.
    """
    if spec.uses_simulator:
        from pytest_starlingx.sim.build import build

        iso = build(release=spec.release)
    else:
        iso = Path(spec.image)
    info = iso.stat()
    digest = hashlib.sha256(f"{iso.resolve()} {info.st_size} {info.st_mtime_ns}".encode())
    placed = state_dir() / "images" / digest.hexdigest()[:16] / iso.name
    if not placed.exists():
        placed.parent.mkdir(parents=True, exist_ok=True)
        for directory in (placed.parent.parent.parent, placed.parent.parent, placed.parent):
            directory.chmod(0o755)
        place(iso, placed, mode=0o644)  # sessions starting together place the same ISO at once
    return placed


def create_lab(
    spec: LabSpec,
    backend: Backend,
    artifacts: Path,
    *,
    knobs: Mapping[str, Mapping[str, object]] | None = None,
) -> Lab:
    """Create the lab's hypervisor objects (all powered off) and its state; no stage runs.

    Custom stages at points the lab lacks, and a StarlingX ISO on a host whose hardware
    virtualisation does not work, are refused before anything is made (such an ISO's install
    would not finish under software emulation in any useful time). A lab with ``hosts:`` is
    placed on them first, and made on each host its nodes run on, its networks spanning them
    (``backends/multihost.py``).
    """
    plan_stages(spec)  # a custom stage the lab has no place for fails before any VM exists
    spread = _spread(spec, backend) if spec.hosts else None
    if not spec.uses_simulator and backend.software_emulated():
        raise StxError(
            f"lab {spec.name!r}: {spec.image} is a StarlingX ISO, and KVM does not work on this "
            "host (see `stx-lab doctor`): under QEMU's software emulation its install and "
            "bootstrap would take days. Use a host with working KVM, or the simulator "
            "(image: sim); to run it emulated all the same, set STX_LIBVIRT_DOMAIN_TYPE=qemu."
        )
    iso = image_path(spec)
    lab_id = new_lab_id()
    source = str(spec.source) if spec.source else None
    state = LabState(lab_id, spec.name, spec.topology.value, spec.backend.value, source,
                     lab_key(spec, str(iso)))  # fmt: skip
    state.access = LabFacts.of(spec, lab_passwords(spec, state)).to_json()
    state.save()  # with the generated passwords
    try:
        resources = lab_resources(spec, lab_id, iso, knobs)
        if spread is None:
            handle = backend.create_lab(resources)
        else:
            from pytest_starlingx.backends import multihost

            handle = multihost.create_lab(spread[0], resources, spread[1], spread[2])
        return _lab(spec, handle, state, artifacts)
    except BaseException:
        destroy_lab(backend, lab_id)
        raise


def _spread(
    spec: LabSpec, backend: Backend
) -> tuple[LibvirtBackend, list[LabHost], dict[str, str]]:
    """The libvirt backend of a lab with ``hosts:``, its hosts and the host of each node:
    placed by the pins and by what the hosts have free now, before anything is made
    (:mod:`pytest_starlingx.placement`; a host that cannot be read is a ``HostError`` naming
    it). The lab's first host is the backend's (``backends/multihost.py``)."""
    from pytest_starlingx.backends.libvirt import LibvirtBackend
    from pytest_starlingx.backends.multihost import LabHost

    if not isinstance(backend, LibvirtBackend):
        raise StxError(f"lab {spec.name!r}: a lab with `hosts:` runs on libvirt only")
    placement = place_nodes(spec.nodes, hosts_free(spec.hosts))
    hosts = [
        LabHost.of(h.name, h.uri, None if h.underlay is None else str(h.underlay), h.commands)
        for h in spec.hosts
    ]
    log.info(
        "%s: placed %s",
        spec.name,
        ", ".join(f"{node} on {host}" for node, host in placement.hosts.items()),
    )
    return backend, hosts, dict(placement.hosts)


def build_lab(
    spec: LabSpec,
    backend: Backend,
    artifacts: Path,
    *,
    keep_failed: bool = False,
    knobs: Mapping[str, Mapping[str, object]] | None = None,
    prepare: Callable[[Lab], None] | None = None,
    registered_stages: bool = True,
) -> Lab:
    """A new lab, created and provisioned; one whose bring-up fails is removed again, unless
    ``keep_failed``. ``prepare`` is called with the created lab before its stages run."""
    lab = create_lab(spec, backend, artifacts, knobs=knobs)
    try:
        if prepare is not None:
            prepare(lab)
        lab.provision(registered_stages)
    except BaseException:
        lab.close()
        if not keep_failed:
            destroy_lab(backend, lab.lab_id)
        raise
    return lab


def destroy_lab(backend: Backend, lab_id: str) -> None:
    """Remove the lab's hypervisor objects, then its state, leases and directory."""
    backend.destroy_lab(lab_id)
    forget_lab(lab_id)


def open_lab(
    spec: LabSpec, backend: Backend, state: LabState, artifacts: Path, *, consoles: bool = True
) -> Lab:
    """A handle on a lab created earlier. The consoles of its running nodes are attached, unless
    ``consoles=False`` (a snapshot revert attaches them as it resumes the nodes); shells log in
    again on first use."""
    lab = _lab(spec, backend.open_lab(state.lab_id), state, artifacts)
    if consoles:
        for name, machine in lab.machines.items():
            if machine.is_running():
                machine.attach()
                log.info("%s: console attached to running node %s", spec.name, name)
    return lab


def attach_lab(spec: LabSpec, backend: Backend, state: LabState, artifacts: Path) -> Lab:
    """:func:`open_lab`, for a lab that must have been built from ``spec`` (kept, or left by
    a failed bring-up to go on with)."""
    check_built_from(spec, state)
    return open_lab(spec, backend, state, artifacts)


def check_built_from(spec: LabSpec, state: LabState) -> None:
    """Raise unless lab ``state`` was built from ``spec`` and the same image."""
    if state.key != lab_key(spec, str(image_path(spec))):
        raise StxError(
            f"lab {state.lab_id} was built from a different description or image; "
            f"remove it with `stx-lab down {state.lab_id}` and bring up a new one"
        )


def _lab(spec: LabSpec, handle: LabHandle, state: LabState, artifacts: Path) -> Lab:
    """The one place a :class:`Lab` is made (new or opened)."""
    artifacts.mkdir(parents=True, exist_ok=True)
    return Lab(spec, handle, state, lab_passwords(spec, state), artifacts)
