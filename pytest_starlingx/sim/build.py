"""Build the simulator's installer ISO (``stx-sim.iso``) from Debian packages on the host.

The guest is the stock Debian kernel with a small initramfs (busybox, the drivers it needs,
``initramfs/init``) and a root filesystem (busybox, bash, Debian's python3.11 with a trimmed
standard library, dnsmasq, sudo, openssh-server, their shared libraries and everything under
``rootfs/``). The ISO
boots as a real StarlingX ISO does under BIOS: Debian's ISOLINUX with ``vesamenu.c32`` and
StarlingX's own ``isolinux.cfg`` (see ``ISOLINUX_FILES``); it carries the kernel as
``/bzImage-std`` and ``/bzImage-rt``, the initramfs and the root filesystem as
``/stx/rootfs.tgz``, which the installer unpacks onto the node's disk.

A build is of one StarlingX release (``model.RELEASES``): ``releases/<release>/`` holds its
``isolinux.cfg`` and the files it lays over ``rootfs/``; the build writes ``/etc/build.info``
and the release number into ``/etc/issue`` as StarlingX's packages do.

Results are cached in ``~/.cache/pytest-starlingx/sim/<release>-<key>/`` where the key hashes
every file under this directory (this module included) and the versions of ``BUILD_PACKAGES``;
each entry
also records the versions of every package its files came from and is rebuilt when one changed.
A build keeps the newest ``KEEP_ENTRIES`` entries and removes older ones.
The output is reproducible: sorted entries, fixed mtimes (``SOURCE_DATE_EPOCH``), ``gzip -n``.

Importing this module needs the standard library only (``stx-lab host-setup`` reads
``BUILD_PACKAGES`` on a bare host).
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import logging
import os
import re
import shutil
import stat
import subprocess
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pytest_starlingx.errors import HostError
from pytest_starlingx.files import place
from pytest_starlingx.model import DEFAULT_RELEASE, RELEASES
from pytest_starlingx.settings import env_settings

log = logging.getLogger("pytest_starlingx.sim")

#: Debian packages the build reads from (and ``ipxe-qemu``, whose NIC ROMs network-boot nodes).
BUILD_PACKAGES = (
    "isolinux",
    "syslinux-common",
    "pxelinux",
    "linux-image-amd64",
    "kmod",
    "busybox-static",
    "bash",
    "python3.11-minimal",
    "libpython3.11-stdlib",
    "dnsmasq-base",
    "iproute2",
    "grub-common",
    "grub-pc-bin",
    "grub-efi-amd64-bin",
    "dosfstools",
    "mtools",
    "xorriso",
    "ipxe-qemu",
    "libc-bin",
    "python3-pwquality",
    "libpwquality1",
    "libcrack2",
    "cracklib-runtime",
    "sudo",
    "libpam-modules",
    "openssh-server",
    "openssh-sftp-server",
    "openssh-client",
    "libpam-pwquality",
    "passwd",
)

#: Debian's libpwquality for python: the guest's login checks new passwords with it, under the
#: options of its release's pam_pwquality line (libpam-pwquality is a PAM module, which the
#: simulator's login is not). Its cracklib dictionary is built from Debian's word list.
PWQUALITY = "/usr/lib/python3/dist-packages/pwquality.cpython-311-x86_64-linux-gnu.so"
CRACKLIB_WORDS = "/usr/share/dict/cracklib-small"
CRACKLIB_DICT = "var/cache/cracklib/cracklib_dict"  # libcrack2's default (crack.h)

#: Host tools the build runs, with the package that provides each.
HOST_TOOLS = {
    "/usr/bin/busybox": "busybox-static",
    "/usr/bin/bash": "bash",
    "/usr/bin/python3.11": "python3.11-minimal",
    "/usr/sbin/dnsmasq": "dnsmasq-base",
    "/usr/bin/ip": "iproute2",
    "/usr/bin/grub-mkimage": "grub-common",
    "/usr/lib/grub/i386-pc/boot.img": "grub-pc-bin",
    "/usr/lib/grub/x86_64-efi/linux.mod": "grub-efi-amd64-bin",
    "/usr/sbin/mkfs.vfat": "dosfstools",
    "/usr/bin/mcopy": "mtools",
    "/usr/lib/ISOLINUX/isolinux.bin": "isolinux",
    "/usr/lib/PXELINUX/pxelinux.0": "pxelinux",
    "/usr/lib/syslinux/modules/bios/vesamenu.c32": "syslinux-common",
    "/usr/bin/xorriso": "xorriso",
    "/usr/sbin/modprobe": "kmod",
    "/usr/bin/ldd": "libc-bin",
    "/usr/lib/ipxe/qemu/pxe-virtio.rom": "ipxe-qemu",
    "/usr/sbin/create-cracklib-dict": "cracklib-runtime",
    PWQUALITY: "python3-pwquality",
    "/usr/bin/sudo": "sudo",
    "/usr/lib/x86_64-linux-gnu/security/pam_unix.so": "libpam-modules",
    "/usr/sbin/sshd": "openssh-server",
    "/usr/lib/openssh/sftp-server": "openssh-sftp-server",
    "/usr/bin/ssh-keygen": "openssh-client",
    "/usr/lib/x86_64-linux-gnu/security/pam_pwquality.so": "libpam-pwquality",
    "/usr/bin/passwd": "passwd",
}

#: sudo as StarlingX's sysadmin uses it: Debian's sudo (setuid root) with its sudoers policy
#: plugin and PAM service file, the PAM modules StarlingX's common-auth, common-account and
#: common-session-noninteractive (config-files pam-config) and that file use for a local user,
#: and pam_limits' configuration. pam_sss and pam_ldap (LDAP users) are not copied: for the
#: local sysadmin those stacks never reach them.
SUDO_FILES = (
    "/usr/bin/sudo",
    "/usr/libexec/sudo/sudoers.so",
    "/etc/pam.d/sudo",
    "/etc/security/limits.conf",
    *(f"/usr/lib/x86_64-linux-gnu/security/pam_{name}.so"
      for name in ("unix", "faillock", "deny", "permit", "localuser", "limits")),
)  # fmt: skip
#: The SSH server every StarlingX node runs (metal kickstart.cfg links pmon.d/sshd.conf for
#: controllers, workers and storage nodes): Debian's openssh-server, as StarlingX takes it from
#: Debian (starlingx/tools base-bullseye.lst, 1:8.4p1-5+deb11u3), with its DH group file and
#: sftp-server (config-files' sshd_config names it), ssh-keygen for the host keys
#: (install-to-disk), Debian's passwd (setuid root) and its PAM service, which sshd runs when
#: an expired password must be changed, and the PAM modules Debian's /etc/pam.d/sshd and
#: StarlingX's common-session and common-password add to those of SUDO_FILES (both PAM files
#: are under ``rootfs/etc/pam.d``). pam_systemd (common-session, optional) is not copied: the
#: guest has no systemd-logind.
SSHD_FILES = (
    "/usr/sbin/sshd",
    "/usr/lib/openssh/sftp-server",
    "/usr/bin/ssh-keygen",
    "/etc/ssh/moduli",
    "/usr/bin/passwd",
    "/etc/pam.d/passwd",
    *(f"/usr/lib/x86_64-linux-gnu/security/pam_{name}.so"
      for name in ("nologin", "selinux", "loginuid", "keyinit", "motd", "mail", "env",
                   "mkhomedir", "pwquality", "pwhistory")),
)  # fmt: skip
#: Modes sudo insists on (its policy files) and that keep password hashes from sysadmin; the
#: login records sshd writes, as Debian's base-files postinst makes them (root:utmp).
MODES = {
    "etc/sudoers": 0o440,
    "etc/sudoers.d/sysadmin": 0o440,
    "etc/shadow": 0o600,
    "var/log/wtmp": 0o664,
    "var/log/btmp": 0o660,
    "var/log/lastlog": 0o664,
}
#: Modes a release's packages set beyond those: 11.0's openssh-config postinst runs
#: ``chmod go-rwx /etc/ssh/sshd_config`` (config-files r/stx.11.0).
RELEASE_MODES = {"11.0": {"etc/ssh/sshd_config": 0o600}}
#: The owner of what is not root's: sysadmin's home (uid and gid 1000, the first user
#: ``useradd`` makes; metal kickstart.cfg ``useradd sysadmin -m --shell /bin/bash -G sudo``),
#: and the login records (group utmp, Debian's gid 43).
OWNERS = {
    "home/sysadmin": (1000, 1000),
    **{f"var/log/{name}": (0, 43) for name in ("wtmp", "btmp", "lastlog")},
}

#: The BIOS boot loader of a Debian StarlingX ISO (starlingx/tools debian-mirror-tools/config/
#: debian/common/base-bullseye.yaml ``iso-syslinux-entry``, under LAT's ``SYSLINUX_CFG_HEAD``;
#: shared/real-menus.md): ISOLINUX and the vesamenu modules, copied into ``isolinux/``.
ISOLINUX_FILES = (
    "/usr/lib/ISOLINUX/isolinux.bin",
    "/usr/lib/syslinux/modules/bios/ldlinux.c32",
    "/usr/lib/syslinux/modules/bios/vesamenu.c32",
    "/usr/lib/syslinux/modules/bios/libcom32.c32",
    "/usr/lib/syslinux/modules/bios/libutil.c32",
)
#: What controller-0 serves a network-booting node over TFTP from ``/var/pxeboot`` (starlingx/
#: metal ``installer/pxe-network-installer``, whose package ships these five files; Debian's
#: ``pxelinux`` and ``syslinux-common`` here). Its configurations are in ``pxe-network-installer/``.
PXELINUX_FILES = (
    "/usr/lib/PXELINUX/pxelinux.0",
    "/usr/lib/syslinux/modules/bios/ldlinux.c32",
    "/usr/lib/syslinux/modules/bios/menu.c32",
    "/usr/lib/syslinux/modules/bios/libcom32.c32",
    "/usr/lib/syslinux/modules/bios/libutil.c32",
)
#: metal's per-MAC templates and the names pxe-network-installer's rules install them under.
PXE_TEMPLATES = ("controller", "smallsystem", "storage", "worker")

#: The kernels' names on a StarlingX ISO (``kernel /bzImage-std`` and, for lowlatency entries,
#: ``/bzImage-rt`` in its isolinux.cfg; base-bullseye.yaml ``iso-post-script``). The
#: simulator has one kernel under both names.
ISO_KERNELS = ("bzImage-std", "bzImage-rt")

IPROUTE2 = "/usr/bin/ip"

ISO_NAME = "stx-sim.iso"
EFI_BOOT_IMAGE = "efi.img"  # the ISO's El Torito image for UEFI firmware
#: The ISO's volume label: LAT's ``instboot-iso-`` and eight hex digits (meta-lat genimage.py
#: ``do_image_iso``), which the UEFI grub.cfg searches for.
ISO_LABEL = "instboot-iso-5354582d"
KEEP_ENTRIES = 6  # cache entries kept (the newest builds: two of each release)
SOURCE_DATE_EPOCH = 1_700_000_000
SIM_DIR = Path(__file__).resolve().parent

#: Kernel modules the initramfs loads (with their dependencies), in this order.
MODULES = (
    "virtio_pci", "virtio_blk", "virtio_scsi", "virtio_net", "e1000", "e1000e",
    "ahci", "sd_mod", "sr_mod", "isofs", "ext4",
)  # fmt: skip

#: Module parameters. e1000 without interrupt throttling: the emulated NIC delays its
#: interrupts to the driver's rate (QEMU's e1000 ``mitigation``), and every TFTP block a node
#: loads its kernel with waits on controller-0 answering the node's ACK through it.
MODULE_OPTIONS = {"e1000.ko": "InterruptThrottleRate=0"}

#: Files from ``rootfs/`` that the initramfs needs too (ISO install and PXE boot run there).
INITRAMFS_FROM_ROOTFS = (
    "etc/udhcpc/default.script",
    "usr/lib/stx-sim/common.sh",
    "usr/lib/stx-sim/dhcp-client",
    "usr/lib/stx-sim/install-to-disk",
    "usr/lib/stx-sim/installer",
    "usr/lib/stx-sim/reboot",
)

#: Parts of Debian's python3.11 standard library the guest does not need.
PYTHON_DROP = {
    "test", "tkinter", "idlelib", "ensurepip", "lib2to3", "pydoc_data", "distutils",
    "site-packages", "dist-packages", "turtledemo", "__pycache__", "venv",
    "config-3.11-x86_64-linux-gnu", "turtle.py", "EXTERNALLY-MANAGED",
}  # fmt: skip
PYTHON_DROP_EXT = re.compile(r"^(_test|_ctypes_test|xxlimited|_xx|_curses|_dbm|nis|ossaudio)")

#: GRUB modules in the disk's core.img; its grub.cfg is ``rootfs/boot/grub/grub.cfg``.
GRUB_DISK_MODULES = ("biosdisk", "part_msdos", "ext2", "normal", "linux", "serial", "terminal",
                     "echo", "test")  # fmt: skip

#: UEFI (OVMF): one GRUB image, ``EFI/BOOT/bootx64.efi``, on the ISO (its El Torito image and its
#: file system), on the installed disk's EFI system partition and in /var/pxeboot for network
#: boots, as StarlingX uses its own (starlingx/integ grub/grub-efi ``0002-grub-efi-build-
#: packages-related-with-grub-efi.patch``: ``GRUB_BUILDIN``, ``-p /EFI/BOOT``, the embedded
#: ``cfg_nosecure``), built from Debian's GRUB, which has every one of those modules but
#: StarlingX's own ``efivar``; plus ``echo``, which the simulator's disk grub.cfg uses. The
#: ISO's grub.cfg (``releases/<release>/grub.cfg``) is LAT's (meta-lat genimage ``utils.py``
#: ``GRUB_CFG_HEAD``, the label search ``do_image_iso`` adds)
#: around base-bullseye.yaml's ``iso-grub-entry``, with the simulator's kernel arguments and
#: without ``efi-watchdog enable 0 1200``, a command of StarlingX's GRUB that Debian's lacks.
GRUB_EFI_MODULES = ("boot", "linux", "ext2", "fat", "serial", "part_msdos", "part_gpt", "normal",
                    "efi_gop", "iso9660", "configfile", "search", "loadenv", "test", "tftp",
                    "efinet", "reboot", "chain", "regexp", "echo")  # fmt: skip
GRUB_EFI_CONFIG = """search.file ($cmdpath)/EFI/BOOT/grub.cfg root
set prefix=($root)/EFI/BOOT
"""
#: The installed disk's EFI system partition: its grub.cfg reads the disk's own (the sim's
#: ``rootfs/boot/grub/grub.cfg``, which BIOS GRUB boots too) from the root filesystem.
ESP_GRUB_CFG = """search --no-floppy --label stx-root --set root
configfile /boot/grub/grub.cfg
"""
EFI_IMAGE_KIB = 4096  # the FAT images holding EFI/BOOT (the ISO's efi.img, the disk's ESP)
GRUB_EFI = "var/pxeboot/EFI/BOOT/bootx64.efi"  # where the root filesystem has the UEFI GRUB


def default_cache_dir() -> Path:
    """``$STX_SIM_CACHE`` or ``$XDG_CACHE_HOME/pytest-starlingx/sim`` (``~/.cache/...``)."""
    return env_settings().sim_cache


def build(
    out: Path | None = None,
    cache_dir: Path | None = None,
    src: Path = SIM_DIR,
    release: str = DEFAULT_RELEASE,
) -> Path:
    """Return the path of ``stx-sim.iso`` of StarlingX ``release``, building it if no valid
    cache entry exists.

    With ``out``, the ISO is also hard-linked (or copied) to ``out/stx-sim.iso``.
    """
    if release not in RELEASES:
        raise ValueError(
            f"the simulator has no StarlingX {release}; it simulates {', '.join(RELEASES)}"
        )
    check_host()
    cache = cache_dir or default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    entry = cache / f"{release}-{input_key(src)}"
    if not _entry_valid(entry):
        with _locked(cache / ".lock"):
            if not _entry_valid(entry):
                _build_entry(entry, src, release)
                _prune(cache, keep=KEEP_ENTRIES)
    iso = entry / ISO_NAME
    if out is not None:
        place(iso, Path(out) / ISO_NAME)
        return Path(out) / ISO_NAME
    return iso


def check_host() -> None:
    """Raise HostError naming the Debian packages to install when a build tool is missing."""
    missing = sorted({pkg for path, pkg in HOST_TOOLS.items() if not os.path.exists(path)})
    if not kernels():
        missing.append("linux-image-amd64")
    if missing:
        raise HostError(
            f"the simulator build needs Debian packages {', '.join(missing)}: "
            f"run 'apt-get install {' '.join(missing)}' or 'stx-lab host-setup'"
        )
    kernel = f"/boot/vmlinuz-{kernels()[-1]}"
    if not os.access(kernel, os.R_OK):
        raise HostError(f"{kernel} is readable by root only: build as root, or 'chmod a+r' it")


def kernels() -> list[str]:
    """Versions of the Debian kernels installed with their modules, newest last."""
    found = [p.name.removeprefix("vmlinuz-") for p in Path("/boot").glob("vmlinuz-*")]
    return sorted(v for v in found if Path("/lib/modules", v, "modules.dep").exists())


def input_key(src: Path = SIM_DIR) -> str:
    """Hash of every file under ``src`` (paths, modes, contents) and the package versions."""
    h = hashlib.sha256()
    for path in sorted(p for p in src.rglob("*") if "__pycache__" not in p.parts):
        rel = path.relative_to(src).as_posix()
        if path.is_symlink():
            h.update(f"L {rel} {os.readlink(path)}\n".encode())
        elif path.is_file():
            h.update(f"F {rel} {path.stat().st_mode & 0o111:o}\n".encode())
            h.update(hashlib.sha256(path.read_bytes()).digest())
    h.update(_package_versions(BUILD_PACKAGES).encode())
    h.update(" ".join(kernels()).encode())
    return h.hexdigest()[:16]


def _package_versions(packages: Iterable[str]) -> str:
    """``package version`` lines from dpkg, sorted (missing packages are left out)."""
    res = subprocess.run(
        ["dpkg-query", "-W", "-f=${binary:Package} ${Version}\\n", *packages],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return "".join(sorted(res.stdout.splitlines(keepends=True)))


def _entry_valid(entry: Path) -> bool:
    """True when the entry is complete and the packages its files came from are unchanged."""
    stamp = entry / "packages.txt"
    if not (entry / ISO_NAME).is_file() or not stamp.is_file():
        return False
    recorded = stamp.read_text()
    names = [line.split()[0] for line in recorded.splitlines()]
    return _package_versions(names) == recorded


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for the duration of the block."""
    with open(path, "w") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)


