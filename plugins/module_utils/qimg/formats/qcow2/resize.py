# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Growing and shrinking a qcow2 image (what QEMU's qcow2_co_truncate does), crash-safe.

Grow: the part of the new range the current L1 table covers is prepared first (preallocation,
zeroing over a longer backing file), through the active tables; then, when the L1 table must
grow, a new one is written to fresh clusters; the rest of the new range is prepared in new L2
tables only the new L1 table references; one write of the header's size/L1 fields (bytes
24..47, one sector) switches to the new size; the old L1 table is freed last. A kill before the
switch leaves the old image (plus leaked clusters), after it the new one.

Shrink: the header's size is switched FIRST (one write), so the guest sees the new size as a
whole; then the clusters past the new end are discarded and freed (L2, then L1 entries, then
refcounts), and the file is truncated after its last used cluster. A kill after the switch
leaves the shrunk image with leaked clusters at worst (qemu-img 7.2 discards first, and a kill
there leaves content that is neither the old nor the new one).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import array
import struct

from ...errors import InvalidArgument, QimgError, UnsupportedFeature
from ...image import DATA
from . import header as hdr
from .entries import ALL_SUBCLUSTERS, ALL_ZERO_BITS, COPIED, decode_table, encode_table

SECTOR = 512
_SIZE_L1 = struct.Struct(">QIIQ")  # size, crypt_method, l1_size, l1_table_offset: bytes 24..47
_ZERO_CHUNK = 1 << 20


