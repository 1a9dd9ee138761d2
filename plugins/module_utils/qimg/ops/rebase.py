# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`rebase`: give an image another backing file (qemu-img rebase), safe or header-only (unsafe).

Safe mode keeps the guest view: every range the image does not allocate itself and where the old
and the new backing chain read differently gets the old content written into the image, then the
header names the new backing file. Unsafe mode rewrites the header only.

Write order (crash safety): the copied data go through the driver (data, then L2, then L1, with
refcounts first), the device is flushed, and the header is switched last by one write of its first
bytes; a kill at any point leaves the old guest view, read through the old backing file until the
header switch and through the new one after it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ..errors import QimgError, InvalidArgument, UnsafeImage
from ..image import (FORMATS, UNALLOCATED, MAX_CHAIN_DEPTH, full_backing_path, open_image,
                     refuse_pseudo_filename)

SECTOR = 512

# The block drivers of a usual QEMU 7.2 build: bdrv_find_format() finds formats and protocols by these
# names, so `rebase -u -F host_device` only stores the name, as qemu-img does.
QEMU_DRIVERS = frozenset((
    "blkdebug", "blklogwrites", "blkverify", "bochs", "cloop", "compress", "copy-before-write", "copy-on-read",
    "dmg", "file", "ftp", "ftps", "gluster", "host_cdrom", "host_device", "http", "https", "iscsi", "iser", "luks",
    "nbd", "nfs", "null-aio", "null-co", "nvme", "parallels", "preallocate", "qcow", "qcow2", "qed", "quorum",
    "raw", "rbd", "replication", "snapshot-access", "ssh", "throttle", "vdi", "vhdx", "vmdk", "vpc", "vvfat"))


class RebaseError(QimgError):
    """A failure of the header change (qemu-img's "Could not change the backing file to ..." family)."""


def _fail_change(name, why):
    return RebaseError("Could not change the backing file to '%s': %s" % (name or "", why))


def _header_update(dev, backing_file, backing_fmt):
    """The new header bytes (padded over the old ones) for the backing change, validated first."""
    if dev.format_name != "qcow2":
        raise _fail_change(backing_file, "Operation not supported")
    if backing_file and not backing_fmt:
        raise _fail_change(backing_file, "backing format must be specified")
    from ..formats.qcow2 import header as hdr
    import copy
    if backing_file and len(backing_file.encode("utf-8", "surrogateescape")) > hdr.MAX_BACKING_NAME:
        raise _fail_change(backing_file, "Invalid argument")
    h = dev.header
    old_bytes = hdr.header_cluster_bytes(copy.copy(h), dev.cluster_size)
    new = copy.copy(h)
    new.backing_file = backing_file or None
    new.backing_format = (backing_fmt or None) if backing_file else None
    try:
        new_bytes = hdr.header_cluster_bytes(new, dev.cluster_size)
    except QimgError:
        raise _fail_change(backing_file, "No space left in the file header")
    if len(new_bytes) > dev.cluster_size:
        raise _fail_change(backing_file, "No space left in the file header")
    if len(new_bytes) < len(old_bytes):
        new_bytes += bytes(len(old_bytes) - len(new_bytes))
    return new, new_bytes


