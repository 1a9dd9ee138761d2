# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qcow2 consistency check and repair (what `qemu-img check [-r leaks|all]` does).

The check walks every structure that references clusters (header, active and snapshot L1/L2
tables, data and compressed clusters, refcount table and blocks, snapshot table, bitmap
directory and tables), counts references per host cluster in an array, and compares the counts
with the stored refcounts: too low is a corruption, too high a leak. COPIED flags of the active
tables must match "refcount == 1".

Repair is crash-safe:
- leaks only (-r leaks): stored refcounts are lowered in place; a crash in between leaves
  leaks, never a referenced cluster marked free;
- -r all: a complete new refcount table and blocks are written past the end of the image and
  synced, then one header write switches to them (the old structures simply become free space);
  COPIED flags are fixed afterwards, and the dirty and corrupt bits are cleared last.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import array
import errno
import os
import struct

from ...errors import ImageCorrupt
from . import header as hdr
from .entries import (COMPRESSED, COPIED, L1E_RESERVED, L2E_RESERVED, OFFSET_MASK, ZERO_FLAG, decode_table,
                      nonzero_entries)
from .refcounts import REFTABLE_OFFSET_MASK, encode_block
from .snapshots import SnapshotTableError, read_snapshots

PROG = "\0"  # a message line starting so is an error_report(): the CLI puts its program name there


class CheckResult(object):
    """Counters in qemu-img's ImageCheck terms, plus the messages qemu-img prints to stderr."""

    def __init__(self):
        self.corruptions = 0
        self.leaks = 0
        self.check_errors = 0
        self.corruptions_fixed = 0
        self.leaks_fixed = 0
        self.total_clusters = 0
        self.allocated_clusters = 0
        self.fragmented_clusters = 0
        self.compressed_clusters = 0
        self.image_end_offset = 0
        self.copied_errors = 0
        self.rebuild = False
        self.failed = None  # qemu-img's "Check failed: ..." reason
        self.messages = []

    def error(self, msg):
        self.corruptions += 1
        self.messages.append(msg)