def _prune(cache: Path, keep: int) -> None:
    """Remove all but the ``keep`` newest cache entries (each is ~50 MB)."""
    entries = sorted((p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")),
                     key=lambda p: p.stat().st_mtime, reverse=True)  # fmt: skip
    for old in entries[keep:]:
        log.info("removing old simulator build %s", old)
        shutil.rmtree(old, ignore_errors=True)


def build_info(release: str) -> str:
    """``/etc/build.info`` of a simulated ``release``: the first keys StarlingX's build writes
    (starlingx/utilities ``build-info``; a developer build's type)."""
    return (
        f'SW_VERSION="{RELEASES[release]}"\n'
        'BUILD_TARGET="Host Installer"\n'
        'BUILD_TYPE="Informal"\n'
        f'BUILD_ID="stx-sim-{release}"\n'
    )


def _build_entry(entry: Path, src: Path, release: str) -> None:
    """Build kernel, initramfs, root filesystem and ISO into a temp dir, then rename it."""
    kver = kernels()[-1]
    log.info("building the simulator ISO of StarlingX %s (kernel %s) into %s", release, kver, entry)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=entry.parent))
    try:
        host_files: set[str] = set()
        iso_dir, root = work / "iso", work / "rootfs"
        initrd = _make_initramfs(work / "initramfs", src, kver, host_files)
        _make_rootfs(root, src, kver, initrd, host_files)
        _apply_release(root, src, release)
        (iso_dir / "stx").mkdir(parents=True)
        _write_tar_gz(root, iso_dir / "stx" / "rootfs.tgz")
        for kernel in ISO_KERNELS:
            shutil.copyfile(f"/boot/vmlinuz-{kver}", iso_dir / kernel)
        (iso_dir / "initrd.img").write_bytes(initrd)
        for path in ISOLINUX_FILES:
            _copy_host_file(path, iso_dir, host_files, dest=f"isolinux/{Path(path).name}")
        shutil.copyfile(src / "releases" / release / "isolinux.cfg",
                        iso_dir / "isolinux" / "isolinux.cfg")  # fmt: skip
        # UEFI: GRUB and the release's grub.cfg in EFI/BOOT, and the same in efi.img
        _copy_file(root / GRUB_EFI, iso_dir / "EFI/BOOT/bootx64.efi")
        _copy_file(src / "releases" / release / "grub.cfg", iso_dir / "EFI/BOOT/grub.cfg")
        _fat_image(iso_dir / EFI_BOOT_IMAGE, iso_dir / "EFI", "EFIimg")
        _make_iso(iso_dir, work / ISO_NAME)
        (work / "packages.txt").write_text(_package_versions(_owning_packages(host_files)))
        for stage in (iso_dir, root, work / "initramfs"):
            shutil.rmtree(stage)
        shutil.rmtree(entry, ignore_errors=True)
        os.replace(work, entry)
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- the initramfs -------------------------------------------------------------------------


