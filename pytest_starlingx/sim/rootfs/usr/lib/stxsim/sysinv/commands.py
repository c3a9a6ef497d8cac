"""Run one `system` or `fm` command line inside sysinv: parse, check credentials, apply,
render (the simulator's sysinv-api answers for the fault manager's API too)."""

from __future__ import annotations

import time

from stxsim.sysinv import cmd_fm, cmd_hosts, cmd_net, cmd_storage, db, registry
from stxsim.sysinv.hosts import CommandError

MODULES = (cmd_fm, cmd_hosts, cmd_net, cmd_storage)  # importing them registers their commands
_parsers = {program: registry.build(program) for program in registry.COMMANDS}


def run(
    argv: list[str], username: str, password: str, program: str = "system"
) -> tuple[str, str, int]:
    """(stdout, stderr, exit status) of `<program> <argv>` run by `username`."""
    try:
        args = registry.parse(_parsers[program], argv)
    except registry.ParserExit as exc:
        return (exc.text, "", 0) if exc.status == 0 else ("", exc.text, exc.status)
    try:
        with db.transaction() as data:
            admin = data["system"]
            if (
                username != admin["admin_username"]
                or db.password_digest(password) != admin["admin_password_sha256"]
            ):
                raise CommandError("Invalid Identity credentials.")
            ctx = registry.Ctx(data, time.time())
            out = args.handler(ctx, args)
    except CommandError as exc:
        return "", f"{exc}\n", 1
    for action in ctx.after_commit:
        action()
    return f"{out}\n" if out else "", "", 0