class _Walker(object):
    """One pass over the metadata computing reference counts."""

    def __init__(self, img, res):
        self.img = img
        self.res = res
        self.cs = img.cluster_size
        self.cb = img.cluster_bits
        self.file_clusters = -(-img.file_size // self.cs)
        self.counts = array.array("H", bytes(2 * max(self.file_clusters, 1)))
        # QEMU counts in an array of the image's refcount width: a count that would pass its
        # maximum is an overflow corruption (refcounts wider than 16 bits: counted on, beside)
        bits = img.header.refcount_bits
        self.max_count = (1 << bits) - 1 if bits <= 16 else None
        self.overflow = {}
        self.beyond = {}  # references past the end of the file
        self.bad_l2 = set()
        self.copied_messages = []
        self.past_end = []  # (L2 table offset, byte offset in it) of data entries past the end of the file
        self.fix_errors = False  # check -r all: entries qemu's check repairs on the spot are repaired

    def inc(self, offset, length):
        """Count one reference to every cluster of [offset, offset+length); False if not counted."""
        if length <= 0:
            return True
        if offset + length - self.img.file_size >= self.cs:
            # as qemu-img (checked first): a reference that far past the end is a corruption, not counted
            self.res.error("ERROR: counting reference for region exceeding the end of the file by one cluster "
                           "or more: offset %#x size %#x" % (offset, length))
            return False
        if offset >= hdr.HOST_OFFSET_LIMIT:  # (only a file larger than 64 PiB gets here)
            self.res.check_errors += 1
            self.res.messages.append("ERROR: offset=%x is beyond the addressable range" % offset)
            return False
        first = offset >> self.cb
        last = (offset + length - 1) >> self.cb
        for c in range(first, last + 1):
            if c >= len(self.counts):
                self.beyond[c] = self.beyond.get(c, 0) + 1
                continue
            v = self.counts[c]
            if v == self.max_count:
                self.res.error("ERROR: overflow cluster offset=%#x" % (c << self.cb))
                self.res.messages.append("Use qemu-img amend to increase the refcount entry width or qemu-img "
                                         "convert to create a clean copy if the image cannot be opened for writing")
            elif v == 0xFFFF:
                self.overflow[c] = self.overflow.get(c, 0) + 1
            else:
                self.counts[c] = v + 1
        return True

    def count(self, c):
        if c >= len(self.counts):
            return self.beyond.get(c, 0)
        return self.counts[c] + self.overflow.get(c, 0)

    def used_clusters(self):
        """Cluster indexes with a non-zero computed count (sorted)."""
        out = [i for i, v in enumerate(self.counts) if v]
        out.extend(sorted(self.beyond))
        return out

    # --- L1 / L2 ---
    def l1(self, l1_offset, l1_size, active):
        cs = self.cs
        self.inc(l1_offset, l1_size * 8)
        if l1_offset % cs or l1_offset + l1_size * 8 > self.img.file_end_limit():
            self.res.error("ERROR l1_table_offset=%x: L1 table is not inside the image" % l1_offset)
            return
        table = self.img.l1 if active else decode_table(self.img.file.pread(l1_offset, l1_size * 8))
        for i in range(l1_size):
            e = table[i]
            if not e & OFFSET_MASK:
                continue
            l2off = e & OFFSET_MASK
            if e & L1E_RESERVED:
                self.res.error("ERROR l1 entry %d=%x: reserved bits set" % (i, e))
            if l2off % cs:
                self.res.error("ERROR l2_offset=%x: Table is not cluster aligned; L1 entry corrupted" % l2off)
                self.bad_l2.add(l2off)
                continue
            self.inc(l2off, cs)
            if active:
                stored = self.img.refcounts.get(l2off >> self.cb)
                if (stored == 1) != bool(e & COPIED):  # COPIED must say exactly "refcount == 1"
                    self.copied_messages.append("ERROR OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d"
                                                % (i, e, stored))
            if l2off + cs > self.img.file_size:
                self.res.error("ERROR l2_offset=%x: L2 table is outside the image file" % l2off)
                continue
            self.l2(l2off, active, {"next": 0})  # qemu counts fragmentation within each L2 table

    def l2(self, l2off, active, state):
        img = self.img
        cs = self.cs
        step = img.l2_step
        raw = img.file.pread(l2off, cs)
        res = self.res
        x = 62 - (self.cb - 8)
        entry = 8 * step
        rc = img.refcounts
        external = img.has_data_file  # data clusters live in the data file: not refcounted here
        for pos in nonzero_entries(raw, entry):
            e = struct.unpack_from(">Q", raw, pos)[0]
            bitmap = struct.unpack_from(">Q", raw, pos + 8)[0] if step == 2 else 0
            if e & COMPRESSED and external:
                res.error("ERROR compressed cluster %d with data file, entry=%#x" % (pos // entry, e))
                continue
            if e & COMPRESSED:
                if step == 2 and bitmap:
                    res.error("ERROR compressed cluster %x has a non-zero subcluster bitmap" % e)
                coffset = e & ((1 << x) - 1)
                sectors = ((e >> x) & ((1 << (62 - x)) - 1)) + 1
                csize = sectors * 512 - (coffset & 511)
                if active:
                    res.allocated_clusters += 1
                    res.compressed_clusters += 1
                    res.fragmented_clusters += 1
                self.inc(coffset, csize)
                continue
            host = e & OFFSET_MASK
            if step == 2:
                alloc = bitmap & 0xFFFFFFFF
                if alloc & (bitmap >> 32):
                    res.error("ERROR: subcluster both allocated and zero (L2 entry %x, bitmap %x)" % (e, bitmap))
                if alloc and not host and not (external and e & COPIED):
                    res.error("ERROR: allocated subclusters in an unallocated cluster (L2 entry %x)" % e)
            elif e & ZERO_FLAG and img.header.version < 3:
                res.error("ERROR: zero flag in a compat=0.10 image (L2 entry %x)" % e)
            if not host and not (external and e & COPIED and (step == 2 or not e & ZERO_FLAG)):
                continue
            if e & L2E_RESERVED:
                res.error("ERROR: L2 entry %x has reserved bits set" % e)
            if active:
                res.allocated_clusters += 1
                if state["next"] and host != state["next"]:
                    res.fragmented_clusters += 1
                state["next"] = host + cs
            if host % cs:
                # qemu's check_refcounts_l2(): without data in it the cluster can be dropped (-r all)
                if step == 2:
                    has_data = bool(bitmap & 0xFFFFFFFF)
                else:
                    has_data = not e & ZERO_FLAG
                if has_data:
                    res.error("ERROR offset=%x: Data cluster is not properly aligned; L2 entry corrupted." % host)
                elif self.fix_errors:
                    res.messages.append("Repairing offset=%x: Preallocated cluster is not properly aligned; L2 entry "
                                        "corrupted." % host)
                    self._zero_entry(l2off, pos, bitmap)
                    res.corruptions_fixed += 1
                    continue
                else:
                    res.error("ERROR offset=%x: Preallocated cluster is not properly aligned; L2 entry corrupted."
                              % host)
            if external:
                if active and not e & COPIED:  # implicitly refcount 1: COPIED must be set
                    self.copied_messages.append("ERROR OFLAG_COPIED data cluster: l2_entry=%x refcount=1" % e)
                continue
            if not self.inc(host, cs) and active:
                # reads as zeros (past the end of the file); -r all turns it into a zero cluster
                self.past_end.append((l2off, pos))
            if active:
                stored = rc.get(host >> self.cb)
                if (stored == 1) != bool(e & COPIED):
                    self.copied_messages.append("ERROR OFLAG_COPIED data cluster: l2_entry=%x refcount=%d"
                                                % (e, stored))

    def _zero_entry(self, l2off, pos, bitmap):
        """QEMU's fix_l2_entry_by_zero(): the entry becomes an unallocated zero cluster, in place (with
        subclusters: unallocated, and the allocated and zero subclusters read as zeros)."""
        img = self.img
        if img.extended_l2:
            zeros = (bitmap | bitmap << 32) & (0xFFFFFFFF << 32)
            img.file.pwrite(l2off + pos, struct.pack(">QQ", 0, zeros))
        else:
            img.file.pwrite(l2off + pos, struct.pack(">Q", ZERO_FLAG))
        img.l2_cache.clear()
        img.sync()

    def walk(self):
        img = self.img
        h = img.header
        cs = self.cs
        self.inc(0, cs)
        self.l1(h.l1_table_offset, h.l1_size, True)
        if img.has_data_file and img.snapshots:
            self.res.error("ERROR %d snapshots in image with data file" % len(img.snapshots))
        snapshot_bytes = 0
        for snap in img.snapshots:
            if snap.l1_table_offset % cs:
                self.res.error("ERROR snapshot %s (%s) l1_offset=%#x: L1 table is not cluster aligned; snapshot "
                               "table entry corrupted" % (snap.id, snap.name, snap.l1_table_offset))
            elif snap.l1_size > hdr.MAX_L1_BYTES // 8:
                self.res.error("ERROR snapshot %s (%s) l1_size=%#x: L1 table is too large; snapshot table entry "
                               "corrupted" % (snap.id, snap.name, snap.l1_size))
            else:
                self.l1(snap.l1_table_offset, snap.l1_size, False)
            entry = 40 + len(snap.extra) + len(snap.raw_id) + len(snap.raw_name)
            snapshot_bytes = ((snapshot_bytes + 7) & ~7) + entry  # no padding after the last entry
        if h.nb_snapshots:
            self.inc(h.snapshots_offset, getattr(img, "snapshots_size", snapshot_bytes))
        self.inc(h.refcount_table_offset, h.refcount_table_clusters * cs)
        crypto = getattr(img, "crypto", None)
        if crypto is not None and crypto.region is not None:
            self.inc(crypto.region[0], crypto.region[1])   # the LUKS header clusters
        self.refcount_structures = [(h.refcount_table_offset, h.refcount_table_clusters * cs)]
        for b in img.bitmaps:
            self.bitmap(b)
        if h.bitmaps_ext is not None and img.bitmaps:
            self.inc(h.bitmaps_ext[2], h.bitmaps_ext[1])
        # refcount blocks
        rc = img.refcounts
        for t, off in enumerate(rc.table):
            if not off:
                continue
            if off & ~REFTABLE_OFFSET_MASK or off % cs:
                self.res.error("ERROR refcount block %d is not cluster aligned; refcount table entry corrupted" % t)
                continue
            if off >= img.file_size:
                self.res.error("ERROR refcount block %d is outside image" % t)
                continue
            self.inc(off, cs)
            self.refcount_structures.append((off, cs))

    def bitmap(self, b):
        cs = self.cs
        self.inc(b.table_offset, b.table_size * 8)
        raw = self.img.file.pread(b.table_offset, b.table_size * 8)
        for i in range(b.table_size):
            e = struct.unpack_from(">Q", raw, 8 * i)[0]
            off = e & OFFSET_MASK
            if off:
                if off % cs:
                    self.res.error("ERROR bitmap table entry %x is not cluster aligned" % e)
                    continue
                self.inc(off, cs)


def check(img, repair=None):
    """One pass of QEMU's qcow2 check, repairing when repair is "leaks" or "all".

    Messages come in qemu-img's order and wording. With a repair, leaks_fixed and
    corruptions_fixed count what was repaired and the other figures what remains; the caller
    runs a second, plain pass to report the repaired image (as qemu-img does).
    """
    if repair is not None and img.read_only:
        raise ImageCorrupt("%s: the image must be opened for writing to repair it" % img.filename)
    res = CheckResult()
    res.total_clusters = -(-img.size // img.cluster_size)
    snapshot_corruptions = _read_snapshot_table(img, res, repair == "all")
    if snapshot_corruptions is None:
        return res
    walker = _Walker(img, res)
    walker.fix_errors = repair == "all"
    walker.walk()
    if repair == "all" and walker.past_end:
        # our addition to qemu-img's repair: data clusters past the end of the file read as zeros,
        # so zero clusters say the same without the dangling reference; then count again
        _zero_past_end(img, walker)
        res.corruptions -= len(walker.past_end)
        res.corruptions_fixed += len(walker.past_end)
        walker = _Walker(img, CheckResult())
        walker.walk()
    before_compare = (res.corruptions, res.leaks)
    _compare_refcounts(img, walker, res)
    if repair == "all" and res.rebuild:
        old_corruptions, old_leaks = res.corruptions, res.leaks
        res.messages.append("Rebuilding refcount structure")
        _rebuild_refcounts(img, walker)
        # references are counted again against the new structure; its predecessor is now leaked
        res.corruptions = res.leaks = 0
        walker = _Walker(img, res)
        walker.walk()
        scratch = CheckResult()
        _compare_refcounts(img, walker, scratch, fix="leaks")
        res.messages.extend(scratch.messages)
        if scratch.rebuild:
            res.messages.append("ERROR rebuilt refcount structure is still broken")
        res.image_end_offset = scratch.image_end_offset
        res.corruptions_fixed += max(0, old_corruptions - res.corruptions)
        res.leaks_fixed += max(0, old_leaks - res.leaks)
        res.leaks += scratch.leaks
    elif repair is not None:
        if res.rebuild:
            # as qemu-img: without -r all, a referenced cluster marked free cannot be repaired
            res.messages.append("ERROR need to rebuild refcount structures")
            res.check_errors += 1
            res.failed = "Input/output error"
            return res
        if res.leaks or res.corruptions:
            res.corruptions, res.leaks = before_compare
            _compare_refcounts(img, walker, res, fix=repair)
    if repair is None:
        for message in walker.copied_messages:
            res.error(message)
    else:
        _copied_pass(img, res, repair)
        img.refcounts.flush()
        img.sync()
    if snapshot_corruptions:
        if repair == "all" and not res.check_errors:
            _rewrite_snapshot_table(img)  # qcow2_check_fix_snapshot_table()
            res.corruptions_fixed += snapshot_corruptions
        else:
            res.corruptions += snapshot_corruptions
    if repair is not None:
        h = img.header
        if not res.check_errors and not res.corruptions and \
                h.incompatible_features & (hdr.INCOMPAT_DIRTY | hdr.INCOMPAT_CORRUPT):
            h.incompatible_features &= ~(hdr.INCOMPAT_DIRTY | hdr.INCOMPAT_CORRUPT)
            img.write_header()
            img.sync()
    return res


def _read_snapshot_table(img, res, fix):
    """QEMU's qcow2_check_read_snapshot_table(): the image was opened in check mode, so the snapshot
    table is read here. With fix (-r all) snapshots past the limits are dropped (the count in the
    header is lowered at once: that only leaks) and too much extra data is cut. Returns the number of
    corruptions the table still has (fixed by rewriting it at the end), or None when the check stops
    (res.failed)."""
    h = img.header
    reduced = 0
    if h.nb_snapshots > hdr.MAX_SNAPSHOTS and fix:
        res.messages.append("Discarding %d overhanging snapshots" % (h.nb_snapshots - hdr.MAX_SNAPSHOTS))
        reduced += h.nb_snapshots - hdr.MAX_SNAPSHOTS
        h.nb_snapshots = hdr.MAX_SNAPSHOTS
    bad = hdr.snapshot_table_problem(h, img.cluster_size)
    if bad:
        res.check_errors += 1
        res.messages.append(PROG + "ERROR snapshot table %s" % bad[0])
        if h.nb_snapshots > hdr.MAX_SNAPSHOTS:
            res.messages.append("You can force-remove all %d overhanging snapshots with qemu-img check -r all"
                                % (h.nb_snapshots - hdr.MAX_SNAPSHOTS))
        res.failed = os.strerror(bad[1])
        img.snapshots = []
        return None
    repair = {"messages": [], "extra_dropped": 0, "overhanging": 0} if fix else None
    try:
        snaps = read_snapshots(img, repair)
    except SnapshotTableError as e:
        res.check_errors += 1
        msg = e.message
        head = "Could not open '%s': " % img.filename
        if msg.startswith(head):
            msg = msg[len(head):]
        res.messages.append(PROG + "ERROR failed to read the snapshot table: " + msg)
        res.messages.extend(e.hint)
        res.failed = os.strerror(errno.EFBIG)
        img.snapshots = []
        return None
    img.snapshots = snaps
    corruptions = 0
    if repair is not None:
        res.messages.extend(repair["messages"])
        reduced += repair["overhanging"]
        corruptions += repair["extra_dropped"]
    if reduced:
        h.nb_snapshots = len(snaps)
        img.file.pwrite(60, struct.pack(">I", h.nb_snapshots))
        img.sync()
        res.corruptions_fixed += reduced
    if h.version >= 3:
        for i, snap in enumerate(snaps):
            if len(snap.extra) < 16:
                corruptions += 1
                res.messages.append("%s snapshot table entry %d is incomplete" % ("Repairing" if fix else "ERROR", i))
    return corruptions


def _rewrite_snapshot_table(img):
    """qcow2_write_snapshots() after a repair: every entry as QEMU writes it, in new clusters."""
    from .snapshot_ops import rewrite_snapshot_table
    img.reload_refcounts()
    rewrite_snapshot_table(img)


def _compare_refcounts(img, walker, res, fix=None):
    """Stored vs computed refcounts, one refcount block at a time (lists compare in C).

    With fix, mismatches are repaired in place (leaks with "leaks" or "all", too-low refcounts
    with "all"), except a referenced cluster whose refcount is 0: that needs a rebuild.
    """
    rc = img.refcounts
    per_block = rc.block_entries
    nclusters = max(len(walker.counts), max(walker.beyond) + 1 if walker.beyond else 0)
    stored_end = 0
    for t in range(len(rc.table) - 1, -1, -1):
        if rc.table[t]:
            stored_end = (t + 1) * per_block
            break
    limit = max(nclusters, min(stored_end, max(walker.file_clusters, 1)))
    highest = -1
    for t in range(-(-limit // per_block)):
        base = t * per_block
        n = min(per_block, limit - base)
        computed = walker.counts[base:base + n].tolist()
        computed += [0] * (n - len(computed))
        for c, v in walker.overflow.items():
            if base <= c < base + n:
                computed[c - base] += v
        for c, v in walker.beyond.items():
            if base <= c < base + n:
                computed[c - base] += v
        try:
            off = rc._block_offset(t)
            stored = rc._load_block(off)[:n] if off and off < img.file_size else [0] * n
        except ImageCorrupt:
            stored = [0] * n
        if stored != computed:
            for i in range(n):
                s_v, c_v = stored[i], computed[i]
                if s_v == c_v:
                    continue
                fixable = s_v != 0 and ((s_v > c_v and fix in ("leaks", "all")) or (s_v < c_v and fix == "all"))
                if s_v == 0:
                    res.rebuild = True  # a referenced cluster marked free: only a rebuild fixes that
                label = "Repairing" if fixable else ("ERROR" if s_v < c_v else "Leaked")
                res.messages.append("%s cluster %d refcount=%d reference=%d" % (label, base + i, s_v, c_v))
                if fixable:
                    rc.set(base + i, min(c_v, rc.max_refcount))
                    if s_v > c_v:
                        res.leaks_fixed += 1
                    else:
                        res.corruptions_fixed += 1
                elif s_v < c_v:
                    res.corruptions += 1
                else:
                    res.leaks += 1
        # like qemu-img: past the end of the file only what is referenced there extends the range
        for i in range(min(n, nclusters - base) - 1, -1, -1):
            if stored[i] or computed[i]:
                highest = max(highest, base + i)
                break
    if fix is not None:
        rc.flush()
    res.image_end_offset = (highest + 1) * img.cluster_size


def _zero_past_end(img, walker):
    """Data clusters past the end of the file read as zeros: make them zero clusters, which read the
    same and reference nothing (QEMU leaves them as an unrepairable corruption)."""
    if not walker.past_end:
        return
    if img.header.version < 3 and img.backing_filename:
        return  # v2 cannot express zeros over a backing file without allocating
    for l2off, pos in walker.past_end:
        if img.extended_l2:
            img.file.pwrite(l2off + pos, struct.pack(">QQ", 0, 0xFFFFFFFF << 32))
        else:
            img.file.pwrite(l2off + pos, struct.pack(">Q", ZERO_FLAG if img.header.version >= 3 else 0))
    img.l2_cache.clear()
    img.sync()


def _rebuild_refcounts(img, walker):
    """Write a new refcount structure for the counted references (QEMU's algorithm, so that the
    result lands where qemu-img would put it): refcount blocks go into free clusters, block by
    block, the table after the last block; then one header write switches to them. Until that
    write the old structure stays in force, so a crash leaves the image as it was."""
    h = img.header
    cs = img.cluster_size
    cb = img.cluster_bits
    bits = h.refcount_bits
    max_rc = (1 << bits) - 1
    per_block = cs * 8 // bits
    block_bits = per_block.bit_length() - 1
    counts = walker.counts.tolist()
    for c, v in walker.overflow.items():
        counts[c] += v
    for c, v in walker.beyond.items():
        while len(counts) <= c:
            counts.append(0)
        counts[c] += v
    state = {"first_free": 0}

    def alloc(n):
        cluster = state["first_free"]
        run = 0
        first_gap = True
        while cluster < len(counts) and run < n:
            if not counts[cluster]:
                run += 1
                if first_gap:
                    state["first_free"] = cluster
                    first_gap = False
            elif run:
                run = 0
            cluster += 1
        if run < n:
            counts.extend([0] * (cluster + n - run - len(counts)))
        cluster -= run
        for k in range(n):
            counts[cluster + k] = 1
        return cluster

    reftable = []
    reftable_cluster = None
    cluster = 0
    while True:
        while cluster < len(counts):
            if not counts[cluster]:
                cluster += 1
                continue
            index = cluster >> block_bits
            start = index << block_bits
            state["first_free"] = max(state["first_free"], start)
            block = alloc(1)
            if len(reftable) <= index:
                reftable.extend([0] * (-(-(index + 1) * 8 // cs) * cs // 8 - len(reftable)))
                reftable_cluster = None
            reftable[index] = block << cb
            if index == (len(counts) - 1) >> block_bits and reftable_cluster is None:
                reftable_cluster = alloc(-(-len(reftable) * 8 // cs))
            values = [min(v, max_rc) for v in counts[start:start + per_block]]
            values += [0] * (per_block - len(values))
            img.check_metadata_write(block << cb, cs, "refcount block")
            img.file.pwrite(block << cb, encode_block(values, bits))
            cluster = start + per_block
        if reftable_cluster is not None:
            break
        post = -(-len(counts) // per_block) * per_block
        state["first_free"] = max(state["first_free"], post)
        reftable_cluster = alloc(-(-len(reftable) * 8 // cs))
    table_clusters = -(-len(reftable) * 8 // cs)
    if table_clusters * cs > hdr.MAX_REFTABLE_BYTES:
        raise ImageCorrupt("%s: the rebuilt refcount table would exceed 8 MiB" % img.filename)
    raw = bytearray(table_clusters * cs)
    for i, off in enumerate(reftable):
        struct.pack_into(">Q", raw, 8 * i, off)
    img.file.pwrite(reftable_cluster << cb, bytes(raw))
    end = len(counts) << cb
    if end > img.file_size:
        img.extend_file(end)
    img.note_allocated(len(counts))
    img.sync()
    h.refcount_table_offset = reftable_cluster << cb
    h.refcount_table_clusters = table_clusters
    img.write_header()
    img.sync()
    img.reload_refcounts()


def _copied_pass(img, res, fix):
    """QEMU's OFLAG_COPIED check of the active tables, repairing when allowed: always with
    "all", with "leaks" only when nothing else is left wrong (leaks can cause COPIED errors)."""
    rc = img.refcounts
    step = img.l2_step
    cs = img.cluster_size
    repair = fix == "all" or (fix == "leaks" and not (res.check_errors or res.corruptions or res.leaks))
    label = "Repairing" if repair else "ERROR"

    def count():
        if repair:
            res.corruptions_fixed += 1
        else:
            res.corruptions += 1

    for i, e in enumerate(img.l1):
        l2off = e & OFFSET_MASK
        if not l2off or l2off % cs:
            continue
        stored = rc.get(l2off >> img.cluster_bits)
        if (stored == 1) != bool(e & COPIED):
            res.messages.append("%s OFLAG_COPIED L2 cluster: l1_index=%d l1_entry=%x refcount=%d"
                                % (label, i, e, stored))
            count()
            if repair:
                img.l1[i] = (e | COPIED) if stored == 1 else (e & ~COPIED)
                img.file.pwrite(img.header.l1_table_offset + 8 * i, struct.pack(">Q", img.l1[i]))
        if l2off + cs > img.file_size:
            continue
        raw = img.file.pread(l2off, cs)
        table = None
        for pos in nonzero_entries(raw, 8 * step):
            le = struct.unpack_from(">Q", raw, pos)[0]
            here = pos
            host = le & OFFSET_MASK
            if le & COMPRESSED or not host or host % cs:
                continue
            stored = 1 if img.has_data_file else rc.get(host >> img.cluster_bits)
            if (stored == 1) != bool(le & COPIED):
                res.messages.append("%s OFLAG_COPIED data cluster: l2_entry=%x refcount=%d" % (label, le, stored))
                count()
                if repair:
                    if table is None:
                        table = bytearray(raw)
                    struct.pack_into(">Q", table, here, (le | COPIED) if stored == 1 else (le & ~COPIED))
        if table is not None:
            img.check_metadata_write(l2off, cs, "L2 table")
            img.file.pwrite(l2off, bytes(table))
    img.l2_cache.clear()
