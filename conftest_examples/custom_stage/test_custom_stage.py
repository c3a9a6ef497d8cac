"""The custom stage ran during the bring-up, before controller-0 was unlocked."""


def test_label_from_the_custom_stage(stx_simplex):
    labels = stx_simplex.system("host-label-list controller-0")
    assert "openstack-control-plane" in labels
    stages = [(r.node, r.stage) for r in stx_simplex.bringup.recorder.records]
    assert stages.index(("controller-0", "openstack_labels")) < stages.index(
        ("controller-0", "unlock")
    )