def _make_initramfs(stage: Path, src: Path, kver: str, host_files: set[str]) -> bytes:
    """The gzipped cpio initramfs: busybox, kernel modules, ``/init`` and a few hooks."""
    _merged_usr(stage)
    _make_dirs(stage, "dev", "proc", "sys", "run", "newroot")
    _install_busybox(stage, host_files)
    modules = _module_files(kver)
    for mod in modules:
        _copy_host_file(mod, stage, host_files)
    (stage / "etc").mkdir(exist_ok=True)
    (stage / "etc" / "modules").write_text(
        "".join(f"{m} {MODULE_OPTIONS.get(Path(m).name, '')}".rstrip() + "\n" for m in modules)
    )
    for rel in INITRAMFS_FROM_ROOTFS:
        _copy_file(src / "rootfs" / rel, stage / rel)
    _copy_tree(src / "initramfs", stage)
    # A network install boots with metal's ``rdinit=/install`` (the per-MAC pxelinux files).
    _symlink("init", stage / "install")
    return _gzip(_cpio_newc(stage))


def _module_files(kver: str) -> list[str]:
    """The ``.ko`` files of ``MODULES`` and their dependencies, in load order."""
    files: list[str] = []
    for name in MODULES:
        out = subprocess.run(
            ["modprobe", "-S", kver, "--show-depends", name],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        for line in out.splitlines():
            words = line.split()
            if words[:1] == ["insmod"] and words[1] not in files:
                files.append(words[1])
    return files


def _cpio_newc(stage: Path) -> bytes:
    """A ``newc`` cpio archive of ``stage`` with sorted entries, root owner, fixed mtimes."""
    out = io.BytesIO()

    def entry(name: str, mode: int, data: bytes, ino: int) -> None:
        fields = (ino, mode, 0, 0, 1, SOURCE_DATE_EPOCH, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        out.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        out.write(name.encode() + b"\0")
        out.write(b"\0" * (-out.tell() % 4))
        out.write(data)
        out.write(b"\0" * (-out.tell() % 4))

    for ino, path in enumerate(_sorted_tree(stage), start=1):
        st = path.lstat()
        rel = path.relative_to(stage).as_posix()
        if path.is_symlink():
            entry(rel, st.st_mode, os.readlink(path).encode(), ino)
        elif path.is_dir():
            entry(rel, st.st_mode, b"", ino)
        else:
            entry(rel, st.st_mode, path.read_bytes(), ino)
    entry("TRAILER!!!", 0, b"", 0)
    return out.getvalue()


# -- the root filesystem -------------------------------------------------------------------


def _make_rootfs(root: Path, src: Path, kver: str, initrd: bytes, host_files: set[str]) -> None:
    """Stage the installed system: Debian binaries, libraries, python, then ``rootfs/``."""
    _merged_usr(root)
    _make_dirs(
        root,
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "mnt",
        "root",
        "home/sysadmin",
        "var/lib/stx",
        "var/log",
    )
    _install_busybox(root, host_files)
    elves = ["/usr/bin/bash", "/usr/bin/python3.11", "/usr/sbin/dnsmasq", PWQUALITY]
    for path in elves:
        _copy_host_file(path, root, host_files)
    for path in (*SUDO_FILES, *SSHD_FILES):
        _copy_host_file(path, root, host_files)
    elves += [path for path in (*SUDO_FILES, *SSHD_FILES) if not path.startswith("/etc/")]
    # iproute2's ip, as on StarlingX (busybox's has no `ip address replace`), in busybox's place.
    elves.append(IPROUTE2)
    _copy_host_file(IPROUTE2, root, host_files, dest="usr/sbin/ip")
    elves += _install_python_stdlib(root, host_files)
    for lib in _shared_libraries(elves):
        _copy_host_file(lib, root, host_files)
    _symlink("python3.11", root / "usr/bin/python3")
    _symlink("../run", root / "var/run")  # Debian's; pam_faillock keeps its tallies there
    boot = root / "boot"
    boot.mkdir()
    _copy_host_file(f"/boot/vmlinuz-{kver}", root, host_files, dest="boot/vmlinuz")
    (boot / "initrd.img").write_bytes(initrd)
    grub = root / "usr/lib/stx-sim/grub"
    grub.mkdir(parents=True)
    shutil.copyfile("/usr/lib/grub/i386-pc/boot.img", grub / "boot.img")
    _run(["grub-mkimage", "-O", "i386-pc", "-p", "(hd0,msdos1)/boot/grub",
          "-o", str(grub / "core.img"), *GRUB_DISK_MODULES])  # fmt: skip
    # UEFI: GRUB for network boots in /var/pxeboot/EFI/BOOT (dnsmasq's UEFI boot file), whose
    # grub.cfg there is metal's UEFI menu through a link (the kickstart makes it), and the
    # installed disk's EFI system partition
    _grub_efi(root / GRUB_EFI)
    _symlink("../../pxelinux.cfg/grub.cfg", (root / GRUB_EFI).parent / "grub.cfg")
    esp = root.parent / "esp"
    _copy_file(root / GRUB_EFI, esp / "EFI/BOOT/bootx64.efi")
    (esp / "EFI/BOOT/grub.cfg").write_text(ESP_GRUB_CFG)
    _fat_image(grub / "esp.img", esp / "EFI", "otaefi")  # kickstart.cfg's label
    shutil.rmtree(esp)
    (root / CRACKLIB_DICT).parent.mkdir(parents=True)
    _run(["create-cracklib-dict", "-o", str(root / CRACKLIB_DICT), CRACKLIB_WORDS],
         env={**os.environ, "LC_ALL": "C"})  # fmt: skip
    for path in PXELINUX_FILES:
        _copy_host_file(path, root, host_files, dest=f"var/pxeboot/{Path(path).name}")
    _copy_tree(src / "rootfs", root)
    _compile_python(root)


def _apply_release(root: Path, src: Path, release: str) -> None:
    """Lay ``releases/<release>/rootfs`` over the root filesystem; write ``/etc/build.info``
    and the release into ``/etc/issue*`` (``@PLATFORM_RELEASE@``, as config-files'
    debian-release-config rules do)."""
    _copy_tree(src / "releases" / release / "rootfs", root)
    (root / "etc" / "build.info").write_text(build_info(release))
    for issue in ("issue", "issue.net"):
        path = root / "etc" / issue
        path.write_text(path.read_text().replace("@PLATFORM_RELEASE@", RELEASES[release]))
    install_pxe_configs(root, src / "pxe-network-installer", RELEASES[release])
    for rel, mode in {**MODES, **RELEASE_MODES.get(release, {})}.items():
        os.chmod(root / rel, mode)


def install_pxe_configs(root: Path, configs: Path, sw_version: str) -> None:
    """Install metal's pxelinux and UEFI GRUB configurations as pxe-network-installer's
    ``debian/deb_folder/rules`` does: ``default`` as is, ``pxe-grub.cfg`` as ``grub.cfg``, each
    ``[efi-]debian-pxe-KIND-install`` as ``[efi-]pxe-KIND-install-SW_VERSION`` with
    ``xxxSW_VERSIONxxx`` replaced."""
    dest = root / "var/pxeboot/pxelinux.cfg.files"
    dest.mkdir(parents=True, exist_ok=True)
    (root / "var/pxeboot/pxelinux.cfg").mkdir(exist_ok=True)
    (root / f"var/pxeboot/rel-{sw_version}").mkdir(exist_ok=True)
    shutil.copyfile(configs / "default", dest / "default")
    shutil.copyfile(configs / "pxe-grub.cfg", dest / "grub.cfg")
    for kind in PXE_TEMPLATES:
        for firmware in ("", "efi-"):
            text = (configs / f"{firmware}debian-pxe-{kind}-install").read_text()
            target = dest / f"{firmware}pxe-{kind}-install-{sw_version}"
            target.write_text(text.replace("xxxSW_VERSIONxxx", sw_version))


def _install_python_stdlib(root: Path, host_files: set[str]) -> list[str]:
    """Copy the trimmed standard library; return its extension modules (for ldd)."""
    stdlib = Path("/usr/lib/python3.11")
    extensions: list[str] = []
    for dirpath, dirnames, filenames in os.walk(stdlib):
        dirnames[:] = sorted(d for d in dirnames if d not in PYTHON_DROP)
        for name in filenames:
            if name in PYTHON_DROP or name.endswith(".pyc"):
                continue
            path = os.path.join(dirpath, name)
            if name.endswith(".so"):
                if PYTHON_DROP_EXT.match(name):
                    continue
                extensions.append(path)
            _copy_host_file(path, root, host_files)
    return extensions


def _compile_python(root: Path) -> None:
    """Byte-compile the guest's python into hash-based pycs (reproducible, no mtime checks).

    The standard library's are never re-checked against their sources; ours are.
    """
    trees = (("usr/lib/python3.11", "unchecked-hash"), ("usr/lib/stxsim", "checked-hash"),
             ("usr/lib/stx-sim", "checked-hash"))  # fmt: skip
    for tree, mode in trees:
        if (root / tree).is_dir():
            _run(["/usr/bin/python3.11", "-m", "compileall", "-q", "-j0", "--invalidation-mode",
                  mode, "-s", str(root), "-p", "/", str(root / tree)],
                 env={**os.environ, "PYTHONHASHSEED": "0"})  # fmt: skip


def _shared_libraries(elves: Iterable[str]) -> list[str]:
    """Every shared library (and the loader) the given ELF files need, per ldd."""
    libs: set[str] = set()
    for elf in elves:
        out = subprocess.run(["ldd", elf], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            m = re.search(r"(/\S+) \(0x", line)
            if m:
                libs.add(m.group(1))
    return sorted(libs)


def _owning_packages(host_files: Iterable[str]) -> list[str]:
    """The Debian packages the copied host files belong to.

    dpkg knows a file by the path its package ships (``/lib/...`` or ``/usr/lib/...`` on a
    merged-/usr system), so every file is asked for by both, and by its link target's too.
    """
    paths: set[str] = set()
    for path in host_files:
        for p in (path, os.path.realpath(path)):
            paths.update((p, p.removeprefix("/usr") if p.startswith("/usr/") else "/usr" + p))
    res = subprocess.run(["dpkg", "-S", *sorted(paths)], capture_output=True, text=True,
                         check=False)  # fmt: skip
    pkgs = set(BUILD_PACKAGES)
    for line in res.stdout.splitlines():
        owners, _, _ = line.partition(": ")
        pkgs.update(o.strip() for o in owners.split(","))
    return sorted(pkgs)


# -- UEFI boot images ---------------------------------------------------------------------


def _grub_efi(out: Path) -> None:
    """StarlingX's UEFI GRUB image (``GRUB_EFI_MODULES``, ``GRUB_EFI_CONFIG``) from Debian's."""
    out.parent.mkdir(parents=True, exist_ok=True)
    embedded = out.with_name("embedded.cfg")
    embedded.write_text(GRUB_EFI_CONFIG)
    _run(["grub-mkimage", "-O", "x86_64-efi", "-p", "/EFI/BOOT", "-c", str(embedded),
          "-o", str(out), *GRUB_EFI_MODULES])  # fmt: skip
    embedded.unlink()


def _fat_image(out: Path, efi: Path, label: str) -> None:
    """A FAT image of the ``EFI`` tree ``efi``, as wic makes a StarlingX ISO's efi.img
    (``mkfs.vfat -n EFIimg``, then ``mcopy -s``); fixed volume id and dates."""
    _fix_mtimes(efi)
    out.unlink(missing_ok=True)
    _run(["mkfs.vfat", "--invariant", "-i", "53545849", "-n", label, "-C", str(out),
          str(EFI_IMAGE_KIB)])  # fmt: skip
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "TZ": "UTC"}
    _run(["mcopy", "-s", "-m", "-i", str(out), str(efi), "::/"], env=env)


# -- the ISO -------------------------------------------------------------------------------


def _make_iso(iso_dir: Path, out: Path) -> None:
    """An El Torito ISO booting ISOLINUX under BIOS and GRUB under UEFI, as StarlingX's build
    makes it; reproducible.

    xorriso honours ``SOURCE_DATE_EPOCH`` for the volume dates; file dates are fixed first.
    """
    _fix_mtimes(iso_dir)
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(SOURCE_DATE_EPOCH), "TZ": "UTC"}
    _run(["xorriso", "-as", "mkisofs", "-o", str(out), "-V", ISO_LABEL, "-R", "-J",
          "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
          "-boot-load-size", "4", "-boot-info-table",
          "-eltorito-alt-boot", "-e", EFI_BOOT_IMAGE, "-no-emul-boot", str(iso_dir)],
         env=env)  # fmt: skip


def _write_tar_gz(root: Path, out: Path) -> None:
    """A reproducible tar.gz of ``root``: sorted, root-owned but for ``OWNERS`` (by number),
    fixed mtimes, no gzip name/time."""
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:  # fmt: skip
        for path in _sorted_tree(root):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(root).as_posix())
            info.uid, info.gid = OWNERS.get(info.name, (0, 0))
            info.uname = "root" if info.uid == 0 else ""
            info.gname = "root" if info.gid == 0 else ""
            info.mtime = SOURCE_DATE_EPOCH
            if info.isreg():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


