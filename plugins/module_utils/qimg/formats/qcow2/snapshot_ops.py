# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Internal snapshots of a qcow2 image: create, apply (goto) and delete, crash-safe.

QEMU's qcow2 check counts a corruption wherever an active L1 or L2 entry's COPIED flag and the
referenced cluster's refcount disagree in either direction (flag set and refcount > 1, or flag
clear and refcount 1). A snapshot operation changes refcounts from 1 to 2 (or back) for clusters
that active entries flag, and the refcount and the flag live in different clusters: no order of
in-place writes avoids a window where they disagree (that is why qemu-img 7.2 itself leaves
OFLAG_COPIED errors when it is killed).

So nothing live is written in place. Every structure the operation changes gets a new copy in
clusters that are free in the image as it stands: L2 tables whose flags change, the active and
the snapshot L1 tables, the snapshot table, every refcount block whose counts change (the new
blocks already count the new copies and no longer count what they replace) and the refcount
table. Only after all of it is on disk (fsync) does ONE write of the header's first sector switch
l1_table_offset / l1_size / size, refcount_table_offset / refcount_table_clusters and
nb_snapshots / snapshots_offset together (fsync again). A kill before that write leaves the old
image, untouched except for data in free clusters; a kill after it leaves the new one. The old
structures are free in the new refcounts, so there is no "lower refcounts later" step to lose.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import array
import collections
import errno
import os
import struct
import sys

from ...errors import BlockIOError, ImageCorrupt, QimgError
from . import header as hdr
from .refcounts import decode_block, encode_block
from .entries import COMPRESSED, COPIED, OFFSET_MASK, decode_table, encode_table
from .snapshots import encode_snapshot_table, new_snapshot, next_snapshot_id, read_snapshots

L1_OFFSET_MASK = 0x00FFFFFFFFFFFE00
_CLEAR_TOP_BIT = bytes(b & 0x7F for b in range(256))
_HEADER_SECTOR = 512
_TYPECODES = {8: "B", 16: "H", 32: "I", 64: "Q"}
_LITTLE = sys.byteorder == "little"
SHADOW_BYTES = 16 * 1024 * 1024  # changed refcount blocks kept in memory (the rest wait in their new clusters)
_SERIES = {}
# create first moves what it rewrites out of the way, to write it back in place as QEMU does (see
# _evacuate): a second copy of those tables, done only while they total at most this much
EVACUATE_BYTES = 8 * 1024 * 1024
MAX_DISCARD_RUNS = 256  # more scattered than that (big images): left as they are, for speed


def _series(m):
    """(R, S) with R = sum(1 << 64i) and S = sum(i << 64i) for i < m: a table of m 64-bit entries
    read as one little-endian integer is e0 * R + step * S exactly when entry i is e0 + i * step."""
    got = _SERIES.get(m)
    if got is None:
        if len(_SERIES) > 16:
            _SERIES.clear()
        ones = array.array("Q", [1]) * m
        idx = array.array("Q", range(m))
        if not _LITTLE:
            ones.byteswap()
            idx.byteswap()
        got = _SERIES[m] = (int.from_bytes(ones.tobytes(), "little"), int.from_bytes(idx.tobytes(), "little"))
    return got


def _as_int(arr):
    """A host-order array('Q') as one little-endian integer (entry i in bits 64i..64i+63)."""
    if not _LITTLE:
        arr = array.array("Q", arr)
        arr.byteswap()
    return int.from_bytes(arr.tobytes(), "little")


def _from_int(value, m):
    arr = array.array("Q")
    arr.frombytes(value.to_bytes(m * 8, "little"))
    if not _LITTLE:
        arr.byteswap()
    return arr


class SnapshotOpError(QimgError):
    """A snapshot operation failed; errno is the POSIX code QEMU would report (qemu-img prints it)."""

    def __init__(self, message, err=errno.EINVAL, first_line=None, notes=()):
        super(SnapshotOpError, self).__init__(message)
        self.errno = err
        self.first_line = first_line  # an error qemu-img prints on its own line before the main one
        self.notes = list(notes)  # lines QEMU's driver prints to stderr as they are (no program name)


def _typecode(bits):
    code = _TYPECODES.get(bits)
    if code == "I" and array.array("I").itemsize != 4:
        code = "L" if array.array("L").itemsize == 4 else None
    return code


