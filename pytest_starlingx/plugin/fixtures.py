"""The fixtures users write tests against: one per topology, and ``stx_lab`` for markers.

The lab machinery (consoles, backends, locks) is imported when a test first asks for a lab,
so a pytest run that uses no lab does not pay for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import TYPE_CHECKING

import pytest

from pytest_starlingx.model import Topology
from pytest_starlingx.plugin.requests import LabRequest
from pytest_starlingx.plugin.stash import FACTORY, LAB_REQUEST, SETTINGS

if TYPE_CHECKING:
    from pytest_starlingx.lab import Lab
    from pytest_starlingx.plugin.factory import LabFactory


@pytest.fixture(scope="session")
def stx_lab_factory(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    record_testsuite_property: Callable[[str, object], None],
) -> Iterator[LabFactory]:
    """The session's labs; every lab it built is torn down at the end (unless kept). Their
    stage timings go into the JUnit XML's test suite properties."""
    from pytest_starlingx.plugin.factory import LabFactory
    from pytest_starlingx.plugin.progress import show_progress
    from pytest_starlingx.plugin.signals import terminal_announcer
    from pytest_starlingx.plugin.xdist import shared_root, worker_id

    config = request.config
    settings = config.stash[SETTINGS]
    artifacts = settings.artifacts or tmp_path_factory.getbasetemp() / "stx"
    worker = worker_id(config)
    factory = LabFactory(settings, artifacts, worker, shared_root(config) if worker else None)
    factory.session_labs.signals.announce = terminal_announcer(config)
    config.stash[FACTORY] = factory
    stop_progress = show_progress(config, worker)
    try:
        yield factory
    finally:
        for lab in factory.labs.values():
            record_testsuite_property(f"stx_lab_{lab.name}_timings", lab.timings())
        try:
            factory.close()
        finally:
            stop_progress()


def _topology_fixture(topology: Topology):
    @pytest.fixture(scope="session")
    def fixture(stx_lab_factory: LabFactory) -> Lab:
        return stx_lab_factory.get(LabRequest(topology))

    fixture.__doc__ = f"A provisioned {topology.value} lab, shared by the whole session."
    return fixture


stx_simplex = _topology_fixture(Topology.SIMPLEX)
stx_duplex = _topology_fixture(Topology.DUPLEX)
stx_standard = _topology_fixture(Topology.STANDARD)
stx_storage = _topology_fixture(Topology.STORAGE)


@pytest.fixture
def stx_lab(request: pytest.FixtureRequest, stx_lab_factory: LabFactory) -> Iterator[Lab]:
    """The lab the test's ``@pytest.mark.stx`` asks for (simplex without a marker)."""
    lab_request = request.node.stash.get(LAB_REQUEST, LabRequest(Topology.SIMPLEX))
    if lab_request.private_to is None:
        yield stx_lab_factory.get(lab_request)
        return
    with ExitStack() as stack:
        yield stx_lab_factory.build_private(lab_request, stack)
