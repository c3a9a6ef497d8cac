"""SSH to a lab's controllers from this host, at their loopback endpoints (:mod:`.access`).

StarlingX serves SSH on the OAM floating address (the active controller) and, with two
controllers, on each controller's own OAM address; workers and storage nodes have no OAM
address, so the host cannot reach them::

    ssh = LabSsh("duplex", lambda: lab.endpoints, ["controller-0", "controller-1"],
                 password, lab_dir / "known_hosts", artifacts, secrets=[password])
    with ssh.connect("controller-1", Deadline(60)) as session:      # its own address
        print(session.run("hostname", Deadline(10)).stdout)
    ssh.run("controller-0", "uptime", Deadline(10))                  # a cached session

Sessions log in as sysadmin with the lab's password, handed to paramiko in memory: never in
an argv, a log or a transcript. Each records what it runs and reads in
``<artifacts>/<node>.ssh.log`` (``floating.ssh.log`` for the floating address), secrets masked.

Host keys live in the lab's own ``known_hosts`` (in its state directory), by node name: never
by loopback port (a reopened gateway gets other ports) nor by OAM address (the floating one
moves to the other controller on a swact). A controller's own endpoint records its key on
first use (trust on first use: we installed the lab); the floating endpoint is accepted only
with a key recorded for one of the lab's controllers, which it first learns through their own
endpoints (a simplex lab's floating endpoint is its controller-0's own). Any other key is
refused.
"""

from __future__ import annotations

import logging
import re
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import paramiko
from filelock import FileLock

from pytest_starlingx.access import Endpoint
from pytest_starlingx.console.patterns import PASSWORD, SUDO_PASSWORD
from pytest_starlingx.console.shell import Result, clean_output
from pytest_starlingx.console.transcript import Secrets, Transcript
from pytest_starlingx.errors import BackendError, StxError
from pytest_starlingx.waits import Deadline

log = logging.getLogger("pytest_starlingx.ssh")

USER = "sysadmin"
FLOATING = "floating"  # the label of the floating address's session and transcript
TAIL_LINES = 20  # output lines quoted in a timeout
#: How long ``Node.run(via=None)`` gives SSH to log in before it uses the console.
ANSWER_TIMEOUT = 20.0
READ_EVERY = 0.5  # seconds between looks at a channel's deadline
#: After SSH did not answer a node, ``Node.run(via=None)`` uses the console this long before
#: it tries SSH again (each try may cost the relay's connect timeout).
RETRY_AFTER = 30.0
_CHUNK = 32768


#: A sudo password prompt at the end of the output (the console's patterns).
_SUDO_PROMPT = re.compile(rf"(?:{SUDO_PASSWORD}|{PASSWORD})$")


class SshError(StxError):
    """An SSH session failed; the message names lab, node and what to do."""


class SshUnavailable(SshError):
    """SSH does not answer the node (no endpoint, refused, closed, login refused)."""


class ChannelRefused(SshError):
    """The connection is up, but sshd refused a channel for a command (MaxSessions)."""


class SshTimeout(SshError):
    """A command did not finish in time over SSH."""


class HostKeyRefused(SshError):
    """The endpoint presented a host key the lab has not recorded for that node."""


class HostKeys:
    """A lab's ``known_hosts``, by node name, shared by every process (a file lock)."""

    def __init__(self, path: Path, lab: str) -> None:
        self.path = path
        self.lab = lab
        self._lock = FileLock(f"{path}.lock")

    def recorded(self, node: str) -> paramiko.PKey | None:
        """The key recorded for ``node``, if any (one per node: the type the server offers)."""
        with self._lock:
            keys = self._load().lookup(node)
        return next(iter(keys.values()), None) if keys else None

    def check_own(self, node: str, key: paramiko.PKey, where: str) -> None:
        """Accept ``key`` from ``node``'s own endpoint: the recorded one, or the first."""
        with self._lock:
            keys = self._load()
            known = keys.lookup(node)
            if not known:
                keys.add(node, key.get_name(), key)
                self.path.parent.mkdir(parents=True, exist_ok=True)
                keys.save(str(self.path))
                log.info("lab %s: %s's host key %s recorded in %s", self.lab, node,
                         key.fingerprint, self.path)  # fmt: skip
                return
        if key not in known.values():
            (recorded,) = known.values()
            raise HostKeyRefused(
                f"lab {self.lab!r}: {where} presented {key.get_name()} host key "
                f"{key.fingerprint}, but {self.path} records {recorded.get_name()} "
                f"{recorded.fingerprint} for {node}. If {node} was reinstalled, remove its line "
                f"from {self.path}; otherwise something else answers there: do not log in"
            )

    def check_any(self, controllers: Sequence[str], key: paramiko.PKey) -> bool:
        """Whether ``key`` is recorded for one of ``controllers``."""
        with self._lock:
            keys = self._load()
        return any(key in (keys.lookup(name) or {}).values() for name in controllers)

    def _load(self) -> paramiko.HostKeys:
        keys = paramiko.HostKeys()
        if self.path.exists():
            keys.load(str(self.path))
        return keys


