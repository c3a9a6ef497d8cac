"""Benchmark: commands per second on a node, over SSH and over its serial console.

    python bench/access.py [--count N] [--threads T]

Brings up a simplex lab on the simulator (removed at the end), then runs ``N`` short commands
(``hostname``) on controller-0 one after another with ``node.run(via="console")``, with
``via="ssh"`` (through the lab's OAM gateway at a loopback port; in a login shell, as on the
console) and with a plain ``lab.ssh()`` session (as ``ssh host COMMAND``), and then with
``via="ssh"`` from ``T`` threads at once (a console is one serial line: it serves one
command at a time, so it is not run in threads). Prints a table and a last line of
``name=value`` figures. Not part of the test run; never imported by the package.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from tempfile import mkdtemp

from pytest_starlingx.backends import make_backend
from pytest_starlingx.console import Result
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.lifecycle.acquire import Lifecycle, Policy
from pytest_starlingx.text_table import render_table
from pytest_starlingx.waits import Deadline

COMMAND = "hostname"


def rate(run: Callable[[], Result], name: str, count: int, threads: int = 1) -> float:
    """Commands per second: ``count`` calls of ``run`` from ``threads`` threads at once; each
    must answer the node's ``name``."""

    def one(_: int) -> None:
        result = run()
        assert result.ok and result.stdout.strip() == name, result.stdout

    one(0)  # the first one logs in (console) or connects (SSH): not measured
    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(one, range(count)))
    return count / (time.monotonic() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50, help="commands per measure")
    parser.add_argument("--threads", type=int, default=4, help="SSH clients at once")
    args = parser.parse_args()
    out = Path(mkdtemp(prefix="stx-bench-access-"))
    spec = lab_from_mapping({"topology": "simplex", "name": "baccess"}, source="bench")
    backend = make_backend("libvirt")
    lifecycle = Lifecycle(Policy())
    try:
        with lifecycle.acquire(spec, backend, out) as lab:
            node = lab.node("controller-0")
            console = partial(node.run, COMMAND, via="console")
            ssh = partial(node.run, COMMAND, via="ssh")
            with lab.ssh() as session:
                plain = partial(session.run, COMMAND, Deadline(600, what=COMMAND))
                figures = {
                    "console_cmd_per_s": rate(console, node.name, args.count),
                    "ssh_cmd_per_s": rate(ssh, node.name, args.count),
                    "ssh_plain_cmd_per_s": rate(plain, node.name, args.count),
                    "ssh_parallel_cmd_per_s": rate(ssh, node.name, args.count, args.threads),
                }
    finally:
        lifecycle.close()
        backend.close()
    figures["ssh_vs_console"] = figures["ssh_cmd_per_s"] / figures["console_cmd_per_s"]
    rows = [
        ["console, one after another", f"{figures['console_cmd_per_s']:.1f}"],
        ["SSH (login shell), one after another", f"{figures['ssh_cmd_per_s']:.1f}"],
        ["SSH (plain exec), one after another", f"{figures['ssh_plain_cmd_per_s']:.1f}"],
        [
            f"SSH (login shell), {args.threads} threads at once",
            f"{figures['ssh_parallel_cmd_per_s']:.1f}",
        ],
    ]
    print(render_table([f"{args.count} x {COMMAND!r} on controller-0", "commands/s"], rows))
    print(" ".join(f"{k}={v:.2f}" for k, v in figures.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
