# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qcow2 reference counts: the refcount table, a bounded cache of refcount blocks, and cluster
allocation (QEMU docs/interop/qcow2.txt, "Host cluster management").

Blocks are cached decoded (a list of ints per block) so scans for free clusters run at C speed
(list.index). Dirty blocks are written back by flush(); the caller orders flushes so that a
refcount increase reaches the file before the reference to the cluster does.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import array
import collections
import sys

from ...errors import ImageCorrupt

REFTABLE_OFFSET_MASK = 0xFFFFFFFFFFFFFE00
_LITTLE = sys.byteorder == "little"
_TYPECODES = {8: "B", 16: "H", 32: "I", 64: "Q"}
CACHE_ENTRIES = 4 * 1024 * 1024  # decoded refcount entries kept in memory at most


def decode_block(raw, bits):
    """Decode a refcount block (bytes) into a list of ints."""
    if bits in _TYPECODES:
        code = _TYPECODES[bits]
        if array.array(code).itemsize * 8 != bits:  # 'I' may be 64-bit on exotic platforms
            code = "L" if array.array("L").itemsize * 8 == bits else code
        arr = array.array(code, bytes(raw))
        if _LITTLE and bits > 8:
            arr.byteswap()
        return arr.tolist()
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    out = []
    for b in raw:
        for j in range(per_byte):
            out.append((b >> (j * bits)) & mask)
    return out


class _Block(array.array):
    """An array of refcounts that also takes a list for a slice (as the list blocks did)."""

    def __setitem__(self, key, value):
        if isinstance(key, slice) and not isinstance(value, array.array):
            value = array.array(self.typecode, value)
        array.array.__setitem__(self, key, value)


def _decode_block_array(raw, bits):
    """A refcount block as an array (whole-byte widths): Refcounts keeps its blocks so, and
    encode_block() turns one back into bytes with a copy and a byteswap (a list of 32768 ints costs
    a millisecond each way, paid on every allocation's flush)."""
    if bits in _TYPECODES:
        code = _TYPECODES[bits]
        if array.array(code).itemsize * 8 != bits:
            code = "L" if array.array("L").itemsize * 8 == bits else code
        if array.array(code).itemsize * 8 == bits:
            arr = _Block(code, bytes(raw))
            if _LITTLE and bits > 8:
                arr.byteswap()
            return arr
    return decode_block(raw, bits)


