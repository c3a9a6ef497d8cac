"""``stx-lab up``, ``down``, ``list`` and ``gc``: labs brought up and removed from the shell."""

from __future__ import annotations

import json
import logging
import os
import select
import shlex
import shutil
import signal
import sys
import termios
import threading
import tty
from collections.abc import Callable, Sequence
from pathlib import Path

import paramiko

from pytest_starlingx.access import Endpoint, LabFacts, open_endpoints, starlingx_test_config
from pytest_starlingx.backends import make_backend
from pytest_starlingx.errors import LabConfigError, StxError
from pytest_starlingx.lab import destroy_lab, lab_passwords
from pytest_starlingx.labfile import lab_from_mapping, load_lab
from pytest_starlingx.lifecycle.acquire import Lifecycle, Policy
from pytest_starlingx.lifecycle.checkpoints import load_checkpoints, open_lab_at
from pytest_starlingx.lifecycle.gc import Backends, age, gc, survey
from pytest_starlingx.lifecycle.golden import (
    golden_of,
    list_golden,
    release_abandoned,
    release_id,
    remove_golden,
)
from pytest_starlingx.lifecycle.leases import live_leases
from pytest_starlingx.lifecycle.state import LabState, all_states, lab_dir, state_dir
from pytest_starlingx.model import LabSpec, Personality, Topology, lab_key
from pytest_starlingx.progress import EVENTS, AboveStatus, ProgressLines, StatusLine
from pytest_starlingx.ssh import LabSsh, SshError
from pytest_starlingx.text_table import render_table
from pytest_starlingx.transport import Transport
from pytest_starlingx.waits import Deadline

log = logging.getLogger("pytest_starlingx.cli")


def resolve(target: str) -> LabSpec:
    """A lab description from a file or a topology name."""
    if target in {t.value for t in Topology}:
        return lab_from_mapping({"topology": target}, source=target)
    if not Path(target).exists() and not target.endswith((".yaml", ".yml")):
        raise LabConfigError(
            [f"{target}: neither a lab file nor a topology "
             f"({', '.join(t.value for t in Topology)})"]
        )  # fmt: skip
    return load_lab(target)


def up(
    target: str, uri: str | None, resume: str | None, artifacts: Path | None,
    golden: bool = False, stage_snapshots: bool = False,
) -> int:  # fmt: skip
    """Bring a lab up and leave it running; on failure leave it for inspection or resume.

    ``golden``: restore the lab's golden snapshot, or build it and make it golden (held until
    ``stx-lab down``). With ``stage_snapshots`` the lab is snapshotted after each stage, and
    ``--resume`` goes on from the last good one.
    """
    _log_to_stderr()
    spec = resolve(target)
    backend = make_backend(spec.backend.value, uri)
    lifecycle = Lifecycle(Policy(
        keep=True, golden=golden and not resume, stage_snapshots=stage_snapshots,
        leave_failed=True, purpose="stx-lab up", durable=golden,
    ))  # fmt: skip
    state = LabState.load(resume) if resume else None
    where = artifacts or _artifacts(resume or ("golden" if golden else "new"))
    try:
        got = lifecycle.bring_up(spec, backend, where, resume=state)
    except StxError as exc:
        failure = lifecycle.broken.get(lab_key(spec))
        if failure is None or failure.lab_id is None:
            raise
        print(failure.timings, file=sys.stderr)
        print(f"\n{exc}\n\nThe lab is left as it is for inspection. Go on from the failed "
              f"stage with `stx-lab up {target} --resume {failure.lab_id}`, or remove it with "
              f"`stx-lab down {failure.lab_id}`.", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        lifecycle.close()
    lab = got.lab
    lab.close()
    print(lab.timings())
    if got.golden_key is not None:
        print(f"\nlab {spec.name!r} is up (id {lab.lab_id}), {got.how} golden lab "
              f"{got.golden_key} in {got.seconds:.1f}s; hand it back with `stx-lab down "
              f"{lab.lab_id}` (the golden lab stays)")  # fmt: skip
        return 0
    if golden:
        print("the golden lab was in use; a plain lab was brought up", file=sys.stderr)
    lifecycle.leases.release(lab_dir(lab.lab_id))  # kept: it needs no holder
    print(f"\nlab {spec.name!r} is up (id {lab.lab_id}); remove it with "
          f"`stx-lab down {lab.lab_id}`")  # fmt: skip
    return 0


def _artifacts(lab_id: str) -> Path:
    return state_dir() / "artifacts" / lab_id


def _log_to_stderr() -> None:
    """INFO and up to stderr, and the bring-up's events as the pytest plugin shows them: a line
    each, and on a terminal a status line kept in place below the log."""
    status = None
    if sys.stderr.isatty():
        status = StatusLine(_show_on_stderr, lambda: shutil.get_terminal_size().columns)
    stream = sys.stderr if status is None else AboveStatus(sys.stderr, status)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=stream
    )
    EVENTS.addHandler(ProgressLines(_to_stderr, status=status))


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _show_on_stderr(text: str) -> None:
    sys.stderr.write(f"\r{text}\x1b[K")  # back to the line's start, then clear its rest
    sys.stderr.flush()


