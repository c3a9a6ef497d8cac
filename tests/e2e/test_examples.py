"""The example suites, run as a user runs them: ``pytest conftest_examples/...``."""

from __future__ import annotations

from pathlib import Path

import pytest

EXAMPLES = Path(__file__).parent.parent.parent / "conftest_examples"


def run_examples(pytester: pytest.Pytester, lab_file: Path, *args: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-v", f"--stx-artifacts={pytester.path / 'artifacts'}",
        f"--stx-config={lab_file}", *args,
    )  # fmt: skip


def test_simplex_example_suite(pytester, lab_file, lab_name):
    result = run_examples(pytester, lab_file, str(EXAMPLES / "simplex"))
    result.assert_outcomes(passed=4)
    text = result.stdout.str()
    assert "StarlingX labs" in text
    assert "controller-0  unlock" in text
    transcript = pytester.path / "artifacts" / f"{lab_name}-1" / "controller-0.console.log"
    assert "localhost login:" in transcript.read_text()


def test_duplex_example_suite(pytester, lab_file):
    result = run_examples(pytester, lab_file, str(EXAMPLES / "duplex"))
    result.assert_outcomes(passed=2)
