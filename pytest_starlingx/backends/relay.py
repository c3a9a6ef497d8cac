"""The relay of a lab gateway (see :mod:`pytest_starlingx.backends.gateway`).

Run as ``python -m pytest_starlingx.backends.relay --netns NS --state FILE --ready-fd FD
--target ADDRESS PORT [--target ...]``. It detaches (forks; the launching process exits at
once, so the relay is nobody's child to reap), opens the network namespace ``/run/netns/NS``,
binds one listening socket per target on ``127.0.0.1`` port 0 (the kernel picks a free port)
while still in the host's namespace, then enters the gateway namespace (``setns(2)`` through
ctypes: Python 3.11 has no ``os.setns``). Sockets keep the namespace they were made in, so the
listeners stay on the host's loopback while every connection the relay makes to a target
leaves from inside the gateway namespace. Only then does it write its state file (host, pid,
start time, ports; atomically) and a line to ``FD``: ready means ready.

Each accepted connection is piped both ways to its target; an end of file in one direction is
passed on (half-close) and the connection ends when both directions have, or at the first
error. The relay exits on SIGTERM or SIGINT, and by itself once ``/run/netns/NS`` is gone or is
another namespace (a gateway removed without stopping its relay). Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

from pytest_starlingx.files import write_json_atomic
from pytest_starlingx.ownership import Holder

log = logging.getLogger("pytest_starlingx.relay")

RUN_NETNS = Path("/run/netns")  # where `ip netns add` mounts named namespaces
CLONE_NEWNET = 0x40000000  # <linux/sched.h>
CONNECT_TIMEOUT = 10.0  # seconds a target gets to accept a connection
WATCH_EVERY = 1.0  # seconds between checks that the namespace is still there
CHUNK = 64 * 1024

Target = tuple[str, int]


def setns(fd: int) -> None:
    """Move this thread (the only one) into the network namespace open at ``fd``."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


def listen_loopback() -> socket.socket:
    """A listening TCP socket on 127.0.0.1 at a port the kernel picks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    sock.setblocking(False)
    return sock


def _namespace_id(stat: os.stat_result) -> tuple[int, int]:
    return stat.st_dev, stat.st_ino


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy until end of file, then pass the end of file on."""
    while chunk := await source.read(CHUNK):
        sink.write(chunk)
        await sink.drain()
    if sink.can_write_eof():
        sink.write_eof()


async def _relay_one(
    target: Target, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
) -> None:
    """Pipe one accepted connection to ``target`` and back."""
    host, port = target
    try:
        target_reader, target_writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), CONNECT_TIMEOUT
        )
    except (OSError, TimeoutError) as exc:
        log.warning("%s port %d: cannot connect: %s", host, port, exc or "timed out")
        client_writer.close()
        return
    tasks = [
        asyncio.create_task(_pipe(client_reader, target_writer)),
        asyncio.create_task(_pipe(target_reader, client_writer)),
    ]
    try:
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                log.debug("%s port %d: connection ended: %s", host, port, task.exception())
    finally:
        for writer in (client_writer, target_writer):
            writer.close()


async def _watch(path: Path, namespace: tuple[int, int], stop: asyncio.Event) -> None:
    """Set ``stop`` once ``path`` no longer names the namespace the relay is in."""
    while not stop.is_set():
        try:
            current = _namespace_id(path.stat())
        except OSError:
            current = None
        if current != namespace:
            log.info("namespace %s is gone; exiting", path)
            stop.set()
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), WATCH_EVERY)


async def serve(
    listeners: Sequence[socket.socket],
    targets: Sequence[Target],
    path: Path,
    namespace: tuple[int, int],
) -> None:
    """Relay connections until SIGTERM/SIGINT or until the namespace goes away."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    servers = [
        await asyncio.start_server(partial(_relay_one, target), sock=sock)
        for sock, target in zip(listeners, targets, strict=True)
    ]
    watcher = asyncio.create_task(_watch(path, namespace, stop))
    await stop.wait()
    await watcher
    for server in servers:
        server.close()
    log.info("stopped")


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pytest_starlingx.backends.relay")
    parser.add_argument("--netns", required=True, help="network namespace name (/run/netns)")
    parser.add_argument("--state", required=True, type=Path, help="state file to write")
    parser.add_argument("--ready-fd", required=True, type=int, help="fd to write 'ready' to")
    parser.add_argument(
        "--target",
        required=True,
        action="append",
        nargs=2,
        metavar=("ADDRESS", "PORT"),
        help="a target to relay to (repeat for more)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Detach, bind, enter the namespace, report, serve."""
    args = _parse(argv)
    targets = [(address, int(port)) for address, port in args.target]
    if os.fork() != 0:
        os._exit(0)  # the launcher returns; the relay lives on in the launcher's new session
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s relay %(process)d %(levelname)s %(message)s",
    )
    path = RUN_NETNS / args.netns
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            namespace = _namespace_id(os.fstat(fd))
            listeners = [listen_loopback() for _ in targets]
            setns(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        log.error("cannot set up in namespace %s: %s", args.netns, exc)
        return 1
    ports = [
        [host, port, sock.getsockname()[1]]
        for (host, port), sock in zip(targets, listeners, strict=True)
    ]
    me = Holder.me()
    state = {"host": me.host, "pid": me.pid, "start": me.start, "ports": ports}
    write_json_atomic(args.state, state)
    os.write(args.ready_fd, b"ready\n")
    os.close(args.ready_fd)
    log.info("namespace %s: %s", args.netns, ", ".join(f"{h}:{p} at {lp}" for h, p, lp in ports))
    asyncio.run(serve(listeners, targets, path, namespace))
    return 0


if __name__ == "__main__":
    sys.exit(main())
