"""The simplex example suite, run as a user runs it: ``pytest conftest_examples/simplex``,
together with a failing test of our own on the same lab, whose report must carry the console.

The lab is StarlingX 9.0's (the other simulated labs are 10.0's), with a sysadmin password
only 9.0's rules accept."""

from __future__ import annotations

from e2e_helpers import EXAMPLES, run_examples


def test_simplex_example_suite(pytester, lab_file, lab_name):
    failing = pytester.makepyfile(
        test_fails="""
        def test_wrong_hostname(stx_simplex):
            assert stx_simplex.node("controller-0").run("hostname").output == "controller-9"
        """
    )
    lab_file.write_text(
        lab_file.read_text() + "release: 9.0\npasswords: {sysadmin: {value: 'Li69nux*'}}\n"
    )
    result = run_examples(pytester, lab_file, str(EXAMPLES / "simplex"), str(failing))
    result.assert_outcomes(passed=4, failed=1)
    text = result.stdout.str()
    assert "StarlingX labs" in text
    assert "controller-0  unlock" in text
    assert f"console {lab_name}/controller-0 (last lines)" in text  # the failure's report
    labs = sorted(p.name for p in (pytester.path / "artifacts").iterdir())
    assert labs == [f"{lab_name}-1"]  # the five tests shared one lab
    transcript = pytester.path / "artifacts" / labs[0] / "controller-0.console.log"
    console = transcript.read_text()
    assert "Debian All-in-one (lowlatency) Install" in console  # 9.0's boot menu
    assert "Release 24.03 localhost ttyS0" in console  # 9.0's /etc/issue
    assert "localhost login:" in console
