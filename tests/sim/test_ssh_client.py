"""The plugin's SSH client (``pytest_starlingx.ssh``) against the simulator image's own sshd,
run on this host without a VM (``server`` in conftest.py), reached as a lab is reached: at a
loopback port of a relay that connects from inside the server's network namespace (the lab
gateway's relay). Needs root and the simulator image, like test_sshd.py.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pexpect
import pytest
from sshd_host import HOSTNAME, Server

from pytest_starlingx.access import Endpoint, LabFacts
from pytest_starlingx.backends.base import LabResources, PowerState
from pytest_starlingx.backends.gateway import Gateway, _start_relay, _stop
from pytest_starlingx.lab import create_lab
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.lifecycle.state import LabState
from pytest_starlingx.ownership import Holder
from pytest_starlingx.ssh import (
    ChannelRefused,
    HostKeyRefused,
    LabSsh,
    SshError,
    SshTimeout,
    SshUnavailable,
)
from pytest_starlingx.waits import Deadline, poll

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounts, chroot and network namespaces need root"
)

FLOATING, C0, C1 = "10.10.10.2", "10.10.10.3", "10.10.10.4"
#: ssh-keygen's ``-t`` by the key type a server presents
KINDS = {"ssh-ed25519": "ed25519", "ecdsa-sha2-nistp256": "ecdsa", "ssh-rsa": "rsa"}
LOGIN = 60  # seconds for a login (pam_unix waits 2 s after a wrong password)

MakeSsh = Callable[..., LabSsh]


@pytest.fixture(scope="module")
def port(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A loopback port reaching the server's port 22, through the gateway's relay."""
    relay, ports = _start_relay(server.netns, [("127.0.0.1", 22)], tmp_path_factory.mktemp("gw"))
    yield ports[("127.0.0.1", 22)]
    _stop(relay, "relay")


@pytest.fixture
def make_ssh(server: Server, port: int, tmp_path: Path) -> Iterator[MakeSsh]:
    """LabSsh for a simplex or duplex lab whose every SSH endpoint is the one server; the
    lab's known_hosts and artifacts are the test's own."""
    made: list[LabSsh] = []

    def make(controllers: int = 1, password: str | None = None) -> LabSsh:
        names = [f"controller-{i}" for i in range(controllers)]
        endpoints = {"ssh": Endpoint("ssh", FLOATING, 22, port)}
        if controllers > 1:
            for name, address in zip(names, (C0, C1), strict=True):
                endpoints[f"ssh-{name}"] = Endpoint(f"ssh-{name}", address, 22, port)
        lab_ssh = LabSsh("sshlab", lambda: endpoints, names, password or server.image.password,
                         tmp_path / "known_hosts", tmp_path / "artifacts")  # fmt: skip
        made.append(lab_ssh)
        return lab_ssh

    yield make
    for lab_ssh in made:
        lab_ssh.close()


def server_key(server: Server, kind: str) -> str:
    """``<type> <base64>`` of one of the server's host keys."""
    pub = server.image.root / "etc" / "ssh" / f"ssh_host_{kind}_key.pub"
    return " ".join(pub.read_text().split()[:2])


def other_key(tmp_path: Path, kind: str, name: str = "other") -> str:
    """``<type> <base64>`` of a new key of ``kind`` (another machine's host key)."""
    key = tmp_path / f"{name}_{kind}"
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-f", str(key)], check=True)
    return " ".join(key.with_suffix(".pub").read_text().split()[:2])


def recorded(path: Path) -> dict[str, str]:
    """known_hosts as {name: '<type> <base64>'}."""
    lines = [line.split() for line in path.read_text().splitlines() if line.strip()]
    return {name: f"{kind} {key}" for name, kind, key in lines}


