"""pytest hooks: the marker, the checked settings, and marker checks at collection.

Only light modules are imported here: a session that builds no lab never loads the lab
machinery (pexpect, pyte, libvirt, filelock).
"""

from __future__ import annotations

import sys
from collections.abc import Generator
from typing import TYPE_CHECKING

import pytest

from pytest_starlingx.errors import LabConfigError
from pytest_starlingx.lifecycle.leases import held_by
from pytest_starlingx.lifecycle.state import state_dir
from pytest_starlingx.ownership import Holder
from pytest_starlingx.plugin.options import settings_from_config
from pytest_starlingx.plugin.requests import MARKER, MARKER_HELP, request_from_marker
from pytest_starlingx.plugin.stash import FACTORY, LAB_REQUEST, SETTINGS

if TYPE_CHECKING:
    from pytest_starlingx.lab import Lab
    from pytest_starlingx.model import LabSpec


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``stx`` marker and check every option once."""
    config.addinivalue_line("markers", MARKER_HELP)
    config.stash[SETTINGS] = settings_from_config(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Turn each ``@pytest.mark.stx`` into a lab request; a bad one fails collection."""
    settings = config.stash[SETTINGS]
    errors = []
    for item in items:
        marker = item.get_closest_marker(MARKER)
        if marker is None:
            continue
        try:
            request = request_from_marker(marker.args, marker.kwargs, item.nodeid, settings.base)
            _check_registered_stages(request.spec(settings.base, settings.base_source))
            item.stash[LAB_REQUEST] = request
        except LabConfigError as exc:
            errors += [f"{item.nodeid}: {problem}" for problem in exc.problems]
    if errors:
        raise pytest.UsageError("invalid stx markers:\n" + "\n".join(errors))


def _check_registered_stages(spec: LabSpec) -> None:
    """A conftest's ``stx_stage`` at a point the lab lacks fails collection. Stages are
    registered through :mod:`pytest_starlingx.stages.custom`; while nothing imported it there
    are none, and the lab machinery it pulls in stays unloaded."""
    custom = sys.modules.get("pytest_starlingx.stages.custom")
    if custom is not None:
        custom.check(spec, custom.from_lab_file(spec.stages) + custom.registered())


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    """Each lab's stage timings and where its artifacts are."""
    factory = config.stash.get(FACTORY, None)
    broken = factory.session_labs.lifecycle.broken if factory is not None else {}
    if factory is None or not (factory.labs or broken):
        return
    terminalreporter.section("StarlingX labs")
    for line in factory.session_labs.collected:
        terminalreporter.write_line(f"collected before creating labs: {line}")
    for lab in factory.labs.values():
        kept = " (kept: remove with `stx-lab down " + lab.lab_id + "`)" if lab.state.kept else ""
        terminalreporter.write_line(f"lab {lab.name!r} ({lab.topology}, id {lab.lab_id}){kept}")
        terminalreporter.write_line(f"artifacts: {lab.artifacts}")
        terminalreporter.write_line(lab.timings())
        if lab.state.kept:
            for line in how_to_reach(lab):
                terminalreporter.write_line(line)
    for failure in broken.values():
        first = failure.error.splitlines()[0]
        terminalreporter.write_line(f"{failure.topology} lab {failure.name!r} failed: {first}")


def how_to_reach(lab: Lab) -> list[str]:
    """How a person reaches and removes a kept lab."""
    run = lab.state.path.parent / "run"
    lines = [f"  console of {name}: socat -,raw,echo=0 UNIX-CONNECT:{run / name}.sock "
             "(one client at a time)" for name in lab.nodes]  # fmt: skip
    return [*lines, "  use it again: pytest --stx-reuse ...",
            f"  remove it: stx-lab down {lab.lab_id}"]  # fmt: skip


def _remove_labs_left_by_workers(config: pytest.Config) -> None:
    held = held_by(Holder.me(), state_dir() / "labs")
    if not held:
        return
    from pytest_starlingx.plugin.sessionlabs import remove_labs_left_by_workers

    lines = remove_labs_left_by_workers(held, config.stash[SETTINGS])
    reporter = config.pluginmanager.getplugin("terminalreporter")
    if reporter is None:
        return
    for line in lines:
        reporter.write_line(f"pytest-starlingx: left by the xdist workers: {line}")


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """The last xdist worker to finish removes the labs the run's workers shared; the xdist
    controller, after its workers are gone (xdist's own ``trylast`` hook stops them first),
    removes what they left behind."""
    config = session.config
    if getattr(config, "workerinput", None) is None:
        if config.pluginmanager.getplugin("dsession") is not None:
            _remove_labs_left_by_workers(config)
        return  # not an xdist worker: the session's own labs went with its factory
    from pytest_starlingx.plugin.sessionlabs import remove_run_labs
    from pytest_starlingx.plugin.xdist import leave_run

    entries = leave_run(session.config)
    if entries:
        remove_run_labs(entries, session.config.stash[SETTINGS])


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Each test names its labs in the JUnit XML (properties: id, name, topology, artifacts);
    a failing test's report also gets the console tail of every node of them, as a report
    section and as a property. (JUnit takes a test's properties from ``item.user_properties``
    when its teardown is reported.)"""
    report: pytest.TestReport = yield
    if FACTORY not in item.config.stash:
        return report
    for lab in _labs_of(item):
        if report.when == "call":
            item.user_properties += [
                ("stx_lab_id", lab.lab_id), ("stx_lab_name", lab.name),
                ("stx_lab_topology", lab.topology), ("stx_lab_artifacts", str(lab.artifacts)),
            ]  # fmt: skip
        if not report.failed:
            continue
        for name, console in lab.bringup.consoles.items():
            tail = "\n".join(console.tail())
            report.sections.append((f"console {lab.name}/{name} (last lines)", tail))
            item.user_properties.append((f"stx_console_tail_{name}", tail))
    return report


def _labs_of(item: pytest.Item) -> list[Lab]:
    from pytest_starlingx.lab import Lab

    values = getattr(item, "funcargs", {}).values()
    return [value for value in values if isinstance(value, Lab)]
