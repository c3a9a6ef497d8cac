"""stx-agent: the host agent of every node but controller-0 (mtce + sysinv-agent in one).

`stx-agent --pxe` (network-installing, blank disk): registers with controller-0's sysinv,
takes its personality, installs to disk and reboots. `stx-agent` (installed node, started by
stx-platform-boot): registers, heartbeats, brings services up after an unlock and reboots when
sysinv asks it to unlock.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from stxsim import client, env, inventory, mtce, sysops
from stxsim.sysinv import hosts

STATE = "/var/lib/stx/agent.json"
SYSADMIN_SHADOW = "/run/stx-sim/sysadmin.shadow"


class Agent:
    """One node's link to sysinv."""

    def __init__(self, api: str, mac: str, mode: str) -> None:
        self.api, self.mac, self.mode = api, mac, mode
        self.uuid = ""
        self.period = env.scaled(env.HEARTBEAT)

    def call(self, op: str, **payload: Any) -> dict[str, Any]:
        reply = client.post(self.api, f"/v1/agent/{op}", payload, timeout=10)
        if "etc_hosts" in reply:  # puppet's /etc/hosts, the same on every host
            hosts.write_etc_hosts(reply["etc_hosts"])
        return reply

    def register(self) -> dict[str, Any]:
        """Register (retrying while sysinv is unreachable or refuses the node)."""
        while True:
            try:
                reply = self.call(
                    "register", mac=self.mac, mode=self.mode, inventory=inventory.collect()
                )
            except (OSError, client.ApiError, ValueError):
                time.sleep(self.period)
                continue
            self.uuid = reply["host"]["uuid"]
            return reply

    def report(self, **changes: Any) -> dict[str, Any]:
        return self.call("report", uuid=self.uuid, changes=changes)

    def next_action(self) -> dict[str, Any]:
        """Heartbeat until sysinv replies with an action."""
        while True:
            time.sleep(self.period)
            try:
                reply = self.call("heartbeat", uuid=self.uuid, mode=self.mode)
            except (OSError, client.ApiError, ValueError):
                continue
            if reply["action"]:
                return reply["action"]


def _mgmt_mac() -> str:
    mgmt_if = env.boot_info()["mgmt_if"]
    with open(env.path(f"/sys/class/net/{mgmt_if}/address"), encoding="utf-8") as f:
        return f.read().strip()


def _install(agent: Agent, action: dict[str, Any]) -> int:
    """Install this node with its personality, keep the agent state, reboot."""
    state = {"api": agent.api, "uuid": agent.uuid, "mac": agent.mac}
    os.makedirs(os.path.dirname(env.path(STATE)), exist_ok=True)
    with open(env.path(STATE), "w", encoding="utf-8") as f:
        json.dump(state, f)
    if action.get("sysadmin"):  # install-to-disk puts controller-0's sysadmin entry in place
        os.makedirs(os.path.dirname(env.path(SYSADMIN_SHADOW)), exist_ok=True)
        with open(env.path(SYSADMIN_SHADOW), "w", encoding="utf-8") as f:
            f.write(action["sysadmin"])
    agent.report(install_state="installing")
    try:
        sysops.hook(
            "install-to-disk", action["personality"], action["subfunctions"], action["hostname"]
        )
    except sysops.HookError as exc:
        print(f"stx-agent: {exc}", file=sys.stderr, flush=True)
        agent.report(install_state="failed")
        return 1
    agent.report(install_state="postinstall")
    agent.report(install_state="installed")
    sysops.hook("reboot")
    return 0


def run_pxe() -> int:
    """A network-installing node (pxelinux booted it from the per-MAC file sysinv wrote once
    it had a personality): install."""
    boot = env.boot_info()
    agent = Agent(env.api_url(boot.get("server")), _mgmt_mac(), "pxe")
    reply = agent.register()
    return _install(agent, reply["action"] or agent.next_action())


def run_installed() -> int:
    """An installed node: come online, bring services up when unlocked, obey unlock."""
    with open(env.path(STATE), encoding="utf-8") as f:
        state = json.load(f)
    agent = Agent(os.environ.get("STXSIM_API") or state["api"], state["mac"], "disk")
    reply = agent.register()
    if reply["host"]["install_state"] == "booting":  # first boot after the install
        time.sleep(env.scaled(1.0))
        agent.report(install_state="completed")
    if reply["host"]["administrative"] == "unlocked":
        if reply.get("oam_address"):  # an unlocked controller-1's own OAM address
            sysops.add_address(env.boot_info()["oam_if"], reply["oam_address"])
        mtce.enable(agent.report)
    action = agent.next_action()
    if action["name"] == "unlock":
        print(f"{reply['host']['hostname']}: unlocking, rebooting into service", flush=True)
        sysops.hook("reboot")
    return 0


def main(argv: list[str]) -> int:
    """`stx-agent [--pxe]`."""
    return run_pxe() if argv[:1] == ["--pxe"] else run_installed()
