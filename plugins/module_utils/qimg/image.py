# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The block-device contract every format driver fulfils, the opener and the chain reader.

Contract (offsets and lengths in bytes, guest view):
  dev.filename, dev.format_name, dev.size, dev.read_only
  dev.backing            opened backing BlockDevice or None
  dev.backing_filename   as stored in the image (None if none)
  dev.backing_format     as stored (None if none)
  dev.read(offset, length) -> bytes            reads through the backing chain
  dev.write(offset, data)
  dev.write_zeroes(offset, length)
  dev.discard(offset, length)
  dev.block_status(offset, length) -> [Extent]   this layer only (depth 0), covering the range
  dev.flush(); dev.close()  (also a context manager: closes the whole chain)
  dev.format_specific() -> dict or None   qemu-img's "format-specific" object
  dev.info_fields() -> dict               extra top-level qemu-img info keys (cluster-size, snapshots ...)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import os

from .errors import ImageNotFound, InvalidArgument, ReadOnlyImage, UnsafeImage, UnsupportedFeature
from .fileio import zero_view

# status of a guest range in ONE layer:
#   DATA: allocated here with data (offset = host offset when it maps linearly, else None)
#   ZERO: allocated here, reads as zeros (offset may be set for preallocated zero clusters)
#   UNALLOCATED: not allocated here; reads come from the backing file (or zeros)
DATA = "data"
ZERO = "zero"
UNALLOCATED = "unallocated"

Extent = collections.namedtuple("Extent", "start length status offset")
# A chain extent: where the content of [start, start+length) comes from.
#   depth: layer index (0 = top); for ranges unallocated everywhere, the depth of the last layer
#   present: allocated in some layer; zero: reads as zeros; data: has data; offset: host offset
#   in the file at `depth`, or None; filename: that layer's filename
ChainExtent = collections.namedtuple("ChainExtent", "start length depth present zero data offset filename")

MAX_CHAIN_DEPTH = 64


