# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Persistent dirty bitmaps of an open qcow2 image: the in-memory state QEMU keeps for them
(BdrvDirtyBitmap) and how it goes back to the file (QEMU docs/interop/qcow2.txt, "Bitmaps").

As QEMU does for an image opened read-write, the bitmaps that are consistent in the file are
loaded, guest writes set their bits while they are enabled, and on close they are stored back
with in_use cleared; bitmaps that were in use already (inconsistent) are never stored, only kept
or removed. The bitmap data is held per bitmap-table cluster, read when first needed; a bounded
number of changed clusters stays in memory (the rest is written to fresh clusters early).

Storing is crash-safe: changed data clusters, new bitmap tables and a new bitmap directory go to
freshly allocated clusters (refcounts raised first), then ONE write of the header switches the
bitmaps extension (and its autoclear bit) to them, then the replaced clusters are freed. A kill
before the switch leaves the old directory (whose bitmaps are in use if guest data was written)
plus leaked clusters; after it, the new one.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import array
import re
import sys

from ...errors import ImageCorrupt, QimgError
from . import header as hdr
from .bitmaps import DIR_ENTRY, FLAG_AUTO, FLAG_IN_USE, MAX_BITMAPS, MAX_DIR_BYTES, read_bitmaps

TABLE_RESERVED = 0xFF000000000001FE
TABLE_OFFSET = 0x00FFFFFFFFFFFE00
ALL_ONES = 1
MAX_TABLE_SIZE = 0x8000000
MAX_PHYS_SIZE = 0x20000000
MAX_NAME_SIZE = 1023
MIN_GRANULARITY_BITS = 9
MAX_GRANULARITY_BITS = 31
CACHE_BYTES = 32 << 20      # changed bitmap clusters held in memory before they are written early
_NONZERO = re.compile(b"[^\x00]+")
_LITTLE = sys.byteorder == "little"
INCONSISTENT_HINT = "Try block-dirty-bitmap-remove to delete this bitmap from disk"


class BitmapError(QimgError):
    """A bitmap operation QEMU refuses (lookup, state, size or constraint errors)."""


