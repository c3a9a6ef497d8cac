"""The simplex and duplex example suites, run as a user runs them (``pytest
conftest_examples/simplex``, ``pytest conftest_examples/duplex``), at the same time, each
keeping its lab (``--stx-keep``). With both labs up at once, on the same OAM addressing
(StarlingX's documented 10.10.10.0/24), a client that knows only a lab's loopback SSH port and
credentials (``stx-lab export``) runs ``system host-list`` on each and reaches the controller
each port names.

The simplex lab is StarlingX 9.0's (the other simulated labs are 10.0's), with a sysadmin
password only 9.0's rules accept, and a failing test of our own runs on it, whose report must
carry the console. The next run takes the kept simplex lab with ``--stx-reuse`` on two xdist
workers, which run commands on controller-0 at the same moment (over SSH; the console would
make them take turns). ``stx-lab down`` removes both labs, gateways and all."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import json5
import pexpect
import pytest
from e2e_helpers import EXAMPLES, Examples, run_examples

from pytest_starlingx.cli import main
from pytest_starlingx.lifecycle.state import state_dir

pytestmark = pytest.mark.slow  # a duplex and a simplex lab: handed out with the largest

RUN_TIMEOUT = 2700  # seconds for both bring-ups and suites at once on a loaded 2-core host


def test_simplex_and_duplex_examples_side_by_side(
    pytester, lab_file, lab_name, monkeypatch, capsys, tmp_path
):
    failing = pytester.makepyfile(
        test_fails="""
        def test_wrong_hostname(stx_simplex):
            assert stx_simplex.node("controller-0").run("hostname").stdout == "controller-9"
        """
    )
    lab_file.write_text(
        lab_file.read_text() + "release: 9.0\npasswords: {sysadmin: {value: 'Li69nux*'}}\n"
    )
    duplex_file = tmp_path / "duplex.yaml"
    duplex_file.write_text(f"name: {lab_name}\ntopology: duplex\n")
    junit = pytester.path / "junit.xml"
    simplex_run = Examples(pytester, lab_file, "simplex", str(EXAMPLES / "simplex"),
                           str(failing), "--stx-keep", f"--junitxml={junit}")  # fmt: skip
    duplex_run = Examples(pytester, duplex_file, "duplex", str(EXAMPLES / "duplex"), "--stx-keep")
    duplex = duplex_run.result(RUN_TIMEOUT)
    simplex = simplex_run.result(RUN_TIMEOUT)
    kept: list[str] = []
    try:
        kept += [_kept_lab(simplex)]
        kept += [_kept_lab(duplex)]
        simplex.assert_outcomes(passed=5, failed=1)
        duplex.assert_outcomes(passed=2)
        _check_simplex_report(simplex, junit, simplex_run.artifacts, lab_name, kept[0])
        assert main(["gc"]) == 0  # kept labs are left alone
        assert all((state_dir() / "labs" / lab_id).is_dir() for lab_id in kept)

        # Both up at once, same OAM subnet, each at its own ports: a client with a lab's
        # exported configuration and nothing else
        configs = [_export(lab_id, capsys) for lab_id in kept]
        simplex_config, duplex_config = configs
        assert (simplex_config["lab_type"], duplex_config["lab_type"]) == ("Simplex", "Duplex")
        assert simplex_config["ssh_port"] != duplex_config["ssh_port"]
        assert simplex_config["admin_credentials"]["password"] == "Li69nux*"
        hosts = _over_ssh(simplex_config, "source /etc/platform/openrc && system host-list")
        assert _host_rows(hosts) == {"controller-0"}, hosts
        hosts = _over_ssh(duplex_config, "source /etc/platform/openrc && system host-list")
        assert _host_rows(hosts) == {"controller-0", "controller-1"}, hosts
        for node in ("controller-0", "controller-1"):  # each controller's own address
            assert _over_ssh(duplex_config, "hostname", node).strip() == node
        assert _over_ssh(simplex_config, "hostname").strip() == "controller-0"
        assert main(["env", kept[0]]) == 0
        exports = dict(re.findall(r"^export (\w+)=(.*)$", capsys.readouterr().out, re.M))
        assert exports["STX_SSH_PORT"] == str(simplex_config["ssh_port"])
        assert exports["SYSTEM_URL"].startswith("http://127.0.0.1:")

        _reuse_on_two_workers(pytester, lab_file, kept[0], monkeypatch)
    finally:
        for lab_id in kept:
            assert main(["down", lab_id]) == 0
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not [lab_id for lab_id in kept if lab_id in namespaces]  # gateways went with them


def _kept_lab(run: pytest.RunResult) -> str:
    """The id of the lab a ``--stx-keep`` run kept, from how it says to remove it."""
    kept = re.search(r"remove it: stx-lab down (\w+)", run.stdout.str())
    assert kept, run.stdout.str()
    return kept.group(1)


def _check_simplex_report(
    run: pytest.RunResult, junit: Path, artifacts: Path, lab_name: str, lab_id: str
) -> None:
    """What the simplex run reported: stage table, live progress, the failure's console, the
    JUnit XML's lab properties, the 9.0 ISO's own screens in the transcript."""
    text = run.stdout.str()
    assert "StarlingX labs" in text
    assert "controller-0  unlock" in text
    assert f"console {lab_name}/controller-0 (last lines)" in text  # the failure's report
    # live progress while it built, through the terminal reporter (output captured)
    assert f"stx {lab_name}: controller-0 bootstrap started at " in text
    assert re.search(rf"stx {lab_name}: controller-0 unlock done in \d+:\d\d", text), text
    assert f"stx {lab_name}: bring-up done in " in text
    assert "console of controller-0: socat" in text  # how to reach the kept lab
    labs = sorted(p.name for p in artifacts.iterdir())
    assert labs == [f"{lab_name}-1"]  # the six tests shared one lab

    # the JUnit XML names each test's lab; the failed one carries its console tail
    suite = ElementTree.parse(junit).getroot().find("testsuite")
    assert suite is not None
    timings = {p.get("name"): p.get("value") for p in suite.iterfind("properties/property")}
    assert "controller-0" in timings[f"stx_lab_{lab_name}_timings"]
    cases = {c.get("name"): c for c in suite.iterfind("testcase")}
    props = {p.get("name"): p.get("value") for p in cases["test_wrong_hostname"].iter("property")}
    assert props["stx_lab_name"] == lab_name and props["stx_lab_topology"] == "simplex"
    assert props["stx_lab_artifacts"] == str(artifacts / labs[0])
    tail = props["stx_console_tail_controller-0"]
    assert tail and tail.splitlines()[-1] in text  # the same tail as the report's section
    lab_ids = {c.find("properties/property[@name='stx_lab_id']").get("value")  # type: ignore[union-attr]
               for c in cases.values()}  # fmt: skip
    assert lab_ids == {lab_id}  # every test case names the one lab
    console = (artifacts / labs[0] / "controller-0.console.log").read_text()
    assert "Debian All-in-one (lowlatency) Install" in console  # 9.0's boot menu
    assert "Release 24.03 localhost ttyS0" in console  # 9.0's /etc/issue
    assert "localhost login:" in console


def _export(lab_id: str, capsys) -> dict:
    """``stx-lab export LAB --format starlingx-test``, loaded as starlingx/test loads it."""
    capsys.readouterr()
    assert main(["export", lab_id, "--format", "starlingx-test"]) == 0
    return json5.loads(capsys.readouterr().out)


def _host_rows(table: str) -> set[str]:
    """The host names of ``system host-list``'s table that are unlocked, enabled, available."""
    rows = re.findall(r"^\|\s*\d+\s*\|\s*(\S+)\s*\|.*\|\s*unlocked\s*\|\s*enabled\s*\|"
                      r"\s*available\s*\|", table, re.M)  # fmt: skip
    return set(rows)


