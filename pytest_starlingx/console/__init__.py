"""A node's serial console: continuous reading, transcript, expect, boot menus, login, commands.

One :class:`Console` per node, over the :class:`~pytest_starlingx.transport.Transport` its backend
hands out::

    with Console(transport, "controller-0", lab="simplex", artifacts=run_dir) as con:
        with con.stage("install"):
            menu = t.deadline("menu")
            con.select_menu("Debian All-in-one Install", "Serial Console", deadline=menu)
            con.expect(LOGIN, t.deadline("install"))
            con.login("sysadmin", "sysadmin", t.deadline("login"), new_password=password)
            print(con.run_checked("cat /etc/build.info", t.deadline("command")))

A console is driven by one thread at a time; several consoles are driven from several threads.
The package is layered like labgrid's console, boot-loader and shell drivers:

* ``link``: :class:`ConsoleLink`, bytes in and out: reader thread, send, expect, settle;
* ``transcript``: the masked transcript file, the ring buffer behind ``tail()``, secrets;
* ``screen``: the VT100 screen model that boot menus are read from;
* ``menus``: :class:`BootMenu`, selecting boot-menu entries by their text;
* ``patterns``: what a StarlingX console prints (login, password and shell prompts);
* ``login``: the login dialog, forced password change included;
* ``shell``: :class:`Shell`, login, prompt detection and framed commands (:class:`Result`);
* ``node``: :class:`Console`, the link with its menu and shell, as stages and tests use it;
* ``errors``: the errors, each naming lab, node and stage and showing the console's tail.
"""

from pytest_starlingx.console.errors import (
    CommandFailed,
    ConsoleClosed,
    ConsoleTimeout,
    KernelPanic,
    LoginError,
    MenuError,
    NodeConsoleError,
    NodeRebooted,
)
from pytest_starlingx.console.link import ConsoleLink, Match
from pytest_starlingx.console.menus import BootMenu
from pytest_starlingx.console.node import Console
from pytest_starlingx.console.patterns import LOGIN, PROMPT
from pytest_starlingx.console.shell import Result, Shell, clean_output
from pytest_starlingx.console.transcript import strip_ansi

__all__ = [
    "LOGIN",
    "PROMPT",
    "BootMenu",
    "CommandFailed",
    "Console",
    "ConsoleClosed",
    "ConsoleLink",
    "ConsoleTimeout",
    "KernelPanic",
    "LoginError",
    "Match",
    "MenuError",
    "NodeConsoleError",
    "NodeRebooted",
    "Result",
    "Shell",
    "clean_output",
    "strip_ansi",
]