def matching(target: str) -> list[LabState]:
    """Labs named by id, by lab name, or by the lab file they came from."""
    path = str(Path(target).resolve()) if Path(target).exists() else None
    return [s for s in all_states()
            if target in (s.lab_id, s.name) or (path and s.source and
                                                str(Path(s.source).resolve()) == path)]  # fmt: skip


def down(target: str, uri: str | None, force: bool = False) -> int:
    """Remove the labs ``target`` names (an id, a lab name or a lab file).

    A lab that a live process holds (a lease) is refused unless ``force``.
    """
    states = matching(target)
    if not states:
        print(f"stx-lab down: no lab matches {target!r}; see `stx-lab list`", file=sys.stderr)
        return 1
    for state in states:
        held = [lease for lease in live_leases(state.path.parent) if not lease.durable]
        if held and not force:
            print(f"stx-lab down: lab {state.name!r} (id {state.lab_id}) is in use by "
                  f"{', '.join(lease.describe() for lease in held)}; wait for it or use --force",
                  file=sys.stderr)  # fmt: skip
            return 1
        backend = make_backend(state.backend, uri)
        record = golden_of(state.lab_id)
        if record is not None:
            release_id(backend.open_lab(state.lab_id), state.lab_id)
            print(f"golden lab {state.name!r} (id {state.lab_id}) powered off and kept; remove "
                  f"it with `stx-lab golden rm {record.key}`")  # fmt: skip
            continue
        destroy_lab(backend, state.lab_id)
        print(f"lab {state.name!r} (id {state.lab_id}) removed")
    return 0


def resolve_state(state: LabState) -> LabSpec:
    """The description a lab was brought up from (its file or its topology name)."""
    return resolve(state.source or state.topology)


def golden_list() -> int:
    """Every golden lab: key, lab, what it was built from, whole or not, in use or not."""
    rows = [[r.key, r.lab_id, r.name, r.topology, r.image_sha256[:12], r.pipeline_version,
             "yes" if r.complete else "NO (partial)", ", ".join(r.users()) or "-",
             r.build_seconds, r.created]
            for r in list_golden()]  # fmt: skip
    if not rows:
        print("no golden labs")
        return 0
    print(render_table(["key", "lab id", "name", "topology", "image", "pipeline", "complete",
                        "in use by", "build s", "created"], rows))  # fmt: skip
    return 0


def golden_rm(key: str, uri: str | None) -> int:
    """Remove golden lab ``key`` (``all``: every one); one held by a live session is left."""
    records = [r for r in list_golden() if key in ("all", r.key)]
    if not records:
        print(f"stx-lab golden rm: no golden lab {key!r}; see `stx-lab golden list`",
              file=sys.stderr)  # fmt: skip
        return 1
    status = 0
    for record in records:
        users = [lease.describe() for lease in live_leases(lab_dir(record.lab_id))
                 if not lease.durable]  # fmt: skip
        if users:
            print(f"golden lab {record.key} is in use by {', '.join(users)}; left",
                  file=sys.stderr)  # fmt: skip
            status = 1
            continue
        remove_golden(record, make_backend(record.backend, uri))
        print(f"golden lab {record.key} (lab id {record.lab_id}) removed")
    return status


