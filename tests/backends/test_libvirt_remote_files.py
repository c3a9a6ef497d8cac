"""The libvirt backend's remote-files mode without a daemon: its XML, its decisions, the image
cache's names and the console-stream transport against a scripted stream."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest
from test_libvirt_xml import OWNER, worker

from pytest_starlingx.backends.base import DiskSpec, LabResources, MachineSpec, Owner
from pytest_starlingx.backends.libvirt import Ledger, LibvirtConfig, domain_xml
from pytest_starlingx.backends.libvirt_console import ConsoleStreamTransport
from pytest_starlingx.backends.libvirt_images import (
    complete_volume,
    dead_uploads,
    image_digest,
    uploader_tag,
)
from pytest_starlingx.errors import BackendError
from pytest_starlingx.ownership import Holder

pytestmark = pytest.mark.fast  # needs no VM: the fast tier

SHA = "ab" * 32


# ------------------------------------------------------------------ XML and decisions


def test_a_remote_files_domain_has_a_pty_serial_and_the_uploaded_cd():
    spec, plan = worker()
    spec = dataclasses.replace(spec, cdrom=Path("/home/me/sim.iso"))
    plan = dataclasses.replace(plan, socket=None, log=None, cdrom="/var/lib/libvirt/c/x.iso")
    root = ET.fromstring(domain_xml(spec, plan, OWNER))
    (serial,) = root.findall("devices/serial")
    assert serial.get("type") == "pty"
    assert serial.find("source") is None and serial.find("log") is None
    assert serial.find("target").get("port") == "0"
    cdrom = root.find("devices/disk[@device='cdrom']")
    assert cdrom.find("source").get("file") == "/var/lib/libvirt/c/x.iso"
    assert cdrom.find("readonly") is not None


def test_a_local_domain_keeps_its_socket_log_and_local_cd():
    spec, plan = worker()
    spec = dataclasses.replace(spec, cdrom=Path("/home/me/sim.iso"))
    root = ET.fromstring(domain_xml(spec, plan, OWNER))
    serial = root.find("devices/serial")
    assert serial.get("type") == "unix"
    assert serial.find("source").attrib == {"mode": "bind", "path": "/run/w.sock"}
    assert serial.find("log").get("file") == "/run/w.log"
    assert root.find("devices/disk[@device='cdrom']/source").get("file") == "/home/me/sim.iso"


@pytest.mark.parametrize(
    ("uri", "forced", "remote"),
    [
        ("qemu:///system", None, False),
        ("qemu+unix:///system?socket=/tmp/s", None, False),
        ("qemu+ssh://root@hv1/system", None, True),
        ("qemu+tcp://10.0.0.2/system", None, True),
        ("qemu:///system", True, True),  # the tests' remote mode against the local libvirtd
        ("qemu+ssh://hv1/system", False, False),
    ],
)
def test_the_uri_chooses_remote_files_unless_the_config_forces_it(uri, forced, remote):
    assert LibvirtConfig(uri=uri, remote_files=forced).uses_remote_files is remote


def test_a_ledger_of_before_remote_files_still_loads_as_local(tmp_path):
    res = LabResources("lab", "ab12cd34", (), (MachineSpec("m", 64, 1, (DiskSpec(1),)),))
    ledger = Ledger(tmp_path / "owner.json", Owner("lab", "ab12cd34"), res, "qemu:///system",
                    "stx-lab-ab12cd34-disks", True)  # fmt: skip
    ledger.save()
    data = json.loads((tmp_path / "owner.json").read_text())
    del data["remote_files"], data["pool_path"]
    (tmp_path / "owner.json").write_text(json.dumps(data))
    loaded = Ledger.load(tmp_path / "owner.json")
    assert (loaded.remote_files, loaded.pool_path) == (False, "")


# ------------------------------------------------------------------ image cache names


def test_only_an_upload_with_its_done_marker_is_complete():
    mine = uploader_tag(Holder.me())
    partial, done = f"{SHA}.{mine}.iso", f"{SHA}.h0000-1-1.iso"
    names = {partial, done, f"{SHA}.h0000-1-1.done", f"{'cd' * 32}.h0000-2-2.done"}
    assert complete_volume(names, SHA) == done
    assert complete_volume({partial}, SHA) is None
    assert complete_volume({f"{SHA}.h0000-1-1.done"}, SHA) is None  # marker without data
    assert complete_volume(names, "cd" * 32) is None


def test_cut_short_uploads_of_gone_processes_here_and_of_this_one_are_removed():
    here = Holder.me().host
    gone = Holder(here, 2**22 + 7, 1)  # above pid_max: not running
    live_other = Holder(here, 1, 999)  # pid 1, another start time: not the same process
    elsewhere = Holder("some-other-host", 1, 1)
    names = {
        f"{SHA}.{uploader_tag(Holder.me())}.iso",  # this process, cut short by a reconnect
        f"{SHA}.{uploader_tag(gone)}.iso",
        f"{SHA}.{uploader_tag(elsewhere)}.iso",  # cannot be known here: left alone
        f"{SHA}.{uploader_tag(Holder.of(1))}.iso",  # pid 1 runs: in progress
        f"{SHA}.{uploader_tag(gone)}x.iso",  # not a tag of ours
    }
    complete = f"{SHA}.{uploader_tag(live_other)}"
    names |= {complete + ".iso", complete + ".done"}
    assert dead_uploads(names) == sorted(
        [f"{SHA}.{uploader_tag(Holder.me())}.iso", f"{SHA}.{uploader_tag(gone)}.iso"]
    )


def test_image_digest_is_the_sha256_of_the_bytes(tmp_path):
    image = tmp_path / "x.iso"
    image.write_bytes(b"abc" * 1_000_000)
    assert image_digest(image) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()


# ------------------------------------------------------------------ the console stream


class FakeConn:
    """What the transport asks of a connection: whether it is alive."""

    def __init__(self) -> None:
        self.alive = True

    def isAlive(self) -> bool:
        return self.alive


class FakeStream:
    """A non-blocking console stream whose events the test fires."""

    def __init__(self) -> None:
        self.incoming: list[bytes] = []
        self.sent = b""
        self.callback = None
        self.aborted = False

    def eventAddCallback(self, events, callback, opaque):
        self.callback = callback

    def eventRemoveCallback(self):
        self.callback = None

    def abort(self):
        self.aborted = True

    def recv(self, size):
        if not self.incoming:
            return -2
        data = self.incoming.pop(0)
        return data[:size]

    def send(self, data):
        if self.aborted:
            raise libvirt.libvirtError("stream aborted")
        self.sent += data
        return len(data)

    def deliver(self, data: bytes) -> None:
        """The guest printed ``data`` (b"": the stream's end)."""
        self.incoming.append(data)
        callback = self.callback
        assert callback is not None, "nobody watches this stream"
        callback(self, libvirt.VIR_STREAM_EVENT_READABLE, None)

    def hang_up(self) -> None:
        self.callback(self, libvirt.VIR_STREAM_EVENT_HANGUP, None)


class Console:
    """A transport over fake streams, opened anew on each ``open`` (a new QEMU process)."""

    def __init__(self, tmp_path: Path, alive: bool = True) -> None:
        self.conn = FakeConn()
        self.streams: list[FakeStream] = []
        self.alive = alive
        self.fail_opens = 0
        self.log = tmp_path / "m.serial.log"
        self.transport = ConsoleStreamTransport(
            self.open, name="node-0", alive=lambda: self.alive, log=self.log, connect_timeout=0.5
        )

    def open(self) -> tuple[FakeConn, FakeStream]:
        if not self.alive:
            raise libvirt.libvirtError("Requested operation is not valid: domain is not running")
        if self.fail_opens:
            self.fail_opens -= 1
            raise libvirt.libvirtError("Active console session exists for this domain")
        self.streams.append(FakeStream())
        return self.conn, self.streams[-1]


def test_reads_what_the_stream_delivers_and_logs_it(tmp_path):
    console = Console(tmp_path)
    console.transport.connect()
    stream = console.streams[-1]
    assert console.transport.read(100, 0.05) == b""
    stream.deliver(b"Booting `tiny'\r\n")
    stream.deliver(b"login: ")
    assert console.transport.read(6, 0) == b"Bootin"
    assert console.transport.read(100, 0) == b"g `tiny'\r\nlogin: "
    assert console.log.read_bytes() == b"Booting `tiny'\r\nlogin: "
    console.transport.write(b"root\r")
    assert stream.sent == b"root\r"
    console.transport.close()
    assert stream.aborted and stream.callback is None


def test_what_a_read_returns_is_in_the_log_already(tmp_path):
    console = Console(tmp_path)
    os.mkfifo(console.log)  # the log's write waits for the test to read the FIFO
    console.transport.connect()
    writer = threading.Thread(
        target=console.streams[-1].deliver, args=(b"STX-GUEST-READY",), daemon=True
    )
    writer.start()
    assert console.transport.read(100, 0.3) == b""  # not published before it is logged
    assert console.log.read_bytes() == b"STX-GUEST-READY"
    writer.join(5)
    assert console.transport.read(100, 5) == b"STX-GUEST-READY"


def test_a_read_waits_for_data_without_polling(tmp_path):
    console = Console(tmp_path)
    console.transport.connect()
    threading.Timer(0.2, console.streams[-1].deliver, (b"late",)).start()
    started = time.monotonic()
    assert console.transport.read(100, 5) == b"late"
    assert 0.15 < time.monotonic() - started < 2


def test_the_end_of_a_stream_is_eof_once_the_machine_is_gone(tmp_path):
    console = Console(tmp_path)
    console.transport.connect()
    console.streams[-1].deliver(b"bye\r\n")
    console.alive = False
    console.streams[-1].deliver(b"")  # QEMU exited: end of stream
    assert console.transport.read(100, 0.1) == b"bye\r\n"  # what came before the end first
    with pytest.raises(EOFError, match="node-0: the machine is not running"):
        console.transport.read(100, 0.1)
    with pytest.raises(BackendError, match="not running"):
        console.transport.write(b"x")


def test_an_ended_stream_of_a_running_machine_is_reopened(tmp_path):
    console = Console(tmp_path)
    console.transport.connect()
    first = console.streams[-1]
    first.hang_up()  # a new QEMU process (a revert) or a libvirtd restart
    assert first.aborted
    assert console.transport.read(100, 0.1) == b""
    assert len(console.streams) == 2
    console.streams[-1].deliver(b"again")
    assert console.transport.read(100, 0.1) == b"again"


def test_a_dead_connection_ends_the_stream_even_without_an_event(tmp_path):
    console = Console(tmp_path)
    console.transport.connect()
    console.conn.alive = False  # libvirtd went away; the stream says nothing
    console.conn = FakeConn()  # the next open runs on a reopened connection
    assert console.transport.read(100, 0.1) == b""
    assert len(console.streams) == 2 and console.streams[0].aborted


def test_a_write_on_an_ended_stream_reopens_it(tmp_path):
    console = Console(tmp_path)
    console.transport.connect()
    console.streams[-1].hang_up()
    console.transport.write(b"ls\r")
    assert console.streams[-1].sent == b"ls\r" and len(console.streams) == 2


def test_an_old_streams_last_words_are_dropped(tmp_path):
    console = Console(tmp_path)
    console.transport.connect()
    old = console.streams[-1]
    callback = old.callback
    console.transport.connect()  # before_resume after a revert: a new stream
    old.incoming.append(b"stale")
    callback(old, libvirt.VIR_STREAM_EVENT_READABLE, None)
    assert console.transport.read(100, 0.05) == b""


def test_connect_retries_a_busy_console_then_names_the_machine(tmp_path):
    console = Console(tmp_path)
    console.fail_opens = 2  # another stream is closing
    console.transport.connect()
    assert len(console.streams) == 1
    console.fail_opens = 100
    with pytest.raises(BackendError, match=r"console of node-0: cannot open .*Active console"):
        console.transport.connect()
