"""The duplex example suite, run as a user runs it: ``pytest conftest_examples/duplex``."""

from __future__ import annotations

from e2e_helpers import EXAMPLES, run_examples


def test_duplex_example_suite(pytester, lab_file):
    result = run_examples(pytester, lab_file, str(EXAMPLES / "duplex"))
    result.assert_outcomes(passed=2)
