"""The ``stx-lab`` command line.

Each subcommand is added by a small ``_add_<name>`` function; the work itself lives in the
layer modules, imported inside the handlers so that ``stx-lab host-setup`` runs with the
standard library alone on a host that has nothing installed yet.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pytest_starlingx.errors import StxError
from pytest_starlingx.model import DEFAULT_RELEASE, RELEASES, LabSpec
from pytest_starlingx.settings import DEFAULT_LIBVIRT_URI

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
URI_HELP = f"libvirt connection URI (default {DEFAULT_LIBVIRT_URI})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``stx-lab``; returns the process exit status."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    remote: list[str] = []
    if words[:1] == ["ssh"] and "--" in words:  # the words after -- are the remote command's
        cut = words.index("--")
        words, remote = words[:cut], words[cut + 1 :]
    args, extra = parser.parse_known_args(words)
    if extra:
        hint = " (the command to run goes after --)" if args.command == "ssh" else ""
        parser.error(f"unrecognized arguments: {' '.join(extra)}{hint}")
    args.remote = remote
    try:
        return int(args.handler(args))
    except StxError as exc:
        print(f"stx-lab {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"stx-lab {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="stx-lab", description="Bring up, inspect and remove StarlingX labs."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands = (
        _add_validate, _add_show, _add_doctor, _add_host_setup, _add_up, _add_down, _add_list,
        _add_console, _add_ssh, _add_env, _add_export, _add_golden, _add_snapshot, _add_gc,
        _add_image_cache, _add_sim,
    )  # fmt: skip
    for add in commands:
        add(sub)
    return parser


# argparse has no public name for the object add_subparsers() returns.
Subparsers = argparse._SubParsersAction


def _add_validate(sub: Subparsers) -> None:
    p = sub.add_parser("validate", help="check lab description files; exit 2 when one is invalid")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(handler=_validate)


def _add_show(sub: Subparsers) -> None:
    p = sub.add_parser("show", help="show a resolved lab (a YAML file or a topology name)")
    p.add_argument("lab", metavar="FILE|TOPOLOGY")
    p.set_defaults(handler=_show)


def _add_doctor(sub: Subparsers) -> None:
    p = sub.add_parser("doctor", help="check that this host can run labs, with a fix per problem")
    p.add_argument(
        "--uri", action="append", default=None,
        help=f"libvirt connection URI (default {DEFAULT_LIBVIRT_URI}); given twice or more, "
        "each host of a multi-host lab is checked through libvirt alone",
    )  # fmt: skip
    p.set_defaults(handler=_doctor)


def _add_host_setup(sub: Subparsers) -> None:
    p = sub.add_parser(
        "host-setup", help="install the Debian packages labs need and start libvirt (root)"
    )
    p.set_defaults(handler=_host_setup)


def _add_up(sub: Subparsers) -> None:
    p = sub.add_parser("up", help="bring a lab up on its backend and leave it running")
    p.add_argument("lab", metavar="FILE|TOPOLOGY")
    p.add_argument("--uri", default=None, help=URI_HELP)
    p.add_argument("--resume", metavar="LAB_ID", help="go on with a lab whose bring-up stopped")
    p.add_argument("--artifacts", type=Path, help="where console transcripts go")
    p.add_argument(
        "--golden",
        action="store_true",
        help="restore the lab's golden snapshot, or build the lab and make it golden",
    )
    p.add_argument(
        "--stage-snapshots",
        action="store_true",
        help="snapshot after each stage (resume from the last good one, jump back)",
    )
    p.set_defaults(handler=_up)


def _add_golden(sub: Subparsers) -> None:
    p = sub.add_parser("golden", help="golden labs: provisioned once, restored in seconds")
    golden = p.add_subparsers(dest="golden_command", required=True, metavar="ACTION")
    golden.add_parser("list", help="every golden lab on this host").set_defaults(
        handler=_golden_list
    )
    rm = golden.add_parser("rm", help="remove a golden lab by key, or all of them")
    rm.add_argument("key", metavar="KEY|all")
    rm.add_argument("--uri", default=None, help="libvirt connection URI")
    rm.set_defaults(handler=_golden_rm)


def _add_image_cache(sub: Subparsers) -> None:
    p = sub.add_parser(
        "image-cache", help="a libvirt host's cache of uploaded images (remote-files labs)"
    )
    cache = p.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    clear = cache.add_parser("clear", help="remove the cache, unless a domain uses it")
    clear.add_argument("--uri", default=None, help=URI_HELP)
    clear.set_defaults(handler=_image_cache_clear)


def _add_snapshot(sub: Subparsers) -> None:
    p = sub.add_parser("snapshot", help="per-stage snapshots of a lab (up --stage-snapshots)")
    snap = p.add_subparsers(dest="snapshot_command", required=True, metavar="ACTION")
    ls = snap.add_parser("list", help="the lab's stage snapshots")
    ls.add_argument("lab", metavar="LAB_ID|NAME")
    ls.add_argument("--uri", default=None, help="libvirt connection URI")
    ls.set_defaults(handler=_snapshot_list)
    rev = snap.add_parser("revert", help="put the lab back to a stage snapshot")
    rev.add_argument("lab", metavar="LAB_ID|NAME")
    rev.add_argument("name", metavar="NAME", help="a snapshot, a stage key or e.g. bootstrapped")
    rev.add_argument("--uri", default=None, help="libvirt connection URI")
    rev.set_defaults(handler=_snapshot_revert)


def _add_sim(sub: Subparsers) -> None:
    p = sub.add_parser("sim", help="the StarlingX simulator guest (an installer ISO)")
    sim = p.add_subparsers(dest="sim_command", required=True, metavar="ACTION")
    b = sim.add_parser("build", help="build stx-sim.iso from Debian packages (cached)")
    b.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="also leave the ISO at DIR/stx-sim.iso")  # fmt: skip
    b.add_argument("--release", choices=list(RELEASES), default=DEFAULT_RELEASE,
                   help=f"the StarlingX release to be (default {DEFAULT_RELEASE})")  # fmt: skip
    b.set_defaults(handler=_sim_build)


def _add_down(sub: Subparsers) -> None:
    p = sub.add_parser("down", help="remove a lab: by id, by name, or by its lab file")
    p.add_argument("lab", metavar="LAB_ID|NAME|FILE")
    p.add_argument("--uri", default=None, help=URI_HELP)
    p.add_argument("--force", action="store_true", help="remove it even if a live process holds it")
    p.set_defaults(handler=_down)


def _add_list(sub: Subparsers) -> None:
    p = sub.add_parser(
        "list", help="every lab on this host: owner, age, kept or not, state, leases"
    )
    p.add_argument("--uri", default=None, help=URI_HELP)
    p.set_defaults(handler=_list)


def _add_gc(sub: Subparsers) -> None:
    p = sub.add_parser(
        "gc",
        help="remove labs whose owning process is gone and that were not kept (never touches "
        "objects without our owner record)",
    )
    p.add_argument("--uri", default=None, help=URI_HELP)
    p.add_argument("--dry-run", action="store_true", help="only say what would be removed")
    p.set_defaults(handler=_gc)


def _add_console(sub: Subparsers) -> None:
    p = sub.add_parser("console", help="watch a node's serial console (--write to type on it)")
    p.add_argument("lab", metavar="LAB_ID|NAME|FILE")
    p.add_argument("node", metavar="NODE", help="e.g. controller-0")
    p.add_argument("--write", action="store_true", help="attach and type (Ctrl-] leaves)")
    p.add_argument("--uri", default=None, help=URI_HELP)
    p.set_defaults(handler=_console)


def _add_ssh(sub: Subparsers) -> None:
    p = sub.add_parser(
        "ssh",
        help="log in as sysadmin (the floating address, or a controller's own), or run CMD",
        usage="stx-lab ssh [-h] [--uri URI] LAB [NODE] [-- CMD...]",
        description="SSH to a lab from this host, with the sysadmin password saved with the lab "
        "(never on a command line). Without CMD an interactive shell; with CMD (after --) its "
        "output, and its exit status as stx-lab's (CMD gets no input).",
    )
    p.add_argument("lab", metavar="LAB_ID|NAME|FILE")
    p.add_argument(
        "node", nargs="?", metavar="NODE",
        help="a controller (its own OAM address); default: the floating address",
    )  # fmt: skip
    p.add_argument("--uri", default=None, help=URI_HELP)
    p.set_defaults(handler=_ssh)


def _add_env(sub: Subparsers) -> None:
    p = sub.add_parser(
        "env", help="shell exports for a lab's endpoints on this host (OS_*, SYSTEM_URL, ports)"
    )
    p.add_argument("lab", metavar="LAB_ID|NAME|FILE")
    p.add_argument("--uri", default=None, help=URI_HELP)
    p.set_defaults(handler=_env)


def _add_export(sub: Subparsers) -> None:
    p = sub.add_parser("export", help="the lab as another tool's lab configuration, on stdout")
    p.add_argument("lab", metavar="LAB_ID|NAME|FILE")
    p.add_argument(
        "--format", dest="form", choices=["starlingx-test"], default="starlingx-test",
        help="starlingx-test: a starlingx/test config/lab/files/*.json5 (the default)",
    )  # fmt: skip
    p.add_argument("--uri", default=None, help=URI_HELP)
    p.set_defaults(handler=_export)


def _env(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import env

    return env(args.lab, args.uri)


def _export(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import export

    return export(args.lab, args.uri)  # starlingx-test, the one format


def _ssh(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import ssh

    return ssh(args.lab, args.node, args.remote, args.uri)


def _console(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import console

    return console(args.lab, args.node, args.write, args.uri)


def _up(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import up

    return up(args.lab, args.uri, args.resume, args.artifacts, args.golden, args.stage_snapshots)


def _golden_list(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import golden_list

    return golden_list()


def _golden_rm(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import golden_rm

    return golden_rm(args.key, args.uri)


def _image_cache_clear(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import image_cache_clear

    return image_cache_clear(args.uri)


def _snapshot_list(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import snapshot_list

    return snapshot_list(args.lab, args.uri)


def _snapshot_revert(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import snapshot_revert

    return snapshot_revert(args.lab, args.name, args.uri)


def _down(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import down

    return down(args.lab, args.uri, args.force)


def _list(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import list_labs

    return list_labs(args.uri)


def _gc(args: argparse.Namespace) -> int:
    from pytest_starlingx.commands import collect_garbage

    return collect_garbage(args.uri, args.dry_run)


def _validate(args: argparse.Namespace) -> int:
    from pytest_starlingx.errors import LabConfigError
    from pytest_starlingx.labfile import load_lab

    status = EXIT_OK
    for path in args.files:
        try:
            lab = load_lab(path)
        except LabConfigError as exc:
            print(exc, file=sys.stderr)
            status = EXIT_USAGE
        else:
            nodes = f"{len(lab.nodes)} node{'s' if len(lab.nodes) > 1 else ''}"
            print(f"{path}: ok ({lab.topology.value} lab {lab.name!r}, {nodes})")
    return status


def _show(args: argparse.Namespace) -> int:
    from pytest_starlingx.errors import LabConfigError
    from pytest_starlingx.labfile import lab_from_mapping, load_lab
    from pytest_starlingx.labshow import describe_lab
    from pytest_starlingx.model import Topology

    topologies = [t.value for t in Topology]
    try:
        if args.lab in topologies:
            lab = lab_from_mapping({"topology": args.lab}, source=args.lab)
        elif not Path(args.lab).exists() and not args.lab.endswith((".yaml", ".yml")):
            print(
                f"{args.lab}: neither a lab file nor a topology ({', '.join(topologies)})",
                file=sys.stderr,
            )
            return EXIT_USAGE
        else:
            lab = load_lab(args.lab)
    except LabConfigError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    if not lab.multi_host:
        print(describe_lab(lab))
        return EXIT_OK
    return _show_placed(lab)


def _show_placed(lab: LabSpec) -> int:
    """A multi-host lab with its placement, from what each host has free now."""
    from pytest_starlingx.host.capacity import HostFree, hosts_free
    from pytest_starlingx.labshow import describe_lab
    from pytest_starlingx.placement import place

    free: list[HostFree] = []
    try:
        free = hosts_free(lab.hosts)
        placement = place(lab.nodes, free)
    except StxError as exc:
        print(describe_lab(lab, None, free))
        print(f"stx-lab show: cannot place the nodes: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print(describe_lab(lab, placement, free))
    return EXIT_OK


def _doctor(args: argparse.Namespace) -> int:
    from pytest_starlingx.host.doctor import run_checks, run_host_checks

    uris = args.uri or [DEFAULT_LIBVIRT_URI]
    checks = run_checks(uris[0]) if len(uris) == 1 else run_host_checks(uris)
    for check in checks:
        print(check.line())
    return EXIT_FAILED if any(c.ok is False for c in checks) else EXIT_OK


def _sim_build(args: argparse.Namespace) -> int:
    from pytest_starlingx.sim.build import build

    print(build(out=args.out, release=args.release))
    return EXIT_OK


def _host_setup(args: argparse.Namespace) -> int:
    from pytest_starlingx.host.setup import host_setup

    for line in host_setup():
        print(line)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
