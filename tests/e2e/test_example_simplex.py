"""The simplex example suite, run as a user runs it: ``pytest conftest_examples/simplex``,
together with a failing test of our own on the same lab, whose report must carry the console.

The lab is StarlingX 9.0's (the other simulated labs are 10.0's), with a sysadmin password
only 9.0's rules accept. The run keeps it (``--stx-keep``), with the endpoints its REST example
opened: ``stx-lab export`` and ``stx-lab env`` name them; the next run takes it with
``--stx-reuse`` instead of building one, and ``stx-lab down`` removes it, gateway and all."""

from __future__ import annotations

import re
import subprocess
from xml.etree import ElementTree

import json5
import pexpect
from e2e_helpers import EXAMPLES, run_examples

from pytest_starlingx.cli import main
from pytest_starlingx.lifecycle.state import state_dir


def test_simplex_example_suite_kept_then_reused(pytester, lab_file, lab_name, monkeypatch, capsys):
    failing = pytester.makepyfile(
        test_fails="""
        def test_wrong_hostname(stx_simplex):
            assert stx_simplex.node("controller-0").run("hostname").stdout == "controller-9"
        """
    )
    lab_file.write_text(
        lab_file.read_text() + "release: 9.0\npasswords: {sysadmin: {value: 'Li69nux*'}}\n"
    )
    junit = pytester.path / "junit.xml"
    result = run_examples(pytester, lab_file, str(EXAMPLES / "simplex"), str(failing),
                          "--stx-keep", f"--junitxml={junit}")  # fmt: skip
    result.assert_outcomes(passed=5, failed=1)
    text = result.stdout.str()
    assert "StarlingX labs" in text
    assert "controller-0  unlock" in text
    assert f"console {lab_name}/controller-0 (last lines)" in text  # the failure's report
    # live progress while it built, through the terminal reporter (output captured)
    assert f"stx {lab_name}: controller-0 bootstrap started at " in text
    assert re.search(rf"stx {lab_name}: controller-0 unlock done in \d+:\d\d", text), text
    assert f"stx {lab_name}: bring-up done in " in text
    labs = sorted(p.name for p in (pytester.path / "artifacts").iterdir())
    assert labs == [f"{lab_name}-1"]  # the six tests shared one lab

    # the JUnit XML names each test's lab; the failed one carries its console tail
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    timings = {p.get("name"): p.get("value") for p in suite.iterfind("properties/property")}
    assert "controller-0" in timings[f"stx_lab_{lab_name}_timings"]
    cases = {c.get("name"): c for c in suite.iterfind("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_wrong_hostname"].iter("property")}
    assert props["stx_lab_name"] == lab_name and props["stx_lab_topology"] == "simplex"
    assert props["stx_lab_artifacts"] == str(pytester.path / "artifacts" / labs[0])
    tail = props["stx_console_tail_controller-0"]
    assert tail and tail.splitlines()[-1] in text  # the same tail as the report's section
    lab_ids = {c.find("properties/property[@name='stx_lab_id']").get("value")  # type: ignore[union-attr]
               for c in cases.values()}  # fmt: skip
    transcript = pytester.path / "artifacts" / labs[0] / "controller-0.console.log"
    console = transcript.read_text()
    assert "Debian All-in-one (lowlatency) Install" in console  # 9.0's boot menu
    assert "Release 24.03 localhost ttyS0" in console  # 9.0's /etc/issue
    assert "localhost login:" in console

    # kept: how to reach and remove it is printed, and gc leaves it alone
    kept = re.search(r"remove it: stx-lab down (\w+)", text)
    assert kept, text
    lab_id = kept.group(1)
    assert lab_ids == {lab_id}  # every test case names the one lab
    try:
        assert "console of controller-0: socat" in text
        assert main(["gc"]) == 0
        assert (state_dir() / "labs" / lab_id).is_dir()

        # its endpoints stay with it (the example opened them): for starlingx/test, a shell
        capsys.readouterr()
        assert main(["export", lab_id, "--format", "starlingx-test"]) == 0
        config = json5.loads(capsys.readouterr().out)
        assert (config["floating_ip"], config["lab_type"]) == ("127.0.0.1", "Simplex")
        assert config["admin_credentials"] == {"user_name": "sysadmin", "password": "Li69nux*"}
        assert main(["env", lab_id]) == 0
        exports = dict(re.findall(r"^export (\w+)=(.*)$", capsys.readouterr().out, re.M))
        assert exports["STX_SSH_PORT"] == str(config["ssh_port"])
        assert exports["SYSTEM_URL"].startswith("http://127.0.0.1:")
        # a client that knows only the loopback SSH port and the credentials
        hosts = _over_ssh(config, "source /etc/platform/openrc && system host-list")
        assert re.search(r"\|\s*1\s*\|\s*controller-0\s*\|\s*controller\s*\|", hosts), hosts

        # reused by the next run, which builds nothing and releases its lease
        reused = pytester.makepyfile(
            test_reused="""
            import os

            def test_the_kept_lab(stx_simplex):
                assert stx_simplex.lab_id == os.environ["KEPT_LAB_ID"]
                assert stx_simplex.node("controller-0").run("hostname").stdout == "controller-0"
            """
        )
        monkeypatch.setenv("KEPT_LAB_ID", lab_id)
        again = run_examples(pytester, lab_file, str(reused), "--stx-reuse")
        again.assert_outcomes(passed=1)
        assert not list((state_dir() / "labs" / lab_id).glob("leases/*.json")), "lease kept"
    finally:
        assert main(["down", lab_id]) == 0
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert lab_id not in namespaces  # its gateway went with it


def _over_ssh(config: dict, command: str) -> str:
    """``command`` on the lab over SSH, as a starlingx/test run would: Debian's ssh to the
    configuration's floating address and port with its admin credentials (the password typed
    at ssh's prompt, never in argv). The output, once ssh has exited 0."""
    credentials = config["admin_credentials"]
    argv = ["-F", "/dev/null", "-p", str(config["ssh_port"]), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no",
            f"{credentials['user_name']}@{config['floating_ip']}", command]  # fmt: skip
    child = pexpect.spawn("ssh", argv, encoding="utf-8", timeout=120)
    child.expect("password:")
    child.sendline(credentials["password"])
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    return child.before
