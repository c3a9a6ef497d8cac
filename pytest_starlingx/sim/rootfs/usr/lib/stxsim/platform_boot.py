"""stx-platform-boot: run by init (in the background) at every boot of an installed node.

* bootstrapped controller-0 (the sysinv database exists): mgmt addresses, sysinv-api, boot
  service; after an unlock, the services come up and the host turns enabled/available (or
  failed with the `enable_fail` knob, see mtce.py);
* any other installed node (agent state exists): DHCP on the mgmt NIC, then the host agent;
* a controller not bootstrapped yet: nothing.
`--bootstrap CONFIG OWNER` is bootstrap's privileged half (see bootstrap_apply).
"""

from __future__ import annotations

import os
import sys
import time

from stxsim import agent, bootstrap_apply, controller, env, mtce, sysops
from stxsim.sysinv import db


def _mount_platform_fs() -> None:
    """The platform filesystem comes up PLATFORM_FS (the `platform_fs` knob) x slow into the
    boot: rc.sysinit's stand-in over /opt/platform goes, and the admin keyring on it is
    readable again."""
    time.sleep(env.scaled(float(env.knobs().get("platform_fs", env.PLATFORM_FS))))
    with open("/proc/mounts", encoding="utf-8") as mounts:
        hidden = any(line.split()[1] == "/opt/platform" for line in mounts)
    if hidden or not env.is_guest():
        sysops.system("umount", "/opt/platform")


def _controller0() -> None:
    _mount_platform_fs()
    controller.start_services()
    with db.transaction() as data:
        c0 = db.first(data, "hosts", hostname="controller-0")
        unlocked = c0["administrative"] == "unlocked"
        c0["booted_at"] = time.time()
        if unlocked:
            db.touch(c0, operational="disabled", availability="intest", task="Booting")
        else:
            db.touch(c0, operational="disabled", availability="online", task=None)
    if not unlocked:
        return

    def set_state(**state: object) -> None:
        with db.transaction() as data:
            db.touch(db.first(data, "hosts", hostname="controller-0"), **state)

    if not mtce.enable(set_state):
        return
    with db.transaction() as data:
        db.touch(db.first(data, "hosts", hostname="controller-0"), invprovision="provisioned")
        apply_at = time.time() + env.scaled(float(env.knobs().get("app_apply", env.APP_APPLY)))
        for app in data.get("apps", []):
            if app["status"] == "uploaded" and app["name"] == "platform-integ-apps":
                app.setdefault("apply_at", apply_at)
                # sysinv raises 750.004 as the apply starts (fm alarm-list)
                app.setdefault("alarm", {"uuid": db.new_uuid(), "raised": db.now_fm()})


def main(argv: list[str]) -> int:
    """Bring the platform up for this boot; 1 with a message on failure."""
    try:
        if argv[:1] == ["--bootstrap"]:
            return bootstrap_apply.main(argv[1:])
        if db.exists():
            _controller0()
        elif os.path.exists(env.path(agent.STATE)):
            sysops.hook("dhcp-client", env.boot_info()["mgmt_if"])
            return agent.run_installed()
    except (RuntimeError, OSError, KeyError) as exc:
        print(f"stx-platform-boot: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0