# -- helpers -------------------------------------------------------------------------------


def _merged_usr(root: Path) -> None:
    """Debian's merged /usr: /bin, /sbin, /lib, /lib64 are links into /usr."""
    for d in ("bin", "sbin", "lib", "lib64"):
        (root / "usr" / d).mkdir(parents=True, exist_ok=True)
        _symlink(f"usr/{d}", root / d)


def _make_dirs(root: Path, *dirs: str) -> None:
    for d in dirs:
        (root / d).mkdir(parents=True, exist_ok=True)


def _install_busybox(root: Path, host_files: set[str]) -> None:
    """busybox and a link per applet (``busybox --list-full``), under /usr."""
    _copy_host_file("/usr/bin/busybox", root, host_files)
    applets = subprocess.run(
        ["/usr/bin/busybox", "--list-full"], capture_output=True, text=True, check=True
    ).stdout.split()
    for applet in applets:
        rel = applet if applet.startswith("usr/") else f"usr/{applet}"
        link = root / rel
        if not link.exists():
            _symlink("/usr/bin/busybox", link)


def _copy_host_file(path: str, root: Path, host_files: set[str], dest: str = "") -> None:
    """Copy a host file into ``root`` at the same path (under /usr when merged)."""
    rel = dest or path.lstrip("/")
    if rel.split("/")[0] in ("bin", "sbin", "lib", "lib64"):
        rel = f"usr/{rel}"
    _copy_file(Path(path), root / rel)
    host_files.add(path)


