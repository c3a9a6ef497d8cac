"""Login and commands against fake_stx.py: a StarlingX serial console played on a real pty."""

from __future__ import annotations

import pytest
from console_fakes import fake_stx

from pytest_starlingx.console import (
    PROMPT,
    CommandFailed,
    LoginError,
    NodeRebooted,
)
from pytest_starlingx.console import shell as shell_module
from pytest_starlingx.model import resolve_lab
from pytest_starlingx.stages.base import Bringup
from pytest_starlingx.timings import StepRecorder
from pytest_starlingx.waits import Deadline, poll

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

NEW = "St4rlingX*"


def booted(transport_console):
    """Wait for the fake's banner (a Ctrl-C while Python starts up would kill it)."""
    transport_console.expect("Debian GNU/Linux", Deadline(20))
    return transport_console


def login(console, password: str = "sysadmin", new_password: str | None = None) -> str:
    return console.login("sysadmin", password, Deadline(30), new_password=new_password)


def transcript(console) -> str:
    console.close()
    return console.transcript_path.read_text(encoding="utf-8")


def test_login_at_the_login_prompt_and_run(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path)))
    assert login(console) == "sysadmin"
    result = console.run("echo hello; ls /nonexistent-dir", Deadline(10))
    assert result.exit_status == 2
    assert result.stdout.splitlines()[0] == "hello"
    assert "No such file or directory" in result.stdout
    assert "__STX_" not in result.stdout
    assert console.run("echo $TMOUT", Deadline(10)).stdout == "0"


def test_a_reboot_under_a_command_is_reported_at_once(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path)))
    login(console)
    deadline = Deadline(60)
    with console.stage("bootstrap"), pytest.raises(NodeRebooted) as info:
        console.run("echo '[   42.1] reboot: Restarting system'; exit", deadline)
    message = str(info.value)
    assert message.startswith(
        "lab 'simplex' node controller-0: stage 'bootstrap': the node rebooted"
    )
    assert "| localhost login:" in message
    assert deadline.elapsed < 10


def test_a_boot_that_falls_silent_gets_no_keys_before_its_login_prompt(
    make_console, tmp_path, monkeypatch
):
    # A slow host: the boot prints nothing for longer than an idle console is given.
    monkeypatch.setattr(shell_module, "BOOT_QUIET", 0.5)
    console = make_console(fake_stx(tmp_path, "--boot-pause", "3"))
    console.expect("Linux version", Deadline(20))
    assert login(console) == "sysadmin"
    assert (tmp_path / "fake-stx" / "typeahead").read_bytes() == b""
    assert console.run("echo ok", Deadline(10)).stdout == "ok"


