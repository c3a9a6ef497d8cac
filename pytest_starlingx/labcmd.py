"""``stx-lab up``, ``down`` and ``list``: labs brought up and removed from the shell."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from pytest_starlingx.backends import make_backend
from pytest_starlingx.errors import LabConfigError, StxError
from pytest_starlingx.lab import attach_lab, create_lab, destroy_lab
from pytest_starlingx.labfile import lab_from_mapping, load_lab
from pytest_starlingx.labstate import LabState, all_states, state_dir
from pytest_starlingx.model import LabSpec, Topology
from pytest_starlingx.tables import render_table

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


def up(target: str, uri: str | None, resume: str | None, artifacts: Path | None) -> int:
    """Bring a lab up and leave it running; on failure leave it for inspection or resume."""
    _log_to_stderr()
    spec = resolve(target)
    backend = make_backend(spec.backend.value, uri)
    if resume:
        state = LabState.load(resume)
        lab = attach_lab(spec, backend, state, artifacts or _artifacts(resume))
    else:
        lab = create_lab(spec, backend, artifacts or _artifacts("new"))
    print(f"lab {spec.name!r}: id {lab.lab_id}, artifacts in {lab.artifacts}", flush=True)
    try:
        lab.provision()
    except StxError as exc:
        print(lab.timings(), file=sys.stderr)
        print(f"\n{exc}\n\nThe lab is left as it is for inspection. Go on from the failed "
              f"stage with `stx-lab up {target} --resume {lab.lab_id}`, or remove it with "
              f"`stx-lab down {lab.lab_id}`.", file=sys.stderr)  # fmt: skip
        return 1
    finally:
        lab.close()
    lab.state.kept = True
    lab.state.save()
    print(lab.timings())
    print(f"\nlab {spec.name!r} is up (id {lab.lab_id}); remove it with "
          f"`stx-lab down {lab.lab_id}`")  # fmt: skip
    return 0


def _artifacts(lab_id: str) -> Path:
    return state_dir() / "artifacts" / lab_id


def _log_to_stderr() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")


def matching(target: str) -> list[LabState]:
    """Labs named by id, by lab name, or by the lab file they came from."""
    path = str(Path(target).resolve()) if Path(target).exists() else None
    return [s for s in all_states()
            if target in (s.lab_id, s.name) or (path and s.source and
                                                str(Path(s.source).resolve()) == path)]  # fmt: skip


def down(target: str, uri: str | None) -> int:
    """Remove the labs ``target`` names (an id, a lab name or a lab file)."""
    states = matching(target)
    if not states:
        print(f"stx-lab down: no lab matches {target!r}; see `stx-lab list`", file=sys.stderr)
        return 1
    for state in states:
        destroy_lab(make_backend(state.backend, uri), state.lab_id)
        print(f"lab {state.name!r} (id {state.lab_id}) removed")
    return 0


def list_labs() -> int:
    """Every lab this host remembers: owner, age, kept or not, state."""
    rows = []
    for s in all_states():
        owner = f"{s.owner_pid}{'' if _alive(s.owner_pid) else ' (gone)'}"
        rows.append([s.lab_id, s.name, s.topology, s.backend, s.status,
                     "yes" if s.kept else "no", owner, s.created, s.source or "-"])  # fmt: skip
    if not rows:
        print("no labs")
        return 0
    headers = ["id", "name", "topology", "backend", "state", "kept", "owner pid", "created",
               "source"]  # fmt: skip
    print(render_table(headers, rows))
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