def test_password_login_runs_commands_with_their_exit_status(make_ssh, server, tmp_path):
    """sysadmin logs in with the password; a command's output with its errors merged in, as
    a console shows them, and its exit status; the host key is recorded by node name."""
    with make_ssh().connect(None, Deadline(LOGIN)) as session:
        result = session.run("hostname; echo to-stderr >&2; exit 3", Deadline(30))
        assert (result.stdout.splitlines(), result.exit_status) == ([HOSTNAME, "to-stderr"], 3)
        assert session.run("id -un", Deadline(30)).stdout == "sysadmin"
    assert "Accepted password for sysadmin" in server.image.auth_log()
    [(name, key)] = recorded(tmp_path / "known_hosts").items()
    assert name == "controller-0"  # simplex: the floating address is controller-0's own
    assert key in {server_key(server, kind) for kind in ("ed25519", "ecdsa", "rsa")}


def test_a_command_past_its_deadline_is_a_timeout_naming_lab_node_and_command(make_ssh):
    with make_ssh().connect("controller-0", Deadline(LOGIN)) as session:
        started = time.monotonic()
        with pytest.raises(SshTimeout) as info:
            session.run("echo started; sleep 60", Deadline(2))
        assert time.monotonic() - started < 10
        message = str(info.value)
        assert message.startswith("lab 'sshlab' node controller-0 (ssh 127.0.0.1:")
        assert "'echo started; sleep 60' did not finish within 2s" in message
        assert "| started" in message
        assert session.run("echo still-usable", Deadline(30)).stdout == "still-usable"


def test_the_transcript_masks_the_password(make_ssh, server, tmp_path):
    password = server.image.password
    with make_ssh().connect("controller-0", Deadline(LOGIN)) as session:
        result = session.run(f"echo 'said {password}'", Deadline(30))
    assert result.stdout == f"said {password}"  # the caller gets what the node printed
    transcript = (tmp_path / "artifacts" / "controller-0.ssh.log").read_text()
    assert password not in transcript
    assert "run: echo 'said ****'" in transcript
    assert "| said ****" in transcript
    assert "exit status 0" in transcript


def test_a_wrong_password_is_ssh_unavailable(make_ssh, server):
    try:
        with pytest.raises(SshUnavailable, match="sysadmin's password was refused"):
            make_ssh(password="not-the-password").connect(None, Deadline(LOGIN))
    finally:  # one failure of pam_faillock's five
        (server.image.root / "run" / "faillock" / "sysadmin").unlink(missing_ok=True)


def test_node_commands_run_in_a_login_shell_with_no_input(make_ssh):
    """LabSsh.run (``Node.run`` over SSH) has a console login's environment (/etc/profile's
    PATH, which sshd's own lacks the sbin directories of); a command reading its input gets
    end of file at once instead of waiting for its deadline."""
    lab_ssh = make_ssh()
    path = lab_ssh.run("controller-0", "echo $PATH", Deadline(LOGIN)).stdout.split(":")
    assert {"/usr/sbin", "/sbin"} <= set(path)
    result = lab_ssh.run("controller-0", "cat; echo read-all", Deadline(10))
    assert (result.command, result.stdout) == ("cat; echo read-all", "read-all")
    with lab_ssh.connect(None, Deadline(LOGIN)) as session:  # as ``ssh host COMMAND``
        assert "/usr/sbin" not in session.run("echo $PATH", Deadline(30)).stdout.split(":")


def test_sudo_is_answered_as_on_the_console(make_ssh, server):
    """Over SSH there is no terminal for sudo to ask on: a command that mentions sudo gets a
    pty and sudo's prompt the password; the prompt is not in the output. A refused password
    is an error at once, not a wait for the deadline."""
    lab_ssh = make_ssh()
    result = lab_ssh.run("controller-0", "sudo -k; sudo id -un; echo done", Deadline(LOGIN))
    # (before them, here: sudo cannot resolve the host name; the image has no /etc/hosts entry)
    assert (result.stdout.splitlines()[-2:], result.exit_status) == (["root", "done"], 0)
    assert "assword" not in result.stdout
    try:
        with lab_ssh.connect(None, Deadline(LOGIN)) as session:
            started = time.monotonic()
            with pytest.raises(SshError, match="sudo asked for the password again"):
                session.run("sudo -k; sudo id -un", Deadline(60), sudo_password="not-it")
            assert time.monotonic() - started < 30
    finally:  # one failure of pam_faillock's five
        (server.image.root / "run" / "faillock" / "sysadmin").unlink(missing_ok=True)


