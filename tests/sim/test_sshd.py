"""The simulator's SSH server on this host, without a VM: the built image's own sshd, PAM
stack and configuration, chrooted into the ISO's root filesystem in a private network
namespace (loopback only), logged into with Debian's ssh client.

The image is the one the VM tests boot (``build.build()``, its cache); the tests need root
(mounts, chroot, network namespaces). Facts checked are StarlingX's (r/stx.10.0, the default
release): config-files ``openssh-config/source-debian/sshd_config`` and ``pam-config``.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pexpect
import pytest

from pytest_starlingx.sim import build
from pytest_starlingx.waits import Deadline, poll

# Not the fast tier: these need the simulator image (a build, ~20 s when not cached).
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounts, chroot and network namespaces need root"
)

HOSTNAME = "controller-0"
SSH_TIMEOUT = 60  # seconds for one login; pam_unix waits 2 s after each wrong password
#: Runs "$@" chrooted into the image as init and install-to-disk leave it: /proc, /dev with
#: its own ptys (sshd's sessions), the node's hostname. The mounts stay in the private mount
#: namespace ``unshare`` makes.
IN_IMAGE = """set -e
root=$1; shift
mount -t proc proc "$root/proc"
mount -o bind /dev "$root/dev"
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$root/dev/pts"
mount -o bind "$root/dev/pts/ptmx" "$root/dev/ptmx"
hostname -F "$root/etc/hostname"
exec chroot "$root" "$@"
"""
#: PAM modules the sshd and passwd stacks name that the image leaves out: pam_sss and
#: pam_ldap serve LDAP users only (a local user's path jumps past them), pam_systemd
#: (optional) needs systemd-logind.
ABSENT_MODULES = {"pam_sss.so", "pam_ldap.so", "pam_systemd.so"}


def in_image(root: Path, *argv: str, netns: str | None = None) -> list[str]:
    """The command line running ``argv`` inside the image (in network namespace ``netns``)."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return [*prefix, "unshare", "--mount", "--uts", "--propagation", "private",
            "sh", "-c", IN_IMAGE, "sh", str(root), *argv]  # fmt: skip