def _div_up(a, b):
    return -(-a // b)


def check_resize(img, new_size, preallocation="off"):
    """qcow2_co_truncate()'s refusals, before anything is written."""
    if preallocation not in ("off", "metadata", "falloc", "full"):
        raise InvalidArgument("Unsupported preallocation mode '%s'" % preallocation)
    if new_size % SECTOR:
        raise InvalidArgument("The new size must be a multiple of %d" % SECTOR)
    if getattr(img, "has_data_file", False):
        raise UnsupportedFeature("Resizing qcow2 images with an external data file is not supported yet")
    if img.snapshots and img.header.version < 3:
        raise UnsupportedFeature("Can't resize a v2 image which has snapshots")
    if img.bitmaps:
        from .bitmap_ops import check_resize_bitmaps  # the bitmaps follow the new size when they are stored
        check_resize_bitmaps(img)
    if new_size < img.size and preallocation != "off":
        raise InvalidArgument("Preallocation can't be used for shrinking an image")
    if new_size > img.size:
        l1 = _div_up(new_size, img.cluster_size * img.l2_entries)
        if l1 * 8 > hdr.MAX_L1_BYTES:
            raise QimgError("Failed to grow the L1 table: File too large")


def resize(img, new_size, preallocation="off"):
    """Resize the open, writable qcow2 image to new_size bytes (a multiple of 512)."""
    img.check_writable()
    check_resize(img, new_size, preallocation)
    if new_size == img.size:
        return
    img._prepare_write()
    if new_size > img.size:
        _grow(img, new_size, preallocation)
    else:
        _shrink(img, new_size)


def _switch_header(img):
    """One write of size, crypt_method, l1_size and l1_table_offset (all in the first sector)."""
    h = img.header
    img.file.pwrite(24, _SIZE_L1.pack(h.size, h.crypt_method, h.l1_size, h.l1_table_offset))
    img.sync()


# ---------------------------------------------------------------------------------------- grow
def _grow(img, new_size, preallocation):
    cs = img.cluster_size
    old_size = img.size
    covered = len(img.l1) * img.l2_entries * cs  # what the current L1 table can map
    zeroing = preallocation == "off" and img.backing is not None and img.backing.size > old_size
    # 1. the range the current tables cover, through the active tables
    mid = min(new_size, covered)
    if mid > old_size:
        _prepare_range(img, old_size, mid, preallocation, zeroing)
    # 2. a bigger L1 table in fresh clusters, not yet referenced by the header
    old_l1 = None
    new_l1_size = _div_up(new_size, cs * img.l2_entries)
    if new_l1_size > img.header.l1_size:
        old_l1 = _grow_l1(img, new_l1_size)
    # 3. the rest, in new L2 tables only the new L1 table references
    if new_size > mid:
        _prepare_range(img, max(mid, old_size), new_size, preallocation, zeroing)
    img._commit_metadata()
    img.sync()
    # 4. the switch
    img.header.size = new_size
    img.size = new_size
    _switch_header(img)
    img.metadata_changed()
    # 5. the old L1 table is free now
    if old_l1 is not None and old_l1[1]:   # an empty L1 table (l1_size 0) owns no cluster, as in QEMU
        off, nbytes = old_l1
        for k in range(_div_up(nbytes, cs)):
            img.refcounts.add((off >> img.cluster_bits) + k, -1)
        img.refcounts.flush()
        img.sync()


def _grow_l1(img, new_l1_size):
    """Write the active L1 table, grown to new_l1_size entries, to fresh clusters; switch to it in
    memory only (the header still names the old one). Returns the old (offset, bytes)."""
    cs = img.cluster_size
    h = img.header
    nbytes = new_l1_size * 8
    clusters = _div_up(nbytes, cs)
    img._commit_metadata()
    _allocate_from_end(img)
    new_off = img.refcounts.alloc(clusters)
    img.refcounts.flush()
    table = array.array("Q", img.l1)
    table.extend([0] * (clusters * cs // 8 - len(table)))
    img.extend_file(new_off + clusters * cs)
    img._pwrite(new_off, encode_table(table))
    img.sync()
    old = (h.l1_table_offset, h.l1_size * 8)
    img.l1 = table[:new_l1_size]
    h.l1_table_offset, h.l1_size = new_off, new_l1_size
    img.l1_dirty.clear()
    img.metadata_changed()
    return old


def _allocate_from_end(img):
    """New metadata goes after the last cluster in use: the first-fit scan of every refcount block
    from the start of a big, full image costs more than the whole resize (holes stay free)."""
    rc = img.refcounts
    rc.free_hint = max(rc.free_hint, img.end_cluster())


def _prepare_range(img, start, end, preallocation, zeroing):
    """Make [start, end) (past the guest end) read as QEMU's grown area does, in metadata the old
    guest view does not use."""
    saved = img.size
    img.size = end  # the driver's range checks: the new area is being prepared
    try:
        if preallocation != "off":
            _preallocate(img, start, end, preallocation)
        elif zeroing:
            img.write_zeroes(start, end - start)
    finally:
        img.size = saved


def _preallocate(img, start, end, mode):
    """QEMU's preallocation of the grown range [start, end): metadata allocates clusters (the one
    the old end falls in stays where it is); falloc and full allocate one run of new clusters at
    the end of the file from the old end's cluster on (that cluster's content is copied into the
    run and the old one freed, as QEMU's copy-on-write does), reserved or written as asked."""
    cs = img.cluster_size
    cb = img.cluster_bits
    head = b""
    if start % cs and mode == "metadata":
        # the cluster the old end falls in: allocated (copy-on-write if need be) and zeroed past the old end
        head_end = min(end, _div_up(start, cs) * cs)
        img.write(start, bytes(head_end - start))
        first = _div_up(start, cs)
    else:
        first = start >> cb
        if start % cs:
            head = img.read(first << cb, start - (first << cb))
    n = _div_up(end, cs) - first
    if n <= 0:
        return
    rc = img.refcounts
    img._commit_metadata()
    # data clusters: one run at the end of the file, refcounts raised first
    c0 = img.end_cluster()
    rc.reserved.append((c0, c0 + n))
    img.note_allocated(c0 + n)
    try:
        _set_refcount_run(rc, c0, n)
    finally:
        rc.reserved.remove((c0, c0 + n))
    rc.flush()
    host0 = c0 << cb
    img.extend_file(host0 + n * cs)
    if mode == "falloc":
        try:
            img.file.allocate(host0, n * cs)
        except OSError as e:
            raise QimgError("Failed to resize underlying file: Could not preallocate new data: %s" % e.strerror)
    elif mode == "full":
        zeros = bytes(min(_ZERO_CHUNK, n * cs))
        pos, left = host0, n * cs
        while left:
            k = min(left, len(zeros))
            img.file.pwrite(pos, zeros[:k] if k < len(zeros) else zeros)
            pos += k
            left -= k
    if head:
        img._crypt_gc = first
        img._write_data(host0, head)
    img.sync()
    # L2 entries, one table at a time
    step = img.l2_step
    l2n = img.l2_entries
    gc = first
    host = host0
    bitmap = ALL_ZERO_BITS if (img.backing is not None and img.extended_l2) else 0
    while gc < first + n:
        k = min(first + n - gc, l2n - gc % l2n)
        l2off, table, idx = img._l2_for_write(gc)
        for j in range(k):
            e = table[idx + j * step]
            if e:
                img._release(e)
            table[idx + j * step] = (host + j * cs) | COPIED
            if step == 2:
                table[idx + j * step + 1] = ALL_SUBCLUSTERS if (head and gc + j == first) else bitmap
        img.l2_dirty[l2off] = table
        gc += k
        host += k * cs
    if head:
        _commit_and_punch(img)  # the old cluster of the old end is free: its host range goes too
    else:
        img._commit_metadata()


def _set_refcount_run(rc, c0, n):
    """Refcount 1 for clusters [c0, c0+n), a block slice at a time."""
    c = c0
    end = c0 + n
    while c < end:
        t, i = divmod(c, rc.block_entries)
        k = min(end - c, rc.block_entries - i)
        rc.set(c, 1)  # creates the block if need be
        off = rc._block_offset(t)
        blk = rc._load_block(off)
        blk[i:i + k] = [1] * k
        rc.dirty_blocks.add(off)
        c += k


# -------------------------------------------------------------------------------------- shrink
def _shrink(img, new_size):
    cs = img.cluster_size
    cb = img.cluster_bits
    l2n = img.l2_entries
    step = img.l2_step
    old_size = img.size
    # 1. the switch: from here on the guest sees the new size
    img._commit_metadata()
    img.sync()
    img.header.size = new_size
    img.size = new_size
    _switch_header(img)
    # 2. discard the clusters past the new end in the L2 table the new end falls in
    first_gc = _div_up(new_size, cs)
    end_gc = _div_up(old_size, cs)
    new_l1 = _div_up(new_size, cs * l2n)
    boundary_end = min(end_gc, new_l1 * l2n)
    gc = first_gc
    while gc < boundary_end:
        l1i = gc // l2n
        k = min(boundary_end - gc, l2n - gc % l2n)
        if img._l2_offset(l1i)[0]:
            l2off, table, idx = img._l2_for_write(gc)
            for j in range(k):
                p = idx + j * step
                e = table[p]
                if e or (step == 2 and table[p + 1]):
                    img._release(e)
                    table[p] = 0
                    if step == 2:
                        table[p + 1] = 0
            img.l2_dirty[l2off] = table
        gc += k
    _commit_and_punch(img)
    # 3. whole L2 tables past the new end: L1 entries cleared first, refcounts lowered after
    rc = img.refcounts
    drops = []
    for i in range(new_l1, len(img.l1)):
        l2off = img._l2_offset(i)[0]
        if not l2off:
            continue
        # every L1 table's reference through an L2 table counts for its data clusters
        table = img._load_l2(l2off)
        for p in range(0, len(table), step):
            if table[p]:
                img._release(table[p])
        if rc.get(l2off >> cb) == 1:
            img.l2_cache.pop(l2off, None)
            img.l2_dirty.pop(l2off, None)
        drops.append(l2off)
        img.l1[i] = 0
    if drops:
        raw = encode_table(img.l1[new_l1:])
        off = img.header.l1_table_offset + 8 * new_l1
        img.check_metadata_write(off, len(raw), "L1 table")
        img._pwrite(off, raw)
        img.sync()
        for l2off in drops:
            img.pending_decrefs.append((l2off, 1))
        _commit_and_punch(img)
    img.sync()
    # 4. the file ends after its last used cluster
    last = _last_used_cluster(rc, img.end_cluster())
    end = (last + 1) << cb
    if end < img.file.length():
        try:
            img.file.truncate(end)
            img.file_size = end
            img.alloc_end = min(img.alloc_end, last + 1)
        except (OSError, QimgError):
            pass  # QEMU only warns: "Failed to truncate the tail of the image"
    img.metadata_changed()


def _commit_and_punch(img):
    """Commit the metadata (refcounts lowered last), then deallocate the host clusters that became
    free in the file, as QEMU's discard of cropped clusters does."""
    cb = img.cluster_bits
    candidates = sorted(set(off >> cb for off, _n in img.pending_decrefs))
    img._commit_metadata()
    img.sync()
    rc = img.refcounts
    run = None
    for c in candidates + [None]:
        if c is not None and rc.get(c) == 0 and (c << cb) < img.file_size:
            if run is not None and run[1] == c:
                run[1] = c + 1
                continue
        elif c is not None:
            continue
        if run is not None:
            try:
                img.file.punch(run[0] << cb, (run[1] - run[0]) << cb)
            except (OSError, QimgError):
                pass
            run = None
        if c is not None:
            run = [c, c + 1]


def _last_used_cluster(rc, end_cluster):
    """The highest cluster index below end_cluster with a non-zero refcount (0 if none)."""
    t = min(len(rc.table), _div_up(end_cluster, rc.block_entries)) - 1
    while t >= 0:
        off = rc._block_offset(t)
        if off:
            blk = rc._load_block(off)
            for i in range(len(blk) - 1, -1, -1):
                if blk[i]:
                    return t * rc.block_entries + i
        t -= 1
    return 0


def head_allocated(img, offset):
    """Whether the guest byte at offset is allocated data in this layer (tests, diagnostics)."""
    return any(e.status == DATA for e in img.block_status(offset, 1))


__all__ = ["check_resize", "resize", "decode_table"]
