"""How `system` and `fm` subcommands are declared (the `@utils.arg` style of cgtsclient and
fmclient) and parsed."""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stxsim.sysinv.db import Data


@dataclass
class Ctx:
    """One command's view: the locked database, the time, work to do after commit."""

    data: Data
    now: float
    after_commit: list[Callable[[], None]] = field(default_factory=list)


Handler = Callable[[Ctx, argparse.Namespace], str]
Arg = tuple[tuple[str, ...], dict[str, Any]]

#: Each program's subcommands: name, help, arguments, handler.
COMMANDS: dict[str, list[tuple[str, str, tuple[Arg, ...], Handler]]] = {"system": [], "fm": []}


def arg(*names: str, **options: Any) -> Arg:
    """One argparse argument of a subcommand."""
    return names, options


def command(name: str, *args: Arg, program: str = "system") -> Callable[[Handler], Handler]:
    """Register `<program> <name>`; the handler's docstring is its help line."""

    def register(handler: Handler) -> Handler:
        COMMANDS[program].append((name, (handler.__doc__ or "").strip(), args, handler))
        return handler

    return register


class ParserExit(Exception):
    """argparse wanted to print and exit: `status` 0 is help (stdout), 2 a usage error."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


_printed = threading.local()


class Parser(argparse.ArgumentParser):
    """An ArgumentParser that never touches sys.stdout/stderr nor exits (server threads)."""

    def _print_message(self, message: str, file: Any = None) -> None:
        if message:
            _printed.text = getattr(_printed, "text", "") + message

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        text = getattr(_printed, "text", "") + (message or "")
        _printed.text = ""
        raise ParserExit(status, text)


#: Commands that get ``--nowrap`` besides every ``*-list``: cgtsclient's exception list
#: (starlingx/config cgtsclient/common/utils.py ``_does_command_need_no_wrap``, r/stx.10.0;
#: fmclient's ``common/utils.py`` adds it to its list commands the same way).
NOWRAP_EXCEPTIONS = ("host-cpu-modify",)


def needs_nowrap(name: str) -> bool:
    """Whether cgtsclient gives `system <name>` its ``--nowrap`` option: only functions named
    ``do_*_list`` and the exceptions (``_does_command_need_no_wrap``); any other command
    rejects it as an unrecognized argument (exit status 2)."""
    return name.endswith("-list") or name in NOWRAP_EXCEPTIONS


DESCRIPTIONS = {
    "system": "StarlingX system configuration CLI",
    "fm": "StarlingX Fault Management CLI",
}


def build(program: str = "system") -> Parser:
    """The parser of ``program`` (`system` or `fm`) with every registered subcommand."""
    parser = Parser(prog=program, description=DESCRIPTIONS[program])
    subs = parser.add_subparsers(metavar="<subcommand>", dest="subcommand")
    subs.required = True
    for name, help_text, args, handler in COMMANDS[program]:
        sub = subs.add_parser(name, help=help_text, description=help_text)
        if needs_nowrap(name):  # added first, as cgtsclient's define_command does
            sub.add_argument("--nowrap", action="store_true",
                             help="No wordwrapping of output")  # fmt: skip
        for names, options in args:
            sub.add_argument(*names, **options)
        sub.set_defaults(handler=handler)
    return parser


def parse(parser: Parser, argv: list[str]) -> argparse.Namespace:
    """Parse `argv`; raise ParserExit with the text argparse would have printed."""
    _printed.text = ""
    return parser.parse_args(argv)
