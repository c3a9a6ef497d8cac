"""What a test asks for: a topology (by name, marker or capability) plus lab overrides."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pytest_starlingx.errors import LabConfigError
from pytest_starlingx.labfile import lab_variant
from pytest_starlingx.model import LabSpec, Topology

MARKER = "stx"
MARKER_HELP = (
    "stx(topology='simplex', *, needs=(), private=False, **overrides): give the test a "
    "StarlingX lab of that topology (simplex, duplex, standard, storage) through the stx_lab "
    "fixture; needs=['standby_controller'|'worker_nodes'|'storage_nodes'] picks the smallest "
    "topology that has them; overrides (e.g. workers=3) make a distinct lab; private=True "
    "gives the test a lab of its own"
)
# Topologies from smallest to largest, and what each adds.
CAPABILITIES: Mapping[str, Topology] = {
    "standby_controller": Topology.DUPLEX,
    "worker_nodes": Topology.STANDARD,
    "storage_nodes": Topology.STORAGE,
}
_ORDER = list(Topology)


@dataclass(frozen=True)
class LabRequest:
    """One distinct lab of the session: equal requests share a lab."""

    topology: Topology
    overrides: str = "{}"  # canonical JSON, so that requests compare and hash by value
    private_to: str | None = None  # a test's node id when it asked for a lab of its own

    def spec(self, base: Mapping[str, Any], source: str) -> LabSpec:
        """The lab description: ``base`` (the --stx-config file) with the overrides."""
        return lab_variant(base, self.topology.value, json.loads(self.overrides), source)


def topology_for(needs: Iterable[str]) -> Topology:
    """The smallest topology that has every capability in ``needs``."""
    needs = list(needs)
    unknown = [n for n in needs if n not in CAPABILITIES]
    if unknown:
        raise LabConfigError(
            [f"needs: unknown capability {', '.join(map(repr, unknown))}; known: "
             f"{', '.join(CAPABILITIES)}"]
        )  # fmt: skip
    return max((CAPABILITIES[n] for n in needs), key=_ORDER.index, default=Topology.SIMPLEX)


def request_from_marker(
    args: tuple[Any, ...], kwargs: Mapping[str, Any], nodeid: str, base: Mapping[str, Any]
) -> LabRequest:
    """Check a ``@pytest.mark.stx(...)`` and turn it into a request.

    Raises :class:`LabConfigError` naming what is wrong; the caller adds the test's name.
    """
    try:
        return _request(args, dict(kwargs), nodeid, base)
    except LabConfigError as exc:
        prefix = f"@pytest.mark.{MARKER}"
        raise LabConfigError(
            [p if p.startswith(prefix) else f"{prefix}: {p}" for p in exc.problems]
        ) from None


def _request(
    args: tuple[Any, ...], kwargs: dict[str, Any], nodeid: str, base: Mapping[str, Any]
) -> LabRequest:
    needs = kwargs.pop("needs", ())
    if isinstance(needs, str):
        needs = [needs]
    private = kwargs.pop("private", False)
    if len(args) > 1 or ("topology" in kwargs and args):
        raise LabConfigError(["takes one topology, e.g. @pytest.mark.stx('duplex')"])
    topology = args[0] if args else kwargs.pop("topology", None)
    wanted = topology_for(needs)
    if topology is None:
        topology = wanted.value
    topologies = [t.value for t in Topology]
    if topology not in topologies:
        raise LabConfigError(
            [f"{topology!r} is not a topology; use one of {', '.join(topologies)}"]
        )
    if _ORDER.index(Topology(topology)) < _ORDER.index(wanted):
        raise LabConfigError(
            [f"a {topology} lab lacks {', '.join(needs)}; ask for {wanted.value} or drop needs"]
        )
    request = LabRequest(
        Topology(topology),
        json.dumps(kwargs, sort_keys=True, default=str),
        private_to=nodeid if private else None,
    )
    request.spec(base, source=f"@pytest.mark.{MARKER}")  # validates the overrides
    return request