def test_a_recorded_host_key_is_checked_and_another_refused(make_ssh, server, tmp_path):
    """After the first login the recorded key opens the next; a controller presenting
    another key (its line now another machine's) is refused, with what to do."""
    lab_ssh = make_ssh(controllers=2)
    lab_ssh.connect("controller-1", Deadline(LOGIN)).close()
    known = tmp_path / "known_hosts"
    first = recorded(known)
    assert list(first) == ["controller-1"]
    lab_ssh.connect("controller-1", Deadline(LOGIN)).close()  # the same key: fine
    kind = KINDS[first["controller-1"].split()[0]]
    known.write_text(f"controller-1 {other_key(tmp_path, kind)}\n")
    before = known.read_text()
    logins = server.image.auth_log().count("Accepted password")
    with pytest.raises(HostKeyRefused) as info:
        lab_ssh.connect("controller-1", Deadline(LOGIN))
    message = str(info.value)
    assert "but " + str(known) in message and "for controller-1" in message
    assert "remove its line" in message
    assert known.read_text() == before
    assert server.image.auth_log().count("Accepted password") == logins  # no password sent


def test_the_floating_address_is_accepted_with_a_controllers_key(make_ssh, server, tmp_path):
    """Duplex: the floating address's key is checked against the controllers' keys, learnt
    first at their own addresses; a key no controller has is refused."""
    lab_ssh = make_ssh(controllers=2)
    with lab_ssh.connect(None, Deadline(LOGIN)) as session:
        assert session.node == "floating"
        assert session.run("hostname", Deadline(30)).stdout == HOSTNAME
    known = tmp_path / "known_hosts"
    keys = recorded(known)
    assert sorted(keys) == ["controller-0", "controller-1"]
    (kind,) = {key.split()[0] for key in keys.values()}
    short = KINDS[kind]
    names = ("controller-0", "controller-1")
    known.write_text("".join(f"{n} {other_key(tmp_path, short, n)}\n" for n in names))
    with pytest.raises(HostKeyRefused, match="which is no controller's key"):
        lab_ssh.connect(None, Deadline(LOGIN))


def test_a_long_command_does_not_hold_up_others(make_ssh):
    """Commands on two nodes and two on one node run at the same time."""
    lab_ssh = make_ssh(controllers=2)
    for name in ("controller-0", "controller-1"):
        lab_ssh.run(name, "true", Deadline(LOGIN))  # logged in, host keys recorded
    results: dict[str, str] = {}

    def run(key: str, node: str) -> None:
        results[key] = lab_ssh.run(node, f"sleep 5; echo {key}", Deadline(30)).stdout

    threads = [threading.Thread(target=run, args=(key, node)) for key, node in
               (("a", "controller-0"), ("b", "controller-1"), ("c", "controller-0"))]  # fmt: skip
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == {"a": "a", "b": "b", "c": "c"}
    assert time.monotonic() - started < 10  # not 15: one after the other


def test_commands_past_sshds_session_limit_are_refused_without_breaking_the_others(
    make_ssh, server
):
    """sshd serves 10 channels per connection (MaxSessions): with 10 commands running on a
    node, 2 more are refused, saying so, and the 10 run on to their end on that connection."""
    lab_ssh = make_ssh()
    lab_ssh.run("controller-0", "rm -rf ~/started; mkdir ~/started", Deadline(LOGIN))
    started = server.image.root / "home" / "sysadmin" / "started"
    done: list[str] = []
    refused: list[str] = []
    broken: list[str] = []

    def run(i: int) -> None:
        try:
            command = f"touch ~/started/{i}; sleep 4; echo {i}"
            done.append(lab_ssh.run("controller-0", command, Deadline(30)).stdout)
        except ChannelRefused as exc:
            refused.append(str(exc))
        except SshError as exc:
            broken.append(str(exc))

    threads = [threading.Thread(target=run, args=(i,)) for i in range(12)]
    for thread in threads[:10]:
        thread.start()
    poll(lambda: len(list(started.iterdir())) == 10, Deadline(20), "10 commands running",
         poll_every=0.1)  # fmt: skip
    for thread in threads[10:]:
        thread.start()
    for thread in threads:
        thread.join()
    assert (sorted(done, key=int), len(refused), broken) == ([str(i) for i in range(10)], 2, [])
    assert all("sshd refused a channel for 'touch ~/started/1" in m for m in refused), refused


