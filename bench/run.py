"""Benchmarks on the simulator: golden restore vs fresh, plugin overhead, standard vs simplex.

    python bench/run.py [--quick]

Runs, in one process, side by side: a fresh simplex bring-up; the same lab made golden and
restored (to a usable lab: reverted, clock set, logged in, all hosts available); the plugin's
overhead on that bring-up; and (without ``--quick``) a standard lab (2 controllers + 2
workers) brought up with parallel secondaries and with one stage at a time. Also the
simulator's own figures: power-on to boot menu, simplex power-on to available, RSS per node,
and per secondary node power-on to listed in host-list and to ``online``.
Prints small tables and a last line of ``name=value`` figures. Leaves no lab behind (the
golden lab it made is removed). Not part of the test run; never imported by the package.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import re
import resource
import time
from datetime import datetime
from pathlib import Path
from tempfile import mkdtemp

from pytest_starlingx.backends import make_backend
from pytest_starlingx.console import LOGIN, PROMPT
from pytest_starlingx.errors import StxError
from pytest_starlingx.lab import Lab, create_lab, destroy_lab
from pytest_starlingx.labfile import lab_from_mapping
from pytest_starlingx.lifecycle.acquire import How, Lifecycle, Policy
from pytest_starlingx.lifecycle.golden import GoldenRecord, remove_golden
from pytest_starlingx.text_table import render_table

log = logging.getLogger("bench")
_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) (\||>>) ?(.*)$")
_WAITING = re.compile(f"(?:{PROMPT}|{LOGIN})\\s*$")


def transcript(path: Path) -> list[tuple[float, str, str]]:
    """(epoch seconds, kind, text) per transcript line; kind is ``|`` (output) or ``>>``."""
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        match = _LINE.match(raw)
        if match:
            stamp = datetime.fromisoformat(match.group(1)).timestamp()
            lines.append((stamp, match.group(2), match.group(3)))
    return lines


def plugin_wait(lab: Lab, start: float, end: float) -> float:
    """Seconds in [start, end] during which controller-0's console sat at a prompt.

    A prompt (shell or login) means the guest has finished and waits for the plugin; the time
    until the next output is the plugin's (its thinking, and its poll intervals). An upper
    bound of the plugin's share: a poll interval while the guest works elsewhere counts too.
    """
    path = lab.bringup.consoles["controller-0"].transcript_path
    assert path is not None
    out = [(t, text) for t, kind, text in transcript(path) if kind == "|"]
    waited = 0.0
    for (t0, text), (t1, _) in itertools.pairwise(out):
        if _WAITING.search(text):
            lo, hi = max(t0, start), min(t1, end)
            waited += max(0.0, hi - lo)
    return waited


def menu_seconds(lab: Lab) -> float | None:
    """Power-on (start of controller-0's install stage) to its boot menu on the console."""
    install = next(r for r in lab.bringup.recorder.records if r.key == "controller-0:install")
    path = lab.bringup.consoles["controller-0"].transcript_path
    assert path is not None
    begin = lab.bringup.recorder.origin_wall + install.started
    for stamp, kind, text in transcript(path):
        if kind == "|" and "Install" in text and stamp >= begin:
            return stamp - begin
    return None


#: What a network-booted node without a personality shows (metal pxe-network-installer
#: ``default``, drawn by pxelinux just after the firmware's DHCP lease, which lists the node).
LISTED = "Please configure the personality for this node"


def secondary_seconds(lab: Lab) -> dict[str, tuple[float, float]]:
    """Per secondary node: seconds from its power-on to listed in host-list (its console's
    waiting screen) and to ``online`` (the end of its install stage)."""
    rec = lab.bringup.recorder
    records = {r.key: r for r in rec.records}
    found = {}
    for node in lab.nodes:
        power_on = records.get(f"{node}:power-on")
        install = records.get(f"{node}:install")
        path = lab.bringup.consoles[node].transcript_path
        if power_on is None or install is None or install.duration is None or path is None:
            continue
        begin = rec.origin_wall + power_on.started
        listed = next((t for t, kind, text in transcript(path)
                       if kind == "|" and LISTED in text and t >= begin), None)  # fmt: skip
        if listed is not None:
            found[node] = (listed - begin, rec.origin_wall + install.ended - begin)
    return found


def rss_mib(lab: Lab) -> dict[str, int]:
    """Resident memory of each node's QEMU process (libvirt's pid file), MiB."""
    sizes = {}
    for node in lab.nodes:
        name = lab.handle.domain_name(node)  # type: ignore[attr-defined]
        try:
            pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text())
            status = Path(f"/proc/{pid}/status").read_text()
        except (OSError, ValueError):
            continue
        kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
        sizes[node] = kib // 1024
    return sizes


def fresh(spec_map: dict, artifacts: Path, max_parallel: int | None = None) -> dict:
    """Bring a lab up from blank VMs, measure, remove it."""
    spec = lab_from_mapping(spec_map, source="bench")
    backend = make_backend("libvirt")
    lab = create_lab(spec, backend, artifacts)
    if max_parallel is not None:
        lab.max_parallel = max_parallel
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.monotonic()
    try:
        lab.provision()
        wall = time.monotonic() - started
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        rec = lab.bringup.recorder
        path = rec.critical_path()
        first, last = path[0], path[-1]
        start_w, end_w = rec.origin_wall + first.started, rec.origin_wall + last.ended
        result = {
            "wall": wall,
            "cpu": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            "critical": end_w - start_w,
            "plugin_wait": plugin_wait(lab, start_w, end_w),
            "menu": menu_seconds(lab),
            "rss": rss_mib(lab),
            "secondaries": secondary_seconds(lab),
            "parallel": lab.max_parallel,
            "table": rec.table(),
        }
    finally:
        lab.close()
        destroy_lab(backend, lab.lab_id)
    return result


