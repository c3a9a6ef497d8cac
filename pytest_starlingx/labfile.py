"""Loading and validating lab descriptions (YAML files or plain mappings).

Validation is strict and kind: every problem in a file is reported at once, each naming the
file, the line, the key path (``nodes.worker-7``), the bad value and what is allowed.
Passwords given literally are never echoed back.
"""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from pytest_starlingx.errors import LabConfigError
from pytest_starlingx.model import (
    ACTIVE_CONTROLLER,
    AVAILABLE_POINT,
    BOOTSTRAP_KEYS,
    BOOTSTRAP_MANAGED,
    DEFAULT_RELEASE,
    DEFAULT_STORAGE_NODES,
    DEFAULT_WORKERS,
    NAME_PATTERN,
    PASSWORD_USERS,
    RELEASES,
    SIM_IMAGE,
    TIMEOUT_PHASES,
    AddHosts,
    BackendKind,
    Firmware,
    HostSpec,
    LabSpec,
    MgmtSpec,
    NodeOverride,
    OamSpec,
    PasswordSource,
    Profile,
    StageSpec,
    Topology,
    Underlay,
    Uplink,
    default_host_name,
    node_names,
    password_problems,
    point_problem,
    resolve_lab,
    stage_plan,
)

Path_ = tuple[str | int, ...]

TOP_KEYS = (
    "name",
    "topology",
    "backend",
    "image",
    "release",
    "profile",
    "workers",
    "storage_nodes",
    "node_defaults",
    "nodes",
    "oam",
    "mgmt",
    "passwords",
    "timeouts",
    "timeout_factor",
    "add_hosts",
    "firmware",
    "stages",
    "bootstrap",
    "hosts",
)
STAGE_KEYS = ("name", "after", "before", "node", "system", "shell")
STAGE_NAME = re.compile(r"[a-z][a-z0-9-]{0,39}")
NODE_KEYS = ("memory_mib", "vcpus", "disks_gib")
PIN_KEY = "host"  # under nodes.<name> only: the host the node runs on
HOST_KEYS = ("name", "uri", "underlay")  # each host's own: no two hosts share one
#: Per host, an argv prefix its network commands (the tunnels' VXLAN devices) run behind.
HOST_COMMANDS_KEY = "commands"
HOST_EXAMPLE = "{name: hv1, uri: qemu+ssh://root@hv1/system, underlay: 192.0.2.11}"
HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
#: libvirt's remote transports (libvirt docs/uri.rst, "Remote URIs"); none: a local daemon.
LIBVIRT_TRANSPORTS = ("", "unix", "ssh", "libssh", "libssh2", "tcp", "tls", "ext")
#: The QEMU driver's daemons: the privileged one and a user's own (libvirt docs/drvqemu.rst).
QEMU_URI_PATHS = ("/system", "/session")
OAM_KEYS = ("subnet", "gateway", "floating", "controller_0", "controller_1", "uplink")
OAM_ADDRESS_KEYS = OAM_KEYS[1:5]
MGMT_KEYS = ("subnet",)
PASSWORD_KEYS = ("env", "value", "generate")