def encode_block(values, bits):
    if bits in _TYPECODES:
        code = _TYPECODES[bits]
        arr = array.array(code, values)
        if _LITTLE and bits > 8:
            arr.byteswap()
        return arr.tobytes()
    per_byte = 8 // bits
    out = bytearray(len(values) // per_byte)
    for i in range(len(out)):
        v = 0
        for j in range(per_byte):
            v |= values[i * per_byte + j] << (j * bits)
        out[i] = v
    return bytes(out)


class Refcounts(object):
    """Refcount table and blocks of one open qcow2 image."""

    def __init__(self, img):
        self.img = img
        self.file = img.file
        self.cs = img.cluster_size
        self.cluster_bits = img.header.cluster_bits
        self.bits = img.header.refcount_bits
        self.max_refcount = (1 << self.bits) - 1
        self.block_entries = self.cs * 8 // self.bits
        h = img.header
        self.table_offset = h.refcount_table_offset
        self.table_clusters = h.refcount_table_clusters
        raw = self.file.pread(self.table_offset, self.table_clusters * self.cs)
        arr = array.array("Q", raw)
        if _LITTLE:
            arr.byteswap()
        self.table = arr
        self.blocks = collections.OrderedDict()  # block offset -> list of refcounts
        self.dirty_blocks = set()
        self.table_dirty = False
        self.free_hint = 0
        self.cached_entries = 0
        self.reserved = []  # cluster ranges being allocated, not yet counted

    # --- table and blocks ---
    def _block_offset(self, t):
        if t >= len(self.table):
            return 0
        off = self.table[t]
        if off & ~REFTABLE_OFFSET_MASK:
            raise ImageCorrupt("%s: refblock offset %#x has reserved bits set (reftable index %#x)"
                               % (self.img.filename, off, t))
        if off % self.cs:
            raise ImageCorrupt("%s: refblock offset %#x unaligned (reftable index %#x)"
                               % (self.img.filename, off, t))
        if off and off >= self.img.file_end_limit():
            raise ImageCorrupt("%s: refblock offset %#x is past the end of the file (reftable index %#x)"
                               % (self.img.filename, off, t))
        return off

    def _load_block(self, off):
        blk = self.blocks.get(off)
        if blk is not None:
            self.blocks.move_to_end(off)
            return blk
        blk = _decode_block_array(self.file.pread(off, self.cs), self.bits)
        self.blocks[off] = blk
        self.cached_entries += len(blk)
        self._evict()
        return blk

    def _evict(self):
        while self.cached_entries > CACHE_ENTRIES and len(self.blocks) > 1:
            off, blk = next(iter(self.blocks.items()))
            if off in self.dirty_blocks:
                self._write_block(off, blk)
            del self.blocks[off]
            self.cached_entries -= len(blk)

    def _write_block(self, off, blk):
        self.img.check_metadata_write(off, self.cs, "refcount block")
        self.file.pwrite(off, encode_block(blk, self.bits))
        self.dirty_blocks.discard(off)

    def get(self, cluster):
        t, i = divmod(cluster, self.block_entries)
        off = self._block_offset(t)
        if not off:
            return 0
        return self._load_block(off)[i]

    def set(self, cluster, value):
        if value < 0 or value > self.max_refcount:
            raise ImageCorrupt("%s: refcount of cluster %d would be %d (outside 0..%d)"
                               % (self.img.filename, cluster, value, self.max_refcount))
        t, i = divmod(cluster, self.block_entries)
        off = self._block_offset(t)
        if not off:
            if value == 0:
                return
            off = self._new_block(t)
        blk = self._load_block(off)
        blk[i] = value
        self.dirty_blocks.add(off)
        if value == 0 and cluster < self.free_hint:
            self.free_hint = cluster

    def add(self, cluster, delta):
        self.set(cluster, self.get(cluster) + delta)

    def flush(self):
        for off in sorted(self.dirty_blocks):
            self._write_block(off, self.blocks[off])
        if self.table_dirty:
            arr = array.array("Q", self.table)
            if _LITTLE:
                arr.byteswap()
            raw = arr.tobytes()
            self.img.check_metadata_write(self.table_offset, len(raw), "refcount table")
            self.file.pwrite(self.table_offset, raw)
            self.table_dirty = False

    def count_used(self, end_cluster, stop_above):
        """Clusters below end_cluster with a non-zero refcount (counting stops past stop_above)."""
        count = 0
        for t in range(min(len(self.table), -(-end_cluster // self.block_entries))):
            off = self._block_offset(t)
            if not off:
                continue
            blk = self._load_block(off)
            n = min(self.block_entries, end_cluster - t * self.block_entries)
            part = blk[:n]
            count += n - part.count(0)
            if count > stop_above:
                break
        return count

    # --- allocation ---
    def _is_free_run(self, start, n, reserved):
        c = start
        end = start + n
        while c < end:
            if reserved and any(a <= c < b for a, b in reserved):
                return c + 1
            t, i = divmod(c, self.block_entries)
            off = self._block_offset(t)
            span = min(end - c, self.block_entries - i)
            if off:
                blk = self._load_block(off)
                chunk = blk[i:i + span]
                if any(chunk):
                    # first used one: restart after it
                    j = max(k for k, v in enumerate(chunk) if v)
                    return c + j + 1
            c += span
        return None

    def find_free(self, n, reserved=()):
        """First run of n clusters with refcount 0 (not in reserved ranges). Returns cluster index."""
        reserved = tuple(reserved) + tuple(self.reserved)
        c = self.free_hint
        while True:
            # fast skip to the next free entry within loaded blocks
            t, i = divmod(c, self.block_entries)
            off = self._block_offset(t)
            if off:
                blk = self._load_block(off)
                try:
                    c = t * self.block_entries + blk.index(0, i)
                except ValueError:
                    c = (t + 1) * self.block_entries
                    continue
            restart = self._is_free_run(c, n, reserved)
            if restart is None:
                return c
            c = restart

    def alloc(self, n=1):
        """Allocate n contiguous clusters (refcount 1). Returns the host offset."""
        c = self.find_free(n)
        self.img.note_allocated(c + n)
        self.reserved.append((c, c + n))
        try:
            for k in range(n):
                self.set(c + k, 1)
        finally:
            self.reserved.remove((c, c + n))
        if n == 1 or c == self.free_hint:
            self.free_hint = c + n
        self.img.note_allocated(c + n)
        return c << self.cluster_bits

    def _new_block(self, t):
        """Create the refcount block for table index t; returns its offset."""
        if t >= len(self.table):
            self._grow_table(t + 1)
            off = self._block_offset(t)
            if off:  # the grown table's own blocks may already cover t
                return off
        first = t * self.block_entries
        # Place the block at a free cluster; prefer one it describes itself (self-describing).
        c = self.find_free(1)
        off = c << self.cluster_bits
        blk = [0] * self.block_entries
        self.blocks[off] = blk
        self.cached_entries += len(blk)
        self.dirty_blocks.add(off)
        if first <= c < first + self.block_entries:
            blk[c - first] = 1
            self._write_block(off, blk)
        else:
            self._write_block(off, blk)
            # the block describing c may have to be created first: it must not pick c again
            self.reserved.append((c, c + 1))
            try:
                self.set(c, 1)
            finally:
                self.reserved.remove((c, c + 1))
            self.flush()
        self.table[t] = off
        self.table_dirty = True
        self.img.metadata_changed()
        self.img.note_allocated(c + 1)
        self.flush()
        return off

    def _grow_table(self, min_entries):
        """Move the refcount table to a bigger area at the end of the image."""
        per_cluster = self.cs // 8
        entries = max(min_entries, len(self.table) * 3 // 2, per_cluster)
        clusters = -(-entries // per_cluster)
        if clusters * self.cs > 8 * 1024 * 1024:
            raise ImageCorrupt("%s: refcount table would exceed 8 MiB" % self.img.filename)
        start = self.img.end_cluster()
        new_table = array.array("Q", self.table)
        new_table.extend([0] * (clusters * per_cluster - len(new_table)))
        # New blocks needed to describe the table's own clusters go right after it.
        needed = []
        nxt = start + clusters
        while True:
            changed = False
            for c in list(range(start, start + clusters)) + [pair[1] for pair in needed]:
                tt = c // self.block_entries
                if not new_table[tt] and tt not in [pair[0] for pair in needed]:
                    needed.append((tt, nxt))
                    nxt += 1
                    changed = True
            if not changed:
                break
        for tt, bc in needed:
            new_table[tt] = bc << self.cluster_bits
        # Write new blocks with their own and the table's refcounts, then the table, then header.
        for tt, bc in needed:
            blk = [0] * self.block_entries
            boff = bc << self.cluster_bits
            self.blocks[boff] = blk
            self.cached_entries += len(blk)
            self.dirty_blocks.add(boff)
        old_offset, old_clusters, old_table = self.table_offset, self.table_clusters, self.table
        self.table = new_table
        for c in list(range(start, start + clusters)) + [pair[1] for pair in needed]:
            blk = self._load_block(self._block_offset(c // self.block_entries))
            blk[c % self.block_entries] += 1
            self.dirty_blocks.add(self._block_offset(c // self.block_entries))
        self.img.note_allocated(nxt)
        self.table_offset, self.table_clusters = start << self.cluster_bits, clusters
        self.table_dirty = True
        self.img.metadata_changed()
        # data must reach the file before the header points at it
        self.img.extend_file((nxt) << self.cluster_bits)
        self.flush()
        self.img.sync()
        self.img.header.refcount_table_offset = self.table_offset
        self.img.header.refcount_table_clusters = self.table_clusters
        self.img.write_header()
        self.img.sync()
        del old_table
        for k in range(old_clusters):
            self.add((old_offset >> self.cluster_bits) + k, -1)
