"""The launcher of a lab gateway's uplink process (see :mod:`pytest_starlingx.backends.gateway`).

Run as ``python -m pytest_starlingx.backends.uplink --state FILE -- COMMAND [ARG...]``. It
detaches as the relay does (forks; the launching process exits at once, so the uplink is
nobody's child to reap), and the child records itself in ``FILE`` (host, pid, start time;
atomically) *before* it executes ``COMMAND``, which keeps its pid and start time: whoever
started the launcher may be killed at any moment after, and the process is still found, and
stopped, from the state file. Standard library only.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_starlingx.files import write_json_atomic
from pytest_starlingx.ownership import Holder


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pytest_starlingx.backends.uplink")
    parser.add_argument("--state", required=True, type=Path, help="state file to write")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    if args.command[:1] == ["--"]:
        args.command = args.command[1:]
    if not args.command:
        parser.error("no command given")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Detach, record, execute."""
    args = _parse(argv)
    if os.fork() != 0:
        os._exit(0)  # the launcher returns; the uplink lives on in the launcher's new session
    me = Holder.me()
    try:
        write_json_atomic(args.state, {"host": me.host, "pid": me.pid, "start": me.start})
        os.execvp(args.command[0], args.command)
    except OSError as exc:
        print(f"uplink {me.pid}: cannot run {args.command[0]}: {exc}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
