"""A unix socket relaying libvirt clients to the system libvirtd, dropped at will: a libvirtd
restart as its clients see it, without restarting the host's libvirtd."""

from __future__ import annotations

import contextlib
import socket
import threading
from pathlib import Path

from pytest_starlingx.host.setup import LIBVIRT_SOCKET


class Relay:
    """A unix socket passing bytes to libvirtd's; ``stop()`` drops every client at once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._sockets: list[socket.socket] = []

    @property
    def uri(self) -> str:
        return f"qemu+unix:///system?socket={self.path}"

    def start(self) -> None:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(str(self.path))
        listener.listen()
        self._sockets = [listener]
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # stopped
                return
            daemon = socket.socket(socket.AF_UNIX)
            daemon.connect(str(LIBVIRT_SOCKET))
            self._sockets += [client, daemon]
            for source, sink in ((client, daemon), (daemon, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()

    def stop(self) -> None:
        for sock in self._sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        self.path.unlink(missing_ok=True)


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := source.recv(65536):
            sink.sendall(data)