def _where(lab: str, label: str, endpoint: Endpoint) -> str:
    """A session's place in messages: lab, node (or ``floating``), loopback port, address."""
    return f"lab {lab!r} node {label} (ssh 127.0.0.1:{endpoint.local_port} -> {endpoint.address})"


class _Policy(paramiko.MissingHostKeyPolicy):
    """Hands paramiko's host key decision to :meth:`LabSsh.check_key` (the client itself
    knows no key, so paramiko asks this policy on every connection)."""

    def __init__(self, check: Callable[[paramiko.PKey], None]) -> None:
        self._check = check

    def missing_host_key(
        self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey
    ) -> None:
        self._check(key)


class SshSession:
    """A logged-in SSH connection to one endpoint; :meth:`run` commands, or use
    :attr:`client` (a ``paramiko.SSHClient``: ``client.open_sftp()``, ...). A context manager;
    several threads may run commands on one session at once (one channel each)."""

    def __init__(
        self,
        lab: str,
        node: str,
        endpoint: Endpoint,
        client: paramiko.SSHClient,
        transcript: Transcript,
        secrets: Secrets,
    ) -> None:
        self.lab = lab
        #: The node, or ``floating`` for the floating address.
        self.node = node
        self.endpoint = endpoint
        self.client = client
        self._transcript = transcript
        self._secrets = secrets

    @property
    def where(self) -> str:
        """``lab 'x' node controller-0 (ssh 127.0.0.1:40123 -> 10.10.10.3)``, for messages."""
        return _where(self.lab, self.node, self.endpoint)

    @property
    def active(self) -> bool:
        """False once the connection dropped or was closed."""
        transport = self.client.get_transport()
        return transport is not None and transport.is_active()

    def run(
        self,
        command: str,
        deadline: Deadline,
        *,
        login_shell: bool = False,
        sudo_password: str | None = None,
    ) -> Result:
        """Run ``command`` (a shell command line, as ``ssh host COMMAND`` runs it, its input
        at end of file); its output with stderr merged in as a console shows it, and its exit
        status. ``login_shell``: in a login shell (``bash -lc``), whose environment is a
        console login's (``/etc/profile``: PATH with the sbin directories, TMOUT).
        ``sudo_password``: a command that mentions sudo runs on a pty, where sudo can ask for
        a password, and its prompt is answered with this one (once, as on the console).

        :class:`SshTimeout` when ``deadline`` passes first (the channel is closed);
        :class:`SshUnavailable` when the connection is down before the command is sent;
        :class:`SshError` when it drops during the command."""
        chunks: list[bytes] = []
        remote = f"bash -lc {shlex.quote(command)}" if login_shell else command
        sudo = sudo_password if "sudo" in command else None
        status = self._execute(command, deadline, lambda data, _err: chunks.append(data),
                               combine=True, remote=remote, sudo_password=sudo)  # fmt: skip
        text = clean_output(b"".join(chunks).decode("utf-8", "replace"), kernel_messages=True)
        if sudo is not None:  # the prompt answered, and the line end after the hidden password
            text = re.sub(rf"(?:{SUDO_PASSWORD}|{PASSWORD})\n?", "", text, count=1)
        return Result(command, text.removesuffix("\n"), status)

    def stream(self, command: str, stdout: BinaryIO, stderr: BinaryIO) -> int:
        """Run ``command`` with its output and errors copied to ``stdout`` and ``stderr`` as
        they come (no deadline); its exit status."""

        def copy(data: bytes, err: bool) -> None:
            out = stderr if err else stdout
            out.write(data)
            out.flush()

        return self._execute(command, None, copy, combine=False)

    def _execute(
        self,
        command: str,
        deadline: Deadline | None,
        sink: Callable[[bytes, bool], None],
        combine: bool,
        remote: str | None = None,
        sudo_password: str | None = None,
    ) -> int:
        """Run ``remote`` (default: ``command``, the name it is recorded under) on a channel
        of its own, its input closed (with ``sudo_password``: on a pty, sudo's password
        prompt answered), passing what it prints to ``sink``; its exit status."""
        masked = self._secrets.mask(command)
        channel = self._open_channel(masked, deadline)
        try:
            channel.set_combine_stderr(combine)
            if sudo_password is not None:
                channel.get_pty(term="dumb", width=500)
            channel.exec_command(remote or command)
            if sudo_password is None:
                channel.shutdown_write()  # nothing to read: as ssh -n
        except (paramiko.SSHException, EOFError, OSError) as exc:
            channel.close()
            if self._broken(exc):
                raise SshUnavailable(f"{self.where}: cannot start {masked!r}: {exc}") from exc
            raise SshError(f"{self.where}: sshd closed the channel before {masked!r} ran "
                           f"(not run): {exc}") from exc  # fmt: skip
        self._transcript.note(f"run: {masked}")
        log.debug("%s: ssh run %s", self.node, masked, extra={"node": self.node})
        seen = bytearray()  # for the transcript and a timeout's tail
        asked = 0

        def take(data: bytes, err: bool) -> None:
            nonlocal asked
            seen.extend(data)
            sink(data, err)
            if sudo_password is not None and _SUDO_PROMPT.search(
                seen[-200:].decode(errors="replace")
            ):
                asked += 1
                if asked > 1:
                    raise SshError(f"{self.where}: {masked!r}: sudo asked for the password "
                                   "again: it was refused")  # fmt: skip
                channel.sendall(f"{sudo_password}\n".encode())
                self._transcript.note("sudo's password sent")

        try:
            self._pump(channel, deadline, take)
            while not channel.status_event.wait(READ_EVERY):  # the status follows the output
                if deadline is not None and deadline.expired:
                    raise SshTimeout(command)
        except SshTimeout:
            assert deadline is not None
            self._record(seen, f"timed out after {deadline.elapsed:.0f}s")
            tail = self._secrets.mask(clean_output(seen.decode("utf-8", "replace"))).splitlines()
            lines = "\n".join(f"    | {line}" for line in tail[-TAIL_LINES:]) or "    (no output)"
            raise SshTimeout(
                f"{self.where}: {masked!r} did not finish within {deadline.timeout:.0f}s; the "
                f"channel is closed. Last {min(len(tail), TAIL_LINES)} output lines:\n{lines}"
            ) from None
        finally:
            channel.close()
        status = channel.exit_status  # -1: the channel closed without one
        if status == -1:
            self._record(seen, "connection lost")
            raise SshError(
                f"{self.where}: the connection dropped while {masked!r} ran; it may have run "
                "in part (not run again)"
            )
        self._record(seen, f"exit status {status}")
        return status

    def _open_channel(self, masked: str, deadline: Deadline | None) -> paramiko.Channel:
        """A new channel for ``masked``: :class:`SshUnavailable` when the connection is down,
        :class:`ChannelRefused` when sshd refused it on a live connection (the session's other
        channels run on: it must not be closed for this), :class:`SshTimeout` when sshd did
        not answer before ``deadline``."""
        transport = self.client.get_transport()
        if transport is None or not transport.is_active():
            raise SshUnavailable(f"{self.where}: cannot start {masked!r}: the connection is closed")
        timeout = None if deadline is None else max(deadline.remaining, 0.1)
        try:
            return transport.open_session(timeout=timeout)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            if self._broken(exc):
                raise SshUnavailable(f"{self.where}: cannot start {masked!r}: {exc}") from exc
            if "Timeout" in str(exc):
                raise SshTimeout(f"{self.where}: sshd did not open a channel for {masked!r} "
                                 "in time") from exc  # fmt: skip
            # paramiko keeps the reason of a refusal in one slot per connection, so of two
            # channels refused at once only one gets it (ChannelException); the other gets a
            # plain SSHException: both are refusals while the connection stays up
            reason = f" ({exc.text})" if isinstance(exc, paramiko.ChannelException) else ""
            raise ChannelRefused(
                f"{self.where}: sshd refused a channel for {masked!r}{reason}: it serves 10 "
                "commands at once per connection (MaxSessions)"
            ) from exc

    def _broken(self, exc: BaseException) -> bool:
        """Whether ``exc``, raised while a command was started, means the connection itself
        is lost (the socket failed or the transport ended), not just the command's channel."""
        return isinstance(exc, (EOFError, OSError)) or not self.active

    @staticmethod
    def _pump(
        channel: paramiko.Channel, deadline: Deadline | None, sink: Callable[[bytes, bool], None]
    ) -> None:
        """Read the channel's output and errors until both end, or raise SshTimeout."""
        channel.settimeout(READ_EVERY)
        reading = {False: channel.recv, True: channel.recv_stderr}
        ready = {False: channel.recv_ready, True: channel.recv_stderr_ready}
        while True:
            progressed = False
            for err in (False, True):
                while ready[err]():
                    sink(reading[err](_CHUNK), err)
                    progressed = True
            if channel.eof_received and not (channel.recv_ready() or channel.recv_stderr_ready()):
                return
            if channel.closed:
                return
            if deadline is not None and deadline.expired:
                raise SshTimeout("deadline")
            if not progressed:
                # recv blocks until data, end of file or READ_EVERY: no busy loop
                try:
                    data = channel.recv(_CHUNK)
                except TimeoutError:
                    continue
                if data:
                    sink(data, False)

    def _record(self, output: bytes | bytearray, end: str) -> None:
        text = output.decode("utf-8", "replace")
        if text:
            self._transcript.output(text if text.endswith("\n") else text + "\n")
        self._transcript.note(end)

    def close(self) -> None:
        """Close the connection and the transcript."""
        self.client.close()
        self._transcript.close()

    def __enter__(self) -> SshSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class LabSsh:
    """SSH to one lab's controllers: endpoints chosen by node, host keys checked against the
    lab's ``known_hosts``, and one cached session per node for :meth:`run`."""

    def __init__(
        self,
        lab: str,
        endpoints: Callable[[], Mapping[str, Endpoint]],
        controllers: Sequence[str],
        password: str,
        known_hosts: Path,
        artifacts: Path | None,
        secrets: Iterable[str] = (),
    ) -> None:
        self.lab = lab
        self._endpoints = endpoints
        self.controllers = list(controllers)
        self._password = password
        self.host_keys = HostKeys(known_hosts, lab)
        self._artifacts = artifacts
        self._secrets = Secrets()
        for secret in (password, *secrets):
            self._secrets.add(secret)
        self._sessions: dict[str, SshSession] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self._down_until: dict[str, float] = {}

    # ---- which endpoint, which key

    def has_endpoint(self, node: str | None) -> bool:
        """Whether the host reaches ``node`` (None: the floating address) over SSH: the
        floating address and the controllers, not workers or storage nodes."""
        return node is None or node in self.controllers

    def endpoint(self, node: str | None) -> tuple[Endpoint, str | None]:
        """The endpoint reaching ``node`` (None: the floating address) and the node whose
        host key it must present (None: any controller's)."""
        self.require_endpoint(node)
        try:
            endpoints = self._endpoints()
        except BackendError as exc:
            raise SshUnavailable(f"lab {self.lab!r}: no SSH endpoints: {exc}") from exc
        simplex = len(self.controllers) == 1
        if node is None or simplex:  # a simplex lab's floating address is its controller's
            return endpoints["ssh"], self.controllers[0] if simplex else None
        return endpoints[f"ssh-{node}"], node

    def require_endpoint(self, node: str | None) -> None:
        """Raise :class:`SshUnavailable` unless :meth:`has_endpoint`."""
        if not self.has_endpoint(node):
            raise SshUnavailable(
                f"lab {self.lab!r}: {node} has no SSH endpoint on this host: only the "
                f"controllers ({', '.join(self.controllers)}) have OAM addresses. Reach it from "
                f"a controller (lab.ssh().run('ssh {node} ...')) or use its console"
            )

    def check_key(self, owner: str | None, key: paramiko.PKey, where: str) -> None:
        """Accept ``key`` from an endpoint of ``owner`` (None: the floating address), or
        raise :class:`HostKeyRefused`."""
        if owner is not None:
            self.host_keys.check_own(owner, key, where)
            return
        if self.host_keys.check_any(self.controllers, key):
            return
        for name in self.controllers:  # learn the controllers' keys at their own addresses
            if self.host_keys.recorded(name) is None:
                self._learn(name)
        if not self.host_keys.check_any(self.controllers, key):
            recorded = {name: self.host_keys.recorded(name) for name in self.controllers}
            known = ", ".join(f"{name}: {k.fingerprint if k else 'not recorded (unreachable)'}"
                              for name, k in recorded.items())  # fmt: skip
            raise HostKeyRefused(
                f"lab {self.lab!r}: {where} presented {key.get_name()} host key "
                f"{key.fingerprint}, which is no controller's key in {self.host_keys.path} "
                f"({known}). If a controller was reinstalled, remove its line there; otherwise "
                "something else answers at the floating address: do not log in"
            )

    def _learn(self, node: str) -> None:
        """Record ``node``'s key from its own endpoint (a key exchange, no login)."""
        endpoint, _ = self.endpoint(node)
        try:
            with socket.create_connection(("127.0.0.1", endpoint.local_port), 10) as sock:
                transport = paramiko.Transport(sock)
                try:
                    transport.start_client(timeout=10)
                    key = transport.get_remote_server_key()
                finally:
                    transport.close()
        except (paramiko.SSHException, EOFError, OSError) as exc:
            log.info("lab %s: %s's host key: %s", self.lab, node, exc or type(exc).__name__)
            return
        self.host_keys.check_own(node, key, f"{node}'s own address")

    # ---- sessions

    def connect(self, node: str | None, deadline: Deadline) -> SshSession:
        """A new session to ``node`` (None: the floating address), logged in as sysadmin."""
        endpoint, owner = self.endpoint(node)
        label = node if node is not None else FLOATING
        where = _where(self.lab, label, endpoint)
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(
            _Policy(lambda key: self.check_key(owner, key, f"{label} ({endpoint.address})"))
        )
        try:
            client.connect(
                "127.0.0.1",
                endpoint.local_port,
                username=USER,
                password=self._password,
                timeout=max(deadline.remaining, 0.1),
                banner_timeout=max(deadline.remaining, 0.1),
                auth_timeout=max(deadline.remaining, 0.1),
                allow_agent=False,
                look_for_keys=False,
            )
        except HostKeyRefused:
            client.close()
            raise
        except paramiko.AuthenticationException as exc:
            client.close()
            raise SshUnavailable(
                f"{where}: sysadmin's password was refused ({exc}); before the first login "
                "on the console the node still has its install-time password"
            ) from exc
        except (paramiko.SSHException, EOFError, OSError) as exc:
            client.close()
            raise SshUnavailable(f"{where}: SSH does not answer: {exc or type(exc).__name__}"
                                 ) from exc  # fmt: skip
        path = self._artifacts / f"{label}.ssh.log" if self._artifacts is not None else None
        transcript = Transcript(label, path, self._secrets, keep=0)
        transcript.note(f"connected as {USER} to {endpoint.address} at 127.0.0.1:"
                        f"{endpoint.local_port}")  # fmt: skip
        log.info("%s: logged in over SSH", where)
        return SshSession(self.lab, label, endpoint, client, transcript, self._secrets)

    def _lock(self, node: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(node, threading.Lock())

    def session(self, node: str, deadline: Deadline) -> SshSession:
        """The cached session to ``node``: connected on first use, and again when dropped."""
        with self._lock(node):
            session = self._sessions.get(node)
            if session is not None and not session.active:
                log.info("%s: the SSH connection dropped; connecting again", session.where)
                session.close()
                session = None
            if session is None:
                session = self._sessions[node] = self.connect(node, deadline)
            return session

    def run(self, node: str, command: str, deadline: Deadline) -> Result:
        """Run ``command`` on ``node`` as on its console (a login shell; sudo's password
        prompt answered) over the node's cached session; a connection found dropped when the
        command was to be sent is made again once (a channel refused on a live connection is
        :class:`ChannelRefused`: the session's other commands run on)."""
        session = self.session(node, deadline)
        try:
            return session.run(command, deadline, login_shell=True, sudo_password=self._password)
        except SshUnavailable:
            self._drop(node, session)
            session = self.session(node, deadline)
            return session.run(command, deadline, login_shell=True, sudo_password=self._password)

    def _drop(self, node: str, session: SshSession) -> None:
        """Close ``session`` and forget it, unless another thread replaced it already."""
        with self._lock(node):
            if self._sessions.get(node) is session:
                del self._sessions[node]
        session.close()

    def answers(self, node: str, deadline: Deadline) -> bool:
        """Whether ``node`` has an SSH endpoint and SSH logs in there (a session is made and
        cached); after a failure, False without trying for :data:`RETRY_AFTER` seconds."""
        if not self.has_endpoint(node) or time.monotonic() < self._down_until.get(node, 0.0):
            return False
        try:
            self.session(node, deadline)
        except SshUnavailable as exc:
            log.info("%s", exc)
            self._down_until[node] = time.monotonic() + RETRY_AFTER
            return False
        self._down_until.pop(node, None)
        return True

    def forget(self, node: str) -> None:
        """Drop ``node``'s cached session (it rebooted, lost power, was restored)."""
        with self._lock(node):
            session = self._sessions.pop(node, None)
            self._down_until.pop(node, None)
        if session is not None:
            session.close()

    def close(self) -> None:
        """Close every cached session."""
        for node in list(self._sessions):
            self.forget(node)