def image_cache_clear(uri: str | None) -> int:
    """Remove the image cache of the libvirt host at ``uri`` (``LibvirtBackend``'s)."""
    from pytest_starlingx.backends.libvirt import LibvirtBackend

    backend = make_backend("libvirt", uri)
    assert isinstance(backend, LibvirtBackend)
    try:
        removed = backend.clear_image_cache()
    finally:
        backend.close()
    images = [name for name in removed if name.endswith(".iso")]
    where = f"{backend.config.uri}:{backend.cache_pool_path()}"
    print(f"removed the image cache at {where} ({len(images)} image(s))" if removed
          else f"no image cache at {where}")  # fmt: skip
    return 0


def snapshot_list(target: str, uri: str | None) -> int:
    """The per-stage snapshots of a lab, oldest first."""
    state = _one(target)
    rows = [[c.name, c.stage, len(c.done), c.created] for c in load_checkpoints(state.lab_id)]
    if not rows:
        print(f"lab {state.lab_id} has no stage snapshots (bring it up with --stage-snapshots)")
        return 0
    print(render_table(["snapshot", "after stage", "stages done", "created"], rows))
    return 0


def snapshot_revert(target: str, name: str, uri: str | None) -> int:
    """Put a lab back to one of its per-stage snapshots; `stx-lab up --resume` goes on from it."""
    _log_to_stderr()
    state = _one(target)
    spec = resolve_state(state)
    backend = make_backend(state.backend, uri)
    lab = open_lab_at(spec, backend, state, _artifacts(state.lab_id), name)
    lab.close()
    print(f"lab {state.lab_id} reverted to {name}; go on with `stx-lab up "
          f"{state.source or state.topology} --resume {state.lab_id}`")  # fmt: skip
    return 0


def _one(target: str) -> LabState:
    states = matching(target)
    if len(states) != 1:
        raise StxError(f"{target!r} names {len(states)} labs; give a lab id (see `stx-lab list`)")
    return states[0]


def list_labs(uri: str | None) -> int:
    """Every lab of ours on this host: owner, age, kept or not, state, leases, gc verdict."""
    backends = Backends(uri)
    try:
        records = survey(backends.usable(state_dir()))
    finally:
        backends.close()
    rows = []
    for rec in records:
        if rec.empty_dir:
            continue
        owner = rec.owner
        alive = owner is not None and (owner.alive() is not False)
        owner_text = "-" if owner is None else f"{owner}{'' if alive else ' (gone)'}"
        live = [lease for lease in rec.leases if lease.live()]
        leases = ", ".join(lease.describe() for lease in rec.leases) or "-"
        remove, _ = rec.verdict()
        state = rec.state.status if rec.state is not None else "no state"
        kept = "yes" if rec.state is not None and rec.state.kept else "no"
        rows.append([rec.lab_id, rec.name, rec.state.topology if rec.state else "?",
                     rec.backend, state, kept, owner_text, age(rec.created),
                     f"{len(live)} live: {leases}" if rec.leases else "-",
                     "orphan" if remove else "in use" if live or alive else "kept"])  # fmt: skip
    if not rows:
        print("no labs")
        return 0
    headers = ["id", "name", "topology", "backend", "state", "kept", "owner", "age", "leases",
               "gc"]  # fmt: skip
    print(render_table(headers, rows))
    return 0


def collect_garbage(uri: str | None, dry_run: bool) -> int:
    """Remove the labs of dead owners that were not kept; 1 when some could not be removed."""
    _log_to_stderr()
    result = gc(uri, dry_run=dry_run)
    released, not_released = ([], []) if dry_run else release_abandoned(uri)
    for line in result.lines() + released + not_released:
        print(line)
    if not (result.removed or result.failed or released or not_released):
        print("nothing to collect")
    return 1 if result.failed or not_released else 0


