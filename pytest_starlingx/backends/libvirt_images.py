"""The image cache of a libvirt host: boot images (ISOs) uploaded once per host and image.

When the libvirt host is not this machine, a lab's CD image cannot be referenced by its local
path: it is uploaded through libvirt's storage API (``virStorageVolUpload``, a stream) into
the host's cache pool, a directory pool ``stx-image-cache`` at ``<base>/stx-image-cache`` (both
names configurable, ``LibvirtConfig.image_cache`` and ``remote_pool_dir``), and
the domains reference that volume's path on the host.

One image, one digest (sha256 of its bytes). libvirt cannot rename a volume, and an upload cut
short (the process killed, the connection lost) leaves a volume of the full size holding part
of the image, so completeness is recorded beside the data:

* ``<sha256>.<uploader>.iso`` holds the image, uploaded by ``<uploader>`` (``h<host hash>-<pid>-
  <start>``: the uploading process, :class:`~pytest_starlingx.ownership.Holder`'s identity);
* ``<sha256>.<uploader>.done``, an empty volume, is created only after the upload stream's
  ``finish()`` returned (libvirt's confirmation that every byte was written).

An image is in the cache when a ``.iso`` has its ``.done`` (the first in name order, if two
uploaders raced). A ``.iso`` without one is an upload in progress or cut short; it is never
used, and an uploader removes those whose process, on this machine, is gone (its own cut-short
attempt, repeated after a reconnect, among them). An uploader elsewhere may upload the same
image at the same time: both copies are complete, one is used.

The cache belongs to no lab: a lab's teardown and ``stx-lab gc`` never touch it (its name
carries no lab id, its volumes are in no ledger). ``LibvirtBackend.clear_image_cache`` removes
it when no domain on the host uses it (``stx-lab image-cache clear``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import libvirt

from pytest_starlingx.ownership import Holder

logger = logging.getLogger("pytest_starlingx.backend")

CACHE_POOL = "stx-image-cache"
_DATA, _DONE = ".iso", ".done"
_READ_SIZE = 1 << 20


def image_digest(path: Path) -> str:
    """The sha256 of the file at ``path``, in hex."""
    digest = hashlib.sha256()
    with path.open("rb") as image:
        while chunk := image.read(_READ_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def uploader_tag(holder: Holder) -> str:
    """A volume-name-safe identity of an uploading process (its host's name hashed)."""
    host = hashlib.sha256(holder.host.encode()).hexdigest()[:8]
    return f"h{host}-{holder.pid}-{holder.start or 0}"


def _uploader(tag: str) -> Holder | None:
    """The process an uploader tag names, when it ran on this machine; None otherwise."""
    try:
        host, pid, start = tag.split("-")
        holder = Holder(socket.gethostname(), int(pid), int(start) or None)
    except ValueError:
        return None
    return holder if uploader_tag(holder).startswith(host + "-") else None


def cache_pool_xml(name: str, path: PurePosixPath) -> str:
    """The cache pool: a directory pool at ``path`` on the libvirt host."""
    root = ET.Element("pool", type="dir")
    ET.SubElement(root, "name").text = name
    target = ET.SubElement(root, "target")
    ET.SubElement(target, "path").text = str(path)
    ET.SubElement(ET.SubElement(target, "permissions"), "mode").text = "0755"
    return ET.tostring(root, encoding="unicode")


def _volume_xml(name: str, size: int) -> str:
    root = ET.Element("volume")
    ET.SubElement(root, "name").text = name
    ET.SubElement(root, "capacity", unit="bytes").text = str(size)
    ET.SubElement(ET.SubElement(root, "target"), "format", type="raw")
    return ET.tostring(root, encoding="unicode")


def complete_volume(names: set[str], digest: str) -> str | None:
    """The name of a complete upload of image ``digest`` among volume ``names``, if any."""
    done = sorted(n for n in names if n.startswith(digest + ".") and n.endswith(_DONE))
    for marker in done:
        data = marker.removesuffix(_DONE) + _DATA
        if data in names:
            return data
    return None


def dead_uploads(names: set[str]) -> list[str]:
    """Uploads without their ``.done`` whose uploader ran here and is gone, or is this process
    (an attempt cut short by a lost connection; uploads here run one at a time): data names."""
    me, dead = Holder.me(), []
    for name in sorted(names):
        if not name.endswith(_DATA) or name.removesuffix(_DATA) + _DONE in names:
            continue
        parts = name.removesuffix(_DATA).split(".")
        holder = _uploader(parts[1]) if len(parts) == 2 else None
        if holder is not None and (holder == me or holder.alive() is False):
            dead.append(name)
    return dead


def cached_image(conn: libvirt.virConnect, pool_name: str, image: Path, digest: str) -> str:
    """The host path of image ``digest`` in the cache pool, uploaded from ``image`` unless it
    is there complete. Safe to run again after a reconnect: an attempt cut short is removed."""
    pool = conn.storagePoolLookupByName(pool_name)
    names = set(pool.listVolumes())
    size = image.stat().st_size
    found = complete_volume(names, digest)
    if found is not None:
        vol = pool.storageVolLookupByName(found)
        if vol.info()[1] == size:
            logger.info("image %s: in the cache of the libvirt host as %s", image.name, found)
            return str(vol.path())
        logger.warning("cached image %s has not the size of %s; uploading it again", found, image)
    for name in dead_uploads(names):
        logger.info("removing the cut-short upload %s from the image cache", name)
        with contextlib.suppress(libvirt.libvirtError):
            pool.storageVolLookupByName(name).delete(0)
    base = f"{digest}.{uploader_tag(Holder.me())}"
    logger.info("image %s: uploading %d MiB to the libvirt host's cache", image.name, size >> 20)
    vol = pool.createXML(_volume_xml(base + _DATA, size), 0)
    started = _upload(conn, vol, image, size)
    pool.createXML(_volume_xml(base + _DONE, 0), 0)
    logger.info(
        "image %s: uploaded %d MiB to the cache of the libvirt host in %.1fs",
        image.name,
        size >> 20,
        started,
    )
    return str(vol.path())


def _upload(conn: libvirt.virConnect, vol: libvirt.virStorageVol, image: Path, size: int) -> float:
    """Send ``image`` into ``vol``; the seconds it took. ``finish()`` confirms every byte."""
    started = time.monotonic()
    stream = conn.newStream(0)
    with _aborted_on_error(stream), image.open("rb") as source:
        vol.upload(stream, 0, size, 0)
        stream.sendAll(lambda _s, nbytes, f: f.read(nbytes), source)
        stream.finish()
    return time.monotonic() - started


@contextlib.contextmanager
def _aborted_on_error(stream: libvirt.virStream) -> Iterator[None]:
    try:
        yield
    except BaseException:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
        raise