def test_a_dropped_connection_is_made_again(make_ssh, server):
    lab_ssh = make_ssh()
    assert lab_ssh.run("controller-0", "echo one", Deadline(LOGIN)).stdout == "one"
    session = lab_ssh.session("controller-0", Deadline(LOGIN))
    transport = session.client.get_transport()
    assert transport is not None
    transport.sock.close()  # the connection breaks under the session
    logins = server.image.auth_log().count("Accepted password")
    assert lab_ssh.run("controller-0", "echo two", Deadline(LOGIN)).stdout == "two"
    assert server.image.auth_log().count("Accepted password") == logins + 1


def test_stream_separates_output_and_errors(make_ssh):
    """What ``stx-lab ssh LAB -- CMD`` shows: output and errors apart, the exit status."""
    out, err = io.BytesIO(), io.BytesIO()
    with make_ssh().connect(None, Deadline(LOGIN)) as session:
        status = session.stream("echo out; echo err >&2; exit 5", out, err)
    assert (out.getvalue(), err.getvalue(), status) == (b"out\n", b"err\n", 5)


def test_sftp_through_the_session_client(make_ssh):
    """lab.ssh()'s client is paramiko's: SFTP (StarlingX's sftp-server subsystem)."""
    with make_ssh().connect(None, Deadline(LOGIN)) as session:
        with session.client.open_sftp() as sftp, sftp.open("from-the-host", "w") as remote:
            remote.write("hello\n")
        assert session.run("cat ~/from-the-host; rm ~/from-the-host", Deadline(30)).stdout == (
            "hello"
        )


def test_answers_says_whether_node_run_may_use_ssh(make_ssh, tmp_path):
    """``Node.run(via=None)`` asks this: True once a session logs in (kept for the command)."""
    lab_ssh = make_ssh()
    assert lab_ssh.answers("controller-0", Deadline(LOGIN))
    assert lab_ssh.run("controller-0", "echo via-ssh", Deadline(30)).stdout == "via-ssh"
    assert "| via-ssh" in (tmp_path / "artifacts" / "controller-0.ssh.log").read_text()
    assert not lab_ssh.answers("worker-0", Deadline(LOGIN))


#: ``stx-lab ssh`` for a lab saved in $STX_STATE_DIR, its SSH endpoint at loopback port
#: argv[1] (the backend's gateway is what this stands in for); prints whether the terminal's
#: settings are as they were afterwards.
STX_LAB_SSH = """import sys, termios
from pytest_starlingx import cli, commands
from pytest_starlingx.access import Endpoint, LabFacts
port = int(sys.argv[1])
commands._open_endpoints = lambda *_: {"ssh": Endpoint("ssh", "10.10.10.2", 22, port)}
before = termios.tcgetattr(0) if sys.stdin.isatty() else None
status = cli.main(sys.argv[2:])
if before is not None:
    print("terminal restored:", termios.tcgetattr(0) == before)
sys.exit(status)
"""