class BlockDevice(object):
    """Base class with the shared plumbing. Drivers override the I/O methods."""

    format_name = None

    def __init__(self, filename, read_only=True):
        self.filename = filename
        self.read_only = read_only
        self.size = 0
        self.backing = None
        self.backing_filename = None
        self.backing_format = None

    # --- I/O, to be provided by drivers ---
    def read(self, offset, length):
        raise NotImplementedError

    def readinto(self, offset, view):
        """Read len(view) guest bytes at offset into the writable memoryview (drivers that can
        read straight into it override this; it lets callers reuse their buffers)."""
        view[:] = self.read(offset, len(view))

    def write(self, offset, data):
        raise NotImplementedError

    def write_zeroes(self, offset, length):
        raise NotImplementedError

    def discard(self, offset, length):
        raise NotImplementedError

    def block_status(self, offset, length):
        raise NotImplementedError

    def flush(self):
        pass

    def close_self(self):
        pass

    # --- facts ---
    def format_specific(self):
        return None

    def info_fields(self):
        return {}

    def actual_size(self):
        return None

    # --- shared helpers ---
    def check_range(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InvalidArgument("%s: request [%d, +%d) is outside the image (size %d)"
                                  % (self.filename, offset, length, self.size))

    def check_writable(self):
        if self.read_only:
            raise ReadOnlyImage("%s: image is opened read-only" % self.filename)

    def readinto_backing(self, offset, view):
        """Guest data below this layer for [offset, offset+len(view)) into view; zeros past the
        backing's end (or with no backing file)."""
        length = len(view)
        n = 0 if self.backing is None else max(0, min(length, self.backing.size - offset))
        if n:
            self.backing.readinto(offset, view[:n])
        if n < length:
            view[n:] = zero_view(length - n)

    def chain(self):
        dev = self
        while dev is not None:
            yield dev
            dev = dev.backing

    def close(self):
        """Close this layer and its whole backing chain."""
        for dev in list(self.chain()):
            dev.close_self()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def chain_block_status(dev, offset, length):
    """Map [offset, offset+length) through the backing chain like `qemu-img map` does.

    Returns a list of ChainExtent, unmerged (callers merge).
    """
    out = []
    _chain_status(dev, 0, offset, length, out)
    return out


def _chain_status(dev, depth, offset, length, out):
    # Mirrors qemu-img map: a layer that does not allocate a range defers to its backing file;
    # past the end of a shorter backing file (or with none) the range reads as zeros at this depth.
    end = offset + length
    for ext in dev.block_status(offset, length):
        s, e = ext.start, min(ext.start + ext.length, end)
        if e <= s:
            continue
        if ext.status == UNALLOCATED:
            below = dev.backing
            if below is not None and s < below.size:
                be = min(e, below.size)
                _chain_status(below, depth + 1, s, be - s, out)
                s = be
            if s < e:
                offset_here = None if ext.offset is None else ext.offset + (s - ext.start)
                out.append(ChainExtent(s, e - s, depth, False, True, False, offset_here, None))
        else:
            data = ext.status == DATA
            out.append(ChainExtent(s, e - s, depth, True, not data, data, ext.offset, dev.filename))


# ---------------------------------------------------------------------------- the opener
_PROTOCOLS = ("json", "file", "nbd", "nbd+unix", "nbd+tcp", "http", "https", "ftp", "ftps", "ssh", "iscsi",
              "rbd", "gluster", "gluster+tcp", "gluster+unix", "gluster+rdma", "nfs", "host_device",
              "host_cdrom", "vvfat", "blkdebug", "blkverify", "null-co", "null-aio", "throttle", "fd")
FORMATS = ("raw", "qcow2")


def refuse_pseudo_filename(name, what, allow_unsafe=False):
    """Refuse QEMU's json: syntax and protocol prefixes (they reach beyond the local file)."""
    if allow_unsafe or ":" not in name:
        return
    prefix = name.split(":", 1)[0]
    if prefix.lower() in _PROTOCOLS and "/" not in prefix:
        raise UnsafeImage("%s '%s' uses the '%s:' pseudo-filename syntax, which is refused "
                          "(only local files are opened)" % (what, name, prefix))


def probe_format(node):
    """qcow2 by its magic, otherwise raw."""
    head = node.pread(0, 4)
    return "qcow2" if head == b"QFI\xfb" else "raw"


def full_backing_path(overlay_filename, backing_name):
    """QEMU's path_combine(): a relative backing name is relative to the overlay's directory."""
    if os.path.isabs(backing_name):
        return backing_name
    base_dir = os.path.dirname(overlay_filename)
    return os.path.join(base_dir, backing_name) if base_dir else backing_name


def open_format(filename, node, fmt=None, read_only=True, repair=False):
    """The format driver `fmt` (probed when None) over an open protocol node; on failure the
    node is left open for the caller to close."""
    from .formats.qcow2 import Qcow2Image
    from .formats.raw import RawImage
    if fmt is None:
        fmt = probe_format(node)
    if fmt == "qcow2":
        return Qcow2Image(filename, node, read_only, repair=repair)
    return RawImage(filename, node, read_only)


def open_single(filename, fmt=None, read_only=True, force_share=False, repair=False):
    """Open one layer (no backing) on a local file, with QEMU's lock held by its node."""
    from .protocols.file import HostFile
    if fmt is not None and fmt not in FORMATS:
        raise InvalidArgument("Could not open '%s': Unknown driver '%s'" % (filename, fmt))
    node = HostFile(filename, read_only, force_share)
    try:
        return open_format(filename, node, fmt, read_only, repair)
    except BaseException:
        node.close()
        raise


def open_image(filename, fmt=None, read_only=True, force_share=False, open_backing=True,
               allow_unsafe_backing=False):
    """Open an image and (optionally) its backing chain, depth-limited and loop-checked.

    Backing files are always opened read-only and with the caller's force_share.
    """
    refuse_pseudo_filename(filename, "Image file name", allow_unsafe_backing)
    top = open_single(filename, fmt, read_only, force_share)
    if not open_backing:
        return top
    try:
        seen = set()
        st = os.fstat(top.fd)
        seen.add((st.st_dev, st.st_ino))
        dev = top
        depth = 0
        while dev.backing_filename:
            depth += 1
            if depth > MAX_CHAIN_DEPTH:
                raise UnsafeImage("Could not open backing file of '%s': the backing chain of '%s' is deeper "
                                  "than %d images" % (dev.filename, filename, MAX_CHAIN_DEPTH))
            name = dev.backing_filename
            refuse_pseudo_filename(name, "Backing file name", allow_unsafe_backing)
            path = full_backing_path(dev.filename, name)
            bfmt = dev.backing_format
            if bfmt is not None and bfmt not in FORMATS:
                raise UnsupportedFeature("Could not open backing file '%s' of '%s': Unknown driver '%s'"
                                         % (path, dev.filename, bfmt))
            try:
                bst = os.stat(path)
            except OSError as e:
                raise ImageNotFound("Could not open '%s': Could not open backing file: Could not open '%s': %s"
                                    % (filename, path, e.strerror))
            key = (bst.st_dev, bst.st_ino)
            if key in seen:
                raise UnsafeImage("Could not open backing file '%s' of '%s': the backing chain has a loop"
                                  % (path, dev.filename))
            seen.add(key)
            backing = open_single(path, bfmt, True, force_share)
            dev.backing = backing
            dev = backing
        return top
    except BaseException:
        top.close()
        raise