MIN_WORKERS = 1  # standard options run their workloads on worker nodes
MAX_WORKERS = 20
MAX_STORAGE_NODES = 8
MIN_STORAGE_NODES = 2
MEMORY_RANGE = (256, 1024 * 1024)
VCPU_RANGE = (1, 64)
DISK_RANGE = (1, 8192)
MAX_DISKS = 8
MAX_TIMEOUT_FACTOR = 100
ISO9660_MAGIC = b"CD001"
ISO9660_MAGIC_OFFSET = 0x8001  # the first volume descriptor, after the 32 KiB system area
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def load_lab(path: str | Path) -> LabSpec:
    """Read, validate and resolve the lab description in ``path``.

    Raises :class:`LabConfigError` listing every problem found.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LabConfigError([f"{path}: cannot read the lab description: {exc}"]) from exc
    return parse_lab(text, source=str(path), base_dir=path.parent, path=path)


def parse_lab(
    text: str, source: str = "<string>", base_dir: Path | None = None, path: Path | None = None
) -> LabSpec:
    """Validate and resolve a lab description given as YAML text."""
    try:
        doc = _compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise LabConfigError([f"{where}: the file is not valid YAML: {problem}"]) from None
    if doc is None:
        raise LabConfigError(
            [
                f"{source}: the file is empty; it needs at least `topology: "
                f"{'|'.join(t.value for t in Topology)}`"
            ]
        )
    checker = _Checker(source, doc.lines, base_dir or Path.cwd())
    return checker.lab(doc.value, path)


def lab_from_mapping(data: Mapping[str, Any], source: str = "<overrides>") -> LabSpec:
    """Validate and resolve a lab description given as a mapping (e.g. marker arguments)."""
    return _Checker(source, {}, Path.cwd()).lab(dict(data), None)


def _is_iso9660(path: Path) -> bool:
    """True when ``path`` carries the ISO 9660 volume descriptor signature."""
    with path.open("rb") as iso:
        iso.seek(ISO9660_MAGIC_OFFSET)
        return iso.read(len(ISO9660_MAGIC)) == ISO9660_MAGIC


# --- YAML with line numbers ------------------------------------------------------------------


@dataclass
class _Doc:
    value: Any
    lines: dict[Path_, int] = field(default_factory=dict)


def _compose(text: str) -> _Doc | None:
    """Parse YAML keeping the line of every key path; duplicate keys are errors."""
    node = yaml.compose(text, Loader=yaml.SafeLoader)
    if node is None:
        return None
    doc = _Doc(None)
    constructor = yaml.constructor.SafeConstructor()
    doc.value = _convert(node, (), doc.lines, constructor)
    return doc


def _convert(
    node: yaml.Node, path: Path_, lines: dict[Path_, int], ctor: yaml.constructor.SafeConstructor
) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = ctor.construct_object(key_node, deep=True)
            key = key if isinstance(key, str | int) else str(key)
            if key in result:
                raise yaml.MarkedYAMLError(
                    problem=f"duplicate key {key!r}", problem_mark=key_node.start_mark
                )
            lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _convert(value_node, (*path, key), lines, ctor)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_convert(item, (*path, i), lines, ctor) for i, item in enumerate(node.value)]
    return ctor.construct_object(node, deep=True)


# --- validation ------------------------------------------------------------------------------


def _dotted(path: Path_) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _show(value: Any) -> str:
    return (
        repr(value)
        if isinstance(value, str)
        else yaml.safe_dump(value).strip().removesuffix("\n...").replace("\n", " ")
    )


def _suggest(word: str, allowed: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(word), list(allowed), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    """Walks a lab mapping, collecting every problem before raising one LabConfigError."""

    def __init__(self, source: str, lines: dict[Path_, int], base_dir: Path) -> None:
        self.source = source
        self.lines = lines
        self.base_dir = base_dir
        self.problems: list[str] = []

    def problem(self, path: Path_, message: str) -> None:
        line = None
        for depth in range(len(path), -1, -1):
            line = self.lines.get(path[:depth])
            if line is not None:
                break
        where = f"{self.source}:{line}" if line is not None else self.source
        self.problems.append(f"{where}: {_dotted(path)}: {message}")

    def sorted_problems(self) -> list[str]:
        """The problems in file order (a stable sort by line number)."""

        def line(problem: str) -> int:
            head = problem.removeprefix(f"{self.source}:").split(":", 1)[0]
            return int(head) if head.isdigit() else 0

        return sorted(self.problems, key=line)

    # generic checks -----------------------------------------------------------------------

    def mapping(self, value: Any, path: Path_, allowed: tuple[str, ...]) -> dict[str, Any]:
        """``value`` as a dict whose unknown keys are reported; {} when it is no mapping."""
        if not isinstance(value, dict):
            example = f"e.g. `{allowed[0]}: ...`" if allowed else "a mapping"
            self.problem(path, f"expected a mapping of keys ({example}), got {_show(value)}")
            return {}
        known = {}
        for key, item in value.items():
            if key in allowed:
                known[key] = item
            else:
                hint = _suggest(key, allowed) or f"; allowed keys: {', '.join(allowed)}"
                self.problem((*path, key), f"unknown key{hint}")
        return known

    def integer(self, value: Any, path: Path_, low: int, high: int, unit: str = "") -> int | None:
        unit = f" {unit}" if unit else ""
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(
                path, f"must be a whole number from {low} to {high}{unit}, got {_show(value)}"
            )
            return None
        if not low <= value <= high:
            self.problem(path, f"must be from {low} to {high}{unit}, got {value}")
            return None
        return value

    def number(self, value: Any, path: Path_, high: float, unit: str = "") -> float | None:
        unit = f" {unit}" if unit else ""
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= high:
            self.problem(
                path, f"must be a number above 0 and at most {high}{unit}, got {_show(value)}"
            )
            return None
        return float(value)

    def choice(self, value: Any, path: Path_, allowed: list[str]) -> str | None:
        if isinstance(value, str) and value in allowed:
            return value
        self.problem(
            path,
            f"{_show(value)} is not allowed; use one of {', '.join(allowed)}"
            f"{_suggest(value, allowed) if isinstance(value, str) else ''}",
        )
        return None

    # the lab ------------------------------------------------------------------------------

    def lab(self, data: Any, path: Path | None) -> LabSpec:
        if not isinstance(data, dict):
            self.problem(
                (),
                "the lab description must be a mapping of keys such as "
                f"`topology: simplex`, not a {type(data).__name__}: {_show(data)}",
            )
            raise LabConfigError(self.problems)
        data = self.mapping(data, (), TOP_KEYS)
        topology = self.topology(data)
        kwargs: dict[str, Any] = {"source": path}
        if "name" in data:
            kwargs["name"] = self.name(data["name"])
        if "backend" in data:
            kwargs["backend"] = self.choice(
                data["backend"], ("backend",), [b.value for b in BackendKind]
            )
        if "release" in data:
            kwargs["release"] = self.release(data["release"], ("release",))
        if "image" in data:
            kwargs["image"] = self.image(data["image"], kwargs)
        if "add_hosts" in data:
            kwargs["add_hosts"] = self.choice(
                data["add_hosts"], ("add_hosts",), [a.value for a in AddHosts]
            )
        if "firmware" in data:
            kwargs["firmware"] = self.choice(
                data["firmware"], ("firmware",), [f.value for f in Firmware]
            )
        if "profile" in data:
            kwargs["profile"] = self.choice(
                data["profile"], ("profile",), [p.value for p in Profile]
            )
        if "hosts" in data:
            kwargs["hosts"] = self.hosts(data["hosts"], kwargs.get("backend"))
        kwargs["workers"] = self.count(data, "workers", topology)
        kwargs["storage_nodes"] = self.count(data, "storage_nodes", topology)
        if "node_defaults" in data:
            kwargs["node_defaults"] = self.node_override(
                data["node_defaults"], ("node_defaults",), (*NODE_KEYS, PIN_KEY)
            )
            if isinstance(data["node_defaults"], dict) and PIN_KEY in data["node_defaults"]:
                self.problem(
                    ("node_defaults", PIN_KEY),
                    "pin nodes one by one under `nodes: {worker-0: {host: ...}}`; for a lab "
                    "on one host, list only that host under `hosts:`",
                )
        if "nodes" in data:
            kwargs["nodes"] = self.nodes(data["nodes"], topology, kwargs)
        oam = self.oam(data.get("oam", {}), topology) if "oam" in data else OamSpec()
        kwargs["oam"] = oam
        if "mgmt" in data:
            kwargs["mgmt"] = self.mgmt(data["mgmt"], oam)
        if "passwords" in data:
            release = kwargs.get("release") or DEFAULT_RELEASE
            kwargs["passwords"] = self.passwords(data["passwords"], release)
        if "timeouts" in data:
            kwargs["timeouts"] = self.timeouts(data["timeouts"])
        if "timeout_factor" in data:
            kwargs["timeout_factor"] = self.number(
                data["timeout_factor"], ("timeout_factor",), MAX_TIMEOUT_FACTOR
            )
        if "stages" in data and topology is not None:
            kwargs["stages"] = self.stages(data["stages"], topology, kwargs)
        if "bootstrap" in data:
            kwargs["bootstrap"] = self.bootstrap(data["bootstrap"])
        if self.problems or topology is None:
            raise LabConfigError(self.sorted_problems())
        return resolve_lab(topology, **{k: v for k, v in kwargs.items() if v is not None})

    def topology(self, data: dict[str, Any]) -> Topology | None:
        if "topology" not in data:
            self.problem(
                ("topology",),
                "missing; say which deployment option the lab is: "
                f"{', '.join(t.value for t in Topology)}",
            )
            return None
        found = self.choice(data["topology"], ("topology",), [t.value for t in Topology])
        return Topology(found) if found else None

    def name(self, value: Any) -> str | None:
        if isinstance(value, str) and NAME_PATTERN.fullmatch(value):
            return value
        self.problem(
            ("name",),
            f"{_show(value)} is not a valid lab name: use 1-20 characters, "
            "lower-case letters, digits and '-', starting with a letter",
        )
        return None

    def image(self, value: Any, kwargs: dict[str, Any]) -> str | None:
        if value == SIM_IMAGE:
            return value
        if isinstance(value, str) and value.startswith(f"{SIM_IMAGE}:"):  # sim:RELEASE
            release = self.release(value.split(":", 1)[1], ("image",))
            if "release" in kwargs and release and kwargs["release"] != release:
                self.problem(
                    ("image",), f"{value!r} contradicts release: {kwargs['release']}; give one"
                )
            kwargs["release"] = release
            return SIM_IMAGE
        if not isinstance(value, str) or not value:
            self.problem(
                ("image",),
                f"expected {SIM_IMAGE!r} or the path of a StarlingX ISO, got {_show(value)}",
            )
            return None
        expanded = os.path.expandvars(value)
        if "$" in expanded:
            self.problem(
                ("image",),
                f"{value!r} names an environment variable that is not set; export it with "
                "the path of your StarlingX ISO",
            )
            return None
        iso = (self.base_dir / Path(expanded).expanduser()).resolve()
        if not iso.is_file():
            self.problem(
                ("image",),
                f"no such ISO file: {iso} (use {SIM_IMAGE!r} for the built-in simulator, "
                "or a path to a StarlingX ISO)",
            )
            return None
        if not _is_iso9660(iso):
            self.problem(
                ("image",),
                f"{iso} is not an ISO image (no ISO 9660 signature); give the StarlingX "
                "installer ISO itself",
            )
            return None
        return str(iso)

    def count(self, data: dict[str, Any], key: str, topology: Topology | None) -> int | None:
        if key not in data:
            return None
        owners = (Topology.STANDARD, Topology.STORAGE) if key == "workers" else (Topology.STORAGE,)
        if topology is not None and topology not in owners:
            kind = "workers" if key == "workers" else "storage nodes"
            self.problem(
                (key,),
                f"a {topology.value} lab has no {kind}; remove the key or use "
                f"topology {' or '.join(t.value for t in owners)}",
            )
            return None
        if key == "workers":
            low, high = MIN_WORKERS, MAX_WORKERS
        else:
            low, high = MIN_STORAGE_NODES, MAX_STORAGE_NODES
        return self.integer(data[key], (key,), low, high)

    def node_override(
        self, value: Any, path: Path_, allowed: tuple[str, ...] = NODE_KEYS
    ) -> NodeOverride:
        data = self.mapping(value, path, allowed)
        data.pop(PIN_KEY, None)  # nodes.<name>.host: a pin, read by nodes()
        memory = vcpus = None
        disks: tuple[int, ...] | None = None
        if "memory_mib" in data:
            memory = self.integer(data["memory_mib"], (*path, "memory_mib"), *MEMORY_RANGE, "MiB")
        if "vcpus" in data:
            vcpus = self.integer(data["vcpus"], (*path, "vcpus"), *VCPU_RANGE)
        if "disks_gib" in data:
            disks = self.disks(data["disks_gib"], (*path, "disks_gib"))
        return NodeOverride(memory, vcpus, disks)

    def disks(self, value: Any, path: Path_) -> tuple[int, ...] | None:
        if not isinstance(value, list) or not 1 <= len(value) <= MAX_DISKS:
            self.problem(
                path,
                f"expected a list of 1 to {MAX_DISKS} disk sizes in GiB "
                f"(e.g. [250, 200]), got {_show(value)}",
            )
            return None
        sizes = [self.integer(v, (*path, i), *DISK_RANGE, "GiB") for i, v in enumerate(value)]
        return None if None in sizes else tuple(s for s in sizes if s is not None)

    def nodes(self, value: Any, topology: Topology | None, kwargs: dict[str, Any]) -> dict:
        if topology is None:
            return {}
        names = self.node_names(topology, kwargs)
        if not isinstance(value, dict):
            self.problem(
                ("nodes",),
                "expected a mapping of node names to sizes (e.g. "
                f"`controller-0: {{memory_mib: 768}}`), got {_show(value)}",
            )
            return {}
        overrides = {}
        for name, item in value.items():
            if name not in names:
                self.problem(
                    ("nodes", name),
                    f"no such node in this {topology.value} lab "
                    f"(it has {', '.join(names)})"
                    f"{_suggest(name, names)}",
                )
                continue
            if isinstance(item, dict) and PIN_KEY in item:
                pin = self.pin(item[PIN_KEY], ("nodes", name, PIN_KEY), kwargs)
                if pin is not None:
                    kwargs.setdefault("pins", {})[name] = pin
            overrides[name] = self.node_override(item, ("nodes", name), (*NODE_KEYS, PIN_KEY))
        return overrides

    def pin(self, value: Any, path: Path_, kwargs: dict[str, Any]) -> str | None:
        """The host a node is pinned to, one of the lab's ``hosts:``."""
        if "hosts" not in kwargs:
            self.problem(
                path,
                "pins the node to a host, but the lab has no `hosts:`; list the libvirt "
                f"hosts (e.g. `hosts: [{HOST_EXAMPLE}]`) or remove the pin",
            )
            return None
        if kwargs["hosts"] is None:  # the hosts are wrong, and reported
            return None
        names = [h.name for h in kwargs["hosts"]]
        if isinstance(value, str) and value in names:
            return value
        self.problem(
            path,
            f"no such host {_show(value)} (the lab's hosts are {', '.join(names)})"
            f"{_suggest(value, names) if isinstance(value, str) else ''}",
        )
        return None

    def hosts(self, value: Any, backend: str | None) -> tuple[HostSpec, ...] | None:
        """The libvirt hosts of the lab: each named once, with its own URI and underlay."""
        if backend == BackendKind.VIRTUALBOX:
            self.problem(
                ("hosts",),
                "a lab spans several hosts on libvirt only; remove `hosts:` or use "
                "`backend: libvirt`",
            )
            return None
        if not isinstance(value, list) or not value:
            self.problem(
                ("hosts",),
                f"expected a list of libvirt hosts, each like `{HOST_EXAMPLE}`, got {_show(value)}",
            )
            return None
        before = len(self.problems)
        hosts = [self.host(item, ("hosts", i), len(value) > 1) for i, item in enumerate(value)]
        for key in HOST_KEYS:
            first: dict[Any, int] = {}
            for index, fields in enumerate(hosts):
                if key not in fields:
                    continue
                if fields[key] in first:
                    self.problem(
                        ("hosts", index, key),
                        f"{_show(str(fields[key]))} is already the {key} of "
                        f"hosts[{first[fields[key]]}]; each host needs its own",
                    )
                first.setdefault(fields[key], index)
        if len({f["underlay"].version for f in hosts if "underlay" in f}) > 1:
            self.problem(
                ("hosts",),
                "the underlay addresses mix IPv4 and IPv6; the tunnels between hosts need "
                "addresses of one family",
            )
        if len(self.problems) > before:
            return None
        return tuple(
            HostSpec(f["name"], f["uri"], f.get("underlay"), f.get(HOST_COMMANDS_KEY, ()))
            for f in hosts
        )

    def host(self, value: Any, path: Path_, several: bool) -> dict[str, Any]:
        """The valid fields of one host (name, uri, underlay); the others are reported."""
        if not isinstance(value, dict):
            self.problem(path, f"expected a host like `{HOST_EXAMPLE}`, got {_show(value)}")
            return {}
        data = self.mapping(value, path, (*HOST_KEYS, HOST_COMMANDS_KEY))
        fields: dict[str, Any] = {}
        if "uri" not in data:
            self.problem(
                path, "missing `uri:`, the host's libvirt URI (e.g. qemu+ssh://root@hv1/system)"
            )
        elif (uri := self.libvirt_uri(data["uri"], (*path, "uri"))) is not None:
            fields["uri"] = uri
        if (name := self.host_name(data, path, fields.get("uri"))) is not None:
            fields["name"] = name
        if "underlay" in data:
            if (underlay := self.underlay(data["underlay"], (*path, "underlay"))) is not None:
                fields["underlay"] = underlay
        elif several:
            self.problem(
                path,
                "missing `underlay:`: with more than one host, each needs the address the "
                "tunnels of the lab networks reach it at (its address on the network between "
                "the hosts, e.g. 192.0.2.11)",
            )
        if HOST_COMMANDS_KEY in data:
            commands = data[HOST_COMMANDS_KEY]
            if (
                isinstance(commands, list)
                and commands
                and all(isinstance(word, str) and word for word in commands)
            ):
                fields[HOST_COMMANDS_KEY] = tuple(commands)
            else:
                self.problem(
                    (*path, HOST_COMMANDS_KEY),
                    "expected the words of a command prefix that runs a command on the host "
                    f"without ssh, e.g. [ip, netns, exec, hv2], got {_show(commands)}",
                )
        return fields

    def libvirt_uri(self, value: Any, path: Path_) -> str | None:
        example = "e.g. qemu:///system or qemu+ssh://root@hv1/system"
        try:
            parts = urlsplit(value) if isinstance(value, str) and "://" in value else None
        except ValueError:  # e.g. an unclosed [ of an IPv6 address
            parts = None
        if parts is None:
            self.problem(path, f"{_show(value)} is not a libvirt URI ({example})")
            return None
        driver, _, transport = parts.scheme.partition("+")
        if driver != "qemu":
            self.problem(
                path,
                f"{value!r} is not a URI of libvirt's QEMU driver, which labs run on ({example})",
            )
        elif transport not in LIBVIRT_TRANSPORTS:
            self.problem(
                path,
                f"{transport!r} in {value!r} is not a libvirt transport; use one of "
                f"{', '.join(t for t in LIBVIRT_TRANSPORTS if t)}"
                f"{_suggest(transport, LIBVIRT_TRANSPORTS)}",
            )
        elif parts.path not in QEMU_URI_PATHS:
            self.problem(
                path,
                f"{value!r} names no QEMU daemon: its path must be {' or '.join(QEMU_URI_PATHS)} "
                f"({example})",
            )
        else:
            return value
        return None

    def host_name(self, data: dict[str, Any], path: Path_, uri: str | None) -> str | None:
        if "name" in data:
            if isinstance(data["name"], str) and HOST_NAME.fullmatch(data["name"]):
                return str(data["name"])
            self.problem(
                (*path, "name"),
                f"{_show(data['name'])} is not a host name: 1-63 letters, digits, '.', '_' and "
                "'-', starting with a letter or digit",
            )
            return None
        if uri is None:
            return None
        name = default_host_name(uri)
        if HOST_NAME.fullmatch(name):
            return name
        self.problem(
            path,
            f"give the host a `name:` (e.g. hv1) for pins and messages; its URI's host "
            f"{name!r} cannot be one",
        )
        return None

    def underlay(self, value: Any, path: Path_) -> Underlay | None:
        try:
            if not isinstance(value, str):  # ip_address() takes 3232235777 and True too
                raise ValueError(value)
            address = ipaddress.ip_address(value)
        except ValueError:
            self.problem(
                path,
                f"{_show(value)} is not an IP address (e.g. 192.0.2.11): give the host's "
                "address on the network between the hosts, which the lab networks' tunnels use",
            )
            return None
        if address.is_loopback or address.is_unspecified or address.is_multicast:
            self.problem(
                path,
                f"{address} cannot reach the host from the others; give the host's own "
                "address on the network between the hosts",
            )
            return None
        return address

    def address(self, value: Any, path: Path_) -> ipaddress.IPv4Address | None:
        try:
            return ipaddress.IPv4Address(value)
        except ValueError:
            self.problem(path, f"{_show(value)} is not an IPv4 address (e.g. 10.10.10.3)")
            return None

    def subnet(self, value: Any, path: Path_) -> ipaddress.IPv4Network | None:
        try:
            return ipaddress.IPv4Network(value)
        except ValueError as exc:
            hint = ""
            if "host bits set" in str(exc):
                hint = f"; did you mean {ipaddress.IPv4Network(value, strict=False)}?"
            self.problem(path, f"{_show(value)} is not an IPv4 subnet such as 10.10.10.0/24{hint}")
            return None

    def oam(self, value: Any, topology: Topology | None) -> OamSpec:
        data = self.mapping(value, ("oam",), OAM_KEYS)
        default = OamSpec()
        if topology is Topology.SIMPLEX and "controller_1" in data:
            self.problem(
                ("oam", "controller_1"), "a simplex lab has no controller-1; remove the key"
            )
            del data["controller_1"]
        subnet = self.subnet(data["subnet"], ("oam", "subnet")) if "subnet" in data else None
        uplink = None
        if "uplink" in data:
            choice = self.choice(data["uplink"], ("oam", "uplink"), [u.value for u in Uplink])
            uplink = None if choice is None else Uplink(choice)
        fields: dict[str, Any] = {"subnet": subnet or default.subnet}
        for key in OAM_ADDRESS_KEYS:
            fields[key] = (
                self.address(data[key], ("oam", key)) if key in data else getattr(default, key)
            )
        if subnet is None and "subnet" in data:
            return default
        net = fields["subnet"]
        used: dict[ipaddress.IPv4Address, str] = {}
        addresses = OAM_ADDRESS_KEYS[:-1] if topology is Topology.SIMPLEX else OAM_ADDRESS_KEYS
        for key in addresses:
            address = fields[key]
            if address is None:
                continue
            if address not in net or address in (net.network_address, net.broadcast_address):
                self.problem(
                    ("oam", key),
                    f"{address} is not a usable address in the OAM subnet "
                    f"{net}; pick one inside it",
                )
            elif address in used:
                self.problem(
                    ("oam", key),
                    f"{address} is already oam.{used[address]}; each OAM address must differ",
                )
            used.setdefault(address, key)
        if any(v is None for v in fields.values()):
            return default
        return OamSpec(**fields, uplink=uplink)

    def mgmt(self, value: Any, oam: OamSpec) -> MgmtSpec | None:
        data = self.mapping(value, ("mgmt",), MGMT_KEYS)
        if "subnet" not in data:
            return None
        subnet = self.subnet(data["subnet"], ("mgmt", "subnet"))
        if subnet is None:
            return None
        if subnet.prefixlen > 28:
            self.problem(
                ("mgmt", "subnet"),
                f"{subnet} is too small for a lab's management "
                "network; use a /28 or larger (e.g. /24)",
            )
            return None
        if subnet.overlaps(oam.subnet):
            self.problem(
                ("mgmt", "subnet"),
                f"{subnet} overlaps the OAM subnet {oam.subnet}; the two networks must be distinct",
            )
            return None
        return MgmtSpec(subnet)

    def release(self, value: Any, path: Path_) -> str | None:
        # YAML reads `release: 10.0` as a number
        text = f"{value:.1f}" if isinstance(value, (int, float)) and value == value else value
        return self.choice(text, path, list(RELEASES))

    def passwords(self, value: Any, release: str) -> dict[str, PasswordSource]:
        data = self.mapping(value, ("passwords",), PASSWORD_USERS)
        sources = {}
        for user, item in data.items():
            source = self.password(item, ("passwords", user), release, user)
            if source is not None:
                sources[user] = source
        return sources

    def password(self, value: Any, path: Path_, release: str, user: str) -> PasswordSource | None:
        if isinstance(value, str):
            return self.literal(value, path, release, user)
        data = self.mapping(value, path, PASSWORD_KEYS)
        if len(data) != 1:
            if isinstance(value, dict) and len(data) == len(value):
                self.problem(
                    path,
                    "give exactly one of `env: VARIABLE`, `value: PASSWORD` or `generate: true`",
                )
            return None
        ((kind, item),) = data.items()
        if kind == "env":
            if isinstance(item, str) and ENV_NAME.fullmatch(item):
                return PasswordSource(env=item)
            self.problem(
                (*path, "env"),
                f"{_show(item)} is not an environment variable name (e.g. STX_SYSADMIN_PASSWORD)",
            )
            return None
        if kind == "value":
            return self.literal(item, (*path, "value"), release, user)
        if item is not True:
            self.problem(
                (*path, "generate"),
                f"must be true (a password is generated per lab), got {_show(item)}",
            )
            return None
        return PasswordSource(generate=True)

    def literal(self, value: Any, where: Path_, release: str, user: str) -> PasswordSource | None:
        if not isinstance(value, str):
            self.problem(where, "a password must be a string (value hidden)")
            return None
        missing = password_problems(value, release, user)
        if missing:
            self.problem(
                where,
                f"the password does not meet StarlingX {release}'s password rules (value "
                f"hidden): it needs {', '.join(missing)}",
            )
            return None
        return PasswordSource(value=value)

    def stages(self, value: Any, topology: Topology, kwargs: dict[str, Any]) -> tuple:
        if not isinstance(value, list):
            self.problem(
                ("stages",),
                "expected a list of stages, each like `{name: labels, "
                "after: bootstrapped, system: [...]}`, got " + _show(value),
            )
            return ()
        nodes = self.node_names(topology, kwargs)
        pipeline = {f"{n}:{s}" for n, s in stage_plan(topology, nodes)}
        found = []
        placed: list[str] = []  # keys of the stages before, points for the ones after
        for index, item in enumerate(value):
            path: Path_ = ("stages", index)
            data = self.mapping(item, path, STAGE_KEYS)
            name = data.get("name")
            if not (isinstance(name, str) and STAGE_NAME.fullmatch(name)):
                self.problem(
                    (*path, "name"),
                    f"{_show(name)} is not a stage name: lower-case "
                    "letters, digits and '-', starting with a letter",
                )
            node = data.get("node", ACTIVE_CONTROLLER)
            if node not in nodes:
                self.problem(
                    (*path, "node"), f"no such node {_show(node)} (the lab has {', '.join(nodes)})"
                )
            for key in ("after", "before"):
                if key in data:
                    self.point(data[key], (*path, key), topology, nodes, placed)
            commands = {}
            for key in ("system", "shell"):
                commands[key] = data.get(key, [])
                if not isinstance(commands[key], list) or not all(
                    isinstance(c, str) and c.strip() for c in commands[key]
                ):
                    self.problem((*path, key), "expected a list of commands (strings)")
                    commands[key] = []
            if isinstance(item, dict) and not (commands["system"] or commands["shell"]):
                self.problem(path, "a stage needs `system: [...]` or `shell: [...]` commands")
            if isinstance(name, str) and f"{node}:{name}" in {*pipeline, *placed}:
                self.problem(
                    (*path, "name"), f"stage {node}:{name} clashes with a stage of the pipeline"
                )
            if isinstance(name, str):
                placed.append(f"{node}:{name}")
                found.append(
                    StageSpec(
                        name,
                        data.get("after", AVAILABLE_POINT),
                        data.get("before"),
                        node,
                        tuple(commands["system"]),
                        tuple(commands["shell"]),
                    )
                )
        return tuple(found)

    def point(
        self, value: Any, path: Path_, topology: Topology, nodes: list[str], placed: list[str]
    ) -> None:
        before = path[-1] == "before"
        if problem := point_problem(value, topology, nodes, before, placed):
            self.problem(path, problem)

    def node_names(self, topology: Topology, kwargs: dict[str, Any]) -> list[str]:
        workers, storage = kwargs.get("workers"), kwargs.get("storage_nodes")
        return [
            name
            for name, _ in node_names(
                topology,
                DEFAULT_WORKERS if workers is None else workers,
                DEFAULT_STORAGE_NODES if storage is None else storage,
            )
        ]

    def bootstrap(self, value: Any) -> dict[str, Any]:
        """Extra localhost.yml overrides: StarlingX's bootstrap keys with plain YAML values,
        except those the lab description sets elsewhere."""
        if not isinstance(value, dict):
            example = "`docker_http_proxy: http://proxy:3128`"
            self.problem(
                ("bootstrap",),
                f"expected a mapping of localhost.yml keys (e.g. {example}), got {_show(value)}",
            )
            return {}
        overrides = {}
        for key, item in value.items():
            path = ("bootstrap", key)
            if key in BOOTSTRAP_MANAGED:
                self.problem(path, f"set from {BOOTSTRAP_MANAGED[key]} of the lab description, "
                             "not here")  # fmt: skip
            elif key not in BOOTSTRAP_KEYS:
                hint = _suggest(str(key), BOOTSTRAP_KEYS) or (
                    "; see host_vars/bootstrap/default.yml of StarlingX's ansible-playbooks"
                )
                self.problem(path, f"not a key of StarlingX's bootstrap overrides{hint}")
            elif (bad := _not_plain(item)) is not None:
                self.problem(path, f"values must be plain YAML (strings, numbers, booleans, "
                             f"lists, mappings), got {bad}")  # fmt: skip
            else:
                overrides[key] = item
        return overrides

    def timeouts(self, value: Any) -> dict[str, float]:
        data = self.mapping(value, ("timeouts",), TIMEOUT_PHASES)
        found = {}
        for phase, item in data.items():
            seconds = self.number(item, ("timeouts", phase), 7 * 24 * 3600, "seconds")
            if seconds is not None:
                found[phase] = seconds
        return found