@pytest.fixture
def saved_lab(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment of a process that finds simplex lab 'sshlab' saved, with the server's
    sysadmin password."""
    monkeypatch.setenv("STX_STATE_DIR", str(tmp_path / "state"))
    spec = lab_from_mapping({"name": "sshlab", "topology": "simplex"})
    state = LabState("ssh123", "sshlab", "simplex", "libvirt")
    passwords = {"sysadmin": server.image.password, "admin": "Ad-0123456789!"}
    state.access = LabFacts.of(spec, passwords).to_json()
    state.save()
    return dict(os.environ)


def test_stx_lab_ssh_runs_a_command_with_its_exit_status(saved_lab, port):
    done = subprocess.run(
        [sys.executable, "-c", STX_LAB_SSH, str(port), "ssh", "sshlab", "--",
         "hostname;", "echo", "err", ">&2;", "exit", "6"],
        capture_output=True, text=True, env=saved_lab, timeout=LOGIN, check=False,
    )  # fmt: skip
    assert (done.stdout, done.stderr, done.returncode) == (f"{HOSTNAME}\n", "err\n", 6)


def test_stx_lab_ssh_opens_a_shell_of_the_terminals_size(saved_lab, port):
    """Without a command: a login shell on a pty of the terminal's size, the terminal back in
    its own mode afterwards, the shell's exit status."""
    child = pexpect.spawn(sys.executable, ["-c", STX_LAB_SSH, str(port), "ssh", "sshlab"],
                          env=saved_lab, encoding="utf-8", timeout=LOGIN,
                          dimensions=(33, 101))  # fmt: skip
    child.expect(r"sysadmin@controller-0:~\$ ")
    child.sendline("stty size; exit 7")
    child.expect("33 101")
    child.expect("terminal restored: True")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 7


class NoConsole:
    """A console transport that must not be used: the commands go over SSH."""

    def connect(self) -> None:
        raise AssertionError("the console was opened")

    def close(self) -> None:
        pass


class GatewayHandle:
    """A created simplex lab whose OAM gateway is the relay to the server; its consoles are
    never opened (every command here goes over SSH)."""

    def __init__(self, resources: LabResources, port: int, run_dir: Path) -> None:
        self.resources = resources
        self.port = port
        self.run_dir = run_dir
        self.powered_off: list[str] = []

    def console(self, machine: str) -> NoConsole:
        return NoConsole()

    def state(self, machine: str) -> PowerState:
        return PowerState.RUNNING

    def power_off(self, machine: str) -> None:
        self.powered_off.append(machine)

    def open_gateway(self, network: str, address: str, targets: list[tuple[str, int]]):
        return Gateway("ns", "veth", Holder.me(), dict.fromkeys(targets, self.port), self.run_dir)


class GatewayBackend:
    def __init__(self, port: int, run_dir: Path) -> None:
        self.port = port
        self.run_dir = run_dir

    def software_emulated(self) -> bool:
        return False

    def create_lab(self, resources: LabResources) -> GatewayHandle:
        return GatewayHandle(resources, self.port, self.run_dir)

    def destroy_lab(self, lab_id: str) -> None:
        pass


def test_a_labs_node_run_goes_over_ssh_when_it_answers(server, port, tmp_path, monkeypatch,
                                                      fake_iso):  # fmt: skip
    """The Lab's wiring: node.run(via=None) logs in over SSH and keeps the session; a power-off
    forgets it; lab.ssh() is a session of its own. The host key lands in the lab's state."""
    monkeypatch.setenv("STX_STATE_DIR", str(tmp_path / "state"))
    passwords = {"sysadmin": {"value": server.image.password}}
    spec = lab_from_mapping(
        {"name": "sshlab", "topology": "simplex", "image": str(fake_iso), "passwords": passwords}
    )
    backend = GatewayBackend(port, tmp_path)
    lab = create_lab(spec, backend, tmp_path / "artifacts")  # type: ignore[arg-type]
    try:
        logins = server.image.auth_log().count("Accepted password")
        node = lab.node("controller-0")
        assert node.run("hostname").stdout == HOSTNAME
        assert node.run("echo again", via="ssh").stdout == "again"
        assert server.image.auth_log().count("Accepted password") == logins + 1
        node.power_off()
        assert node.run("echo after").stdout == "after"
        assert server.image.auth_log().count("Accepted password") == logins + 2
        with lab.ssh() as session:
            assert session.run("echo floating", Deadline(30)).stdout == "floating"
        assert list(recorded(lab.state.path.parent / "known_hosts")) == ["controller-0"]
        assert "| again" in (tmp_path / "artifacts" / "controller-0.ssh.log").read_text()
    finally:
        lab.close()