def golden(spec_map: dict, artifacts: Path) -> dict:
    """Build the golden lab, release it, restore it; the golden lab is removed at the end."""
    spec = lab_from_mapping(spec_map, source="bench")
    backend = make_backend("libvirt")
    lifecycle = Lifecycle(Policy(golden=True, purpose="bench"))
    built = lifecycle.bring_up(spec, backend, artifacts / "build")
    if built.how is not How.MADE_GOLDEN:
        raise SystemExit(f"bench: a golden lab for this key already existed ({built.how})")
    lifecycle.release(built, backend)
    try:
        restored = lifecycle.bring_up(spec, backend, artifacts / "restore")
        assert restored.how is How.RESTORED, restored
        rss = rss_mib(restored.lab)
        lifecycle.release(restored, backend)
    finally:
        lifecycle.close()
        record = GoldenRecord.load(built.golden_key or "")
        if record is not None:
            remove_golden(record, backend)
    return {"build": built.seconds, "restore": restored.seconds, "rss": rss}


def machine() -> str:
    """CPU model, cores, memory, load and other guests running: where the figures came from."""
    model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                  .splitlines() if ln.startswith("model name")), "?")  # fmt: skip
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 // 1024
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return f"{model}, {os.cpu_count()} cores, {mem} GiB, load {load}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="simplex only (no standard lab)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    for name in ("pytest_starlingx.lifecycle.golden", "pytest_starlingx.backend"):
        logging.getLogger(name).setLevel(logging.INFO)  # restore and snapshot timings
    out = Path(mkdtemp(prefix="stx-bench-"))
    print(f"machine: {machine()}\nartifacts: {out}", flush=True)
    simplex = {"topology": "simplex", "name": "bench"}
    sx = fresh(simplex, out / "simplex")
    print(sx["table"], flush=True)
    gd = golden({**simplex, "name": "bgold"}, out / "golden")
    figures = {
        "simplex_fresh_s": sx["wall"],
        "golden_build_s": gd["build"],
        "golden_restore_s": gd["restore"],
        "golden_speedup": sx["wall"] / gd["restore"],
        "critical_path_s": sx["critical"],
        "guest_s": sx["critical"] - sx["plugin_wait"],
        "plugin_wait_s": sx["plugin_wait"],
        "overhead_ratio": sx["wall"] / (sx["critical"] - sx["plugin_wait"]),
        "plugin_cpu_s": sx["cpu"],
        "plugin_cpu_share": sx["cpu"] / sx["wall"],
        "menu_s": sx["menu"] or float("nan"),
        "simplex_rss_mib": max(sx["rss"].values(), default=0),
    }
    rows = [["simplex fresh (power-on to available)", f"{sx['wall']:.1f}"],
            ["golden build (fresh + snapshot)", f"{gd['build']:.1f}"],
            ["golden restore to usable lab", f"{gd['restore']:.1f}"],
            ["plugin waits at a prompt on the critical path", f"{sx['plugin_wait']:.1f}"],
            ["plugin CPU time during the bring-up", f"{sx['cpu']:.1f}"],
            ["power-on to boot menu", f"{figures['menu_s']:.1f}"]]  # fmt: skip
    print(render_table(["measure", "seconds"], rows), flush=True)
    if not args.quick:
        standard = {"topology": "standard", "name": "bstd", "workers": 2}
        try:
            par = fresh(standard, out / "standard-parallel")
            print(par["table"], flush=True)
            seq = fresh({**standard, "name": "bseq"}, out / "standard-serial", max_parallel=1)
            print(seq["table"], flush=True)
        except StxError as exc:
            print(f"standard lab failed: {str(exc).splitlines()[0]}", flush=True)
            return finish(figures, rows, sx, gd, 1)
        figures |= {
            "standard_s": par["wall"],
            "standard_serial_s": seq["wall"],
            "standard_vs_simplex": par["wall"] / sx["wall"],
            "standard_serial_vs_simplex": seq["wall"] / sx["wall"],
            "standard_parallel_cap": par["parallel"],
            "standard_node_rss_mib": max(par["rss"].values(), default=0),
            "secondary_listed_s": max((v[0] for v in par["secondaries"].values()), default=0.0),
            "secondary_online_s": max((v[1] for v in par["secondaries"].values()), default=0.0),
        }
        rows += [[f"standard 2+2, parallel (cap {par['parallel']})", f"{par['wall']:.1f}"],
                 ["standard 2+2, one stage at a time", f"{seq['wall']:.1f}"]]  # fmt: skip
        rows += [[f"{node}: power-on to listed / to online", f"{listed:.1f} / {online:.1f}"]
                 for node, (listed, online) in par["secondaries"].items()]  # fmt: skip
    return finish(figures, rows, sx, gd, 0)


def finish(figures: dict, rows: list, sx: dict, gd: dict, status: int) -> int:
    """The table, the machine after the run, and the line of figures."""
    print(render_table(["measure", "seconds"], rows))
    print("rss MiB per node:", sx["rss"], "restored golden:", gd["rss"])
    print(f"machine after: {machine()}")
    print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}"
                   for k, v in figures.items()))  # fmt: skip
    return status


if __name__ == "__main__":
    raise SystemExit(main())
