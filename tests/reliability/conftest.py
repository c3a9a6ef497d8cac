"""Helpers of the reliability tests: listings of everything of ours on the host."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest

VENV_BIN = Path(sys.executable).parent
STX_LAB = str(VENV_BIN / "stx-lab")
LIBVIRTD_RESTART = 20.0  # seconds objects_of waits for a restarting libvirtd
SET_HOST_NAME = (
    "import os, socket, sys; socket.sethostname(sys.argv[1]); os.execvp(sys.argv[2], sys.argv[2:])"
)


def host_of(state_dir: Path) -> str:
    """The host name that the labs of ``state_dir`` are owned by under :func:`on_host`."""
    return f"stx-test-{state_dir.name.rsplit('-', 1)[-1]}"


def on_host(state_dir: Path, command: list[str]) -> list[str]:
    """``command`` run with ``host_of(state_dir)`` as host name (a UTS namespace of its own).

    Every gc on this host removes a lab whose owner on this host is gone, whatever its state
    dir: other sessions start one beside a test at any time. A lab owned by this host name is
    out of their reach (another host's) and in reach of a gc run under the same name.
    """
    return ["unshare", "--uts", sys.executable, "-c", SET_HOST_NAME, host_of(state_dir),
            *command]  # fmt: skip


def objects_of(state_dir: Path) -> set[str]:
    """Every libvirt object, run dir and socket belonging to labs of ``state_dir``.

    Domains and networks are ours when their owner record names ``state_dir``; pools and
    volumes when they live under it; files are whatever is left in its ``labs/`` directory.
    Waits out a libvirtd restart (``test_libvirtd_restart`` runs beside other tests).
    """
    deadline = time.monotonic() + LIBVIRTD_RESTART
    while True:
        try:
            found = _libvirt_objects(state_dir)
            break
        except libvirt.libvirtError as exc:
            if exc.get_error_domain() != libvirt.VIR_FROM_RPC or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    labs = state_dir / "labs"
    if labs.is_dir():
        found |= {f"file {p}" for p in labs.rglob("*")}
    return found


#: libvirt's errors for an object removed between listing it and looking at it (another
#: test's lab torn down meanwhile).
VANISHED = (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_NO_NETWORK,
            libvirt.VIR_ERR_NO_STORAGE_POOL, libvirt.VIR_ERR_NO_STORAGE_VOL)  # fmt: skip


def _libvirt_objects(state_dir: Path) -> set[str]:
    conn = libvirt.open("qemu:///system")
    found = set()
    marker = f'state-dir="{state_dir}"'
    try:
        for kind, objects in (("domain", conn.listAllDomains()),
                              ("network", conn.listAllNetworks())):  # fmt: skip
            for obj in objects:
                with _unless_vanished():
                    if marker in obj.XMLDesc(0):
                        found.add(f"{kind} {obj.name()}")
        for pool in conn.listAllStoragePools():
            with _unless_vanished():
                if f"<path>{state_dir}/" in pool.XMLDesc(0):
                    volumes = pool.listAllVolumes() if pool.isActive() else []
                    found |= {f"pool {pool.name()}", *(f"volume {v.path()}" for v in volumes)}
    finally:
        conn.close()
    return found


@contextlib.contextmanager
def _unless_vanished() -> Iterator[None]:
    """Skip an object that another test removed after it was listed."""
    try:
        yield
    except libvirt.libvirtError as exc:
        if exc.get_error_code() not in VANISHED:
            raise


@pytest.fixture
def state_dir(monkeypatch, new_state_dir) -> Path:
    """A state dir of this test only (QEMU can traverse it), set as ``$STX_STATE_DIR``."""
    path = new_state_dir()
    monkeypatch.setenv("STX_STATE_DIR", str(path))
    yield path
    for own_host in (False, True):  # the test's own host name too
        stx_lab("gc", state=path, own_host=own_host)
    left = objects_of(path)
    assert not left, f"left behind: {sorted(left)}"
    shutil.rmtree(path)


def stx_lab(
    *args: str, state: Path, own_host: bool = False, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """Run ``stx-lab`` against ``state`` (under ``host_of(state)`` with ``own_host``)."""
    command = [STX_LAB, *args]
    return subprocess.run(
        on_host(state, command) if own_host else command,
        env={**os.environ, "STX_STATE_DIR": str(state)}, capture_output=True, text=True,
        timeout=timeout,
    )  # fmt: skip
