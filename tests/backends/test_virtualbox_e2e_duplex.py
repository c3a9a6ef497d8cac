"""End to end on the VirtualBox backend: the duplex example suite, unchanged, through the
VBoxManage emulator."""

from __future__ import annotations

from vbox_helpers import emulator, run_example_suite, vbox_env  # noqa: F401


def test_duplex_example_suite_on_virtualbox(vbox_env, pytester):  # noqa: F811
    run_example_suite(vbox_env, pytester, "duplex", passed=2)
