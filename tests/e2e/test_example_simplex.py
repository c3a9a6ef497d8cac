"""The simplex example suite, run as a user runs it: ``pytest conftest_examples/simplex``."""

from __future__ import annotations

from e2e_helpers import EXAMPLES, run_examples


def test_simplex_example_suite(pytester, lab_file, lab_name):
    result = run_examples(pytester, lab_file, str(EXAMPLES / "simplex"))
    result.assert_outcomes(passed=4)
    text = result.stdout.str()
    assert "StarlingX labs" in text
    assert "controller-0  unlock" in text
    transcript = pytester.path / "artifacts" / f"{lab_name}-1" / "controller-0.console.log"
    assert "localhost login:" in transcript.read_text()
