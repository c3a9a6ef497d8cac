"""A simplex smoke suite, as a StarlingX tester writes it against ``stx_simplex``."""


def test_controller_is_available(stx_simplex):
    (host,) = stx_simplex.host_list()
    assert (host.hostname, host.personality) == ("controller-0", "controller")
    assert (host.administrative, host.operational, host.availability) == (
        "unlocked",
        "enabled",
        "available",
    )


def test_host_show_reports_an_all_in_one_controller(stx_simplex):
    from pytest_starlingx.system_output import parse_properties

    show = parse_properties(stx_simplex.system("host-show controller-0"))
    assert show["personality"] == "controller"
    assert show["subfunctions"] == "controller,worker"


def test_a_command_on_the_node(stx_simplex):
    result = stx_simplex.node("controller-0").run("hostname")
    assert result.exit_status == 0
    assert result.stdout.strip() == "controller-0"


def test_a_failing_command_reports_its_status(stx_simplex):
    result = stx_simplex.controller.run("ls /no/such/dir")
    assert result.exit_status != 0
    assert "No such file or directory" in result.stdout
