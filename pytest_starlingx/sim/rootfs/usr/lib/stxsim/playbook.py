"""`ansible-playbook .../bootstrap.yml`: the bootstrap play, as Ansible prints it.

The play validates `$HOME/localhost.yml` (or `<override_files_dir>/localhost.yml`), then runs
the privileged work once through `sudo -S` with `ansible_become_pass` (as Ansible's become
does), while printing TASK lines over the simulated duration. Exit status: 0 on success,
2 when a task fails (Ansible's "one or more hosts failed"), 1 on a usage error.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
import tempfile
import time

from stxsim import env, sysops
from stxsim.bootstrap_config import ConfigError, load

PLAYBOOK = "/usr/share/ansible/stx-ansible/playbooks/bootstrap.yml"
#: Installed by the keystone package; store-passwd reads the admin password's rule from it.
PASSWORD_RULES = "/etc/keystone/password-rules.conf"

# (task title, result) in order; "apply" marks where the privileged work happens.
TASKS = (
    ("Gathering Facts", "ok"),
    ("bootstrap/prepare-env : Look for override backup file in the backup tarball", "skipping"),
    ("bootstrap/prepare-env : Read in local host overrides", "ok"),
    ("bootstrap/validate-config : Validate provided configuration", "validate"),
    ("bootstrap/validate-config : Check system mode and OAM addresses", "ok"),
    ("bootstrap/validate-config : Validate DNS servers", "ok"),
    # roles/bootstrap/store-passwd (ansible-playbooks r/stx.9.0 and r/stx.10.0)
    ("bootstrap/store-passwd : Validate admin password", "ok"),
    (
        "bootstrap/store-passwd : Fail if provided admin password does not meet required "
        "complexity",
        "password",
    ),
    ("bootstrap/store-passwd : Store admin password", "changed"),
    ("bootstrap/prepare-env : Set hostname", "changed"),
    # roles/bootstrap/bringup-essential-services/tasks/setup_default_route.yml (ansible-playbooks
    # r/stx.10.0; there after persist-config): `ip route replace default via <OAM gateway>`.
    ("bootstrap/bringup-essential-services : Check if the default route exists", "ok"),
    ("bootstrap/bringup-essential-services : Configure the default route", "route"),
    ("bootstrap/persist-config : Saving config in sysinv database", "apply"),
    ("bootstrap/persist-config : Write platform config and openrc", "changed"),
    ("bootstrap/bringup-essential-services : Bring up sysinv and the boot service", "changed"),
    ("bootstrap/apply-bootstrap-manifest : Applying puppet bootstrap manifest", "fail_point"),
    # roles/common/push-docker-images (ansible-playbooks r/stx.10.0): a script task with
    # `retries: 10`, `delay: 5`; the simulator has no registry to pull from unless told it has.
    ("common/push-docker-images : Download images and push to local registry", "images"),
    ("bootstrap/bringup-kubemaster : Initializing Kubernetes master", "changed"),
    ("bootstrap/bringup-essential-services : Add host route to mgmt network", "skipping"),
    ("bootstrap/bringup-bootstrap-applications : Upload platform applications", "changed"),
    ("bootstrap/bringup-essential-services : Mark the bootstrap as completed", "changed"),
)


def banner(text: str) -> str:
    """Ansible's `TITLE *****` line, 80 columns wide."""
    return f"{text} {'*' * max(3, 79 - len(text))}"


class Play:
    """Counts results and prints them in Ansible's format."""

    def __init__(self) -> None:
        self.counts = {
            "ok": 0,
            "changed": 0,
            "unreachable": 0,
            "failed": 0,
            "skipped": 0,
            "rescued": 0,
            "ignored": 0,
        }

    def task(self, title: str) -> None:
        print(f"\n{banner(f'TASK [{title}]')}", flush=True)

    def result(self, kind: str) -> None:
        if kind == "skipping":
            self.counts["skipped"] += 1
        else:
            self.counts["ok"] += 1
            self.counts["changed"] += kind == "changed"
        print(f"{kind}: [localhost]", flush=True)

    def fail(self, msg: str, changed: bool = False, **details: object) -> int:
        self.counts["failed"] += 1
        payload = json.dumps({"changed": changed, **details, "msg": msg})
        print(f"fatal: [localhost]: FAILED! => {payload}", flush=True)
        return self.recap()

    def recap(self) -> int:
        print(f"\n{banner('PLAY RECAP')}")
        stats = " ".join(f"{k}={v:<4}" for k, v in self.counts.items())
        print(f"{'localhost':<26} : {stats}".rstrip(), flush=True)
        return 2 if self.counts["failed"] else 0


def _extra_vars(argv: list[str]) -> tuple[str | None, dict[str, str]]:
    playbook, extra, it = None, {}, iter(argv)
    for item in it:
        if item in ("-e", "--extra-vars"):
            key, _, value = next(it, "").partition("=")
            extra[key] = value
        elif not item.startswith("-"):
            playbook = item
    return playbook, extra