def _reuse_on_two_workers(pytester, lab_file: Path, lab_id: str, monkeypatch) -> None:
    """The next run takes the kept lab (it builds nothing) on two xdist workers, which run a
    command on controller-0 at the same moment; it releases its leases."""
    exchange = pytester.path / "exchange"
    exchange.mkdir()
    reused = pytester.makepyfile(
        test_reused="""
        import os
        import time
        from pathlib import Path

        EXCHANGE = Path(os.environ["EXCHANGE"])


        def at_the_same_time(lab, name):
            assert lab.lab_id == os.environ["KEPT_LAB_ID"]
            (EXCHANGE / f"{name}.ready").touch()
            deadline = time.monotonic() + 600
            while len(list(EXCHANGE.glob("*.ready"))) < 2:  # both workers hold the lab
                assert time.monotonic() < deadline, "the other worker never came"
                time.sleep(0.2)
            uptime = "cut -d' ' -f1 /proc/uptime"  # the node's clock, in hundredths
            command = f"{uptime}; sleep 5; {uptime}; hostname"
            start, end, host = lab.node("controller-0").run(command, check=True).stdout.split()
            (EXCHANGE / f"{name}.times").write_text(f"{start} {end}")
            assert host == "controller-0"


        def test_one(stx_simplex):
            at_the_same_time(stx_simplex, "one")


        def test_two(stx_simplex):
            at_the_same_time(stx_simplex, "two")
        """
    )
    monkeypatch.setenv("KEPT_LAB_ID", lab_id)
    monkeypatch.setenv("EXCHANGE", str(exchange))
    again = run_examples(pytester, lab_file, str(reused), "--stx-reuse", "-n", "2")
    again.assert_outcomes(passed=2)
    spans = [tuple(map(float, p.read_text().split())) for p in exchange.glob("*.times")]
    assert len(spans) == 2
    assert max(s for s, _ in spans) < min(e for _, e in spans), spans  # they overlapped
    assert not list((state_dir() / "labs" / lab_id).glob("leases/*.json")), "lease kept"


def _over_ssh(config: dict, command: str, node: str | None = None) -> str:
    """``command`` on the lab over SSH, as a starlingx/test run would: Debian's ssh to the
    configuration's floating address and port (or ``node``'s own) with its admin credentials
    (the password typed at ssh's prompt, never in argv). The output, once ssh has exited 0."""
    credentials = config["admin_credentials"]
    where = config["nodes"][node] if node else config
    address = where["ip"] if node else config["floating_ip"]
    argv = ["-F", "/dev/null", "-p", str(where["ssh_port"]), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "PubkeyAuthentication=no",
            f"{credentials['user_name']}@{address}", command]  # fmt: skip
    child = pexpect.spawn("ssh", argv, encoding="utf-8", timeout=120)
    child.expect("password:")
    child.sendline(credentials["password"])
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    return child.before