def _identity(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _open_new_backing(dev, backing_file, backing_fmt, force_share, src_cache, allow_unsafe_backing=False):
    """(new backing device, whether the caller must close it, the layer of dev's chain it is or None)."""
    refuse_pseudo_filename(backing_file, "Backing file name", allow_unsafe_backing)
    path = full_backing_path(dev.filename, backing_file)
    want = _identity(path)
    top = _identity(dev.filename)
    if want is not None:
        for layer in list(dev.chain())[1:]:
            if _identity(layer.filename) == want:
                return layer, False, layer
    try:
        new = open_image(path, backing_fmt, read_only=True, force_share=force_share, cache=src_cache,
                         allow_unsafe_backing=allow_unsafe_backing)
    except QimgError as e:
        message = e.message
        head = "Could not open '%s': " % path
        if message.startswith(head):
            message = message[len(head):]
        raise type(e)("Could not open new backing file '%s': %s" % (backing_file, message), hint=e.hint)
    try:
        depth = 0
        for layer in new.chain():
            depth += 1
            if top is not None and _identity(layer.filename) == top:
                raise UnsafeImage("Could not open new backing file '%s': the backing chain has a loop"
                                  % backing_file)
        if depth + 1 > MAX_CHAIN_DEPTH:
            raise UnsafeImage("Could not open new backing file '%s': the backing chain would be deeper "
                              "than %d images" % (backing_file, MAX_CHAIN_DEPTH))
    except BaseException:
        new.close()
        raise
    return new, True, None


def _read_below(dev, offset, length):
    """What the chain below `dev`'s top layer holds (zeros past its end or with no backing)."""
    buf = bytearray(length)
    dev.readinto_backing(offset, memoryview(buf))
    return buf


def _read_layer(layer, offset, length):
    if layer is None or offset >= layer.size:
        return bytes(length)
    n = min(length, layer.size - offset)
    data = layer.read(offset, n)
    return data + bytes(length - n) if n < length else data


def _diff_runs(old, new, base):
    """[(start, end)] of the sector-aligned runs where old and new differ (absolute offsets)."""
    runs = []
    n = len(old)
    pos = 0
    while pos < n:
        end = min(n, pos + SECTOR)
        if old[pos:end] != new[pos:end]:
            if runs and runs[-1][1] == base + pos:
                runs[-1] = (runs[-1][0], base + end)
            else:
                runs.append((base + pos, base + end))
        pos = end
    return runs


IO_BUF_SIZE = 2 * 1024 * 1024   # qemu-img's step: the progress figures follow its iterations


def _run(layer, offset, n):
    """(allocated, length): qemu's bdrv_is_allocated() on one layer; an unallocated run stops at
    the end of an L2 table, as QEMU's qcow2 block status does."""
    if layer is None or offset >= layer.size:
        return False, n
    n = min(n, layer.size - offset)
    exts = [e for e in layer.block_status(offset, n) if e.length > 0]
    if not exts:
        return False, n
    allocated = exts[0].status != UNALLOCATED
    if not allocated:
        l2_cover = getattr(layer, "l2_entries", 0) * getattr(layer, "cluster_size", 0)
        if l2_cover:
            n = min(n, l2_cover - offset % l2_cover)
    length = 0
    for e in exts:
        if (e.status != UNALLOCATED) != allocated:
            break
        length += e.length
    return allocated, max(1, min(n, length))


def _allocated_above(top, base, offset, n):
    """qemu's bdrv_is_allocated_above(top, base, include_base=false): (allocated, length)."""
    layer = top
    while layer is not None and layer is not base:
        allocated, pnum = _run(layer, offset, n)
        if allocated:
            return True, pnum
        n = pnum
        layer = layer.backing
    return False, n


def _copy_differences(dev, new_backing, prefix, check_mode, progress):
    """Write into dev every range where its old chain and new_backing differ; returns bytes written.

    The walk is qemu-img's: steps of at most IO_BUF_SIZE, allocated runs skipped, ranges the new
    backing (a layer of the old chain) shares with the old one skipped; progress() after each
    compared step."""
    copied = 0
    size = dev.size
    old_size = dev.backing.size if dev.backing is not None else 0
    new_size = new_backing.size if new_backing is not None else 0
    offset = 0
    while offset < size:
        n = min(IO_BUF_SIZE, size - offset)
        allocated, n = _run(dev, offset, n)
        if allocated:
            offset += n
            continue
        if prefix is not None and offset < old_size:
            # the old chain reads the prefix here unless a layer above the prefix allocates it
            # (past the old backing's end the old chain reads zeros: compare there, unlike 7.2)
            allocated, n = _allocated_above(dev.backing, prefix, offset, min(n, old_size - offset))
            if not allocated:
                offset += n
                continue
        if offset < old_size < offset + n:
            n = old_size - offset
        if offset < new_size < offset + n:
            n = new_size - offset
        old = _read_below(dev, offset, n)
        new = _read_layer(new_backing, offset, n)
        if old != new:
            for s, e in _diff_runs(old, new, offset):
                part = old[s - offset:e - offset]
                copied += e - s
                if check_mode:
                    continue
                if offset >= old_size:
                    dev.write_zeroes(s, e - s)
                else:
                    dev.write(s, bytes(part))
        offset += n
        if progress is not None:
            progress(offset, size)
    return copied


def rebase_image(filename, backing_file, backing_fmt=None, fmt=None, unsafe=False, force_share=False,
                 cache=None, src_cache=None, check_mode=False, on_open=None, progress=None,
                 allow_unsafe_backing=False):
    """Rebase `filename` onto backing_file (None or "" detaches). See docs/engine-api.md.

    unsafe: header only (the old backing file is not opened; it may be missing).
    on_open(dev): called once the image is open (the CLI prints its warnings there).
    progress(done, total): called after each step of safe mode's comparison (qemu-img's steps).
    allow_unsafe_backing: backing names (old chain and new backing file) may use json: or a protocol.
    Returns {"changed", "copied-bytes", "old-backing-file", "old-backing-format", "backing-file",
    "backing-format", "size" (the image's virtual size)}; check_mode decides (and counts what safe
    mode would copy) without writing.
    """
    if backing_fmt is not None and backing_fmt not in QEMU_DRIVERS:
        fmt_error = InvalidArgument("Invalid format name: '%s'" % backing_fmt)
    else:
        fmt_error = None
    read_only = check_mode
    with open_image(filename, fmt, read_only=read_only, force_share=force_share and read_only,
                    open_backing=not unsafe, cache=cache, allow_unsafe_backing=allow_unsafe_backing) as dev:
        if on_open is not None:
            on_open(dev)
        if fmt_error is not None:
            raise fmt_error
        old_file, old_fmt = dev.backing_filename, dev.backing_format
        new_backing, owned, prefix = None, False, None
        if not unsafe and backing_file:
            new_backing, owned, prefix = _open_new_backing(dev, backing_file, backing_fmt, force_share, src_cache,
                                                           allow_unsafe_backing)
        try:
            new_header, header_bytes = _header_update(dev, backing_file, backing_fmt)
            result = {"old-backing-file": old_file, "old-backing-format": old_fmt,
                      "backing-file": new_header.backing_file, "backing-format": new_header.backing_format,
                      "copied-bytes": 0, "size": dev.size}
            result["changed"] = (old_file, old_fmt) != (new_header.backing_file, new_header.backing_format)
            if not unsafe:
                result["copied-bytes"] = _copy_differences(dev, new_backing, prefix, check_mode, progress)
                if result["copied-bytes"]:
                    result["changed"] = True
        finally:
            if owned:
                new_backing.close()
        if check_mode:
            return result
        dev.flush()
        # the copy may have changed header fields (auto-clear bits): build the bytes again
        new_header, header_bytes = _header_update(dev, backing_file, backing_fmt)
        dev.file.pwrite(0, header_bytes)
        h = dev.header
        for name in ("backing_file", "backing_format", "backing_file_offset", "backing_file_size"):
            setattr(h, name, getattr(new_header, name))
        dev.backing_filename, dev.backing_format = h.backing_file, h.backing_format
        dev.sync()
        return result
