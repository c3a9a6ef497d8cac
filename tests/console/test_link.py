"""The console link over scripted devices: reading, transcript, waits and their errors."""

from __future__ import annotations

import re
import threading

import pytest
from console_fakes import Device

from pytest_starlingx.console import (
    LOGIN,
    ConsoleClosed,
    ConsoleTimeout,
    KernelPanic,
    strip_ansi,
)
from pytest_starlingx.errors import ConsoleError
from pytest_starlingx.waits import Deadline

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


def transcript_lines(console) -> list[str]:
    console.close()
    return console.transcript_path.read_text(encoding="utf-8").splitlines()


def test_split_reads_and_undecodable_bytes(make_console):
    device = Device()
    console = make_console(device.transport)
    for piece in (b"local", b"host lo", b"gin", b": \xff\xfe", b"caf\xc3", b"\xa9\r\n"):
        device.write(piece)
    match = console.expect(LOGIN, Deadline(5))
    assert match.before == "localhost "
    console.expect("café", Deadline(5))
    lines = transcript_lines(console)
    assert any(line.endswith("| localhost login: \\xff\\xfecafé") for line in lines), lines
    assert all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} (\||>>) ", ln) for ln in lines)


def eventually(predicate, seconds: float = 5.0) -> bool:
    """Poll a condition that another thread makes true, for at most ``seconds``."""
    deadline, pause = Deadline(seconds), threading.Event()
    while not predicate() and not deadline.expired:
        pause.wait(0.02)
    return predicate()


def test_unfinished_line_reaches_the_transcript_when_the_console_is_quiet(make_console):
    device = Device()
    console = make_console(device.transport)
    device.write(b"localhost login: ")
    console.expect(LOGIN, Deadline(5))
    assert eventually(lambda: "| localhost login: " in console.transcript_path.read_text())
    device.write(b"sysadmin\r\n")
    console.expect("sysadmin", Deadline(5))
    assert console.tail(1) == ["localhost login: sysadmin"]
    assert eventually(lambda: "| sysadmin" in console.transcript_path.read_text())


def test_secrets_are_masked_in_transcript_tail_and_errors(make_console):
    device = Device()
    console = make_console(device.transport)
    console.add_secret("St4rlingX*")
    device.write(b"admin_password: St4r")
    device.write(b"lingX*\r\nnext line\r\n")
    console.expect("next line", Deadline(5))
    console.send_secret("Li69nux*")
    device.write(b"echoed Li69nux* by mistake\r\n")
    with pytest.raises(ConsoleTimeout) as info:
        console.expect("never", Deadline(0.3))
    assert "St4rlingX*" not in str(info.value) and "Li69nux*" not in str(info.value)
    assert "admin_password: ****" in console.tail()
    assert "echoed **** by mistake" in str(info.value)
    text = "\n".join(transcript_lines(console))
    assert "St4rlingX" not in text and "Li69nux" not in text
    assert ">> sent ****" in text and "admin_password: ****" in text


def test_timeout_message_names_lab_node_stage_pattern_and_tail(make_console):
    device = Device()
    console = make_console(device.transport, alive=lambda: True)
    device.write(b"".join(b"boot line %d\r\n" % i for i in range(50)))
    console.expect("boot line 49", Deadline(5))
    with console.stage("install"), pytest.raises(ConsoleTimeout) as info:
        console.expect(LOGIN, Deadline(0.5), what="'login:' after the install")
    error = info.value
    assert isinstance(error, ConsoleError)
    message = str(error)
    assert re.match(r"lab 'simplex' node controller-0: stage 'install': waited 0\.\ds for", message)
    assert "'login:' after the install" in message
    assert "last 30 console lines" in message
    assert error.tail == [f"boot line {i}" for i in range(20, 50)]
    assert "boot line 19" not in message and "boot line 49" in message
    assert (error.lab, error.node, error.stage) == ("simplex", "controller-0", "install")


def test_default_what_is_the_patterns(make_console):
    console = make_console(Device().transport)
    with pytest.raises(ConsoleTimeout, match=r"for 'abc' or 'de\+f'"):
        console.expect(["abc", "de+f"], Deadline(0.1))


