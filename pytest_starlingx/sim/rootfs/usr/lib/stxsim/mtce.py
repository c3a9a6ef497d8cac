"""Maintenance enabling an unlocked host after its boot, with auto-recovery.

starlingx/metal (r/stx.10.0): a host that fails to enable for a configuration reason shows
``unlocked | disabled | failed`` with the task ``Configuration Failed, re-enabling``
(mtce-common ``nodeBase.h`` MTC_TASK_MAIN_CONFIG_FAIL) and is enabled again after
``ar_config_interval`` (30 s, ``mtce/src/scripts/mtc.conf``); once it has failed
``ar_config_threshold`` (2) times, auto-recovery stops and it stays failed with the task
``Configuration failure, threshold reached, Lock/Unlock to retry`` (MTC_TASK_AR_DISABLED_CONFIG).
The `enable_fail=N` knob makes the host fail its first N enables (the real re-enable may also
reboot the host; this one does not).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from stxsim import env

AR_CONFIG_THRESHOLD = 2
TASK_RE_ENABLING = "Configuration Failed, re-enabling"
TASK_AR_DISABLED = "Configuration failure, threshold reached, Lock/Unlock to retry"


def enable(set_state: Callable[..., object]) -> bool:
    """Take the host from ``intest`` to ``enabled | available`` through its simulated enable
    failures; ``set_state(operational=, availability=, task=)`` records each state. False when
    it ends failed for good."""
    time.sleep(env.scaled(env.SERVICES_START))
    failures = int(env.knobs().get("enable_fail", "0"))
    for failure in range(1, failures + 1):
        if failure >= AR_CONFIG_THRESHOLD:
            set_state(operational="disabled", availability="failed", task=TASK_AR_DISABLED)
            return False
        set_state(operational="disabled", availability="failed", task=TASK_RE_ENABLING)
        time.sleep(env.scaled(env.AR_CONFIG_INTERVAL))
        set_state(operational="disabled", availability="intest", task="Testing")
        time.sleep(env.scaled(env.SERVICES_START))
    set_state(operational="enabled", availability="available", task=None)
    return True