def _apply(cfg: dict) -> str | None:
    """Run the privileged half once; None on success, else the failure message."""
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(cfg, f)
    argv = [
        *sysops.launcher("stx-platform-boot"),
        "--bootstrap",
        f.name,
        f"{os.getuid()}:{os.getgid()}",
    ]
    stdin = None
    if env.is_guest() and os.geteuid() != 0:
        argv = ["sudo", "-S", "-p", "", *argv]  # become: yes, with ansible_become_pass
        stdin = cfg["ansible_become_pass"] + "\n"
    try:
        proc = subprocess.run(argv, input=stdin, capture_output=True, text=True, check=False)
    finally:
        os.unlink(f.name)
    if proc.returncode == 0:
        return None
    if "incorrect password" in proc.stderr.lower() or "try again" in proc.stderr.lower():
        return "Incorrect sudo password"
    return (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]


#: Images the download names when it fails (a few of what 10.0's bootstrap pulls).
FAILED_IMAGES = ["registry.k8s.io/kube-apiserver:v1.29.2", "quay.io/calico/cni:v3.27.0"]


def _images_failed(play: Play, name: str, step: float) -> int:
    """The download task's ten retries and its failure, as Ansible and download_images.py
    (``raise Exception("Failed to download images %s" % failed_downloads)``) print them."""
    for left in range(10, 0, -1):
        print(f"FAILED - RETRYING: [localhost]: {name} ({left} retries left).", flush=True)
        time.sleep(step / 10)
    stderr = (
        "Traceback (most recent call last):\n"
        '  File "/tmp/.ansible/tmp/download_images.py", line 450, in <module>\n'
        f"Exception: Failed to download images {FAILED_IMAGES}"
    )
    return play.fail("non-zero return code", True, attempts=10, rc=1, stderr=stderr)


def _admin_password_error(password: str) -> str | None:
    """What store-passwd says of an admin password its release's keystone refuses, else None.

    As the role does: the rule is the third word of the ``password_regex`` line, the
    description what follows ``=`` on the ``password_regex_description`` line (its leading
    space kept); a password with a quote is refused too.
    """
    with open(env.path(PASSWORD_RULES), encoding="utf-8") as f:
        lines = f.read().splitlines()
    regex = next(line.split()[2] for line in lines if line.split()[:1] == ["password_regex"])
    description = next(
        line.split("=")[1] for line in lines if line.startswith("password_regex_description")
    )
    if re.match(regex, password) and "'" not in password and '"' not in password:
        return None
    return f"ADMIN_PASSWORD: {description}, excluding ' (single quote) and \" (double quote)"


def _route_error(gateway: str) -> str | None:
    """What `ip route replace default via GATEWAY` says when no address of the node is on the
    gateway's subnet (iproute2: the kernel refuses the next hop), else None. The install guides
    give the OAM interface its address first ("Verify and/or configure IP connectivity")."""
    gw = ipaddress.ip_address(gateway)
    for cidr in sysops.ipv4_addresses():
        if gw in ipaddress.ip_interface(cidr).network:
            return None
    return "Error: Nexthop has invalid gateway."


def main(argv: list[str]) -> int:
    """Run the bootstrap play."""
    playbook, extra = _extra_vars(argv)
    if playbook is None:
        print("usage: ansible-playbook [options] playbook.yml [playbook2 ...]", file=sys.stderr)
        return 1
    if os.path.normpath(playbook) != PLAYBOOK:
        print(f"ERROR! the playbook: {playbook} could not be found", file=sys.stderr)
        return 1
    overrides = os.path.join(
        extra.get("override_files_dir", os.path.expanduser("~")), "localhost.yml"
    )
    step = env.scaled(env.BOOTSTRAP) / len(TASKS)
    play = Play()
    print(f"\n{banner('PLAY [bootstrap playbook]')}", flush=True)
    cfg: dict = {}
    for title, kind in TASKS:
        play.task(title)
        time.sleep(step)
        if kind == "validate":
            try:
                cfg = load(overrides)
            except ConfigError as exc:
                return play.fail(str(exc))
            cfg.update({k: v for k, v in extra.items() if k == "ansible_become_pass"})
            kind = "ok"
        elif kind == "password":
            error = _admin_password_error(cfg["admin_password"])
            if error:
                return play.fail(error)
            kind = "skipping"
        elif kind == "route":
            gateway = cfg["external_oam_gateway_address"]
            error = _route_error(gateway)
            if error:
                cmd = f"ip route replace default via {gateway}"
                return play.fail("non-zero return code", True, cmd=cmd, rc=2, stderr=error)
            cfg["default_route"] = gateway  # set by the privileged half below
            kind = "changed"
        elif kind == "apply":
            error = _apply(cfg)
            if error:
                return play.fail(error)
            kind = "changed"
        elif kind == "images":
            if env.knob_on("images_fail"):
                return _images_failed(play, title.split(" : ", 1)[1], step)
            kind = "changed"
        elif kind == "fail_point":
            if env.knob_on("bootstrap_fail"):
                return play.fail("non-zero return code", changed=True)
            kind = "changed"
        play.result(kind)
    return play.recap()
