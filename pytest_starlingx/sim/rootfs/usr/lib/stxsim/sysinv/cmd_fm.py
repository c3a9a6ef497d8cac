"""`fm alarm-list`: the active alarms, as fmclient lists them (starlingx/fault
python-fmclient ``v1/alarm_shell.py`` ``do_alarm_list``, r/stx.10.0).

The simulator raises one alarm: 750.004 "Application Apply In Progress" while an application
applies (sysinv ``conductor/kube_app.py`` ``_raise_app_alarm``; its attributes from fault
``fm-doc/fm_doc/events.yaml``), so an application apply can be watched as on StarlingX.
"""

from __future__ import annotations

import argparse
from typing import Any

from stxsim import table
from stxsim.sysinv import hosts
from stxsim.sysinv.hosts import CommandError
from stxsim.sysinv.registry import Ctx, arg, command

#: events.yaml 750.004: severity warning, Management_Affecting_Severity warning,
#: Degrade_Affecting_Severity none.
APPLYING = {
    "alarm_id": "750.004",
    "reason_text": "Application Apply In Progress",
    "severity": "warning",
    "mgmt_affecting": "True",
    "degrade_affecting": "False",
}


def active_alarms(ctx: Ctx) -> list[dict[str, Any]]:
    """Every alarm raised now, newest first."""
    alarms = []
    for app in ctx.data.get("apps", []):
        if "alarm" in app and hosts.app_status(app, ctx.now)[0] == "applying":
            alarms.append({**APPLYING, "uuid": app["alarm"]["uuid"],
                           "entity_instance_id": f"k8s_application={app['name']}",
                           "timestamp": app["alarm"]["raised"]})  # fmt: skip
    return sorted(alarms, key=lambda a: a["timestamp"], reverse=True)


def _query(text: str | None) -> dict[str, str]:
    """``-q key=value;...`` (fmclient ``options.cli_to_array``; equality only here)."""
    wanted = {}
    for item in filter(None, (text or "").split(";")):
        key, op, value = item.partition("=")
        if not op or not key:
            raise CommandError(f"Invalid query: {item!r}, use key=value")
        wanted[key.strip()] = value.split("::")[-1].strip()
    return wanted


@command(
    "alarm-list",
    arg("-q", "--query", metavar="<QUERY>",
        help="key[op]data_type::value; list. data_type is optional, but if supplied must be "
             "string, integer, float, or boolean."),
    arg("--uuid", action="store_true", help="Include UUID in output"),
    arg("--include_suppress", action="store_true", help="Include suppressed alarms in output"),
    arg("--mgmt_affecting", action="store_true",
        help="Include management affecting status in output"),
    arg("--degrade_affecting", action="store_true",
        help="Include degrade affecting status in output"),
    program="fm",
)  # fmt: skip
def alarm_list(ctx: Ctx, args: argparse.Namespace) -> str:
    """List all active alarms."""
    labels = ["Alarm ID", "Reason Text", "Entity ID", "Severity", "Time Stamp"]
    fields = ["alarm_id", "reason_text", "entity_instance_id", "severity", "timestamp"]
    if args.uuid:
        labels.insert(0, "UUID")
        fields.insert(0, "uuid")
    if args.mgmt_affecting:
        labels.insert(4, "Management Affecting")
        fields.insert(4, "mgmt_affecting")
    if args.degrade_affecting:
        labels.insert(5, "Degrade Affecting")
        fields.insert(5, "degrade_affecting")
    wanted = _query(args.query)
    alarms = [a for a in active_alarms(ctx) if all(a.get(k) == v for k, v in wanted.items())]
    return table.render(labels, [[alarm[f] for f in fields] for alarm in alarms])
