"""Run with ``--stx-config conftest_examples/config_file/lab.yaml``: the file shapes the lab."""


def test_lab_comes_from_the_file(stx_simplex):
    assert stx_simplex.name == "cfg"
    assert stx_simplex.spec.node("controller-0").memory_mib == 640


def test_stage_from_the_file_ran(stx_simplex):
    networks = stx_simplex.system("datanetwork-list")
    assert "physnet0" in networks
    assert "physnet1" in networks
