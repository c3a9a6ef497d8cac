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


def test_the_rest_api_from_the_host(stx_simplex):
    """keystone and sysinv as a client outside the lab reaches them: at the lab's loopback
    endpoints (``stx-lab env`` prints them for a shell)."""
    import json
    import urllib.request

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # 127.0.0.1: no proxy
    user = {
        "name": "admin",
        "domain": {"name": "Default"},
        "password": stx_simplex.passwords["admin"],
    }
    auth = {"identity": {"methods": ["password"], "password": {"user": user}},
            "scope": {"project": {"name": "admin", "domain": {"name": "Default"}}}}  # fmt: skip
    login = urllib.request.Request(
        f"{stx_simplex.endpoints['keystone'].url}/v3/auth/tokens",
        json.dumps({"auth": auth}).encode(), {"Content-Type": "application/json"},
    )  # fmt: skip
    with direct.open(login, timeout=60) as reply:
        token = reply.headers["X-Subject-Token"]
    hosts = urllib.request.Request(
        f"{stx_simplex.endpoints['sysinv'].url}/v1/ihosts", headers={"X-Auth-Token": token}
    )
    with direct.open(hosts, timeout=60) as reply:
        listed = json.load(reply)["ihosts"]
    assert [(h["hostname"], h["availability"]) for h in listed] == [("controller-0", "available")]
