"""Add a provisioning stage of our own: labels on controller-0 before it is unlocked."""

from pytest_starlingx import stx_stage


@stx_stage(after="controller-0-configured", before="controller-0-unlocked")
def openstack_labels(lab):
    lab.system("host-label-assign controller-0 openstack-control-plane=enabled")