def _copy_file(src: Path, dest: Path) -> None:
    """Copy one file's content and permission bits (replacing a link already there)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink():
        dest.unlink()
    shutil.copyfile(src, dest)
    os.chmod(dest, stat.S_IMODE(src.stat().st_mode))


def _copy_tree(src: Path, dest: Path) -> None:
    """Copy a tree of plain files and symlinks over ``dest``."""
    for path in _sorted_tree(src):
        target = dest / path.relative_to(src)
        if path.is_symlink():
            if target.is_symlink() or target.exists():
                target.unlink()
            target.parent.mkdir(parents=True, exist_ok=True)
            _symlink(os.readlink(path), target)
        elif path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif "__pycache__" not in path.parts:
            _copy_file(path, target)


def _symlink(target: str, link: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def _sorted_tree(root: Path) -> list[Path]:
    """Every path under ``root`` (not ``root`` itself), sorted, without following links."""
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        found.extend(Path(dirpath, n) for n in dirnames + filenames)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def _fix_mtimes(root: Path) -> None:
    for path in [*_sorted_tree(root), root]:
        os.utime(path, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH), follow_symlinks=False)


def _gzip(data: bytes) -> bytes:
    """gzip without name or timestamp (``gzip -n``)."""
    return gzip.compress(data, compresslevel=6, mtime=0)


def _run(argv: list[str], env: dict[str, str] | None = None) -> None:
    """Run a build tool; its stderr goes into the HostError when it fails."""
    res = subprocess.run(argv, capture_output=True, text=True, check=False, env=env)
    if res.returncode != 0:
        raise HostError(f"{argv[0]} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