def test_eof_raises_console_closed(make_console):
    device = Device()
    console = make_console(device.transport)
    device.write(b"reboot: Power down\r\n")
    device.hang_up()
    with console.stage("unlock"), pytest.raises(ConsoleClosed) as info:
        console.expect(LOGIN, Deadline(5))
    assert "the other end closed the console" in str(info.value)
    assert "stage 'unlock'" in str(info.value)
    assert info.value.tail == ["reboot: Power down"]


def test_dead_vm_fails_the_wait_early(make_console):
    running = threading.Event()
    console = make_console(Device().transport, alive=running.is_set, poll_every=0.1)
    deadline = Deadline(60)
    with pytest.raises(ConsoleClosed, match="the VM is not running any more"):
        console.expect(LOGIN, deadline)
    assert deadline.elapsed < 5


PANIC = (
    b"[    0.000000] Kernel panic - not syncing: IO-APIC + timer doesn't work!\r\n"
    b"[    0.000000]  </TASK>\r\n"
    b"[    0.000000] ---[ end Kernel panic - not syncing: IO-APIC + timer doesn't work! ]---\r\n"
)


def test_a_kernel_panic_fails_the_wait_once_the_console_stays_silent(make_console):
    device = Device()
    console = make_console(device.transport, poll_every=0.2)
    device.write(b"Loading StarlingX ...\r\n" + PANIC)
    deadline = Deadline(60)
    with console.stage("unlock"), pytest.raises(KernelPanic) as info:
        console.expect(LOGIN, deadline, what="the login prompt after the unlock reboot")
    assert deadline.elapsed < 5
    assert "the kernel panicked" in str(info.value)
    assert "stage 'unlock'" in str(info.value)
    assert "IO-APIC + timer doesn't work!" in info.value.tail[-1]


def test_a_panic_is_waited_through_outside_the_stages_or_when_output_follows(make_console):
    device = Device()
    console = make_console(device.transport, poll_every=0.1)
    device.write(PANIC)
    with pytest.raises(ConsoleTimeout):  # a test's own crash, say: its deadline decides
        console.expect(LOGIN, Deadline(0.5))
    device.write(b"[sysadmin@controller-0 ~(keystone_admin)]$ ")  # e.g. a grep of the panic
    with console.stage("unlock"), pytest.raises(ConsoleTimeout):
        console.expect(LOGIN, Deadline(0.5))


def test_long_waits_log_progress(make_console, caplog, monkeypatch):
    monkeypatch.setattr("pytest_starlingx.waits.PROGRESS_EVERY", 0.2)
    console = make_console(Device().transport, poll_every=0.1)
    with caplog.at_level("INFO", logger="pytest_starlingx.console"), pytest.raises(ConsoleTimeout):
        console.expect(LOGIN, Deadline(0.7), what="the login prompt")
    progress = [r for r in caplog.records if "still waiting for the login prompt" in r.message]
    assert len(progress) >= 2
    assert progress[0].node == "controller-0"


def test_two_consoles_read_concurrently(make_console):
    """Output of a console nobody waits on is read (and timestamped) as it comes."""
    first, second = Device(), Device()
    con_a = make_console(first.transport, "controller-0")
    con_b = make_console(second.transport, "controller-1")
    burst = b"".join(b"c1 line %d\r\n" % i for i in range(3000))

    def chatty() -> None:
        second.write(burst)

    writer = threading.Thread(target=chatty)
    writer.start()
    first.write(b"controller-0 login: ")
    con_a.expect(LOGIN, Deadline(5))  # nobody is expecting on controller-1 meanwhile
    writer.join()
    con_b.expect("c1 line 2999\r\n", Deadline(10))
    assert con_b.tail(1) == ["c1 line 2999"]
    lines_b = transcript_lines(con_b)
    assert sum("| c1 line" in line for line in lines_b) == 3000


def test_strip_ansi():
    assert strip_ansi("\x1b[7m*Serial\x1b[m\x1b[5;78H ok\x1b[6n\x1b]0;title\x07\r") == "*Serial ok"