def run_in_image(root: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(in_image(root, *argv), capture_output=True, text=True, check=False)


@dataclass
class Image:
    """The ISO's root filesystem, unpacked as install-to-disk leaves it on a node's disk."""

    root: Path
    password: str  # sysadmin's, set by the test (the image's own is the forced-change one)

    def set_sysadmin(self, password: str, last_change: int) -> None:
        """sysadmin's shadow entry: ``password``, changed on day ``last_change`` (0: expired)."""
        hashed = sha512_crypt(password)
        shadow = self.root / "etc" / "shadow"
        lines = []
        for line in shadow.read_text().splitlines():
            fields = line.split(":")
            if fields[0] == "sysadmin":
                fields[1:3] = [hashed, str(last_change)]
            lines.append(":".join(fields))
        shadow.write_text("\n".join(lines) + "\n")

    def shadow_entry(self, user: str) -> list[str]:
        lines = (self.root / "etc" / "shadow").read_text().splitlines()
        return next(line.split(":") for line in lines if line.startswith(f"{user}:"))

    def auth_log(self) -> str:
        log = self.root / "var" / "log" / "auth.log"
        return log.read_text(errors="replace") if log.exists() else ""


def sha512_crypt(password: str) -> str:
    """A shadow hash of ``password`` (the password goes through stdin, not argv)."""
    done = subprocess.run(["openssl", "passwd", "-6", "-stdin"], input=password,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def today() -> int:
    """Today as shadow counts days (since the epoch, UTC)."""
    return int(time.time() // 86400)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The root filesystem archive of the simulator ISO (``/stx/rootfs.tgz``)."""
    out = tmp_path_factory.mktemp("iso") / "rootfs.tgz"
    subprocess.run(["xorriso", "-osirrox", "on", "-indev", str(build.build()),
                    "-extract", "/stx/rootfs.tgz", str(out)],
                   capture_output=True, check=True)  # fmt: skip
    return out


@pytest.fixture(scope="module")
def image(archive: Path) -> Iterator[Image]:
    """The image's root filesystem with host keys made as install-to-disk makes them, the
    hostname a bootstrapped controller-0 has, and a known password for sysadmin."""
    with tempfile.TemporaryDirectory(prefix="stxsim-sshd-") as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # as the disk's root directory: sysadmin's sessions pass through
        subprocess.run(["tar", "-xzpf", str(archive), "-C", tmp, "--numeric-owner"], check=True)
        keygen = run_in_image(root, "/usr/bin/ssh-keygen", "-A")
        assert keygen.returncode == 0, keygen.stderr
        (root / "etc" / "hostname").write_text(f"{HOSTNAME}\n")
        img = Image(root, f"Sim-{secrets.token_urlsafe(12)}-7q")
        img.set_sysadmin(img.password, today())
        yield img


@dataclass
class Server:
    image: Image
    netns: str
    known_hosts: Path


@pytest.fixture(scope="module")
def server(image: Image, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The image's sshd, started as rc.sysinit starts it (in the foreground: ``-D``), alone in
    a new network namespace with only loopback up."""
    netns = f"stxsim-sshd-{os.getpid()}-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    sshd = None
    try:
        subprocess.run(["ip", "-n", netns, "link", "set", "lo", "up"], check=True)
        sshd = subprocess.Popen(in_image(image.root, "/usr/lib/stx-sim/sshd", "-D", netns=netns),
                                stdin=subprocess.DEVNULL)  # fmt: skip

        def listening() -> bool:
            assert sshd is not None and sshd.poll() is None, f"sshd exited: {image.auth_log()}"
            return "Server listening on 0.0.0.0 port 22." in image.auth_log()

        poll(listening, Deadline(30), "sshd to listen", poll_every=0.1)
        known_hosts = tmp_path_factory.mktemp("ssh") / "known_hosts"
        keys = sorted((image.root / "etc" / "ssh").glob("ssh_host_*_key.pub"))
        known_hosts.write_text("".join(
            "127.0.0.1 " + " ".join(key.read_text().split()[:2]) + "\n" for key in keys
        ))  # fmt: skip
        yield Server(image, netns, known_hosts)
    finally:
        if sshd is not None:
            sshd.terminate()
            sshd.wait(timeout=30)
        left = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True)
        for pid in left.stdout.split():  # sessions of ours still closing
            os.kill(int(pid), signal.SIGTERM)
        subprocess.run(["ip", "netns", "delete", netns], check=True)


def ssh(server: Server, user: str, *command: str, tty: bool = False) -> pexpect.spawn:
    """Debian's ssh to the image's sshd, as a client on the OAM network would log in: password
    only, the host keys made at install pinned; passwords go through the pty, never argv."""
    argv = ["netns", "exec", server.netns, "ssh", "-F", "/dev/null",
            "-o", f"UserKnownHostsFile={server.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1",
            *(["-tt"] if tty else []), f"{user}@127.0.0.1", *command]  # fmt: skip
    return pexpect.spawn("ip", argv, env={"PATH": "/usr/bin:/bin", "TERM": "vt100"},
                         encoding="utf-8", timeout=SSH_TIMEOUT)  # fmt: skip


def finish(child: pexpect.spawn) -> tuple[str, int]:
    """What the client printed until it exited, and its exit status."""
    child.expect(pexpect.EOF)
    child.close()
    return child.before, child.exitstatus


def log_in(server: Server, user: str, password: str, *command: str) -> tuple[str, int]:
    child = ssh(server, user, *command)
    child.expect(f"{user}@127.0.0.1's password: ")
    child.sendline(password)
    return finish(child)


def test_sshd_runs_with_starlingx_configuration(server: Server) -> None:
    """sshd's effective settings (``sshd -T``) are config-files' sshd_config: every address,
    root refused, passwords through PAM, four tries, a 15 s keepalive, the release banner."""
    done = run_in_image(server.image.root, "/usr/sbin/sshd", "-T")
    assert done.returncode == 0, done.stderr
    settings = done.stdout.splitlines()
    for line in ("port 22", "listenaddress [::]:22", "listenaddress 0.0.0.0:22",
                 "permitrootlogin no", "passwordauthentication yes", "permitemptypasswords no",
                 "kbdinteractiveauthentication no", "usepam yes", "maxauthtries 4",
                 "logingracetime 60", "clientaliveinterval 15", "clientalivecountmax 4",
                 "banner /etc/issue.net", "x11forwarding no", "allowtcpforwarding no",
                 "denyusers admin", "denyusers secadmin", "denyusers operator",
                 "denygroups denyssh", "subsystem sftp /usr/lib/openssh/sftp-server",
                 "hostkey /etc/ssh/ssh_host_rsa_key", "hostkey /etc/ssh/ssh_host_ecdsa_key",
                 "hostkey /etc/ssh/ssh_host_ed25519_key"):  # fmt: skip
        assert line in settings
    assert not [s for s in settings if s.startswith(("allowusers", "allowgroups"))]


def test_ssh_programs_run_in_the_image(image: Image) -> None:
    """Every program of the SSH server finds its shared libraries in the image."""
    for argv, says in ((("/usr/sbin/sshd", "-t"), ""),
                       (("/usr/lib/openssh/sftp-server", "-h"), "usage: sftp-server"),
                       (("/usr/bin/passwd", "--help"), "Usage: passwd"),
                       (("/usr/bin/ssh-keygen", "-l", "-f", "/etc/ssh/ssh_host_ed25519_key"),
                        "(ED25519)")):  # fmt: skip
        done = run_in_image(image.root, *argv)
        assert "error while loading shared libraries" not in done.stderr
        assert says in done.stdout + done.stderr, (argv, done.stderr)
    assert (image.root / "usr" / "bin" / "passwd").stat().st_mode & 0o4000  # setuid root


def test_host_keys_are_the_nodes_own(archive: Path, image: Image) -> None:
    """The ISO carries no host key: install-to-disk makes them on each node (ssh-keygen -A:
    RSA, ECDSA, Ed25519, private keys root's only)."""
    listing = subprocess.run(["tar", "-tzf", str(archive)], capture_output=True, text=True,
                             check=True).stdout  # fmt: skip
    assert "ssh_host_" not in listing
    keys = sorted(p.name for p in (image.root / "etc" / "ssh").glob("ssh_host_*"))
    assert keys == [f"ssh_host_{t}_key{ext}" for t in ("ecdsa", "ed25519", "rsa")
                    for ext in ("", ".pub")]  # fmt: skip
    for key in (image.root / "etc" / "ssh").glob("ssh_host_*_key"):
        assert key.stat().st_mode & 0o777 == 0o600


def test_pam_stacks_use_only_modules_the_image_has(image: Image) -> None:
    """/etc/pam.d/sshd (Debian's) with StarlingX's common-* files, and passwd's stack, name no
    module the image lacks but the LDAP ones and pam_systemd."""
    pam_d = image.root / "etc" / "pam.d"
    modules: set[str] = set()
    pending = ["sshd", "passwd"]
    while pending:
        for line in (pam_d / pending.pop()).read_text().splitlines():
            words = line.split("#", 1)[0].replace("]", "] ").split()
            if words[:1] == ["@include"]:
                pending.append(words[1])
            elif words:  # type, control (one word, or [...]), module, arguments
                control_end = next(i for i, w in enumerate(words[1:], 1)
                                   if not words[1].startswith("[") or w.endswith("]"))  # fmt: skip
                modules.add(words[control_end + 1])
    security = image.root / "usr" / "lib" / "x86_64-linux-gnu" / "security"
    assert {"pam_unix.so", "pam_faillock.so", "pam_pwquality.so", "pam_loginuid.so"} <= modules
    assert sorted(m for m in modules - ABSENT_MODULES if not (security / m).exists()) == []


def test_sysadmin_logs_in_with_the_password_and_runs_hostname(server: Server) -> None:
    """Behind StarlingX's banner (/etc/issue.net), sysadmin's password opens a session."""
    child = ssh(server, "sysadmin", "hostname")
    child.expect("W A R N I N G")
    child.expect("sysadmin@127.0.0.1's password: ")
    child.sendline(server.image.password)
    out, status = finish(child)
    assert (out.split(), status) == ([HOSTNAME], 0)
    assert "Accepted password for sysadmin from 127.0.0.1" in server.image.auth_log()


def test_root_is_refused_even_with_its_password(server: Server) -> None:
    """PermitRootLogin no: root's right password opens nothing."""
    shadow = server.image.root / "etc" / "shadow"
    before = shadow.read_text()
    shadow.write_text(before.replace("root:*:", f"root:{sha512_crypt(server.image.password)}:", 1))
    try:
        out, status = log_in(server, "root", server.image.password, "hostname")
    finally:
        shadow.write_text(before)
        (server.image.root / "run" / "faillock" / "root").unlink(missing_ok=True)
    assert "Permission denied" in out
    assert status == 255


def test_an_expired_password_is_changed_on_a_tty_first(server: Server) -> None:
    """sysadmin's install-time password is expired (shadow day 0): without a tty there is no
    session; with one, pam_unix's notice, then passwd with StarlingX's common-password
    (pwquality's rules), then "login again"; the new password then logs in."""
    image = server.image
    image.set_sysadmin(image.password, 0)
    new = f"Chg-{secrets.token_urlsafe(12)}-3k"
    try:
        out, status = log_in(server, "sysadmin", image.password, "hostname")
        assert "Password change required but no TTY available." in out
        assert status == 1
        child = ssh(server, "sysadmin", "hostname", tty=True)
        child.expect("sysadmin@127.0.0.1's password: ")
        child.sendline(image.password)
        child.expect(r"You are required to change your password immediately "
                     r"\(administrator enforced\)")  # fmt: skip
        child.expect("You must change your password now and login again!")
        child.expect("Changing password for sysadmin.")
        child.expect("Current password: ")
        child.sendline(image.password)
        child.expect("New password: ")
        child.sendline("sysadmin")
        child.expect("BAD PASSWORD: ")
        child.expect("New password: ")
        child.sendline(new)
        child.expect("Retype new password: ")
        child.sendline(new)
        child.expect("passwd: password updated successfully")
        finish(child)
        assert image.shadow_entry("sysadmin")[2] == str(today())
        out, status = log_in(server, "sysadmin", new, "hostname")
        assert (out.split(), status) == ([HOSTNAME], 0)
    finally:
        image.set_sysadmin(image.password, today())
        (image.root / "etc" / "security" / "opasswd").unlink(missing_ok=True)


def test_five_failures_lock_sysadmin_out(server: Server) -> None:
    """pam_faillock as StarlingX's common-auth configures it (deny=5, unlock_time=300 on 10.0),
    the same tally sudo counts: after five wrong passwords the right one is refused."""
    tally = server.image.root / "run" / "faillock" / "sysadmin"
    try:
        for _ in range(5):
            out, status = log_in(server, "sysadmin", "not-the-password", "hostname")
            assert status == 255, out
        out, status = log_in(server, "sysadmin", server.image.password, "hostname")
        assert "Permission denied" in out
        assert status == 255
    finally:
        tally.unlink(missing_ok=True)
    out, status = log_in(server, "sysadmin", server.image.password, "hostname")
    assert (out.split(), status) == ([HOSTNAME], 0)
