# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`commit`: write what an image allocates into its backing file (qemu-img commit), then empty it.

The base is the backing file, or any image deeper in the chain (then every range an image above
it allocates is written, and drop is implied as in qemu-img). The base is grown when it is smaller
than the top, never shrunk. Only then is the top emptied (unless drop). The top's guest view never
changes: every range reads the same from the top and, once committed, from the base.

Crash safety of the base (atomic=True, the default of the engine and the modules):
- a qcow2 base switches from its old content to the new one as a whole (``_ShadowCommit``): the
  committed clusters go to newly allocated clusters, every L2 table they touch is copied to a new
  cluster, a new L1 table is written, and one write of the header's size and L1 fields (24 bytes
  of its first sector) switches to them; only then are the old tables and the clusters they alone
  used released. A kill before the switch leaves the old content (the new clusters leak), a kill
  after it the new one (the old clusters leak until released). Bases whose layout this does not
  cover (extended L2 entries, an external data file, encryption, persistent bitmaps, a growth
  under a backing file of the base's own) are written through the driver, range by range;
- a raw base cannot be switched atomically: each of its ranges holds old or new content.
With atomic=False (the CLI: qemu-img's own layout, which iotests such as 097 and 313 show through
`map` and `check`) the base is written in place through its driver: a kill leaves no corruption,
and each cluster old or new.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import array
import os
import struct
import time

from ..errors import InvalidArgument
from ..image import UNALLOCATED, ZERO, full_backing_path, open_image

CHUNK = 1024 * 1024
RATE_CHUNK = 512 * 1024     # qemu's COMMIT_BUFFER_SIZE: the unit a rate-limited commit is paced in


class CommitError(InvalidArgument):
    """The image has no backing file, or the base is not in its chain."""


def _identity(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _find_base(top, base):
    """The depth (1 = the backing file) of `base` in top's chain, or None.

    As QEMU's bdrv_find_backing_image(): a relative name is relative to the directory of the image
    whose backing file it may be (never to the current directory)."""
    depth = 0
    prev = None
    for layer in top.chain():
        if depth:
            ident = _identity(layer.filename)
            if ident is not None and _identity(full_backing_path(prev.filename, base)) == ident:
                return depth
        prev = layer
        depth += 1
    return None


def _allocated_above(layers, size):
    """[(start, length, zero)]: the ranges of [0, size) that one of layers (top first) allocates, with
    whether the first layer allocating it reads zeros there."""
    out = []

    def walk(i, offset, length):
        if i == len(layers):
            return
        layer = layers[i]
        end = offset + length
        n = max(0, min(end, layer.size) - offset)
        for e in (layer.block_status(offset, n) if n else []):
            if not e.length:
                continue
            if e.status == UNALLOCATED:
                walk(i + 1, e.start, e.length)
            else:
                zero = e.status == ZERO
                if out and out[-1][0] + out[-1][1] == e.start and out[-1][2] == zero:
                    out[-1] = (out[-1][0], out[-1][1] + e.length, zero)
                else:
                    out.append((e.start, e.length, zero))
        if offset + n < end:
            walk(i + 1, offset + n, end - offset - n)
    walk(0, 0, size)
    return out


def _top_bytes(layers):
    """What the top layer alone allocates (the data an emptying commit takes out of it)."""
    return sum(length for _s, length, _z in _allocated_above(layers[:1], layers[0].size))


def _base_differs(top, base_dev, extents):
    """Whether writing `extents` (read through top's chain) would change the base's guest content."""
    for start, length, zero in extents:
        if start + length > base_dev.size:
            return True
        off, end = start, start + length
        while off < end:
            n = min(CHUNK, end - off)
            want = bytes(n) if zero else top.read(off, n)
            if base_dev.read(off, n) != want:
                return True
            off += n
    return False


class _Throttle(object):
    """qemu's block job rate limit: bytes per second over the whole job, paced before each chunk."""

    def __init__(self, rate):
        self.rate = rate
        self.start = time.monotonic()
        self.done = 0

    def __call__(self, n):
        """Account n bytes about to be written: wait until the bytes before them are due."""
        if self.rate:
            delay = self.done / float(self.rate) - (time.monotonic() - self.start)
            if delay > 0:
                time.sleep(delay)
        self.done += n


def _chunks(extents, chunk):
    for start, length, zero in extents:
        off, end = start, start + length
        while off < end:
            n = min(chunk, end - off)
            yield off, n, zero
            off += n


def _commit_through_driver(dest, top, extents, new_size, chunk, throttle, progress, committed):
    if dest.size < new_size:
        from .resize import resize_device
        resize_device(dest, new_size)
    done = 0
    for off, n, zero in _chunks(extents, chunk):
        throttle(n)
        if zero:
            dest.write_zeroes(off, n)
        else:
            dest.write(off, top.read(off, n))
        done += n
        if progress is not None:
            progress(done, committed)
    dest.flush()


def _shadow_capable(dest, new_size):
    """Whether a qcow2 base can take the commit as one switch to new tables (see module docstring)."""
    if dest.format_name != "qcow2":
        return False
    if dest.extended_l2 or dest.has_data_file or dest.crypto is not None or dest.bitmaps:
        return False
    if dest.header.bitmaps_ext is not None:
        return False
    if new_size > dest.size and (dest.backing_filename or (dest.header.version < 3 and dest.snapshots)):
        return False   # growth as qemu-img does it (and refuses it) is resize's
    return True


class _ShadowCommit(object):
    """New data clusters, copied L2 tables and a new L1 table for a qcow2 base; switch; release."""

    def __init__(self, dev, new_size):
        from ..formats.qcow2.entries import COPIED, ZERO_FLAG
        self.COPIED, self.ZERO_FLAG = COPIED, ZERO_FLAG
        self.dev = dev
        self.cs = dev.cluster_size
        self.bits = dev.cluster_bits
        self.l2e = dev.l2_entries
        self.new_size = new_size
        clusters = -(-new_size // self.cs)
        self.l1_size = max(dev.header.l1_size, -(-clusters // self.l2e))
        if self.l1_size * 8 > 32 * 1024 * 1024:
            raise InvalidArgument("Could not resize image: L1 table would be larger than 32 MiB")
        self.l1 = array.array("Q", dev.l1)
        self.l1.extend([0] * (self.l1_size - len(self.l1)))
        self.v3 = dev.header.version >= 3
        self.decrefs = []           # host offsets of clusters to release after the switch
        self.cur = None             # [l1 index, new table, old L2 offset]
        self.pending = None         # [guest cluster, bytearray] of a partly committed cluster

    # --- the old content ---
    def _old_view(self, gc):
        start = gc << self.bits
        if start >= self.dev.size:
            return bytearray(self.cs)
        return bytearray(self.dev._cluster_view(gc))

    def _release(self, e):
        """Clusters an L2 entry of the old content references (released after the switch)."""
        from ..formats.qcow2.entries import COMPRESSED, OFFSET_MASK
        if e & COMPRESSED:
            x = 62 - (self.bits - 8)
            host = e & ((1 << x) - 1)
            sectors = (e >> x) & ((1 << (62 - x)) - 1)
            last = (host & ~511) + (sectors + 1) * 512 - 1
            for c in range(host >> self.bits, (last >> self.bits) + 1):
                self.decrefs.append(c << self.bits)
        elif e & OFFSET_MASK:
            self.decrefs.append(e & OFFSET_MASK)

    # --- new tables ---
    def _table(self, gc):
        l1i = gc // self.l2e
        if self.cur is not None and self.cur[0] == l1i:
            return self.cur[1]
        self._finish_table()
        old, _e = self.dev._l2_offset(l1i) if l1i < len(self.dev.l1) else (0, 0)
        if old:
            table = array.array("Q", self.dev._load_l2(old))
        else:
            table = array.array("Q", bytes(self.cs))
        self.cur = [l1i, table, old]
        return table

    def _finish_table(self):
        if self.cur is None:
            return
        from ..formats.qcow2.entries import encode_table
        l1i, table, old = self.cur
        dev = self.dev
        new = dev.refcounts.alloc(1)
        dev.refcounts.flush()
        dev.check_metadata_write(new, self.cs, "L2 table")
        dev._pwrite(new, encode_table(table))
        self.l1[l1i] = new | self.COPIED
        if old:
            self.decrefs.append(old)
        self.cur = None

    def _set(self, gc, entry):
        table = self._table(gc)
        i = gc % self.l2e
        self._release(table[i])
        table[i] = entry

    def put_data(self, gc, data):
        """Whole clusters of new content from guest cluster gc on (data: k * cluster_size bytes or
        fewer at the image's end), all in one L2 table, in contiguous new clusters."""
        k = -(-len(data) // self.cs)
        if len(data) < k * self.cs:
            data = bytes(data) + bytes(k * self.cs - len(data))
        self._table(gc)
        dev = self.dev
        host = dev.refcounts.alloc(k)
        dev.refcounts.flush()
        dev.check_metadata_write(host, len(data), "guest data")
        dev._pwrite(host, data)
        for i in range(k):
            self._set(gc + i, (host + i * self.cs) | self.COPIED)

    def put_zero(self, gc):
        if self.v3:
            self._set(gc, self.ZERO_FLAG)
        elif self.dev.backing is None:
            self._set(gc, 0)
        else:
            self.put_data(gc, bytes(self.cs))

    def flush_pending(self):
        if self.pending is not None:
            gc, buf = self.pending
            self.pending = None
            self.put_data(gc, buf)

    def patch(self, pos, data):
        """Part of a cluster's new content (merged into its old content)."""
        gc = pos >> self.bits
        if self.pending is None or self.pending[0] != gc:
            self.flush_pending()
            self.pending = [gc, self._old_view(gc)]
        at = pos - (gc << self.bits)
        self.pending[1][at:at + len(data)] = data

    # --- the commit ---
    def run(self, top, extents, chunk, throttle, progress, committed):
        cs = self.cs
        done = 0
        for start, length, zero in extents:
            pos, end = start, start + length
            while pos < end:
                gc = pos >> self.bits
                cstart = gc << self.bits
                cend = min(cstart + cs, self.new_size)
                pending_here = self.pending is not None and self.pending[0] == gc
                if pos == cstart and end >= cend and not pending_here:
                    # whole clusters: as many as the chunk, the extent and the L2 table allow
                    k = max(1, min(chunk // cs, (end - pos) // cs, self.l2e - gc % self.l2e))
                    n = min(k * cs, end - pos, self.new_size - pos)
                    if (pos + n) & (cs - 1) and pos + n != self.new_size:
                        n = (n // cs) * cs
                    self.flush_pending()
                    throttle(n)
                    if zero:
                        for i in range(-(-n // cs)):
                            self.put_zero(gc + i)
                    else:
                        self.put_data(gc, top.read(pos, n))
                else:
                    n = min(end, cend) - pos
                    throttle(n)
                    self.patch(pos, bytes(n) if zero else top.read(pos, n))
                pos += n
                done += n
                if progress is not None:
                    progress(done, committed)
        self.flush_pending()
        self._finish_table()
        self.switch()

    def switch(self):
        from ..formats.qcow2.entries import encode_table
        dev = self.dev
        h = dev.header
        l1_clusters = max(1, -(-self.l1_size * 8 // self.cs))
        raw = encode_table(self.l1)
        raw += bytes(l1_clusters * self.cs - len(raw))
        l1_off = dev.refcounts.alloc(l1_clusters)
        dev.refcounts.flush()
        dev.check_metadata_write(l1_off, len(raw), "L1 table")
        dev._pwrite(l1_off, raw)
        dev.sync()
        old_l1 = (h.l1_table_offset, max(1, -(-h.l1_size * 8 // self.cs)) if h.l1_size else 0)
        # the switch: size, crypt method, L1 size and offset are bytes 24..47 of the header
        dev.file.pwrite(24, struct.pack(">QIIQ", self.new_size, h.crypt_method, self.l1_size, l1_off))
        dev.sync()
        h.size, h.l1_size, h.l1_table_offset = self.new_size, self.l1_size, l1_off
        dev.size = self.new_size
        dev.l1 = self.l1
        dev.l1_dirty.clear()
        dev.l2_cache.clear()
        dev.l2_dirty.clear()
        dev.metadata_changed()
        # what the old content alone used: its L1 table, the L2 tables replaced, the clusters
        # the new tables no longer reference
        for c in range(old_l1[1]):
            self.decrefs.append(old_l1[0] + c * self.cs)
        for off in self.decrefs:
            dev.refcounts.add(off >> self.bits, -1)
        dev.refcounts.flush()
        dev.sync()


def commit_plan(filename, fmt=None, base=None, compare=False, allow_unsafe_backing=False):
    """What a commit would do, without writing: {"base", "base-format", "depth" (1: the backing
    file), "committed-bytes",
    "top-bytes" (what the top itself allocates), "base-size", "new-base-size", "base-changes"
    (with compare: whether the base's guest content or size would change, else None)}."""
    with open_image(filename, fmt, read_only=True, force_share=True,
                    allow_unsafe_backing=allow_unsafe_backing) as top:
        layers, depth = _layers(top, filename, base)
        above, base_dev = layers[:depth], layers[depth]
        extents = _allocated_above(above, top.size)
        result = {"base": base_dev.filename, "base-format": base_dev.format_name, "depth": depth,
                  "committed-bytes": sum(length for _s, length, _z in extents), "top-bytes": _top_bytes(layers),
                  "base-size": base_dev.size, "new-base-size": max(base_dev.size, top.size),
                  "base-changes": None}
        if compare:
            above[-1].backing = None  # the top reads what the layers above the base allocate ...
            try:
                result["base-changes"] = top.size > base_dev.size or _base_differs(top, base_dev, extents)
            finally:
                above[-1].backing = base_dev   # ... and the chain is closed as a whole
        return result


def _layers(top, filename, base):
    depth = 1
    if base is not None:
        depth = _find_base(top, base)
        if depth is None:
            raise CommitError("Did not find '%s' in the backing chain of '%s'" % (base, filename))
    if top.backing is None:
        raise CommitError("Image does not have a backing file")
    return list(top.chain()), depth


def commit_image(filename, fmt=None, base=None, drop=False, cache=None, check_mode=False, on_open=None,
                 progress=None, rate_limit=None, allow_unsafe_backing=False, atomic=True):
    """Commit `filename` into its backing file (see docs/engine-api.md).

    base: the backing file's name (as the user typed it); with base, drop is implied (qemu-img).
    rate_limit: bytes per second (qemu-img -r), None or 0 for no limit.
    atomic: a qcow2 base switches from its old to its new content as a whole (see the module
    docstring); False writes it in place as qemu-img does (each cluster old or new after a kill).
    Returns {"committed-bytes", "changed", "base"}; check_mode counts without writing.
    """
    if base is not None:
        drop = True
    with open_image(filename, fmt, read_only=check_mode, force_share=check_mode, cache=cache,
                    allow_unsafe_backing=allow_unsafe_backing) as top:
        if on_open is not None:
            on_open(top)
        layers, depth = _layers(top, filename, base)
        above, base_dev = layers[:depth], layers[depth]
        base_path = base_dev.filename
        base_fmt = base_dev.format_name
        extents = _allocated_above(above, top.size)
        committed = sum(length for _s, length, _z in extents)
        result = {"committed-bytes": committed, "base": base_path,
                  "changed": bool(committed) or top.size > base_dev.size}
        if check_mode:
            return result
        # the read-only base chain lets go of its locks: the base is opened for writing now (what
        # is read from the layers above it is all theirs: the ranges they allocate)
        for layer in layers[depth:]:
            layer.close_self()
        above[-1].backing = None
        throttle = _Throttle(rate_limit)
        chunk = RATE_CHUNK if rate_limit else CHUNK
        with open_image(base_path, base_fmt, read_only=False, cache=cache,
                        allow_unsafe_backing=allow_unsafe_backing) as dest:
            new_size = max(top.size, dest.size)
            if extents or new_size != dest.size:
                if atomic and _shadow_capable(dest, new_size):
                    dest._prepare_write()
                    _ShadowCommit(dest, new_size).run(top, extents, chunk, throttle, progress, committed)
                else:
                    _commit_through_driver(dest, top, extents, new_size, chunk, throttle, progress, committed)
        if not drop and committed:
            _make_empty(top)
        return result


def _make_empty(dev):
    """qcow2's make_empty: every cluster unallocated (the backing file shows through)."""
    if dev.format_name != "qcow2":
        return False
    dev._prepare_write()
    n = -(-dev.size // dev.cluster_size)
    step = dev.l2_entries
    try:
        gc = 0
        while gc < n:
            if not dev._l2_offset(gc // step)[0]:
                gc = (gc // step + 1) * step
                continue
            l2off, table, idx = dev._l2_for_write(gc)
            e = table[idx]
            if e or (dev.extended_l2 and table[idx + 1]):
                dev._set_entry(l2off, table, idx, 0, 0 if dev.extended_l2 else None)
                dev._release(e)
            gc += 1
    finally:
        dev._commit_metadata()
    dev.sync()
    return True