def console(target: str, node: str, write: bool, uri: str | None) -> int:
    """Show a node's serial console to a person: follow its log, or (``write``) attach to it.

    Watching follows everything the node prints (from the hypervisor's console log), so it works
    while automation drives the console. Typing needs the console itself: only one client can
    hold it, so use ``--write`` on a lab no session is driving. Ctrl-] leaves.
    """
    states = matching(target)
    if len(states) != 1:
        found = ", ".join(s.lab_id for s in states) or "none"
        print(f"stx-lab console: {target!r} must name exactly one lab (matches: {found})",
              file=sys.stderr)  # fmt: skip
        return 1
    handle = make_backend(states[0].backend, uri).open_lab(states[0].lab_id)
    if node not in {m.name for m in handle.resources.machines}:
        names = ", ".join(m.name for m in handle.resources.machines)
        print(f"stx-lab console: lab {target!r} has no node {node!r} (has {names})",
              file=sys.stderr)  # fmt: skip
        return 1
    if write:
        return _attach(handle.console(node))
    return _follow(lambda: handle.console_log(node))


def _follow(read_log: Callable[[], bytes]) -> int:
    """Print the log from its start, then what is appended, until Ctrl-C."""
    shown = 0
    tick = threading.Event()
    out = sys.stdout.buffer
    try:
        while True:
            data = read_log()
            if len(data) > shown:
                out.write(data[shown:])
                out.flush()
                shown = len(data)
            tick.wait(0.5)
    except KeyboardInterrupt:
        return 0


def _attach(transport: Transport) -> int:
    """Raw terminal <-> console until Ctrl-] (0x1d)."""
    transport.connect()
    stdin = sys.stdin.fileno()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None
    try:
        if saved is not None:
            tty.setraw(stdin)
        while True:
            data = transport.read(4096, 0.05)
            if data:
                os.write(sys.stdout.fileno(), data)
            ready, _, _ = select.select([stdin], [], [], 0)
            if ready:
                keys = os.read(stdin, 1024)
                if not keys or b"\x1d" in keys:
                    return 0
                transport.write(keys)
    except EOFError:
        return 0
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        transport.close()


def _facts(state: LabState) -> LabFacts:
    """A lab's facts: saved with its state, or resolved again for a lab from before they were."""
    if state.access:
        return LabFacts.from_json(state.access)
    spec = resolve_state(state)
    return LabFacts.of(spec, lab_passwords(spec, state))


def _open_endpoints(state: LabState, facts: LabFacts, uri: str | None) -> dict[str, Endpoint]:
    """The lab's endpoints, its OAM gateway opened if need be."""
    handle = make_backend(state.backend, uri).open_lab(state.lab_id)
    return open_endpoints(facts, handle, lab_dir(state.lab_id))


def _endpoints(target: str, uri: str | None) -> tuple[LabFacts, dict[str, Endpoint]]:
    """A lab's facts and its endpoints."""
    state = _one(target)
    facts = _facts(state)
    return facts, _open_endpoints(state, facts, uri)


def env(target: str, uri: str | None) -> int:
    """Shell exports for a lab (``eval "$(stx-lab env LAB)"``): keystone's ``OS_*`` as
    StarlingX's ``/etc/platform/openrc`` sets them, but at the loopback endpoints;
    ``SYSTEM_URL`` for the ``system`` CLI (cgtsclient's ``--system-url``), since the catalog
    names OAM addresses the host does not reach; and each endpoint's port."""
    facts, found = _endpoints(target, uri)
    exports = {
        "OS_AUTH_URL": f"{found['keystone'].url}/v3",
        "OS_USERNAME": "admin",
        "OS_PASSWORD": facts.passwords["admin"],
        "OS_PROJECT_NAME": "admin",
        "OS_USER_DOMAIN_NAME": "Default",
        "OS_PROJECT_DOMAIN_NAME": "Default",
        "OS_IDENTITY_API_VERSION": "3",
        "OS_REGION_NAME": "RegionOne",
        "OS_INTERFACE": "public",
        "SYSTEM_URL": f"{found['sysinv'].url}/v1",
        "STX_LAB": facts.name,
    }
    for name, endpoint in found.items():
        exports[f"STX_{name.upper().replace('-', '_')}_PORT"] = str(endpoint.local_port)
    for key, value in exports.items():
        print(f"export {key}={shlex.quote(value)}")
    return 0


