"""What a user sees of a bring-up in pytest: live progress lines, and a failed bring-up's one
line in the short test summary (the labs' own JUnit properties are checked on a real lab in
tests/e2e/test_examples.py)."""

from __future__ import annotations

import sys

import pexpect
import pytest

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

#: A test that takes the session's lab factory and logs a bring-up as the stage runner does.
BRING_UP = """
from pytest_starlingx.timings import StepRecorder

def test_bring_up(stx_lab_factory):
    recorder = StepRecorder("mylab")
    with recorder.bring_up():
        with recorder.step("install", "controller-0"):
            pass
        with recorder.step("bootstrap", "controller-0"):
            pass
"""


def test_progress_lines_show_while_output_is_captured(pytester):
    pytester.makepyfile(BRING_UP)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines([
        "*stx mylab: bring-up started*",
        "*stx mylab: controller-0 install started at 0:00*",
        "*stx mylab: controller-0 install done in 0:00 (at 0:00)*",
        "*stx mylab: controller-0 bootstrap started at 0:00*",
        "*stx mylab: bring-up done in 0:00*",
    ])  # fmt: skip


def test_progress_lines_come_from_the_xdist_worker_that_builds(pytester):
    pytester.makepyfile(BRING_UP)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-n", "2")
    result.assert_outcomes(passed=1)
    result.stderr.fnmatch_lines([
        "[[]gw?[]] stx mylab: bring-up started",
        "[[]gw?[]] stx mylab: controller-0 install started at 0:00",
        "[[]gw?[]] stx mylab: bring-up done in 0:00",
    ])  # fmt: skip


def test_on_a_terminal_a_status_line_shows_each_node_its_stage_and_its_phase(pytester):
    """pytest in a pseudo-terminal: the status line is drawn in place (``\\r``) while the
    stage runs, and cleared before the next line."""
    pytester.makepyfile(
        """
        from pytest_starlingx.timings import StepRecorder

        def test_bring_up(stx_lab_factory):
            recorder = StepRecorder("mylab")
            with recorder.bring_up():
                with recorder.step("install", "controller-0"):
                    recorder.phase("install", 3600)
        """
    )
    child = pexpect.spawn(
        sys.executable, ["-m", "pytest", "-p", "no:cacheprovider"], cwd=str(pytester.path),
        dimensions=(24, 200), encoding="utf-8", timeout=60,
    )  # fmt: skip
    child.expect_exact("stx mylab: controller-0 install started at 0:00")
    child.expect_exact("\rstx mylab 0:00 | controller-0 install 0:00 (install: 1:00:00 left)")
    child.expect_exact("\r")  # cleared before the next line
    child.expect_exact("stx mylab: controller-0 install done in 0:00")
    child.expect_exact("1 passed")
    child.expect(pexpect.EOF)


def test_quiet_keeps_only_the_start_and_end_of_a_bring_up(pytester):
    pytester.makepyfile(BRING_UP)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=1)
    text = result.stdout.str()
    assert "stx mylab: bring-up started" in text and "stx mylab: bring-up done" in text
    assert "install" not in text


def test_a_failed_bring_up_is_one_line_with_its_node_and_stage(pytester, tmp_path, monkeypatch):
    """The second test of the same lab fails at once, with the same line."""
    pytester.makeconftest(
        """
        from pytest_starlingx.errors import StageError
        from pytest_starlingx.lifecycle.acquire import Lifecycle
        from pytest_starlingx.plugin.factory import LabFactory
        from pytest_starlingx.plugin.sessionlabs import SessionLabs

        def pytest_configure(config):
            attempts = []

            def bring_up(self, spec, *args):
                attempts.append(spec.name)
                assert len(attempts) == 1, "a failed bring-up was tried again"
                raise StageError(f"lab {spec.name!r} node controller-0: stage 'bootstrap' "
                                 "failed: the playbook failed\\n  last console lines: ...")

            Lifecycle._bring_up = bring_up  # no VM: the stages fail at once
            LabFactory.backend = lambda self: object()
            SessionLabs.start = lambda self: None  # no gc of this host's labs
        """
    )
    pytester.makepyfile(
        """
        def test_one(stx_simplex):
            pass

        import pytest

        @pytest.mark.stx("simplex")
        def test_two(stx_lab):
            pass
        """
    )
    monkeypatch.setenv("STX_STATE_DIR", str(tmp_path / "state"))
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rA", "-vv", f"--stx-artifacts={tmp_path / 'a'}"
    )
    result.assert_outcomes(errors=2)
    result.stdout.fnmatch_lines([
        "ERROR test_*.py::test_one - Failed: lab bring-up failed: lab 'simplex' node "
        "controller-0: stage 'bootstrap' failed: the playbook failed",
        "ERROR test_*.py::test_two - Failed: lab bring-up failed earlier in this session: "
        "lab 'simplex' node controller-0: stage 'bootstrap' failed: the playbook failed",
    ])  # fmt: skip
    result.stdout.fnmatch_lines(["*simplex lab 'simplex' failed: lab 'simplex' node*"])