def _not_plain(value: Any) -> str | None:
    """What in ``value`` is not plain YAML data (a date, a set, ...), or None."""
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if isinstance(value, list):
        return next((bad for item in value if (bad := _not_plain(item)) is not None), None)
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"the key {_show(key)}"
            if (bad := _not_plain(item)) is not None:
                return bad
        return None
    return f"a {type(value).__name__} ({_show(value)})"


def lab_variant(
    base: Mapping[str, Any], topology: str, overrides: Mapping[str, Any], source: str
) -> LabSpec:
    """A lab of ``topology`` built on ``base`` (a lab file's mapping) with ``overrides``.

    Keys of the base that the topology cannot have (workers for a duplex lab, overrides of
    nodes it lacks, controller-1's OAM address for simplex) are dropped rather than reported:
    one base file serves every topology fixture. The overrides are validated strictly.
    """
    data = {**base, "topology": topology}
    if topology != base.get("topology") and topology in {t.value for t in Topology}:
        _drop_inapplicable(data, Topology(topology))
    data.update(overrides)
    return lab_from_mapping(data, source=source)


def _drop_inapplicable(data: dict[str, Any], topology: Topology) -> None:
    if topology not in (Topology.STANDARD, Topology.STORAGE):
        data.pop("workers", None)
    if topology is not Topology.STORAGE:
        data.pop("storage_nodes", None)
    if topology is Topology.SIMPLEX and isinstance(data.get("oam"), dict):
        data["oam"] = {k: v for k, v in data["oam"].items() if k != "controller_1"}
    if isinstance(data.get("nodes"), dict):
        workers, storage = data.get("workers"), data.get("storage_nodes")
        names = {
            name
            for name, _ in node_names(
                topology,
                workers if isinstance(workers, int) else DEFAULT_WORKERS,
                storage if isinstance(storage, int) else DEFAULT_STORAGE_NODES,
            )
        }
        data["nodes"] = {k: v for k, v in data["nodes"].items() if k in names}
