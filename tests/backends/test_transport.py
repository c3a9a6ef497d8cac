"""UnixSocketTransport against a listening unix socket that comes and goes (no libvirt)."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from pytest_starlingx.errors import BackendError
from pytest_starlingx.transport import UnixSocketTransport

pytestmark = pytest.mark.fast  # needs no VM: the fast tier


class Console:
    """A listening socket standing in for QEMU's serial chardev (mode bind): one client."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.client: socket.socket | None = None
        self._accepted = threading.Thread(target=self._accept, daemon=True)
        self._accepted.start()

    def _accept(self) -> None:
        self.client, _ = self.listener.accept()

    def send(self, data: bytes) -> None:
        self._accepted.join(5)
        assert self.client is not None
        self.client.sendall(data)

    def recv(self) -> bytes:
        self._accepted.join(5)
        assert self.client is not None
        self.client.settimeout(5)
        return self.client.recv(100)

    def stop(self) -> None:
        """The VM process goes away: the socket file too."""
        self._accepted.join(5)
        if self.client is not None:
            self.client.close()
        self.listener.close()
        self.path.unlink(missing_ok=True)


def test_connect_waits_for_the_socket_to_appear(tmp_path):
    path = tmp_path / "c.sock"
    transport = UnixSocketTransport(path, connect_timeout=5)
    threading.Timer(0.5, lambda: Console(path).send(b"hello")).start()
    transport.connect()
    assert transport.read(100, 5) == b"hello"
    transport.close()
    transport.close()


def test_connect_gives_up_with_the_path_in_the_message(tmp_path):
    transport = UnixSocketTransport(tmp_path / "none.sock", name="node-0", connect_timeout=0.3)
    with pytest.raises(BackendError, match=r"node-0.*none\.sock"):
        transport.connect()


def test_read_and_write_reconnect_after_the_vm_process_restarted(tmp_path):
    path = tmp_path / "c.sock"
    first = Console(path)
    transport = UnixSocketTransport(path, alive=lambda: True, connect_timeout=5)
    transport.connect()
    first.send(b"one")
    assert transport.read(100, 5) == b"one"
    first.stop()
    second_holder: list[Console] = []
    threading.Timer(0.5, lambda: second_holder.append(Console(path))).start()
    assert transport.read(100, 0.2) == b""  # nothing within the timeout, no error
    deadline = time.monotonic() + 5
    while not second_holder and time.monotonic() < deadline:
        transport.read(100, 0.2)
    transport.write(b"ping")
    assert second_holder[0].recv() == b"ping"
    second_holder[0].send(b"two")
    assert transport.read(100, 5) == b"two"
    transport.close()
    second_holder[0].stop()


def test_read_raises_eof_once_the_machine_is_gone(tmp_path):
    path = tmp_path / "c.sock"
    console = Console(path)
    alive = [True]
    transport = UnixSocketTransport(path, alive=lambda: alive[0])
    transport.connect()
    console.stop()
    alive[0] = False
    with pytest.raises(EOFError):
        transport.read(100, 2)
    with pytest.raises(BackendError, match="not running"):
        transport.write(b"x")
