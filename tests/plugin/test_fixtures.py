"""Fixtures without building labs: laziness, skips for labs the host cannot hold."""

from __future__ import annotations

import pytest

from pytest_starlingx.lifecycle.state import all_states

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

pytest_plugins = ["pytester"]

SUITE = """
import pytest

def test_simplex(stx_simplex):
    pass

@pytest.mark.stx("storage", workers=4)
def test_storage(stx_lab):
    pass
"""


def test_collect_only_and_deselected_tests_create_nothing(pytester):
    before = {s.lab_id for s in all_states()}
    pytester.makepyfile(SUITE)
    result = pytester.runpytest("--collect-only", "-q")
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*test_simplex*", "*test_storage*"])
    result = pytester.runpytest("-k", "nothing_matches", "-q")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert {s.lab_id for s in all_states()} == before


def test_a_lab_too_big_for_the_host_is_skipped_with_the_reason(pytester):
    lab = pytester.makefile(
        ".yaml", big="topology: simplex\nnode_defaults: {memory_mib: 1048576}\n"
    )
    pytester.makepyfile("def test_needs_a_lab(stx_simplex):\n    pass\n")
    result = pytester.runpytest(f"--stx-config={lab}", "-rs")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*the simplex lab 'simplex' needs 1048640 MiB for its 1 nodes, this host has * MiB "
         "available*"]
    )  # fmt: skip


def test_every_fixture_is_offered(pytester):
    result = pytester.runpytest("--fixtures")
    for name in ("stx_simplex", "stx_duplex", "stx_standard", "stx_storage", "stx_lab"):
        assert name in result.stdout.str()
