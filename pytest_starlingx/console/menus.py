"""Boot menus on a console: reading the highlighted entry from the screen and walking to the
wanted one, key by key (GRUB, ISOLINUX/vesamenu, pxelinux)."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from pytest_starlingx.console.errors import ConsoleClosed, ConsoleTimeout, MenuError
from pytest_starlingx.console.link import ConsoleLink
from pytest_starlingx.console.screen import Menu, matches
from pytest_starlingx.waits import Deadline, Progress

log = logging.getLogger("pytest_starlingx.console")

#: How often a lost boot-menu highlight is redrawn before giving up.
MENU_REDRAWS = 5

#: Four letters in a row each printed twice: a boot menu copied to the serial line by the
#: firmware as well (shared/real-menus.md: ``DDeebbiiaann``).
_DOUBLED = re.compile(r"(?:([A-Za-z])\1){4}")


class BootMenu:
    """Selects boot-menu entries by their text on one console."""

    def __init__(self, console: ConsoleLink) -> None:
        self.console = console

    def wait_screen(self, predicate: Callable[[Menu], bool], deadline: Deadline, what: str) -> Menu:
        """Wait until the menu read from the screen satisfies ``predicate``; return it.

        The predicate is checked on every bit of output and at least twice a second.
        """
        progress = Progress(what, deadline, log, extra=self.console.log_extra)
        next_check = 0.0
        with self.console.changed:
            while True:
                menu = self.console.screen.menu()
                if predicate(menu):
                    return menu
                if self.console.closed_reason is not None:
                    raise self.console.error(
                        ConsoleClosed,
                        f"console closed ({self.console.closed_reason}) waiting for {what} "
                        f"(menu on screen: {menu or 'none'})",
                    )
                if deadline.expired or deadline.elapsed >= next_check:
                    self.console.check_waiting(
                        f"{what} (menu on screen: {menu or 'none'})", deadline
                    )
                    next_check = deadline.elapsed + self.console.poll_every
                progress.tick()
                self.console.changed.wait(min(deadline.remaining, 0.5))

    def select(self, *path: str | re.Pattern[str], deadline: Deadline, settle: float = 3.0) -> None:
        """Select a boot-menu entry by its text; several texts walk nested menus.

        Each text is an entry of its level, whatever the menu's decoration: the highlighted entry
        is read from the screen and down/up pressed until the wanted one is highlighted (checking
        the screen after every key and redrawing a highlight the boot loader's output lost), then
        Enter. A menu already inside a wanted submenu (vesamenu opens inside its default one,
        titled with the submenu's text) counts as that level chosen; a titled menu that stays
        without the wanted entry for ``settle`` seconds is left with ESC (one level up), which
        also stops its countdown. Raises :class:`MenuError` when no level has the entry.
        """
        try:
            self._select_path(path, deadline, settle)
        except (ConsoleTimeout, MenuError) as exc:
            if not any(_DOUBLED.search(line) for line in self.console.tail()):
                raise
            raise self.console.error(
                MenuError,
                f"{exc.summary}; the console shows every character twice: the firmware copies "
                "the screen to the serial port while the boot loader writes there too (a "
                "serial BIOS console such as libvirt's <bios useserial='yes'/>; give the VM a "
                "video device instead, as StarlingX's own domains have)",
            ) from None

    def _select_path(
        self, path: Sequence[str | re.Pattern[str]], deadline: Deadline, settle: float
    ) -> None:
        """The walk of :meth:`select`. ESC is pressed at most once, before any entry is
        chosen: ESC at vesamenu's top level opens the ``boot:`` prompt, which boots label 1
        after its own timeout."""
        level = 0
        while level < len(path):
            wanted = path[level]
            label = wanted.pattern if isinstance(wanted, re.Pattern) else wanted
            inner = level + 1 < len(path)
            menu = self._await_entry(
                wanted, label, deadline, settle, titled=inner, may_leave=level == 0
            )
            target = menu.find(wanted)
            if target is None:  # the menu on screen is the wanted submenu itself
                log.info(
                    "%s: already in menu %r", self.console.node, label, extra=self.console.log_extra
                )
                level += 1
                continue
            rows = [entry.row for entry in menu.entries]
            highlighted = menu.highlighted
            if highlighted is None:  # cannot happen: checked by the wait
                raise self.console.error(MenuError, f"lost menu entry {label!r}: {menu}")
            here, there = rows.index(highlighted.row), rows.index(target.row)
            step = 1 if there > here else -1
            while here != there:
                self._move_highlight(rows[here], rows[here + step], label, deadline, settle)
                here += step
            log.info(
                "%s: menu entry %r selected", self.console.node, label, extra=self.console.log_extra
            )
            if inner:
                self.console.screen.reset()  # the submenu is drawn on a cleared screen
            self.console.send_key("enter")
            level += 1

    def _move_highlight(
        self, row: int, to: int, label: str, deadline: Deadline, settle: float
    ) -> None:
        """Press up or down once and wait until the highlight is on screen row ``to``.

        Only the highlight is awaited, not the entry's text: a redrawn row may read 'tall'
        instead of its entry. A lost highlight is redrawn (:meth:`_redraw_highlight`).
        """
        key = "down" if to > row else "up"
        arrived = _highlight_on(to)
        what = f"the highlight to move towards menu entry {label!r}"
        self.console.send_key(key)
        menu = self._wait_screen_briefly(arrived, deadline, settle, what)
        if not arrived(menu):
            menu = self._redraw_highlight(key, deadline, settle, what)
        if not arrived(menu):
            raise self.console.error(
                MenuError, f"{what}: the highlight went to another row than {to}: {menu}"
            )

    def _redraw_highlight(self, key: str, deadline: Deadline, settle: float, what: str) -> Menu:
        """Redraw a highlight lost after ``key``: press the opposite key, then ``key`` again.

        GRUB drops serial output when the host is slow: a CI run lost the redraw of the newly
        highlighted row, and no row read highlighted. Keys are not lost, and the two moves
        redraw both rows of the lost one. Each move is awaited on screen before the next key (a
        highlight read in between would be stale). Returns the menu once ``key`` has moved the
        highlight; raises :class:`MenuError` after :data:`MENU_REDRAWS` tries.
        """
        back = "up" if key == "down" else "down"
        menu = self.console.screen.menu()
        for _ in range(MENU_REDRAWS):
            log.info(
                "%s: waiting for %s after key %s (menu on screen: %s); pressing %s and %s to "
                "redraw it", self.console.node, what, key, menu or "none", back, key,
                extra=self.console.log_extra,
            )  # fmt: skip
            self.console.send_key(back)
            menu = self._wait_screen_briefly(_one_highlight, deadline, settle, what)
            start = menu.highlighted
            self.console.send_key(key)
            if start is None:  # this redraw was lost too: let the second one land, then again
                menu = self._wait_screen_briefly(_one_highlight, deadline, settle, what)
                continue
            moved = _moved_from(start.row)
            menu = self._wait_screen_briefly(moved, deadline, settle, what)
            if moved(menu):
                return menu
        raise self.console.error(
            MenuError,
            f"{what}: not on screen after {MENU_REDRAWS} redraws "
            f"(menu on screen: {menu or 'none'})",
        )

    def _await_entry(
        self,
        wanted: str | re.Pattern[str],
        label: str,
        deadline: Deadline,
        settle: float,
        *,
        titled: bool = False,
        may_leave: bool = False,
    ) -> Menu:
        """Wait for a menu showing ``wanted`` with a highlight (or, when ``titled``, a menu
        titled ``wanted``); return it.

        A menu that stays the same for ``settle`` seconds without it is, when it has a title
        and ``may_leave``, left with ESC (once) (vesamenu: up from the submenu it opened in, the
        countdown restarting at the top). Otherwise the highlight is
        walked down and then up through the menu: a menu may be drawn incompletely on a serial
        line (GRUB 2.06 under QEMU cut an entry short in its first draw, reproducibly), and
        every move redraws the rows it leaves and enters, which repairs them (and scrolls long
        menus).
        """
        what = f"menu entry {label!r}"

        def found(menu: Menu) -> bool:
            inside = titled and menu.title is not None and matches(menu.title, wanted)
            return menu.highlighted is not None and (menu.find(wanted) is not None or inside)

        escaped = False
        menu = self.console.screen.menu()
        while True:  # until the menu has stayed the same for `settle` seconds
            shown = menu

            def found_or_changed(m: Menu, shown: Menu = shown) -> bool:
                return found(m) or m != shown

            menu = self._wait_screen_briefly(found_or_changed, deadline, settle, what)
            if found(menu):
                return menu
            if menu != shown or menu.highlighted is None:
                continue
            if menu.title is None or escaped or not may_leave:
                break
            log.info(
                "%s: no %s in the menu on screen (%s); ESC to the menu above", self.console.node,
                what, menu, extra=self.console.log_extra,
            )  # fmt: skip
            escaped = True
            self.console.screen.reset()  # the menu above is drawn on a cleared screen
            self.console.send_key("esc")
            menu = self.console.screen.menu()
        log.info(
            "%s: no %s in the menu on screen (%s); walking the menu", self.console.node, what, menu,
            extra=self.console.log_extra,
        )  # fmt: skip
        current = menu.highlighted
        assert current is not None  # the loop above ends on a menu with a highlight
        for key in ("down", "up"):
            for _ in range(64):
                self.console.send_key(key)
                moved = _moved_from(current.row)
                menu = self._wait_screen_briefly(moved, deadline, settle, "the highlight to move")
                menu = self._wait_screen_briefly(found, deadline, 0.5, what)  # text completes
                if menu.highlighted is None:
                    menu = self._redraw_highlight(key, deadline, settle, what)
                if found(menu):
                    return menu
                here = menu.highlighted
                assert here is not None  # _redraw_highlight returns a menu with a highlight
                at_end = here.row == current.row or (here.row > current.row) != (key == "down")
                current = here
                if at_end:
                    break  # the end of the menu, or it wrapped around
        raise self.console.error(MenuError, f"no {what} in the menu: {menu}")

    def _wait_screen_briefly(
        self, predicate: Callable[[Menu], bool], deadline: Deadline, seconds: float, what: str
    ) -> Menu:
        """The menu once ``predicate`` holds or ``seconds`` passed (bounded by ``deadline``)."""
        try:
            return self.wait_screen(predicate, deadline.within(seconds), what)
        except ConsoleTimeout:
            menu = self.console.screen.menu()
            self.console.check_waiting(f"{what} (menu on screen: {menu or 'none'})", deadline)
            return menu


def _one_highlight(menu: Menu) -> bool:
    """Predicate: exactly one entry highlighted."""
    return menu.highlighted is not None


def _highlight_on(row: int) -> Callable[[Menu], bool]:
    """Predicate: one entry highlighted, the one on ``row``."""

    def on(menu: Menu) -> bool:
        return menu.highlighted is not None and menu.highlighted.row == row

    return on


def _moved_from(row: int) -> Callable[[Menu], bool]:
    """Predicate: one entry highlighted, and not the one on ``row``."""

    def moved(menu: Menu) -> bool:
        return menu.highlighted is not None and menu.highlighted.row != row

    return moved
