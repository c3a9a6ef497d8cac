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
import subprocess
from pathlib import Path

import pexpect
import pytest
from sshd_host import HOSTNAME, Image, Server, run_in_image, sha512_crypt, today

# Not the fast tier: these need the simulator image (a build, ~20 s when not cached).
pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="mounts, chroot and network namespaces need root"
)

SSH_TIMEOUT = 60  # seconds for one login; pam_unix waits 2 s after each wrong password
#: PAM modules the sshd and passwd stacks name that the image leaves out: pam_sss and
#: pam_ldap serve LDAP users only (a local user's path jumps past them), pam_systemd
#: (optional) needs systemd-logind.
ABSENT_MODULES = {"pam_sss.so", "pam_ldap.so", "pam_systemd.so"}


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