def export(target: str, uri: str | None) -> int:
    """The lab as another tool's lab configuration, on stdout (``starlingx-test``: a
    starlingx/test ``config/lab/files/*.json5``)."""
    facts, found = _endpoints(target, uri)
    print(json.dumps(starlingx_test_config(facts, found), indent=2))
    return 0


#: Seconds ``stx-lab ssh`` gives the connection and login.
SSH_LOGIN_TIMEOUT = 60.0
#: ``stx-lab ssh``'s exit status when the remote command left none, as ssh(1) has it.
SSH_NO_STATUS = 255


def ssh(target: str, node: str | None, command: Sequence[str], uri: str | None) -> int:
    """Log in as sysadmin to the lab's floating address or to controller ``node``'s own
    address, with the password saved with the lab. With ``command`` (its words joined by
    blanks, as ssh(1) joins them), run it with its output and errors streamed, and return its
    exit status; without, an interactive shell on a pty."""
    state = _one(target)
    facts = _facts(state)
    names = [name for name, _ in facts.nodes]
    if node is not None and node not in names:
        raise StxError(f"lab {facts.name!r} has no node {node!r} (has {', '.join(names)})")
    controllers = [name for name, kind in facts.nodes if kind == Personality.CONTROLLER.value]
    access = LabSsh(
        facts.name, lambda: _open_endpoints(state, facts, uri), controllers,
        facts.passwords["sysadmin"], lab_dir(state.lab_id) / "known_hosts",
        _artifacts(state.lab_id), secrets=facts.passwords.values(),
    )  # fmt: skip
    access.require_endpoint(node)  # a node without an endpoint fails before the gateway opens
    with access.connect(node, Deadline(SSH_LOGIN_TIMEOUT, what="ssh login")) as session:
        if command:
            try:
                return session.stream(" ".join(command), sys.stdout.buffer, sys.stderr.buffer)
            except SshError as exc:
                print(f"stx-lab ssh: {exc}", file=sys.stderr)
                return SSH_NO_STATUS
        return _interactive(session.client)


def _window_size(fd: int) -> os.terminal_size:
    """The size of the terminal on ``fd`` as the terminal has it (COLUMNS and LINES, which
    a parent may have set for its own output, do not follow a resize); shutil's guess when
    ``fd`` is no terminal."""
    try:
        return os.get_terminal_size(fd)
    except OSError:
        return shutil.get_terminal_size()


def _interactive(client: paramiko.SSHClient) -> int:
    """A login shell on a pty of the terminal's size (kept in step with it), the terminal raw
    until the shell ends; the shell's exit status."""
    transport = client.get_transport()
    assert transport is not None  # connected
    channel = transport.open_session()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    size = _window_size(stdout)
    channel.get_pty(os.environ.get("TERM", "vt100"), size.columns, size.lines)
    channel.invoke_shell()
    saved = termios.tcgetattr(stdin) if os.isatty(stdin) else None

    def resize(_signum: int, _frame: object) -> None:
        now = _window_size(stdout)
        channel.resize_pty(now.columns, now.lines)

    previous = signal.signal(signal.SIGWINCH, resize)
    inputs: list[paramiko.Channel | int] = [channel, stdin]
    try:
        if saved is not None:
            tty.setraw(stdin)
        while True:
            ready, _, _ = select.select(inputs, [], [])
            if channel in ready:
                data = channel.recv(32768)
                if not data:
                    break
                os.write(stdout, data)
            if stdin in ready:
                keys = os.read(stdin, 1024)
                if keys:
                    channel.sendall(keys)
                else:  # end of input: the shell gets it too
                    channel.shutdown_write()
                    inputs.remove(stdin)
    finally:
        if saved is not None:
            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)
        signal.signal(signal.SIGWINCH, previous)
    try:
        # sshd sends the status after the output's end: closing first could lose it
        status = channel.recv_exit_status()
    finally:
        channel.close()  # the session's own close (the caller's) ends the connection
    return status if status >= 0 else SSH_NO_STATUS