def test_forced_password_change(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--forced")))
    assert login(console, new_password=NEW) == NEW
    assert console.password == NEW
    assert console.run_checked("id -un", Deadline(10)) != ""
    text = transcript(console)
    assert "Current password:" in text and "Retype new password:" in text
    assert NEW not in text and "sysadmin" in text


def test_forced_change_without_new_password_is_an_error(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--forced")))
    with pytest.raises(LoginError, match="demands a new password"):
        login(console)


def test_weak_new_password_is_rejected_with_the_console_message(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--forced")))
    with console.stage("first-login"), pytest.raises(LoginError) as info:
        login(console, new_password="weak")
    message = str(info.value)
    assert "the new password was rejected: BAD PASSWORD: The password is shorter than 8" in message
    assert "stage 'first-login'" in message
    assert "weak" not in message.replace("weak password", "")


def test_wrong_password_is_an_error(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--password", "Other1*pw")))
    with pytest.raises(LoginError, match="'Login incorrect' for every password"):
        login(console)


def test_resumed_lab_logs_in_with_the_new_password(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--password", NEW)))
    assert login(console, new_password=NEW) == NEW


def test_already_at_a_prompt(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--shell")))
    assert login(console) == "sysadmin"
    assert console.run("true", Deadline(10)).exit_status == 0


def test_recovers_a_console_in_the_middle_of_a_command(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path)))
    login(console)
    console.sendline("sleep 600")
    console.expect("sleep 600", Deadline(30))
    deadline = Deadline(600)
    login(console)
    assert deadline.elapsed < 120  # the command was interrupted, not waited out
    assert console.run("echo back", Deadline(10)).stdout == "back"


def test_recovers_a_logged_out_console(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path)))
    login(console)
    console.sendline("exit")
    console.expect("login: ", Deadline(5))
    login(console)
    assert console.run("echo in again", Deadline(10)).stdout == "in again"


def test_leaves_a_root_shell(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--password", NEW)))
    login(console, NEW)
    console.sendline("sudo -i")
    console.expect(r"\[sudo\] password for", Deadline(5))
    console.send_secret(NEW)
    console.expect("root@localhost:~# ", Deadline(5))
    login(console, NEW)
    assert console.run_checked("id -un", Deadline(10)) == "sysadmin"


def test_sudo_prompt_is_answered_and_masked(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--password", NEW)))
    login(console, NEW)
    assert console.run_checked("sudo echo as root", Deadline(10)) == "as root"
    assert NEW not in transcript(console)


def test_prompt_patterns():
    import re

    prompts = [
        "sysadmin@localhost:~$ ",
        "sysadmin@controller-0:/var/log$ ",
        "[sysadmin@controller-0 ~(keystone_admin)]$ ",
        "controller-0:~$ ",
        "root@controller-0:~# ",
    ]
    for prompt in prompts:
        assert re.search(PROMPT, f"\r\n{prompt}\x1b[6n"), prompt
    assert not re.search(PROMPT, "Last login: Tue Nov 25 17:31:56 UTC 2026 on ttyS0")


def test_output_is_clean_despite_kernel_messages(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--shell", "--kmsg", "0.01")))
    console.expect(r"link flapped \(300\)", Deadline(20))  # the prompt lies buried under them
    login(console)
    result = console.run("for i in $(seq 1 200); do echo line $i; done", Deadline(20))
    assert result.stdout.splitlines() == [f"line {i}" for i in range(1, 201)]
    assert "link flapped" in "\n".join(console.tail(300))


def test_commands_with_secrets_are_masked(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--shell")))
    login(console)
    secret = "Adm1n-S3cret!"
    out = console.run_checked(f"echo '{secret}' | wc -c", Deadline(10), secrets=[secret])
    assert out.strip() == str(len(secret) + 1)
    assert console.run("echo visible again", Deadline(10)).stdout == "visible again"
    assert secret not in transcript(console)


def test_run_checked_raises_with_status_and_output(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--shell")))
    login(console)
    with console.stage("bootstrap"), pytest.raises(CommandFailed) as info:
        console.run_checked("echo failing task; exit_code() { return 3; }; exit_code", Deadline(10))
    assert info.value.result is not None and info.value.result.exit_status == 3
    assert "exited with status 3" in str(info.value) and "failing task" in str(info.value)


def test_write_file_long_content_and_secret(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--shell")))
    login(console)
    secret = "Adm1n-S3cret!"
    body = "".join(f"line {i}: {'x' * 60}\n" for i in range(200))  # ~14 KiB, tabs and all
    body += f"admin_password: {secret}\n\tindented\n"
    target = tmp_path / "localhost.yml"
    console.add_secret(secret)
    umask = console.run_checked("umask", Deadline(10))
    console.write_file(str(target), body, Deadline(60), mode="600")
    assert target.read_text() == body
    # the secret's umask 077 was the file's only: the shell's (and so sudo's) is unchanged
    assert console.run_checked("umask", Deadline(10)) == umask
    assert oct(target.stat().st_mode & 0o777) == "0o600"
    assert console.run_checked(f"wc -c < {target}", Deadline(10)).strip() == str(len(body))
    assert secret not in transcript(console)


def test_run_refuses_what_it_cannot_frame(make_console, tmp_path):
    console = booted(make_console(fake_stx(tmp_path, "--shell")))
    with pytest.raises(ValueError, match="write_file"):
        console.run("echo a\necho b", Deadline(1))
    with pytest.raises(ValueError, match="write_file"):
        console.run("echo " + "x" * 2000, Deadline(1))
    with pytest.raises(ValueError, match="'&'"):
        console.run("sleep 10 &", Deadline(1))


def test_a_readonly_tmout_ends_the_shell_and_the_bring_up_logs_in_again(make_console, tmp_path):
    """StarlingX 11.0 makes TMOUT readonly: the login still finds its user, and a shell that
    timed out while idle is logged into again before the next command."""
    console = booted(make_console(fake_stx(tmp_path, "--readonly-tmout", "2")))
    spec = resolve_lab("simplex")
    b = Bringup(spec, {"controller-0": console}, {}, {"sysadmin": "sysadmin"},
                StepRecorder(spec.name))  # fmt: skip
    assert b.shell("controller-0", "echo $TMOUT") == "2"
    poll(console.logged_out, Deadline(30), "the shell's auto-logout", poll_every=0.2)
    assert b.shell("controller-0", "id -un") == "sysadmin"
    assert "timed out waiting for input: auto-logout" in transcript(console)