class ShadowRefcounts(object):
    """The refcounts the image will have after the operation, kept apart from the live ones.

    Blocks are copied on first change; allocation hands out clusters that are free in the live
    image (and not yet handed out), so nothing written before the header switch is reachable.
    finalize() places the changed blocks (and, if any moved, a new refcount table) in such
    clusters too, counting them in the new view and uncounting the blocks they replace.
    """

    def __init__(self, img):
        self.img = img
        self.old = img.refcounts
        self.cb = img.cluster_bits
        self.cs = img.cluster_size
        self.per = self.old.block_entries
        self.max = self.old.max_refcount
        self.code = _typecode(self.old.bits)
        self.blocks = collections.OrderedDict()  # t -> new-view block in memory (LRU order)
        self.dirty = set()      # blocks in memory that differ from their copy on disk
        self.moved = {}         # t -> offset of the block's new copy
        self.spilled = set()    # blocks whose new copy is on disk only (memory stays bounded)
        self.keep = max(8, SHADOW_BYTES // self.cs)
        self._spilling = False
        self.taken = set()
        self.cursor = 1
        self.hinted = {}        # first cluster -> clusters kept free for a structure's old place
        self.block_hints = {}   # t -> offset where block t should go (when it is kept free)
        self.table_hint = None  # (offset, clusters) for the refcount table
        self.freed = []         # [first cluster, count] runs whose refcount fell to 0

    # --- views
    def _old_block(self, t):
        off = self.old._block_offset(t)
        return self.old._load_block(off) if off else None

    def _block(self, t):
        blk = self.blocks.get(t)
        if blk is not None:
            self.blocks.move_to_end(t)
            return blk
        if t in self.spilled:
            self.spilled.discard(t)
            blk = decode_block(self.img._pread(self.moved[t], self.cs), self.old.bits)
            if self.code:
                blk = array.array(self.code, blk)
            self.blocks[t] = blk
            return blk
        if blk is None:
            if self.code:
                off = self.old._block_offset(t)
                blk = array.array(self.code)
                if off:
                    blk.frombytes(self.img._pread(off, self.cs))
                    if _LITTLE and blk.itemsize > 1:
                        blk.byteswap()
                else:
                    blk = array.array(self.code, [0]) * self.per
            else:
                old = self._old_block(t)
                blk = list(old) if old is not None else [0] * self.per
            self.blocks[t] = blk
        return blk

    def _view(self, t):
        blk = self.blocks.get(t)
        if blk is not None:
            return blk
        if t in self.spilled:
            return self._block(t)
        return self._old_block(t)

    def _place(self, t):
        """Give block t its new cluster (counted in the new view; the old block uncounted)."""
        hint = self.block_hints.get(t)
        got = self.use_hint(hint, 1) if hint else None
        self.moved[t] = got if got is not None else self.alloc(1)
        prev = self.old._block_offset(t)
        if prev:
            self.add_run(prev >> self.cb, 1, -1)

    def _write_block(self, t):
        data = encode_block(self.blocks[t], self.old.bits)
        self.img.check_metadata_write(self.moved[t], len(data), "refcount block")
        self.img._pwrite(self.moved[t], data)
        self.dirty.discard(t)

    def _spill(self):
        """Keep at most self.keep blocks in memory: changed ones go to their new clusters early (they
        are free in the live image, so that is as safe as writing them at the end)."""
        if self._spilling:
            return
        self._spilling = True
        try:
            while len(self.blocks) > self.keep:
                t = next(iter(self.blocks))
                if t in self.dirty:
                    if t not in self.moved:
                        self._place(t)
                        if t not in self.blocks:
                            continue
                    self._write_block(t)
                    self.spilled.add(t)
                elif t in self.moved:
                    self.spilled.add(t)
                del self.blocks[t]
        finally:
            self._spilling = False

    def get(self, c):
        t, i = divmod(c, self.per)
        v = self._view(t)
        return v[i] if v is not None else 0

    def uniform(self, c, n):
        """The refcount shared by clusters [c, c+n), or None when they differ."""
        value = None
        while n:
            t, i = divmod(c, self.per)
            m = min(n, self.per - i)
            v = self._view(t)
            if v is None:
                seg_value = 0
            else:
                seg = v[i:i + m]
                seg_value = seg[0]
                if seg.count(seg_value) != m:
                    return None
            if value is None:
                value = seg_value
            elif value != seg_value:
                return None
            c += m
            n -= m
        return value

    def _range_error(self, c, value):
        if value < 0:
            return ImageCorrupt("%s: refcount of cluster %d would drop below zero (the image is inconsistent; "
                                "run 'check')" % (self.img.filename, c))
        err = SnapshotOpError("%s: refcount of cluster %d would exceed %d (refcount_bits=%d)"
                              % (self.img.filename, c, self.max, self.old.bits), errno.EINVAL)
        err.refcount_overflow = True
        return err

    def add_run(self, c, n, delta):
        """Add delta to the refcounts of clusters [c, c+n)."""
        while n > 0:
            t, i = divmod(c, self.per)
            m = min(n, self.per - i)
            if (t + 1) * 8 > hdr.MAX_REFTABLE_BYTES:
                raise ImageCorrupt("%s: cluster %d is beyond what a refcount table can describe"
                                   % (self.img.filename, c))
            blk = self._block(t)
            seg = blk[i:i + m]
            v = seg[0]
            if seg.count(v) == m:
                nv = v + delta
                if nv < 0 or nv > self.max:
                    raise self._range_error(c, nv)
                blk[i:i + m] = (array.array(self.code, [nv]) if self.code else [nv]) * m
                if nv == 0 and delta < 0:
                    self._freed(c, m)
            else:
                for k in range(i, i + m):
                    nv = blk[k] + delta
                    if nv < 0 or nv > self.max:
                        raise self._range_error(t * self.per + k, nv)
                    blk[k] = nv
                    if nv == 0 and delta < 0:
                        self._freed(t * self.per + k, 1)
            self.dirty.add(t)
            c += m
            n -= m
        if len(self.blocks) > self.keep:
            self._spill()

    def _freed(self, c, n):
        """Note clusters whose refcount fell to 0 (QEMU discards them: pass-discard-snapshot=on)."""
        runs = self.freed
        if runs is None:
            return
        if runs and runs[-1][0] + runs[-1][1] == c:
            runs[-1][1] += n
        elif len(runs) < MAX_DISCARD_RUNS:
            runs.append([c, n])
        else:
            self.freed = None  # too scattered to be worth it: the clusters stay as they are

    def add_bytes(self, offset, nbytes, delta):
        if nbytes > 0:
            first = offset >> self.cb
            last = (offset + nbytes - 1) >> self.cb
            self.add_run(first, last - first + 1, delta)

    # --- allocation
    def _free_here(self, c):
        return c not in self.taken and self.old.get(c) == 0 and self.get(c) == 0

    def _next_free(self, c):
        while True:
            t, i = divmod(c, self.per)
            off = self.old._block_offset(t)
            if off:
                blk = self.old._load_block(off)
                try:
                    c = t * self.per + blk.index(0, i)
                except ValueError:
                    c = (t + 1) * self.per
                    continue
            if c in self.taken or self.get(c):
                c += 1
                continue
            return c

    def alloc(self, n):
        """n contiguous clusters free in the live image; counted 1 in the new view. Returns the offset."""
        c = self._next_free(self.cursor)
        first_free = c
        while True:
            bad = None
            for k in range(1, n):
                if not self._free_here(c + k):
                    bad = c + k
                    break
            if bad is None:
                break
            c = self._next_free(bad + 1)
        if (c + n) << self.cb > hdr.HOST_OFFSET_LIMIT:
            raise ImageCorrupt("%s: no room left in the addressable range" % self.img.filename)
        self.taken.update(range(c, c + n))
        self.add_run(c, n, 1)
        if c == first_free:
            self.cursor = c + n
        self.img.note_allocated(c + n)
        return c << self.cb

    def keep_free(self, offset, n):
        """Keep clusters [offset, offset + n clusters) out of alloc() for use_hint(): only when they
        are all free in the live image and in the new view. Returns whether they are kept."""
        c = offset >> self.cb
        if offset % self.cs or c == 0 or any(not self._free_here(c + k) for k in range(n)):
            return False
        self.taken.update(range(c, c + n))
        self.hinted[c] = n
        return True

    def use_hint(self, offset, n):
        """The kept clusters at offset (n of them, counted 1 in the new view), or None."""
        c = offset >> self.cb
        if self.hinted.get(c, 0) < n:
            return None
        del self.hinted[c]
        self.add_run(c, n, 1)
        self.img.note_allocated(c + n)
        return offset

    # --- placement
    def finalize(self):
        """Place changed blocks and the table. Returns ([(offset, bytes, what)], table_offset, table_clusters);
        table_offset is None when no block changed."""
        old = self.old
        moved = self.moved
        table_off, table_n, old_table_freed = None, 0, False
        self._spilling = True  # from here on every block stays in memory until written
        while True:
            pending = sorted(t for t in self.dirty if t not in moved)
            for t in pending:
                self._place(t)
            if pending:
                continue
            if not moved:
                return [], None, 0
            entries = max(len(old.table), max(moved) + 1)
            need = -(-entries * 8 // self.cs)
            if table_off is not None and need <= table_n:
                break
            if need * self.cs > hdr.MAX_REFTABLE_BYTES:
                raise ImageCorrupt("%s: refcount table would exceed 8 MiB" % self.img.filename)
            if table_off is not None:
                self.add_run(table_off >> self.cb, table_n, -1)
            elif not old_table_freed:
                self.add_run(old.table_offset >> self.cb, old.table_clusters, -1)
                old_table_freed = True
            table_n = max(need, old.table_clusters)
            if need > old.table_clusters:
                table_n = min(max(need, old.table_clusters * 3 // 2), hdr.MAX_REFTABLE_BYTES // self.cs)
            table_off = None
            if self.table_hint and self.table_hint[1] >= table_n:
                table_n = self.table_hint[1]
                table_off = self.use_hint(self.table_hint[0], table_n)
                self.table_hint = None
            if table_off is None:
                table_off = self.alloc(table_n)
        writes = []
        for t in sorted(moved):
            if t in self.blocks and t in self.dirty:
                writes.append((moved[t], encode_block(self.blocks[t], old.bits), "refcount block"))
        table = array.array("Q", old.table)
        table.extend([0] * (table_n * self.cs // 8 - len(table)))
        for t, off in moved.items():
            table[t] = off
        writes.append((table_off, encode_table(table), "refcount table"))
        return writes, table_off, table_n


class _Txn(object):
    """One snapshot operation: shadow refcounts, writes to fresh clusters, one header switch."""

    def __init__(self, img):
        img.check_writable()
        img.flush()
        self.img = img
        self.rc = ShadowRefcounts(img)
        self.cs = img.cluster_size
        self.cb = img.cluster_bits
        self.step = img.l2_step
        self.limit = img.file_end_limit()
        self.discard = True  # punch what the operation frees (_discard_freed)

    def reserve(self, nbytes):
        """Allocate clusters for nbytes (written later with write_at); returns the offset."""
        return self.rc.alloc(max(1, -(-nbytes // self.cs)))

    def write_at(self, off, data, what, pad=True):
        """Write data, zero-padded to whole clusters (unless not pad: the snapshot table, as QEMU writes
        it), to clusters this operation allocated."""
        pad = -len(data) % self.cs if pad else 0
        data = data + bytes(pad) if pad else data
        self.img.check_metadata_write(off, len(data), what)
        self.img._pwrite(off, data)

    def write_new(self, data, what, hint=None, pad=True):
        """Write data to newly allocated clusters (the kept ones at hint when there are); returns the offset."""
        off = None
        if hint is not None:
            off = self.rc.use_hint(hint, max(1, -(-len(data) // self.cs)))
        if off is None:
            off = self.reserve(len(data))
        self.write_at(off, data, what, pad)
        return off

    # --- tables
    def l2_table(self, off, l1_index, what):
        if off % self.cs:
            raise ImageCorrupt("%s: L2 table offset %#x unaligned (%s L1 index: %#x)"
                               % (self.img.filename, off, what, l1_index))
        if off >= self.limit:
            raise ImageCorrupt("%s: L2 table offset %#x is past the end of the image file (%s L1 index: %#x)"
                               % (self.img.filename, off, what, l1_index))
        cached = self.img.l2_cache.get(off)
        return cached if cached is not None else decode_table(self.img._pread(off, self.cs))

    def read_l1(self, offset, size, what):
        if size * 8 > hdr.MAX_L1_BYTES:
            raise ImageCorrupt("%s: %s too large" % (self.img.filename, what))
        if size and offset % self.cs:
            raise ImageCorrupt("%s: %s offset invalid" % (self.img.filename, what))
        return decode_table(self.img._pread(offset, size * 8)) if size else array.array("Q")

    def _descriptors(self, table):
        return table[::self.step] if self.step > 1 else table

    def _last_used(self, ents):
        """Index of the last non-zero entry, or -1."""
        raw = ents.tobytes()
        used = len(raw.rstrip(b"\0"))
        return (used - 1) // 8 if used else -1

    def _contiguous(self, ents, last):
        """True when entries [0, last] are one run: same flags, host offsets one cluster apart."""
        e0 = ents[0]
        if not e0 or e0 & COMPRESSED or not e0 & OFFSET_MASK:
            return False
        if last == 0:
            return True
        if (e0 & OFFSET_MASK) + last * self.cs > OFFSET_MASK:
            return False
        ones, idx = _series(last + 1)
        return _as_int(ents[:last + 1]) == e0 * ones + self.cs * idx

    def _check_host(self, host, l2off, idx):
        if host % self.cs:
            raise ImageCorrupt("%s: Cluster allocation offset %#x unaligned (L2 offset: %#x, L2 index: %#x)"
                               % (self.img.filename, host, l2off, idx))
        if host >= self.limit:
            what = ("%s: cluster offset %#x is past the end of the image file (L2 offset: %#x, L2 index: %#x)"
                    % (self.img.filename, host, l2off, idx))
            # where QEMU's refcount update fails: a refcount table bigger than allowed (EFBIG), or one
            # that has to grow first (its alloc_refcount_block() then reports EAGAIN)
            t = (host >> self.cb) // self.rc.per
            if (t + 1) * 8 > hdr.MAX_REFTABLE_BYTES:
                raise SnapshotOpError(what, errno.EFBIG)
            if t >= len(self.rc.old.table) or not self.rc.old._block_offset(t):
                raise SnapshotOpError(what, errno.EAGAIN)
            raise ImageCorrupt(what)

    def _compressed_span(self, e):
        x = 62 - (self.cb - 8)
        host = e & ((1 << x) - 1)
        sectors = (e >> x) & ((1 << (62 - x)) - 1)
        last = (host & ~511) + (sectors + 1) * 512 - 1
        if host < self.cs or last >= self.limit:
            raise ImageCorrupt("%s: compressed cluster offset %#x is invalid" % (self.img.filename, host))
        return host >> self.cb, (last >> self.cb) - (host >> self.cb) + 1

    def l2_refs(self, table, l2off):
        """[(first cluster, count)] of the host clusters an L2 table references (merged runs)."""
        ents = self._descriptors(table)
        last = self._last_used(ents)
        if last < 0:
            return []
        if self._contiguous(ents, last):
            host = ents[0] & OFFSET_MASK
            self._check_host(host, l2off, 0)
            self._check_host(host + last * self.cs, l2off, last)
            return [(host >> self.cb, last + 1)]
        runs = []
        for i in range(last + 1):
            e = ents[i]
            if not e:
                continue
            if e & COMPRESSED:
                c, n = self._compressed_span(e)
            else:
                host = e & OFFSET_MASK
                if not host:
                    continue
                self._check_host(host, l2off, i)
                c, n = host >> self.cb, 1
            if runs and runs[-1][0] + runs[-1][1] == c:
                runs[-1][1] += n
            else:
                runs.append([c, n])
        return [tuple(r) for r in runs]

    def count_l1(self, l1, delta, what):
        """Add delta to every L2 table and cluster the L1 table references (QEMU's refcount rule: once
        per L1 table reaching them)."""
        rc = self.rc
        for i in _nonzero_indexes(l1):
            off = l1[i] & L1_OFFSET_MASK
            if not off:
                continue
            table = self.l2_table(off, i, what)
            for c, n in self.l2_refs(table, off):
                rc.add_run(c, n, delta)
            rc.add_run(off >> self.cb, 1, delta)

    def fixed_copied(self, table):
        """The table with every COPIED flag as the new refcounts say, or None if it is right already."""
        ents = self._descriptors(table)
        last = self._last_used(ents)
        if last < 0:
            return None
        cs, step = self.cs, self.step
        if self._contiguous(ents, last):
            e0 = ents[0]
            v = self.rc.uniform((e0 & OFFSET_MASK) >> self.cb, last + 1)
            if v is not None:
                want0 = (e0 & ~COPIED) | (COPIED if v == 1 else 0)
                if want0 == e0:
                    return None
                ones, idx = _series(last + 1)
                run = _from_int(want0 * ones + cs * idx, last + 1)
                if step == 1:
                    return run + table[last + 1:]
                new = array.array("Q", table)
                new[0:(last + 1) * step:step] = run
                return new
        new = None
        for i in range(last + 1):
            e = ents[i]
            if not e:
                continue
            host = e & OFFSET_MASK
            if e & COMPRESSED or not host:
                want = e & ~COPIED
            else:
                want = (e & ~COPIED) | (COPIED if self.rc.get(host >> self.cb) == 1 else 0)
            if want != e:
                if new is None:
                    new = array.array("Q", table)
                new[i * step] = want
        return new

    def refresh_active(self, l1):
        """The new active L1 for entries l1: L2 tables whose flags change are copied (the copy is the
        active's own), and each L1 entry's COPIED follows its table's new refcount."""
        rc = self.rc
        new_l1 = array.array("Q", l1)
        for i in _nonzero_indexes(l1):
            off = l1[i] & L1_OFFSET_MASK
            if not off:
                continue
            table = self.l2_table(off, i, "active")
            fixed = self.fixed_copied(table)
            if fixed is not None:
                new_off = self.write_new(encode_table(fixed), "L2 table")
                rc.add_run(off >> self.cb, 1, -1)
                off = new_off
            new_l1[i] = off | (COPIED if rc.get(off >> self.cb) == 1 else 0)
        return new_l1

    def _discard_freed(self):
        """After the switch: punch out what the operation freed, as QEMU discards what a snapshot
        operation frees (only clusters free in the new refcounts and not handed out again)."""
        rc = self.rc
        if not self.discard or not rc.freed:
            return
        punch = getattr(self.img.file, "punch", None)
        if punch is None:
            return
        for c, n in rc.freed:
            if rc.uniform(c, n) == 0 and not any(k in rc.taken for k in range(c, c + n)):
                try:
                    punch(c << self.cb, n << self.cb)
                except (OSError, QimgError):
                    return  # a discard is advisory
        self.img.sync()

    # --- commit
    def commit(self, **fields):
        """Write the new refcount structures, fsync, switch the header with one sector write, fsync."""
        img = self.img
        h = img.header
        writes, table_off, table_n = self.rc.finalize()
        for off, data, what in writes:
            img.check_metadata_write(off, len(data), what)
            img._pwrite(off, data)
        if table_off is not None:
            fields["refcount_table_offset"] = table_off
            fields["refcount_table_clusters"] = table_n
        img.sync()
        sector = bytearray(img._pread(0, _HEADER_SECTOR))
        for name, value in fields.items():
            fmt, pos = _HEADER_FIELDS[name]
            struct.pack_into(fmt, sector, pos, value)
            setattr(h, name, value)
        if h.version >= 3 and h.autoclear_features & ~hdr.AUTOCLEAR_KNOWN:
            h.autoclear_features &= hdr.AUTOCLEAR_KNOWN  # as QEMU clears unknown auto-clear bits on writing
            struct.pack_into(">Q", sector, 88, h.autoclear_features)
        img._pwrite(0, bytes(sector))
        img.sync()
        self._discard_freed()
        # the image object follows the new header
        img.size = h.size
        img.l1 = decode_table(img._pread(h.l1_table_offset, h.l1_size * 8)) if h.l1_size else array.array("Q")
        img.l1_dirty = set()
        img.l2_cache.clear()
        img.l2_dirty = {}
        img._last_compressed = (None, None)
        img.reload_refcounts()
        img.snapshots = read_snapshots(img)
        img.metadata_changed()


_HEADER_FIELDS = {
    "size": (">Q", 24),
    "l1_size": (">I", 36),
    "l1_table_offset": (">Q", 40),
    "refcount_table_offset": (">Q", 48),
    "refcount_table_clusters": (">I", 56),
    "nb_snapshots": (">I", 60),
    "snapshots_offset": (">Q", 64),
}


def _nonzero_indexes(table):
    raw = table.tobytes()
    if not raw.strip(b"\0"):
        return []
    flags = raw.translate(bytes([0]) + bytes([1]) * 255)
    out = []
    pos = flags.find(b"\1")
    while pos >= 0:
        i = pos // 8
        out.append(i)
        pos = flags.find(b"\1", (i + 1) * 8)
    return out


def _table_bytes(snapshots):
    """Bytes the stored snapshot table spans (each entry as stored, padded to 8)."""
    total = 0
    for s in snapshots:
        total = (total + 7) & ~7
        total += 40 + len(s.extra or b"") + len(s.raw_id) + len(s.raw_name)
    return total


def _stored_table_bytes(img):
    """Bytes the snapshot table spans on disk (as read: QEMU's snapshots_size)."""
    got = getattr(img, "snapshots_size", None)
    return got if got else _table_bytes(img.snapshots)


def _refuse_common(img):
    if img.header.data_file is not None:
        raise SnapshotOpError("%s: snapshots are not supported with an external data file" % img.filename,
                              errno.ENOTSUP)


def validate_snapshot_l1(img, snap):
    """QEMU's qcow2_validate_table() for a snapshot's L1 table: (message, errno) or None."""
    if snap.l1_size * 8 > hdr.MAX_L1_BYTES:
        return "Snapshot L1 table too large", errno.EFBIG
    if (1 << 63) - 1 - snap.l1_size * 8 < snap.l1_table_offset:
        return "Snapshot L1 table exceeds the maximum supported size", errno.EINVAL
    if snap.l1_table_offset % img.cluster_size:
        return "Snapshot L1 table offset invalid", errno.EINVAL
    return None


def _clusters(nbytes, cs):
    return max(1, -(-nbytes // cs))


def _evacuate(img, gap):
    """create's first step, so that it can leave QEMU's layout: QEMU clears the COPIED flags of the
    active L1 and L2 tables and raises refcounts in place, which no order of writes makes safe. Here
    the active L1 table, the active L2 tables whose flags change and the refcount blocks create changes
    (when they total at most EVACUATE_BYTES: above that the second copy is not worth its time, and
    create leaves the new tables where it allocates them) move to clusters past the end of the file (gap
    clusters further: room for what create allocates),
    their content unchanged, in one transaction of their own; create then writes the new versions back
    where the old ones were. Returns the hints for create ({"l1": offset, "l2": {L1 index: offset},
    "blocks": {t: offset}, "table": (offset, clusters), "temp": clusters taken here}) or None when
    create rewrites none of these."""
    h = img.header
    l1 = img.l1
    if not h.l1_size or len(_nonzero_indexes(l1)) * img.cluster_size > EVACUATE_BYTES:
        return None  # (the L2 tables alone are over the bound: no need to walk them)
    txn = _Txn(img)
    txn.discard = False  # create writes the freed places again
    rc, cb, cs = txn.rc, img.cluster_bits, img.cluster_size
    per = rc.per
    rc.cursor = img.end_cluster() + gap + 1
    new_l1 = array.array("Q", l1)
    l2_hints = {}
    touched = set()
    flagged = False
    moving = []
    for i in _nonzero_indexes(l1):
        off = l1[i] & L1_OFFSET_MASK
        if not off:
            continue
        if l1[i] & COPIED:
            flagged = True
        table = txn.l2_table(off, i, "active")
        for c, n in txn.l2_refs(table, off):
            touched.update(range(c // per, (c + n - 1) // per + 1))
            # narrow refcounts overflow in practice, 64-bit ones only when hostile (the top bit
            # set): check those before anything moves; create then fails and the image stays as is
            if (rc.max < 0xFFFF or rc.old.bits == 64) and any(rc.get(c + k) >= rc.max for k in range(n)):
                return None
        touched.add((off >> cb) // per)
        raw = encode_table(table)
        if max(raw[0::8 * txn.step]) < 0x80:
            continue
        flagged = True
        if rc.get(off >> cb) == 1:
            moving.append(i)
        if (len(moving) + len(touched)) * cs > EVACUATE_BYTES:
            return None
    end = img.end_cluster()
    touched.update(range(end // per, (end + gap) // per + 1))  # where create's new clusters go
    for i in moving:
        off = l1[i] & L1_OFFSET_MASK
        new_l1[i] = txn.write_new(encode_table(txn.l2_table(off, i, "active")), "L2 table") | COPIED
        rc.add_run(off >> cb, 1, -1)
        l2_hints[i] = off
    for off, nbytes in ((h.l1_table_offset, h.l1_size * 8),
                        (h.snapshots_offset, _stored_table_bytes(img) if h.nb_snapshots else 0)):
        if nbytes:
            first = off >> cb
            touched.update(range(first // per, ((off + nbytes - 1) >> cb) // per + 1))
    for t in sorted(touched):
        if rc.old._block_offset(t):
            rc._block(t)  # an unchanged copy: create writes its new counts back in the old place
            rc.dirty.add(t)
            if len(rc.blocks) > rc.keep:
                rc._spill()
    fields = {}
    if flagged:  # create rewrites the active L1 table: it moves too
        fields["l1_table_offset"] = txn.write_new(encode_table(new_l1), "L1 table")
        rc.add_bytes(h.l1_table_offset, h.l1_size * 8, -1)
    hints = {"l1": h.l1_table_offset, "l2": l2_hints, "temp": set(rc.taken)}
    old_table = (rc.old.table_offset, rc.old.table_clusters)
    txn.commit(**fields)
    hints["blocks"] = dict((t, rc.old._block_offset(t)) for t in rc.moved if rc.old._block_offset(t))
    hints["table"] = old_table
    hints["temp"] |= rc.taken
    return hints


def _apply_hints(txn, hints, l1_bytes):
    rc = txn.rc
    cs = txn.cs
    if hints is None:
        return
    rc.keep_free(hints["l1"], _clusters(l1_bytes, cs))
    for off in hints["l2"].values():
        rc.keep_free(off, 1)
    for t, off in hints["blocks"].items():
        if rc.keep_free(off, 1):
            rc.block_hints[t] = off
    if rc.keep_free(hints["table"][0], hints["table"][1]):
        rc.table_hint = hints["table"]


def _trim(img, hints, rc, before, tail):
    """Cut the file back once create's temporary clusters past its old end are free again (tail: the
    snapshot table, which ends the file where QEMU ends it, without padding)."""
    if hints is None:
        return
    cb = img.cluster_bits
    refs = img.refcounts
    last = (tail[0] + tail[1] - 1) >> cb
    used = [c for c in rc.taken if c not in rc.hinted and c != last]
    end = max([before, tail[0] + tail[1]] + [(c + 1) << cb for c in used if refs.get(c)])
    start = -(-end >> cb)
    if any(refs.get(c) for c in hints["temp"] if c >= start):
        return
    if img.file.length() > end:
        img.file.truncate(end)
        img.file_size = end
        img.alloc_end = -(-end >> cb)
        img.sync()


def create(img, name, date_sec, date_nsec, vm_clock_nsec=0, icount=0):
    """Add snapshot `name` of the active image. Returns the new Snapshot."""
    _refuse_common(img)
    if len(img.snapshots) >= hdr.MAX_SNAPSHOTS:
        raise SnapshotOpError("%s: too many snapshots" % img.filename, errno.EFBIG)
    h, cs = img.header, img.cluster_size
    before = img.file.length()
    sn_id = next_snapshot_id(img.snapshots)
    probe = new_snapshot(sn_id, name, 0, h.l1_size, img.size, date_sec, date_nsec, vm_clock_nsec, 0, icount)
    table_len = len(encode_snapshot_table(list(img.snapshots) + [probe]))
    gap = (_clusters(h.l1_size * 8, cs) if h.l1_size else 0) + _clusters(table_len, cs) + 2
    hints = _evacuate(img, gap)
    try:
        return _create(img, name, date_sec, date_nsec, vm_clock_nsec, icount, sn_id, hints, before)
    except SnapshotOpError as e:
        if getattr(e, "refcount_overflow", False):
            _leak_l1_like_qemu(img)
        raise


def _leak_l1_like_qemu(img):
    """QEMU's snapshot create allocates and writes the snapshot's L1 table before it raises the
    refcounts; when one would overflow it stops there and that L1 copy stays allocated and unused.
    Do the same (the refcount first, then the table: a kill leaks at worst), so `check` afterwards
    reports QEMU's leak (iotest 112)."""
    h = img.header
    if not h.l1_size:
        return
    off = img.refcounts.alloc(_clusters(h.l1_size * 8, img.cluster_size))
    img.refcounts.flush()
    img.sync()
    img.extend_file(off + _clusters(h.l1_size * 8, img.cluster_size) * img.cluster_size)
    img.file.pwrite(off, encode_table(img.l1))
    img.sync()


def _create(img, name, date_sec, date_nsec, vm_clock_nsec, icount, sn_id, hints, before):
    txn = _Txn(img)
    rc = txn.rc
    h, cb = img.header, img.cluster_bits
    _apply_hints(txn, hints, h.l1_size * 8)
    # the snapshot's L1 table and the new snapshot table first: where QEMU puts them
    snap_l1 = txn.reserve(h.l1_size * 8) if h.l1_size else 0
    snap = new_snapshot(sn_id, name, snap_l1, h.l1_size, img.size, date_sec,
                        date_nsec, vm_clock_nsec, 0, icount)
    new_list = list(img.snapshots) + [snap]
    table_raw = encode_snapshot_table(new_list)
    table_off = txn.reserve(len(table_raw))
    l1 = img.l1
    new_l1 = array.array("Q", l1)
    l2_hints = hints["l2"] if hints else {}
    for i in _nonzero_indexes(l1):
        off = l1[i] & L1_OFFSET_MASK
        if not off:
            continue
        table = txn.l2_table(off, i, "active")
        for c, n in txn.l2_refs(table, off):
            rc.add_run(c, n, 1)
        raw = encode_table(table)
        firsts = raw[0::8 * txn.step]
        if max(firsts) >= 0x80:
            # the table claims refcount 1 for clusters that are now shared: a copy without the claims,
            # shared by the active image and the snapshot, replaces it
            cleared = bytearray(raw)
            cleared[0::8 * txn.step] = firsts.translate(_CLEAR_TOP_BIT)
            new_off = txn.write_new(bytes(cleared), "L2 table", l2_hints.get(i))
            rc.add_run(new_off >> cb, 1, 1)
            rc.add_run(off >> cb, 1, -1)
            off = new_off
        else:
            rc.add_run(off >> cb, 1, 1)
        new_l1[i] = off
    fields = {}
    if h.l1_size:
        l1_raw = encode_table(new_l1)
        # QEMU's snapshot L1 is the active one as it was (COPIED flags included: readers ignore them)
        as_was = array.array("Q", new_l1)
        for i in _nonzero_indexes(l1):
            as_was[i] |= l1[i] & COPIED
        txn.write_at(snap_l1, encode_table(as_was), "snapshot L1 table")
        if new_l1 != l1:
            fields["l1_table_offset"] = txn.write_new(l1_raw, "L1 table", hints["l1"] if hints else None)
            rc.add_bytes(h.l1_table_offset, h.l1_size * 8, -1)
    txn.write_at(table_off, table_raw, "snapshot table", pad=False)
    fields["snapshots_offset"] = table_off
    fields["nb_snapshots"] = len(new_list)
    if h.nb_snapshots:
        rc.add_bytes(h.snapshots_offset, _stored_table_bytes(img), -1)
    txn.commit(**fields)
    _trim(img, hints, rc, before, (table_off, len(table_raw)))
    return img.snapshots[-1]


def _debug_event(img, name):
    """blkdebug's event for what QEMU's qcow2 driver is doing (a blkdebug node under the image)."""
    event = getattr(img.file, "debug_event", None)
    if event is not None:
        event(name)


def delete(img, index):
    """Remove snapshot number index (0-based in the table) and free what only it used.

    Two transactions, in QEMU's order: the snapshot leaves the table first (its clusters then count
    one reference too many: leaks, nothing worse, if the second step never happens), then the
    refcounts drop and the active tables' COPIED flags follow them."""
    _refuse_common(img)
    snap = img.snapshots[index]
    bad = validate_snapshot_l1(img, snap)
    if bad:
        raise SnapshotOpError(bad[0], bad[1])
    h = img.header
    old_table = (h.snapshots_offset, _stored_table_bytes(img))
    txn = _Txn(img)
    remaining = [s for k, s in enumerate(img.snapshots) if k != index]
    fields = {"nb_snapshots": len(remaining), "snapshots_offset": 0}
    if remaining:
        fields["snapshots_offset"] = txn.write_new(encode_snapshot_table(remaining), "snapshot table", pad=False)
    try:
        txn.commit(**fields)
    except BlockIOError as e:
        raise SnapshotOpError("Failed to remove snapshot from snapshot list: %s" % os.strerror(e.errno), e.errno)
    txn = _Txn(img)
    rc, h = txn.rc, img.header
    notes = []
    # QEMU frees the old snapshot table first; a failure there is only reported (the clusters leak)
    _debug_event(img, "cluster_free")
    try:
        rc.add_bytes(old_table[0], old_table[1], -1)
    except BlockIOError as e:
        notes.append("qcow2_free_clusters failed: %s" % os.strerror(e.errno))
    try:
        snap_l1 = txn.read_l1(snap.l1_table_offset, snap.l1_size, "Snapshot L1 table")
        txn.count_l1(snap_l1, -1, "snapshot")
    except BlockIOError as e:
        raise SnapshotOpError("Failed to free the cluster and L1 table: %s" % os.strerror(e.errno), e.errno,
                              notes=notes)
    _debug_event(img, "cluster_free")
    try:
        rc.add_bytes(snap.l1_table_offset, snap.l1_size * 8, -1)
        fields = {}
        new_l1 = txn.refresh_active(img.l1)
        if new_l1 != img.l1:
            fields["l1_table_offset"] = txn.write_new(encode_table(new_l1), "L1 table")
            rc.add_bytes(h.l1_table_offset, h.l1_size * 8, -1)
        txn.commit(**fields)
    except BlockIOError as e:
        raise SnapshotOpError("Failed to update snapshot status in disk: %s" % os.strerror(e.errno), e.errno,
                              notes=notes)
    return snap


def rewrite_snapshot_table(img):
    """Write the snapshot table again (QEMU's qcow2_write_snapshots(): every entry with its extra
    data as QEMU writes it) in new clusters; one header switch; the old table freed."""
    h = img.header
    txn = _Txn(img)
    fields = {"nb_snapshots": len(img.snapshots), "snapshots_offset": 0}
    if img.snapshots:
        fields["snapshots_offset"] = txn.write_new(encode_snapshot_table(img.snapshots), "snapshot table", pad=False)
    if h.snapshots_offset:
        txn.rc.add_bytes(h.snapshots_offset, _stored_table_bytes(img), -1)
    txn.commit(**fields)


def apply(img, index):
    """Make snapshot number index the active image's content (and virtual size)."""
    _refuse_common(img)
    snap = img.snapshots[index]
    if img.bitmaps:
        raise SnapshotOpError("Device has active dirty bitmaps", errno.EBUSY)
    bad = validate_snapshot_l1(img, snap)
    if bad:
        raise SnapshotOpError("Failed to load snapshot: %s" % os.strerror(bad[1]), bad[1], bad[0])
    h = img.header
    new_size = snap.disk_size
    if new_size != img.size:
        if h.version < 3:
            raise SnapshotOpError("Failed to load snapshot: Operation not supported", errno.ENOTSUP,
                                  "Can't resize a v2 image which has snapshots")
        if new_size % 512:
            raise SnapshotOpError("Failed to load snapshot: Invalid argument", errno.EINVAL,
                                  "The new size must be a multiple of 512")
        if new_size > (1 << 63) - 512 * 1024 * 1024:
            raise SnapshotOpError("Failed to load snapshot: File too large", errno.EFBIG)
    txn = _Txn(img)
    rc = txn.rc
    snap_l1 = txn.read_l1(snap.l1_table_offset, snap.l1_size, "Snapshot L1 table")
    # decreases first: an increase first could overflow a refcount the decrease brings back down
    txn.count_l1(img.l1, -1, "active")
    if h.l1_size:
        rc.add_bytes(h.l1_table_offset, h.l1_size * 8, -1)
    txn.count_l1(snap_l1, 1, "snapshot")
    need = -(-new_size // (img.cluster_size * img.l2_entries))
    l1_size = max(snap.l1_size, need)
    padded = array.array("Q", snap_l1)
    padded.extend([0] * (l1_size - len(padded)))
    new_l1 = txn.refresh_active(padded)
    fields = {"l1_size": l1_size, "size": new_size}
    fields["l1_table_offset"] = txn.write_new(encode_table(new_l1), "L1 table") if l1_size else 0
    txn.commit(**fields)
    return snap
