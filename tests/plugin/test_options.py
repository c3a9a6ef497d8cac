"""The plugin's options and marker, exercised through pytester as users run pytest."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

pytest_plugins = ["pytester"]


def test_help_lists_the_starlingx_group(pytester):
    result = pytester.runpytest("--help")
    text = result.stdout.str()
    assert "StarlingX labs (pytest-starlingx):" in text
    for option in (
        "--stx-backend",
        "--stx-config",
        "--stx-image",
        "--stx-libvirt-uri",
        "--stx-keep",
        "--stx-reuse",
        "--stx-artifacts",
        "--stx-timeout-factor",
    ):
        assert option in text
    assert "stx_backend (string):" in text  # the ini twin


def test_marker_is_registered(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.stx(topology='simplex', *, needs=()*"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stx-backend=vbox"], "--stx-backend: 'vbox' is not a backend; use libvirt or "
                                 "virtualbox"),
        (["--stx-timeout-factor=0"], "--stx-timeout-factor: '0' is not allowed; give a number "
                                     "above 0 and at most 100"),
        (["--stx-timeout-factor=fast"], "--stx-timeout-factor: 'fast' is not allowed"),
        (["--stx-image=/nonexistent.iso"], "--stx-image: image: no such ISO file: "
                                           "/nonexistent.iso"),
    ],
)  # fmt: skip
def test_bad_option_values_are_usage_errors(pytester, args, message):
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(*args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert message in result.stderr.str()


def test_ini_options_are_read_and_checked(pytester):
    pytester.makeini("[pytest]\nstx_backend = hyperv\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "--stx-backend: 'hyperv' is not a backend" in result.stderr.str()


def test_command_line_wins_over_ini(pytester):
    pytester.makeini("[pytest]\nstx_backend = hyperv\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--stx-backend=libvirt")
    assert result.ret == pytest.ExitCode.OK


def test_a_bad_config_file_lists_its_problems(pytester):
    lab = pytester.makefile(".yaml", lab="topology: standard\nworkers: -1\nnodez: {}\n")
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest(f"--stx-config={lab}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    err = result.stderr.str()
    assert "--stx-config: the lab description is invalid:" in err
    assert f"{lab}:2: workers: must be from 1 to 20, got -1" in err
    assert f"{lab}:3: nodez: unknown key (did you mean 'nodes'?)" in err


def test_bad_markers_fail_collection_naming_each_test(pytester):
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.stx("simplx")
        def test_typo(): pass

        @pytest.mark.stx("standard", workers=99)
        def test_too_many(): pass

        @pytest.mark.stx(needs=["gpu"])
        def test_unknown_need(): pass

        @pytest.mark.stx("simplex", needs=["standby_controller"])
        def test_contradiction(): pass

        @pytest.mark.stx("duplex")
        def test_fine(): pass
        """
    )
    result = pytester.runpytest("--collect-only")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: invalid stx markers:",
            "test_bad_markers_fail_collection_naming_each_test.py::test_typo: @pytest.mark.stx: "
            "'simplx' is not a topology; use one of simplex, duplex, standard, storage",
            "*::test_too_many: @pytest.mark.stx: workers: must be from 1 to 20, got 99",
            "*::test_unknown_need: @pytest.mark.stx: needs: unknown capability 'gpu'; known: "
            "standby_controller, worker_nodes, storage_nodes",
            "*::test_contradiction: @pytest.mark.stx: a simplex lab lacks standby_controller; "
            "ask for duplex or drop needs",
        ]
    )
    assert "test_fine" not in result.stderr.str()


def test_a_run_without_labs_loads_none_of_the_lab_machinery(pytester):
    """The plugin is on every pytest run of an environment it is installed in; a run that
    asks for no lab, even with a failing test and an stx marker deselected, must not pay
    for consoles, backends or locks."""
    pytester.makepyfile(
        """
        import sys
        import pytest

        HEAVY = ("pexpect", "pyte", "libvirt", "filelock")

        def test_fails():
            assert False

        @pytest.mark.stx("duplex")
        def test_deselected(stx_lab):
            pass

        def test_zz_nothing_heavy_was_imported():
            assert [name for name in HEAVY if name in sys.modules] == []
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-k", "not deselected")
    result.assert_outcomes(passed=1, failed=1, deselected=1)


def test_a_conftest_stage_at_a_point_the_lab_lacks_fails_collection(pytester, monkeypatch):
    from pytest_starlingx.stages import custom

    monkeypatch.setattr(custom, "_REGISTERED", [])  # the in-process run registers into it
    pytester.makeconftest(
        """
        from pytest_starlingx import stx_stage

        @stx_stage(after="controller-1:bootstrap")
        def labels(lab):
            pass
        """
    )
    pytester.makepyfile(
        """
        import pytest

        @pytest.mark.stx("duplex")
        def test_one():
            pass
        """
    )
    result = pytester.runpytest()
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        [
            "ERROR: invalid stx markers:",
            "test_*.py::test_one: lab 'duplex': custom stage 'labels': after: "
            "'controller-1:bootstrap' is not a pipeline point of a duplex lab *; use one of "
            "bootstrapped, *",
        ]
    )
