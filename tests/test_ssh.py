"""SSH to a lab without an SSH server: which endpoint a node has, the lab's host key records,
``Node.run``'s choice between SSH and the console, and ``stx-lab ssh``'s argument errors.
Logins and commands against a real sshd are in tests/sim/test_ssh_client.py."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import paramiko
import pytest
from console.console_fakes import fake_stx

from pytest_starlingx.access import Endpoint, LabFacts
from pytest_starlingx.backends.base import LabResources, PowerState
from pytest_starlingx.backends.gateway import Gateway
from pytest_starlingx.cli import main
from pytest_starlingx.console.transcript import Secrets, Transcript
from pytest_starlingx.lab import Lab, create_lab
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.lifecycle.state import LabState
from pytest_starlingx.ownership import Holder
from pytest_starlingx.ssh import (
    ChannelRefused,
    HostKeyRefused,
    HostKeys,
    LabSsh,
    SshSession,
    SshUnavailable,
)
from pytest_starlingx.waits import Deadline

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

DUPLEX = ["controller-0", "controller-1"]


def closed_port() -> int:
    """A loopback port nothing listens on (connections are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def endpoints(controllers: Sequence[str], port: int) -> dict[str, Endpoint]:
    found = {"ssh": Endpoint("ssh", "10.10.10.2", 22, port)}
    if len(controllers) > 1:
        for i, name in enumerate(controllers):
            found[f"ssh-{name}"] = Endpoint(f"ssh-{name}", f"10.10.10.{3 + i}", 22, port + 1 + i)
    return found


def lab_ssh(tmp_path: Path, controllers: Sequence[str], port: int = 0) -> LabSsh:
    found = endpoints(controllers, port or closed_port())
    return LabSsh("lab", lambda: found, controllers, "Pw-0123456789!", tmp_path / "known_hosts",
                  tmp_path / "artifacts")  # fmt: skip


def test_simplex_floating_address_is_controller_0s_own(tmp_path):
    ssh = lab_ssh(tmp_path, ["controller-0"], port=4000)
    assert [(e.name, owner) for e, owner in (ssh.endpoint(None), ssh.endpoint("controller-0"))] == [
        ("ssh", "controller-0"), ("ssh", "controller-0")
    ]  # fmt: skip


def test_duplex_controllers_have_their_own_endpoints_and_the_floating_one_any_key(tmp_path):
    ssh = lab_ssh(tmp_path, DUPLEX, port=4000)
    assert [(e.name, e.local_port, owner) for e, owner in
            (ssh.endpoint(None), ssh.endpoint("controller-0"), ssh.endpoint("controller-1"))] == [
        ("ssh", 4000, None), ("ssh-controller-0", 4001, "controller-0"),
        ("ssh-controller-1", 4002, "controller-1"),
    ]  # fmt: skip


def test_a_worker_has_no_ssh_endpoint_and_the_error_says_where_to_go(tmp_path):
    ssh = lab_ssh(tmp_path, DUPLEX)
    with pytest.raises(SshUnavailable) as info:
        ssh.endpoint("worker-0")
    assert str(info.value) == (
        "lab 'lab': worker-0 has no SSH endpoint on this host: only the controllers "
        "(controller-0, controller-1) have OAM addresses. Reach it from a controller "
        "(lab.ssh().run('ssh worker-0 ...')) or use its console"
    )


def test_a_nodes_first_key_is_recorded_by_name_and_another_refused(tmp_path):
    keys = HostKeys(tmp_path / "known_hosts", "lab")
    first, other = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    keys.check_own("controller-0", first, "controller-0 (10.10.10.3)")
    keys.check_own("controller-0", first, "controller-0 (10.10.10.3)")
    text = (tmp_path / "known_hosts").read_text()
    assert text == f"controller-0 ecdsa-sha2-nistp256 {first.get_base64()}\n"  # no address, no port
    with pytest.raises(HostKeyRefused) as info:
        keys.check_own("controller-0", other, "controller-0 (10.10.10.3)")
    assert str(info.value) == (
        f"lab 'lab': controller-0 (10.10.10.3) presented ecdsa-sha2-nistp256 host key "
        f"{other.fingerprint}, but {tmp_path / 'known_hosts'} records ecdsa-sha2-nistp256 "
        f"{first.fingerprint} for controller-0. If controller-0 was reinstalled, remove its line "
        f"from {tmp_path / 'known_hosts'}; otherwise something else answers there: do not log in"
    )
    assert (tmp_path / "known_hosts").read_text() == text


def test_the_floating_address_takes_a_key_recorded_for_either_controller(tmp_path):
    ssh = lab_ssh(tmp_path, DUPLEX)
    active, unknown = paramiko.ECDSAKey.generate(), paramiko.ECDSAKey.generate()
    ssh.host_keys.check_own("controller-0", paramiko.ECDSAKey.generate(), "controller-0")
    ssh.host_keys.check_own("controller-1", active, "controller-1")
    ssh.check_key(None, active, "floating")  # after a swact, say
    with pytest.raises(HostKeyRefused, match="which is no controller's key"):
        ssh.check_key(None, unknown, "floating")


def test_the_floating_address_is_refused_when_no_controller_key_can_be_learnt(tmp_path):
    """Neither controller answers at its own address: nothing recorded, nothing accepted."""
    ssh = lab_ssh(tmp_path, DUPLEX)
    with pytest.raises(HostKeyRefused) as info:
        ssh.check_key(None, paramiko.ECDSAKey.generate(), "floating (10.10.10.2)")
    assert ("(controller-0: not recorded (unreachable), controller-1: not recorded "
            "(unreachable))") in str(info.value)  # fmt: skip
    assert not (tmp_path / "known_hosts").exists()


def test_a_refused_connection_is_ssh_unavailable_naming_the_endpoint(tmp_path):
    port = closed_port()
    ssh = lab_ssh(tmp_path, ["controller-0"], port=port)
    with pytest.raises(SshUnavailable) as info:
        ssh.connect(None, Deadline(10))
    assert str(info.value).startswith(
        f"lab 'lab' node floating (ssh 127.0.0.1:{port} -> 10.10.10.2): SSH does not answer"
    )


# ---- Node.run over a console, SSH refused


class ConsoleHandle:
    """A created lab whose nodes' consoles are fake_stx shells and whose OAM gateway's ports
    all refuse connections (sshd not up yet)."""

    def __init__(self, resources: LabResources, tmp_path: Path) -> None:
        self.resources = resources
        self.tmp_path = tmp_path
        self.port = closed_port()

    def console(self, machine: str):
        (self.tmp_path / machine).mkdir(exist_ok=True)
        return fake_stx(self.tmp_path / machine, "--shell")

    def state(self, machine: str) -> PowerState:
        return PowerState.RUNNING

    def open_gateway(self, network: str, address: str, targets: Sequence[tuple[str, int]]):
        holder = Holder.me()
        return Gateway("ns", "veth", holder, dict.fromkeys(targets, self.port), self.tmp_path)


class ConsoleBackend:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    def software_emulated(self) -> bool:
        return False

    def create_lab(self, resources: LabResources) -> ConsoleHandle:
        return ConsoleHandle(resources, self.tmp_path)

    def destroy_lab(self, lab_id: str) -> None:
        pass


@pytest.fixture
def lab(tmp_path, monkeypatch, fake_iso) -> Iterator[Lab]:
    monkeypatch.setenv("STX_STATE_DIR", str(tmp_path / "state"))
    spec = lab_from_mapping({"name": "con", "topology": "simplex", "image": str(fake_iso)})
    made = create_lab(spec, ConsoleBackend(tmp_path), tmp_path / "artifacts")  # type: ignore[arg-type]
    made.machines["controller-0"].attach()
    yield made
    made.close()


def test_node_run_uses_the_console_while_ssh_is_refused(lab, tmp_path):
    node = lab.node("controller-0")
    result = node.run("echo over-the-$((6 * 7))-console; false", timeout=60)
    assert (result.stdout, result.exit_status) == ("over-the-42-console", 1)
    assert "over-the-$((6 * 7))-console" in (tmp_path / "artifacts" / "controller-0.console.log"
                                             ).read_text()  # fmt: skip
    assert node.run("echo asked-for", via="console").stdout == "asked-for"
    assert not (tmp_path / "artifacts" / "controller-0.ssh.log").exists()


def test_node_run_via_ssh_says_why_ssh_did_not_do(lab):
    with pytest.raises(SshUnavailable, match=r"node controller-0 \(ssh 127.0.0.1:\d+ -> "
                                             r"10.10.10.2\): SSH does not answer"):  # fmt: skip
        lab.node("controller-0").run("true", via="ssh")
    with pytest.raises(ValueError, match="via='serial'"):
        lab.node("controller-0").run("true", via="serial")


def test_lab_ssh_names_the_node_it_cannot_reach(lab):
    with pytest.raises(KeyError, match="has no node 'worker-0'"):
        lab.ssh("worker-0")
    with pytest.raises(SshUnavailable, match="SSH does not answer"):
        lab.ssh(timeout=10)


# ---- stx-lab ssh


def save_lab(state_dir: Path, monkeypatch: pytest.MonkeyPatch) -> LabState:
    monkeypatch.setenv("STX_STATE_DIR", str(state_dir))
    spec = lab_from_mapping({"name": "std", "topology": "standard"})
    state = LabState("abc123", "std", "standard", "libvirt")
    state.access = LabFacts.of(spec, {"sysadmin": "Pw-0123456789!", "admin": "Ad-0123456789!"}
                               ).to_json()  # fmt: skip
    state.save()
    return state


def test_stx_lab_ssh_to_a_worker_says_only_controllers_are_reachable(tmp_path, monkeypatch,
                                                                      capsys):  # fmt: skip
    save_lab(tmp_path, monkeypatch)
    assert main(["ssh", "std", "worker-0", "--", "hostname"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("stx-lab ssh: error: lab 'std': worker-0 has no SSH endpoint")
    assert main(["ssh", "std", "worker-9"]) == 1
    assert "lab 'std' has no node 'worker-9' (has controller-0, controller-1, worker-0" in (
        capsys.readouterr().err
    )


def test_stx_lab_ssh_wants_the_command_after_a_double_dash(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pytest_starlingx.cli", "ssh", "lab",
                           "controller-0", "hostname", "-f"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2
    assert "unrecognized arguments: hostname -f (the command to run goes after --)" in (done.stderr)
    done = subprocess.run([sys.executable, "-m", "pytest_starlingx.cli", "ssh"],
                          capture_output=True, text=True, check=False)  # fmt: skip
    assert done.returncode == 2
    assert "the following arguments are required: LAB_ID|NAME|FILE" in done.stderr


class Crowded:
    """A live connection whose sshd refuses new channels; paramiko reports a refusal as
    ChannelException, or as a plain SSHException to the second of two threads refused at
    once (it keeps one refusal reason per connection)."""

    def __init__(self, refusal: paramiko.SSHException) -> None:
        self.refusal = refusal
        self.closed = False

    def get_transport(self) -> Crowded:
        return self

    def is_active(self) -> bool:
        return not self.closed

    def open_session(self, timeout: float | None = None) -> paramiko.Channel:
        raise self.refusal

    def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("refusal", [paramiko.ChannelException(2, "Connect failed"),
                                     paramiko.SSHException("Unable to open channel.")])  # fmt: skip
def test_a_refused_channel_keeps_the_connection_for_the_commands_on_it(tmp_path, refusal):
    ssh = lab_ssh(tmp_path, ["controller-0"], port=4000)
    endpoint, _ = ssh.endpoint("controller-0")
    client = Crowded(refusal)
    transcript = Transcript("controller-0", None, Secrets(), keep=0)
    session = SshSession("lab", "controller-0", endpoint, client, transcript, Secrets())
    ssh._sessions["controller-0"] = session
    with pytest.raises(ChannelRefused, match=r"sshd refused a channel for 'uptime'.*MaxSessions"):
        ssh.run("controller-0", "uptime", Deadline(5))
    assert not client.closed and ssh.session("controller-0", Deadline(5)) is session