def _div_up(a, b):
    return -(-a // b)


def default_granularity(cluster_size):
    """bdrv_get_default_bitmap_granularity(): the cluster size, within 4 KiB .. 64 KiB."""
    return min(65536, max(4096, cluster_size))


def table_size_for(size, granularity_bits, cluster_size):
    return _div_up(_div_up(_div_up(size, 1 << granularity_bits), 8), cluster_size)


def dir_entry_size(name):
    return (DIR_ENTRY.size + len(name.encode("utf-8")) + 7) & ~7


def _set_bits(buf, first, last):
    """Set bits first..last (inclusive) of buf, bit n being bit n % 8 of byte n // 8."""
    b0, b1 = first >> 3, last >> 3
    lo = (0xFF << (first & 7)) & 0xFF
    hi = 0xFF >> (7 - (last & 7))
    if b0 == b1:
        buf[b0] |= lo & hi
        return
    buf[b0] |= lo
    if b1 > b0 + 1:
        buf[b0 + 1:b1] = b"\xff" * (b1 - b0 - 1)
    buf[b1] |= hi


def _runs(data):
    """(first, last) bit runs set in data (bytes), inclusive, ascending."""
    for m in _NONZERO.finditer(data):
        base = m.start() * 8
        x = int.from_bytes(m.group(), "little")
        while x:
            low = (x & -x).bit_length() - 1
            y = x >> low
            n = (y ^ (y + 1)).bit_length() - 1   # trailing ones of y
            yield base + low, base + low + n - 1
            x &= ~(((1 << n) - 1) << low)


class LiveBitmap(object):
    """One persistent bitmap of an open image, as QEMU holds it in memory."""

    def __init__(self, store, name, granularity_bits, enabled, entry=None, inconsistent=False):
        self.store = store
        self.name = name
        self.granularity_bits = granularity_bits
        self.enabled = enabled
        self.entry = entry                  # its directory entry in the file (None: new)
        self.inconsistent = inconsistent
        self.size = store.img.size          # guest bytes covered
        self.table = None                   # array of table entries (loaded lazily)
        self.orig_table = None
        self.chunks = {}                    # table index -> bytearray (changed data, in memory)
        self.own = set()                    # data clusters allocated by this session
        self.changed = entry is None        # data or size differ from the file's
        if entry is None:
            self.table = array.array("Q", bytes(8 * self.table_size()))
            self.orig_table = array.array("Q")

    @property
    def granularity(self):
        return 1 << self.granularity_bits

    def table_size(self):
        return table_size_for(self.size, self.granularity_bits, self.store.cs)

    def chunk_bits(self):
        return self.store.cs * 8

    # ---------------------------------------------------------------- data
    def load(self):
        if self.table is not None:
            return
        img, e = self.store.img, self.entry
        cs = self.store.cs
        if e.table_size > MAX_TABLE_SIZE or e.table_offset + e.table_size * 8 > img.file_end_limit():
            raise ImageCorrupt("Could not read bitmap_table table from image for bitmap '%s': Invalid argument"
                               % self.name)
        arr = array.array("Q", img.file.pread(e.table_offset, e.table_size * 8))
        if _LITTLE:
            arr.byteswap()
        limit = img.file_end_limit()
        for v in arr:
            off = v & TABLE_OFFSET
            if v & TABLE_RESERVED or (off and (v & ALL_ONES or off % cs or off + cs > limit)):
                raise ImageCorrupt("Could not read bitmap_table table from image for bitmap '%s': "
                                   "Invalid argument" % self.name)
        if len(arr) != self.table_size():
            raise ImageCorrupt("Could not read bitmap '%s' from image: Invalid argument" % self.name)
        self.table = arr
        self.orig_table = array.array("Q", arr)

    def _valid_bits(self, i):
        """Bits of table cluster i inside the bitmap."""
        total = _div_up(self.size, self.granularity)
        return max(0, min(self.chunk_bits(), total - i * self.chunk_bits()))

    def chunk(self, i):
        """Bitmap data of table cluster i (bytes or bytearray, cluster-sized), None for all zeros."""
        c = self.chunks.get(i)
        if c is not None:
            return c
        self.load()
        v = self.table[i]
        off = v & TABLE_OFFSET
        if off:
            return self.store.img.file.pread(off, self.store.cs)
        if v & ALL_ONES:
            buf = bytearray(self.store.cs)
            n = self._valid_bits(i)
            if n:
                _set_bits(buf, 0, n - 1)
            return buf
        return None

    def chunk_for_write(self, i):
        c = self.chunks.get(i)
        if c is None:
            data = self.chunk(i)
            c = bytearray(self.store.cs) if data is None else bytearray(data)
            self.chunks[i] = c
            self.store.cached += 1
        self.changed = True
        return c

    def set_range(self, offset, length):
        """Mark guest bytes [offset, offset+length) dirty (clipped to the bitmap)."""
        end = min(offset + length, self.size)
        if length <= 0 or offset >= end:
            return
        g = self.granularity_bits
        first, last = offset >> g, (end - 1) >> g
        per = self.chunk_bits()
        while first <= last:
            i = first // per
            stop = min(last, (i + 1) * per - 1)
            _set_bits(self.chunk_for_write(i), first - i * per, stop - i * per)
            first = stop + 1
        self.store.maybe_spill()

    def clear(self):
        self.load()
        self.table = array.array("Q", bytes(8 * self.table_size()))
        self.store.cached -= len(self.chunks)
        self.chunks = {}
        self.changed = True

    def dirty_ranges(self):
        """Guest (start, end) byte ranges whose bits are set, ascending."""
        self.load()
        per = self.chunk_bits()
        g = self.granularity_bits
        for i in range(len(self.table)):
            data = self.chunk(i)
            if data is None:
                continue
            n = self._valid_bits(i)
            for a, b in _runs(bytes(data[:_div_up(n, 8)])):
                if a >= n:
                    break
                b = min(b, n - 1)
                yield (i * per + a) << g, min(self.size, (i * per + b + 1) << g)

    def covers(self, start, end):
        """Whether every bit for guest bytes [start, end) is set."""
        end = min(end, self.size)
        if start >= end:
            return True
        g = self.granularity_bits
        first, last = start >> g, (end - 1) >> g
        per = self.chunk_bits()
        while first <= last:
            i = first // per
            stop = min(last, (i + 1) * per - 1)
            data = self.chunk(i)
            if data is None:
                return False
            value = int.from_bytes(bytes(data), "little") >> (first - i * per)
            n = stop - first + 1
            if value & ((1 << n) - 1) != (1 << n) - 1:
                return False
            first = stop + 1
        return True

    def contains(self, other):
        """Whether merging other in would set no new bit."""
        return all(self.covers(a, b) for a, b in other.dirty_ranges())

    def has_bits(self):
        for _ in self.dirty_ranges():
            return True
        return False

    def dirty_count(self):
        return sum(b - a for a, b in self.dirty_ranges())

    def merge_from(self, src):
        """OR src's bits into this bitmap (QEMU's bdrv_merge_dirty_bitmap; sizes must match)."""
        if src.size != self.size:
            raise BitmapError("Bitmaps are of different sizes (destination size is %d, source size is %d) and "
                              "can't be merged" % (self.size, src.size))
        src.load()
        self.load()
        if src.granularity_bits == self.granularity_bits and src.store.cs == self.store.cs:
            for i in range(len(src.table)):
                data = src.chunk(i)
                if data is None or not any(data):
                    continue
                mine = self.chunk(i)
                if mine is not None and bytes(mine) == bytes(data):
                    continue
                c = self.chunk_for_write(i)
                merged = int.from_bytes(bytes(c), "little") | int.from_bytes(bytes(data), "little")
                c[:] = merged.to_bytes(len(c), "little")
                self.store.maybe_spill()
            return
        for a, b in list(src.dirty_ranges()):
            self.set_range(a, b - a)

    def truncate(self, new_size):
        """Follow a resize: bits past the new end go, a grown area starts clean (hbitmap_truncate)."""
        if new_size == self.size:
            return
        self.load()
        old_bits = _div_up(self.size, self.granularity)
        self.size = new_size
        n = self.table_size()
        per = self.chunk_bits()
        for i in [k for k in self.chunks if k >= n]:
            del self.chunks[i]
            self.store.cached -= 1
        table = array.array("Q", self.table[:n])
        if len(table) < n:
            table.extend([0] * (n - len(table)))
        self.table = table
        new_bits = _div_up(new_size, self.granularity)
        if new_bits < old_bits and new_bits % per:
            # the last cluster keeps only the bits inside the new size
            i = new_bits // per
            if self.chunk(i) is not None:
                c = self.chunk_for_write(i)
                keep = new_bits - i * per
                whole = keep >> 3
                if keep & 7:
                    c[whole] &= (1 << (keep & 7)) - 1
                    whole += 1
                c[whole:] = bytes(len(c) - whole)
        self.changed = True

    def spill(self):
        """Write the changed clusters held in memory to clusters of this session's own."""
        img = self.store.img
        for i in sorted(self.chunks):
            data = self.chunks[i]
            off = self.table[i] & TABLE_OFFSET
            if not any(data):
                self.table[i] = 0
            else:
                if off not in self.own:
                    off = img.refcounts.alloc(1)
                    img.refcounts.flush()
                    self.own.add(off)
                img.check_metadata_write(off, len(data), "bitmap data")
                img._pwrite(off, bytes(data))
                self.table[i] = off
        self.store.cached -= len(self.chunks)
        self.chunks = {}


class BitmapStore(object):
    """The persistent bitmaps of one open qcow2 image, in directory order."""

    def __init__(self, img):
        self.img = img
        self.cs = img.cluster_size
        self.cached = 0
        self.bitmaps = []
        self.removed = []
        self.dir_changed = False
        for b in img.bitmaps:
            inconsistent = bool(getattr(b, "inconsistent", b.flags & FLAG_IN_USE))
            self.bitmaps.append(LiveBitmap(self, b.name, b.granularity_bits, bool(b.flags & FLAG_AUTO), entry=b,
                                           inconsistent=inconsistent))

    def find(self, name):
        for b in self.bitmaps:
            if b.name == name:
                return b
        return None

    def lookup(self, name):
        b = self.find(name)
        if b is None:
            raise BitmapError("Dirty bitmap '%s' not found" % name)
        return b

    def maybe_spill(self):
        # (an image open read-only keeps its changes in memory: they are never stored)
        if self.cached * self.cs > CACHE_BYTES and not self.img.read_only:
            for b in self.bitmaps:
                if b.chunks:
                    b.spill()

    # ---------------------------------------------------------------- what guest writes do
    def mark(self, offset, length):
        for b in self.bitmaps:
            if b.enabled and not b.inconsistent:
                b.set_range(offset, length)

    # ---------------------------------------------------------------- qemu-img bitmap's actions
    def add(self, name, granularity=None, disabled=False, node="#block000"):
        img = self.img
        if not name:
            raise BitmapError("Bitmap name cannot be empty")
        if granularity is not None:
            if granularity < 512 or granularity & (granularity - 1) or granularity > 0xFFFFFFFF:
                raise BitmapError("Granularity must be power of 2 and at least 512")
        else:
            granularity = default_granularity(self.cs)
        prefix = "Can't make bitmap '%s' persistent in '%s': " % (name, node)
        if self.find(name) is not None:
            raise BitmapError("Bitmap already exists: %s" % name)
        if img.header.version < 3:
            raise BitmapError(prefix + "Cannot store dirty bitmaps in qcow2 v2 files")
        gbits = granularity.bit_length() - 1
        if gbits > MAX_GRANULARITY_BITS:
            raise BitmapError(prefix + "Granularity exceeds maximum (%d bytes)" % (1 << MAX_GRANULARITY_BITS))
        nbytes = _div_up(_div_up(img.size, granularity), 8)
        if nbytes > MAX_PHYS_SIZE or nbytes > MAX_TABLE_SIZE * self.cs:
            raise BitmapError(prefix + "Too much space will be occupied by the bitmap. Use larger granularity")
        if len(name.encode("utf-8")) > MAX_NAME_SIZE:
            raise BitmapError(prefix + "Name length exceeds maximum (%d characters)" % MAX_NAME_SIZE)
        if len(self.bitmaps) + 1 > MAX_BITMAPS:
            raise BitmapError(prefix + "Maximum number of persistent bitmaps is already reached")
        if sum(dir_entry_size(b.name) for b in self.bitmaps) + dir_entry_size(name) > MAX_DIR_BYTES:
            raise BitmapError(prefix + "Not enough space in the bitmap directory")
        b = LiveBitmap(self, name, gbits, not disabled)
        self.bitmaps.append(b)
        self.dir_changed = True
        return b

    def remove(self, name):
        b = self.lookup(name)
        self.bitmaps.remove(b)
        self.cached -= len(b.chunks)
        self.dir_changed = True
        if b.entry is not None:
            self.removed.append(b)

    def usable(self, name):
        b = self.lookup(name)
        if b.inconsistent:
            raise BitmapError("Bitmap '%s' is inconsistent and cannot be used" % name, hint=[INCONSISTENT_HINT])
        return b

    def clear(self, name):
        b = self.usable(name)
        if b.has_bits():
            b.clear()

    def enable(self, name, enabled=True):
        b = self.usable(name)
        if b.enabled != enabled:
            b.enabled = enabled
            self.dir_changed = True

    def merge(self, name, src_store, src_name):
        dst = self.lookup(name)
        src = src_store.lookup(src_name)
        if dst.inconsistent:
            raise BitmapError("Bitmap '%s' is inconsistent and cannot be used" % name, hint=[INCONSISTENT_HINT])
        if src.inconsistent:
            raise BitmapError("Bitmap '%s' is inconsistent and cannot be used" % src_name,
                              hint=[INCONSISTENT_HINT])
        dst.merge_from(src)

    def check_truncate(self):
        """qcow2_truncate_bitmaps_check(): every bitmap must be usable to be resized."""
        for b in self.bitmaps:
            if b.inconsistent:
                raise BitmapError("Bitmap '%s' is inconsistent and cannot be used" % b.name,
                                  hint=[INCONSISTENT_HINT])

    # ---------------------------------------------------------------- storing
    def needs_store(self):
        # QEMU stores whenever it holds a bitmap it loaded as consistent (or removed one)
        return bool(self.dir_changed or self.removed or any(not b.inconsistent for b in self.bitmaps))

    def store(self):
        """Write the bitmaps back (see the module docstring for the order)."""
        img = self.img
        if not self.needs_store():
            return
        cs = self.cs
        rc = img.refcounts
        img._commit_metadata()
        entries = []            # (bitmap, table_offset, table_size, flags)
        frees = []              # (offset, clusters) to release after the switch
        for b in self.bitmaps:
            if b.inconsistent:
                e = b.entry
                entries.append((b, e.table_offset, e.table_size, e.flags))
                continue
            if b.size != img.size:
                b.truncate(img.size)
            flags = FLAG_AUTO if b.enabled else 0
            # as QEMU's store_bitmap(): every bitmap it loaded goes to fresh clusters, data first
            # (the set clusters only), then its table
            b.load()
            table = self._write_data(b)
            raw = array.array("Q", table)
            if _LITTLE:
                raw.byteswap()
            raw = raw.tobytes()
            toff = rc.alloc(_div_up(len(raw), cs))
            rc.flush()
            img.check_metadata_write(toff, len(raw), "bitmap table")
            img._pwrite(toff, raw)
            entries.append((b, toff, len(table), flags))
            kept = set(v & TABLE_OFFSET for v in table)
            if b.entry is not None:
                e = b.entry
                frees.append((e.table_offset, _div_up(e.table_size * 8, cs)))
                for v in b.orig_table:
                    off = v & TABLE_OFFSET
                    if off and off not in kept:
                        frees.append((off, 1))
            frees.extend((off, 1) for off in b.own if off not in kept)
            b.own = kept
        for b in self.removed:
            e = b.entry
            if b.table is None:
                old = self._raw_table(e)    # an inconsistent one may not load: free what is sound
            else:
                old = b.orig_table
            frees.append((e.table_offset, _div_up(e.table_size * 8, cs)))
            frees.extend((off, 1) for off in b.own)
            for v in old:
                off = v & TABLE_OFFSET
                if off:
                    frees.append((off, 1))
        h = img.header
        old_dir = h.bitmaps_ext
        if entries:
            directory = bytearray()
            for b, toff, tsize, flags in entries:
                name = b.name.encode("utf-8")
                directory += DIR_ENTRY.pack(toff, tsize, flags, 1, b.granularity_bits, len(name), 0) + name
                directory += bytes((-len(directory)) % 8)
            dclusters = _div_up(len(directory), cs)
            doff = rc.alloc(dclusters)
            rc.flush()
            img.check_metadata_write(doff, len(directory), "bitmap directory")
            img._pwrite(doff, bytes(directory))
            new_ext = (len(entries), len(directory), doff)
        else:
            new_ext = None
        img.sync()
        # the switch: one write of the header
        h.bitmaps_ext = new_ext
        if new_ext is None:
            h.autoclear_features &= ~hdr.AUTOCLEAR_BITMAPS
        else:
            h.autoclear_features |= hdr.AUTOCLEAR_BITMAPS
        h.autoclear_features &= hdr.AUTOCLEAR_KNOWN
        img.write_header()
        img.sync()
        # the old directory, tables and replaced data are free now
        if old_dir is not None and img.bitmaps:
            frees.append((old_dir[2], _div_up(old_dir[1], cs)))
        for off, n in frees:
            if not off:
                continue
            for k in range(n):
                c = (off >> img.cluster_bits) + k
                if rc.get(c) > 0:
                    rc.add(c, -1)
        rc.flush()
        img.sync()
        img.metadata_changed()
        self._reload()

    def _write_data(self, b):
        """The bitmap's set clusters in clusters of this session's own; returns the new table."""
        img, rc = self.img, self.img.refcounts
        table = array.array("Q", bytes(8 * len(b.table)))
        for i in range(len(b.table)):
            data = b.chunk(i)
            if data is None or not any(data):
                continue
            off = b.table[i] & TABLE_OFFSET
            if off not in b.own:
                off = rc.alloc(1)
                rc.flush()
                b.own.add(off)
            elif i not in b.chunks:
                table[i] = off      # written early already
                continue
            img.check_metadata_write(off, self.cs, "bitmap data")
            img._pwrite(off, bytes(data))
            table[i] = off
        return table

    def _raw_table(self, e):
        img = self.img
        if e.table_size > MAX_TABLE_SIZE or e.table_offset + e.table_size * 8 > img.file_end_limit():
            return []
        arr = array.array("Q", img.file.pread(e.table_offset, e.table_size * 8))
        if _LITTLE:
            arr.byteswap()
        limit = img.file_end_limit()
        return [v for v in arr if not v & TABLE_RESERVED and (v & TABLE_OFFSET) + self.cs <= limit
                and not (v & TABLE_OFFSET) % self.cs]

    def _reload(self):
        """After a store: the file's directory is the truth again."""
        img = self.img
        img.bitmaps = read_bitmaps(img) if img.header.autoclear_features & hdr.AUTOCLEAR_BITMAPS else []
        self.__init__(img)


def bitmap_store(img):
    """The image's BitmapStore (created on first use; stored back when the image closes)."""
    store = getattr(img, "bitmap_store", None)
    if store is None:
        store = BitmapStore(img)
        img.bitmap_store = store
    return store


def copy_bitmaps(src, dst, skip_broken=False, warn=None):
    """convert --bitmaps: every persistent bitmap of src (a qcow2 image) into dst, qemu-img's way."""
    src_store = bitmap_store(src)
    dst_store = bitmap_store(dst)
    # qemu-img walks the bitmaps newest-loaded first, and the target stores them newest-created
    # first again: the directory order survives, the messages come in reverse order
    for b in reversed(src_store.bitmaps):
        if b.inconsistent and skip_broken:
            if warn is not None:
                warn("Skipping inconsistent bitmap '%s'" % b.name)
    copied = []
    for b in src_store.bitmaps:
        if b.inconsistent and skip_broken:
            continue
        try:
            new = dst_store.add(b.name, b.granularity, disabled=not b.enabled)
        except BitmapError as e:
            raise BitmapError("Failed to create bitmap %s: %s" % (b.name, e.message), hint=e.hint)
        copied.append((b, new))
    for b, new in copied:
        try:
            new.merge_from(b)
        except BitmapError as e:
            raise BitmapError("Failed to populate bitmap %s: %s" % (b.name, e.message), hint=e.hint)


def check_resize_bitmaps(img):
    """qcow2_co_truncate()'s bitmap check; the bitmaps are truncated when they are stored."""
    bitmap_store(img).check_truncate()


def copy_bitmaps_to_node(src, node, filename, data_node=None, skip_broken=False, warn=None):
    """convert --bitmaps into the qcow2 image just written on node (the caller keeps the node)."""
    from .driver import Qcow2Image
    img = Qcow2Image(filename, node, read_only=False, data_file=data_node, open_data_file=data_node is not None)
    try:
        copy_bitmaps(src, img, skip_broken, warn)
        bitmap_store(img).store()
    finally:
        img.file = None


def check_copyable(src, skip_broken=False):
    """convert_check_bitmaps(): an inconsistent bitmap stops the copy unless it is skipped."""
    if src.header.version < 3:
        raise BitmapError("Source lacks bitmap support")
    if skip_broken:
        return
    for b in reversed(bitmap_store(src).bitmaps):
        if b.inconsistent:
            raise BitmapError("Cannot copy inconsistent bitmap '%s'" % b.name,
                              hint=["Try --skip-broken-bitmaps, or use 'qemu-img bitmap --remove' to delete it"])
