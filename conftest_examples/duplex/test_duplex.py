"""A duplex suite: both controllers, and a lock/unlock of the standby controller."""

import pytest


@pytest.mark.stx("duplex")
def test_both_controllers_are_available(stx_lab):
    hosts = {h.hostname: h for h in stx_lab.host_list()}
    assert set(hosts) == {"controller-0", "controller-1"}
    assert all(h.availability == "available" for h in hosts.values())


def test_lock_and_unlock_controller_1(stx_duplex):
    stx_duplex.system("host-lock controller-1")
    locked = {h.hostname: h for h in stx_duplex.host_list()}["controller-1"]
    assert locked.administrative == "locked"
    stx_duplex.system("host-unlock controller-1")
    stx_duplex.wait_available()
    again = {h.hostname: h for h in stx_duplex.host_list()}["controller-1"]
    assert (again.administrative, again.availability) == ("unlocked", "available")
