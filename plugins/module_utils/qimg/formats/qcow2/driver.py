# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The qcow2 block device: L1/L2 mapping, reads through the chain, copy-on-write writes.

Write ordering (crash safety, as QEMU orders it): refcount increases reach the file first, then
guest data, then L2 tables, then L1 entries, and refcount decreases come last. A crash can leak
clusters but never leaves a reference to a cluster whose refcount says it is free.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

from ...errors import ImageCorrupt, ImageNotFound, InvalidArgument, QimgError, ReadOnlyImage, UnsupportedFeature
from ...image import DATA, UNALLOCATED, ZERO, BlockDevice, Extent
from ...protocols.base import ProtocolNode
from . import header as hdr
from .entries import (ALL_SUBCLUSTERS, ALL_ZERO_BITS, COMPRESSED, COPIED, L1E_RESERVED, L2E_RESERVED, OFFSET_MASK,
                      ZERO_FLAG, decode_table, encode_table, nonzero_entries)
from ...fileio import zero_view

L2_CACHE_BYTES = 32 * 1024 * 1024
COMPRESSED_KIND = "compressed"


def open_data_file_node(image_filename, name, read_only, force_share, cache=None):
    """The external data file named in an image's header, as a local file node, with the image
    file's cache mode (cache: a CacheMode or its name; QEMU's children inherit it too).

    As QEMU 7.2 opens it (bdrv_open_child without filename parsing): the name is a plain file name,
    never json: or a protocol, and a relative one is taken relative to the working directory (not
    to the image's directory, unlike backing files).
    """
    import stat
    from ...protocols.file import HostFile
    try:
        mode = os.stat(name).st_mode
    except (OSError, ValueError):
        mode = None  # HostFile reports it
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISBLK(mode):
        # refused before open(): opening a FIFO named by a hostile image would block
        raise ImageNotFound("Could not open '%s': 'file' driver requires '%s' to be a regular file"
                            % (image_filename, name))
    try:
        return HostFile(name, read_only, force_share, cache=cache)
    except QimgError as e:
        msg = e.message
        prefix = "Could not open '%s': " % name
        if msg.startswith(prefix + prefix):
            msg = msg[len(prefix):]
        raise type(e)("Could not open '%s': %s" % (image_filename, msg), hint=e.hint)


class _UnopenedDataFile(ProtocolNode):
    """Stands in for an external data file the image was opened without (open_data_file=False)."""

    def __init__(self, image_filename, name):
        super(_UnopenedDataFile, self).__init__(name if name is not None else "", True)
        self.image_filename = image_filename

    def _refuse(self, *args):
        raise UnsupportedFeature("%s: the external data file is not open" % self.image_filename)

    preadinto = pwritev = truncate = punch = extents = length = _refuse


class Qcow2Image(BlockDevice):
    format_name = "qcow2"

    def __init__(self, filename, file, read_only=True, repair=False, data_file=None, open_data_file=True,
                 secrets=None, key_secret=None):
        """data_file: an already opened node for the external data file (QEMU's "data-file" option),
        used instead of the name in the header; open_data_file=False leaves it closed (qemu-img info
        opens images without I/O and never touches the data file). secrets (crypto.secrets.SecretStore)
        and key_secret (the encrypt.key-secret id) unlock an encrypted image."""
        super(Qcow2Image, self).__init__(filename, read_only)
        self.file = file
        self._debug_event = getattr(file, "debug_event", None)  # blkdebug below: data reads are events
        self.data_file = None
        self._own_data_file = False
        self.file_size = file.length()
        buf = file.pread(0, min(self.file_size, 1 << hdr.MAX_CLUSTER_BITS))
        # repair: opened by check (read-only too): the snapshot table is check's to read (QEMU's BDRV_O_CHECK)
        self.header = h = hdr.parse_header(buf, self.file_size, filename, check_mode=bool(repair))
        self.cluster_size = cs = h.cluster_size
        self.cluster_bits = h.cluster_bits
        self.size = h.size
        self.extended_l2 = h.extended_l2
        self.l2_step = 2 if self.extended_l2 else 1
        self.l2_entries = cs // (8 * self.l2_step)
        self.subcluster_size = cs // 32 if self.extended_l2 else cs
        self.backing_filename = h.backing_file
        self.backing_format = h.backing_format
        self.alloc_end = -(-self.file_size // cs)
        self.has_data_file = bool(h.incompatible_features & hdr.INCOMPAT_DATA_FILE)
        self.data_file_raw = self.has_data_file and bool(h.autoclear_features & hdr.AUTOCLEAR_DATA_FILE_RAW)
        self.crypto = None
        crypto_ext = [d for t, d in h.unknown_extensions if t == hdr.EXT_CRYPTO]
        if h.crypt_method or crypto_ext:
            if self.has_data_file:
                raise UnsupportedFeature("Could not open '%s': encrypted images with an external data file are "
                                         "not supported" % filename)
            from ...crypto.qcow2_crypto import Qcow2Crypto
            self.crypto = Qcow2Crypto(filename, h.crypt_method, crypto_ext[0] if crypto_ext else None, file,
                                      self.file_size, cs, secrets, key_secret)
        if h.incompatible_features & hdr.INCOMPAT_EXTL2 and h.cluster_bits < 14:
            raise ImageCorrupt("Could not open '%s': Extended L2 entries are only supported with cluster sizes "
                               "of at least 16384 bytes" % filename)
        if h.incompatible_features & hdr.INCOMPAT_CORRUPT and not repair:
            self.read_only = True  # corrupt images may be read, never written (except by repair)
        # The L1 and refcount tables are read on first use: info needs neither (start-up time)
        self._l1 = None
        self.l1_dirty = set()
        self._refcounts = None
        # the snapshot, bitmap and compression modules are imported where an image needs them
        self.snapshots = []
        self.snapshots_size = 0
        if h.nb_snapshots and not (repair and hdr.snapshot_table_problem(h, cs)):
            from .snapshots import read_snapshots
            self.snapshots = read_snapshots(self, check=repair)
        self.bitmaps = []
        if h.autoclear_features & hdr.AUTOCLEAR_BITMAPS:
            from .bitmaps import read_bitmaps
            self.bitmaps = read_bitmaps(self)
        self.bitmap_store = None  # the bitmaps in memory (bitmap_ops.BitmapStore), once loaded
        self.l2_cache = {}  # offset -> table, least recently used first
        self.l2_dirty = {}  # offset -> table: modified tables stay reachable even if evicted
        self.pending_decrefs = []
        self.prepared_for_write = False
        self.written = False
        self._last_compressed = (None, None)
        if open_data_file or data_file is not None:
            self._attach_data_file(data_file)
        elif self.has_data_file:
            self.data_file = _UnopenedDataFile(filename, h.data_file)
        else:
            self.data_file = file
        try:
            if not self.read_only and not repair and h.incompatible_features & hdr.INCOMPAT_DIRTY:
                self._repair_dirty()
            if not self.read_only and h.autoclear_features & ~hdr.AUTOCLEAR_KNOWN:
                # as QEMU does on every read-write open: autoclear bits a writer does not know go first
                h.autoclear_features &= hdr.AUTOCLEAR_KNOWN
                self.write_header()
                self.sync()
        except BaseException:
            self._close_data_file()
            raise

    def _attach_data_file(self, node):
        """QEMU's qcow2_do_open(): the data file named in the header (or given), or this file itself."""
        h = self.header
        if not self.has_data_file:
            if node is not None:
                raise InvalidArgument("Could not open '%s': 'data-file' can only be set for images with an "
                                      "external data file" % self.filename)
            if h.autoclear_features & hdr.AUTOCLEAR_DATA_FILE_RAW:
                raise ImageCorrupt("Could not open '%s': data-file-raw requires a data file" % self.filename)
            self.data_file = self.file
            return
        if node is None:
            if h.data_file is None:
                raise ImageCorrupt("Could not open '%s': 'data-file' is required for this image" % self.filename)
            node = open_data_file_node(self.filename, h.data_file, self.read_only, self.file.lock is None,
                                       getattr(self.file, "cache", None))
            self._own_data_file = True
        self.data_file = node

    def _close_data_file(self):
        node, self.data_file = self.data_file, None
        if self._own_data_file and node is not None:
            self._own_data_file = False
            node.close()

    def _repair_dirty(self):
        """A dirty lazy-refcount image opened for writing gets its refcounts rebuilt first (as QEMU does)."""
        from .check import check as run_check  # imported late: check builds on this module
        result = run_check(self, "all")
        self.repair_messages = list(result.messages)  # what QEMU prints while it repairs on open
        if result.corruptions or result.check_errors or self.header.incompatible_features & hdr.INCOMPAT_DIRTY:
            raise ImageCorrupt("Could not open '%s': the image is dirty and its refcounts could not be repaired; "
                               "run 'check -r all'" % self.filename)

    # ------------------------------------------------------------------ helpers
    @property
    def fd(self):
        """The local descriptor under the image (None for other protocols, or once closed)."""
        return None if self.file is None else self.file.fd

    def file_end_limit(self):
        return max(self.file_size, self.alloc_end << self.cluster_bits) + self.cluster_size

    def end_cluster(self):
        return max(-(-self.file_size // self.cluster_size), self.alloc_end)

    def note_allocated(self, end_cluster):
        if end_cluster > self.alloc_end:
            self.alloc_end = end_cluster

    def extend_file(self, size):
        if size > self.file_size:
            # refcount blocks are written straight to the node: the file may be longer already
            if size > self.file.length():
                self.file.truncate(size)
            self.file_size = size

    def sync(self):
        if self.has_data_file and self.data_file is not None:
            self.data_file.flush()  # guest data before the metadata that maps it
        self.file.flush()

    def metadata_changed(self):
        self._regions = None

    def _metadata_regions(self):
        """Sorted (start, end, kind) of the metadata that guest data and other tables must never overwrite."""
        if getattr(self, "_regions", None) is None:
            self._regions = sorted(self._collect_regions())
            self._region_starts = [r[0] for r in self._regions]
            self._region_max_len = max(r[1] - r[0] for r in self._regions)
        return self._regions

    def _collect_regions(self):
        h = self.header
        cs = self.cluster_size
        regions = [(0, cs, "header"),
                   (h.l1_table_offset, h.l1_table_offset + max(8, h.l1_size * 8), "L1 table"),
                   (self.refcounts.table_offset, self.refcounts.table_offset + self.refcounts.table_clusters * cs,
                    "refcount table")]
        for off in self.refcounts.table:
            if off:
                regions.append((off, off + cs, "refcount block"))
        if h.nb_snapshots:
            regions.append((h.snapshots_offset, h.snapshots_offset + cs, "snapshot table"))
        for snap in self.snapshots:
            regions.append((snap.l1_table_offset, snap.l1_table_offset + max(8, snap.l1_size * 8),
                            "snapshot L1 table"))
        if h.bitmaps_ext is not None:
            regions.append((h.bitmaps_ext[2], h.bitmaps_ext[2] + max(1, h.bitmaps_ext[1]), "bitmap directory"))
        if self.crypto is not None and self.crypto.region is not None:
            regions.append((self.crypto.region[0], self.crypto.region[0] + self.crypto.region[1], "encryption header"))
        return regions

    def check_metadata_write(self, offset, length, what):
        """Before writing `what` at [offset, offset+length), make sure it overlaps no other metadata.

        As QEMU does, an overlap means the image is inconsistent: mark it corrupt and stop.
        """
        if offset + length > hdr.HOST_OFFSET_LIMIT:
            self._refuse_write(offset, what, "it is beyond the addressable range")
        regions = self._metadata_regions()
        # only regions starting within one maximal region length before the write can overlap it
        from bisect import bisect_left
        i = bisect_left(self._region_starts, offset - self._region_max_len)
        j = bisect_left(self._region_starts, offset + length)
        for start, end, kind in regions[i:j]:
            if offset < end and start < offset + length and kind != what:
                self._refuse_write(offset, what, "it would overlap the %s at %#x" % (kind, start))

    def _refuse_write(self, offset, what, why):
        self._mark_corrupt()
        raise ImageCorrupt("%s: refusing to write %s at %#x: %s; the image is marked corrupt "
                           "(repair it with 'check -r all')" % (self.filename, what, offset, why))

    def _mark_corrupt(self):
        if self.read_only or self.header.version < 3:
            return
        self.header.incompatible_features |= hdr.INCOMPAT_CORRUPT
        try:
            self.write_header()
        finally:
            self.read_only = True

    def _write_data(self, offset, data):
        if self.has_data_file:  # nothing of the qcow2 file can be hit (QEMU skips its overlap check too)
            try:
                self.data_file.pwrite(offset, data)
            except OSError as e:  # e.g. EFBIG: the guest offset of a hostile size is past what the file system holds
                raise QimgError("%s: error while writing at byte %d: %s" % (self.filename, offset, e.strerror))
            return
        self.check_metadata_write(offset, len(data), "guest data")
        if self.crypto is not None:
            # _write_cluster set the guest cluster; offsets inside a cluster are the same on both sides
            guest = (self._crypt_gc << self.cluster_bits) + (offset & (self.cluster_size - 1))
            data = self.crypto.encrypt(offset, guest, data)
        self._pwrite(offset, data)

    def _data_host(self, gc, e):
        """With a data file, the host offset of guest cluster gc, checked against its L2 entry e."""
        host = gc << self.cluster_bits
        if (e & OFFSET_MASK or e & COPIED) and e & OFFSET_MASK != host:
            raise ImageCorrupt("%s: External data file host cluster offset %#x does not match guest cluster "
                               "offset: %#x" % (self.filename, e & OFFSET_MASK, host))
        return host

    def _pwrite(self, offset, data):
        self.file.pwrite(offset, data)
        end = offset + len(data)
        if end > self.file_size:
            self.file_size = end

    def _pread(self, offset, length):
        return self.file.pread(offset, length)

    def write_header(self):
        self.file.pwrite(0, hdr.header_cluster_bytes(self.header, self.cluster_size))

    # ------------------------------------------------------------------ L2 tables
    def _l2_offset(self, l1_index):
        if l1_index >= len(self.l1):
            return 0, 0
        e = self.l1[l1_index]
        if e & L1E_RESERVED:
            raise ImageCorrupt("%s: L1 entry %#x has reserved bits set (L1 index: %#x)"
                               % (self.filename, e, l1_index))
        off = e & OFFSET_MASK
        if off and off % self.cluster_size:
            raise ImageCorrupt("%s: L2 table offset %#x unaligned (L1 index: %#x)"
                               % (self.filename, off, l1_index))
        if off and off >= self.file_end_limit():
            raise ImageCorrupt("%s: L2 table offset %#x is past the end of the image file (L1 index: %#x)"
                               % (self.filename, off, l1_index))
        return off, e

    def _load_l2(self, off):
        t = self.l2_cache.pop(off, None)
        if t is not None:
            self.l2_cache[off] = t  # now the most recently used
            return t
        t = decode_table(self.file.pread(off, self.cluster_size))
        self.l2_cache[off] = t
        if len(self.l2_cache) * self.cluster_size > L2_CACHE_BYTES:
            old = next(iter(self.l2_cache))
            table = self.l2_cache.pop(old)
            if old in self.l2_dirty:
                self.refcounts.flush()
                self._write_l2(old, table)
        return t

    def _write_l2(self, off, table):
        self.check_metadata_write(off, self.cluster_size, "L2 table")
        self._pwrite(off, encode_table(table))
        self.l2_dirty.pop(off, None)

    # ------------------------------------------------------------------ mapping
    def _segments(self, offset, length):
        """Yield (guest_offset, length, kind, host) runs for [offset, offset+length) in this layer.

        kind is DATA (host = host offset), ZERO (host = preallocated offset or None),
        UNALLOCATED, or COMPRESSED_KIND (host = the L2 entry). Adjacent runs are merged.
        """
        cs = self.cluster_size
        cb = self.cluster_bits
        step = self.l2_step
        l2n = self.l2_entries
        end = offset + length
        run = None  # [start, length, kind, host]
        pos = offset
        while pos < end:
            gc = pos >> cb
            l1i, l2i = divmod(gc, l2n)
            l2off = self._l2_offset(l1i)[0]
            table_end = min(end, (l1i + 1) * l2n * cs)
            if not l2off:
                pieces = [(pos, table_end - pos, UNALLOCATED, None)]
                pos = table_end
            else:
                table = self._load_l2(l2off)
                base = l1i * l2n
                first = gc - base
                last = ((table_end - 1) >> cb) - base
                pieces = []
                # only the non-empty entries are visited; the gaps are unallocated runs
                for off in nonzero_entries(table[first * step:(last + 1) * step].tobytes(), 8 * step):
                    entry = first + off // (8 * step)
                    start = max(pos, (base + entry) << cb)
                    if start > pos:
                        pieces.append((pos, start - pos, UNALLOCATED, None))
                    n = min(table_end, (base + entry + 1) << cb) - start
                    pieces.extend(self._classify(table, entry * step, start, n, l2off, entry))
                    pos = start + n
                if pos < table_end:
                    pieces.append((pos, table_end - pos, UNALLOCATED, None))
                    pos = table_end
            for p in pieces:
                if run is not None and run[2] == p[2] and p[2] != COMPRESSED_KIND and (
                        (run[3] is None and p[3] is None) or (
                            run[3] is not None and p[3] is not None and run[3] + run[1] == p[3])):
                    run[1] += p[1]
                    continue
                if run is not None:
                    yield tuple(run)
                run = list(p)
        if run is not None:
            yield tuple(run)

    def _classify(self, table, idx, pos, n, l2off, l2i):
        """Runs for the part [pos, pos+n) of one guest cluster whose L2 entry is table[idx]."""
        e = table[idx]
        in_off = pos & (self.cluster_size - 1)
        if e & COMPRESSED:
            if self.has_data_file:
                raise ImageCorrupt("%s: Compressed cluster entry found in image with external data file "
                                   "(L2 offset: %#x, L2 index: %#x)" % (self.filename, l2off, l2i))
            return [(pos, n, COMPRESSED_KIND, e)]
        if e & L2E_RESERVED:
            raise ImageCorrupt("%s: L2 entry %#x has reserved bits set (L2 offset: %#x, L2 index: %#x)"
                               % (self.filename, e, l2off, l2i))
        host = e & OFFSET_MASK
        if host % self.cluster_size:
            raise ImageCorrupt("%s: Cluster allocation offset %#x unaligned (L2 offset: %#x, L2 index: %#x)"
                               % (self.filename, host, l2off, l2i))
        # with a data file, offset 0 is a real host offset when COPIED says the cluster is allocated
        mapped = bool(host) or (self.has_data_file and bool(e & COPIED) and (
            self.extended_l2 or not e & ZERO_FLAG))
        if mapped and self.has_data_file and host != pos - in_off:
            raise ImageCorrupt("%s: External data file host cluster offset %#x does not match guest cluster "
                               "offset: %#x, L2 index: %#x)" % (self.filename, host, pos - in_off, l2i))
        if not self.extended_l2:
            if e & ZERO_FLAG:
                return [(pos, n, ZERO, host + in_off if host else None)]
            if mapped:
                return [(pos, n, DATA, host + in_off)]
            return [(pos, n, UNALLOCATED, None)]
        bitmap = table[idx + 1]
        alloc = bitmap & ALL_SUBCLUSTERS
        zero = bitmap >> 32
        if alloc & zero:
            raise ImageCorrupt("%s: subcluster both allocated and zero (L2 offset: %#x, L2 index: %#x)"
                               % (self.filename, l2off, l2i))
        if alloc and not mapped:
            raise ImageCorrupt("%s: allocated subclusters without a host cluster (L2 offset: %#x, L2 index: %#x)"
                               % (self.filename, l2off, l2i))
        if alloc == ALL_SUBCLUSTERS:
            return [(pos, n, DATA, host + in_off)]
        if zero == ALL_SUBCLUSTERS or (alloc == 0 and zero == 0):
            return [(pos, n, ZERO if zero else UNALLOCATED, host + in_off if mapped else None)]
        out = []
        sc = self.subcluster_size
        end = pos + n
        p = pos
        while p < end:
            off_in = p & (self.cluster_size - 1)
            j = off_in // sc
            m = min(end, p - off_in + (j + 1) * sc) - p
            if (alloc >> j) & 1:
                out.append((p, m, DATA, host + off_in))
            else:
                out.append((p, m, ZERO if (zero >> j) & 1 else UNALLOCATED, host + off_in if mapped else None))
            p += m
        return out

    def block_status(self, offset, length):
        self.check_range(offset, length)
        out = []
        for start, n, kind, host in self._segments(offset, length):
            if kind == COMPRESSED_KIND or (self.crypto is not None and kind == DATA):
                # like QEMU, no host offset for encrypted data (it is not the guest's bytes)
                out.append(Extent(start, n, DATA, None))
            else:
                out.append(Extent(start, n, kind, host))
        return out

    # ------------------------------------------------------------------ reading
    def _compressed_cluster(self, e):
        if self._last_compressed[0] == e:
            return self._last_compressed[1]
        x = 62 - (self.cluster_bits - 8)
        host = e & ((1 << x) - 1)
        sectors = (e >> x) & ((1 << (62 - x)) - 1)
        if host >= hdr.HOST_OFFSET_LIMIT or host < self.cluster_size:
            raise ImageCorrupt("%s: compressed cluster offset %#x is invalid" % (self.filename, host))
        nbytes = (sectors + 1) * 512 - (host & 511)
        data = self.file.pread(host, min(nbytes, 2 * self.cluster_size + 512))
        from .compress import decompress_cluster
        out = decompress_cluster(data, self.cluster_size, self.header.compression_type, self.filename)
        self._last_compressed = (e, out)
        return out

    def read(self, offset, length):
        self.check_range(offset, length)
        if self.crypto is not None:
            self.crypto._need()
        segments = list(self._segments(offset, length))
        if len(segments) == 1 and segments[0][2] == DATA and self.crypto is None:  # one pread, no copy
            if self._debug_event is not None:
                self._debug_event("read_aio")
            return self.data_file.pread(segments[0][3], length)
        buf = bytearray(length)
        self._read_segments(offset, memoryview(buf), segments)
        return bytes(buf)

    def readinto(self, offset, view):
        self.check_range(offset, len(view))
        if self.crypto is not None:
            self.crypto._need()
        self._read_segments(offset, view, self._segments(offset, len(view)))

    def _read_segments(self, offset, view, segments):
        mask = self.cluster_size - 1
        for start, n, kind, host in segments:
            part = view[start - offset:start - offset + n]
            if kind == DATA:
                if self._debug_event is not None:
                    self._debug_event("read_aio")  # blkdebug's event for a data read (BLKDBG_READ_AIO)
                if self.crypto is None:
                    self.data_file.preadinto(host, part)
                else:
                    self._read_encrypted(host, start, part)
            elif kind == ZERO:
                part[:] = zero_view(n)
            elif kind == UNALLOCATED:
                self.readinto_backing(start, part)
            else:
                in_off = start & mask
                part[:] = self._compressed_cluster(host)[in_off:in_off + n]

    def _read_encrypted(self, host, guest, part):
        """Read and decrypt the whole sectors around [host, host+len(part)) and keep the part asked for."""
        lead = host % 512
        n = len(part)
        span = -(-(lead + n) // 512) * 512
        plain = self.crypto.decrypt(host - lead, guest - lead, self.data_file.pread(host - lead, span))
        part[:] = memoryview(plain)[lead:lead + n]

    def _cluster_view(self, gc):
        """This layer's guest content of guest cluster gc (full cluster, zero-padded at the end)."""
        start = gc << self.cluster_bits
        n = min(self.cluster_size, self.size - start)
        data = self.read(start, n)
        if n < self.cluster_size:
            data += bytes(self.cluster_size - n)
        return data

    # ------------------------------------------------------------------ writing
    def _prepare_write(self):
        self.check_writable()
        if self.prepared_for_write:
            return
        h = self.header
        changed = False
        if h.autoclear_features & ~hdr.AUTOCLEAR_KNOWN:
            h.autoclear_features &= hdr.AUTOCLEAR_KNOWN  # unknown auto-clear bits must go first
            changed = True
        if h.bitmaps_ext is not None and not h.autoclear_features & hdr.AUTOCLEAR_BITMAPS:
            pass  # already inconsistent: nothing claims consistency
        if changed:
            self.write_header()
            self.sync()
        if self.bitmaps:
            from .bitmaps import mark_in_use
            mark_in_use(self, self.bitmaps)
            self.sync()
            if self.bitmap_store is None:
                # QEMU's rule for an image opened read-write: the consistent bitmaps are loaded,
                # guest writes set their bits, and close stores them back (bitmap_ops.py)
                from .bitmap_ops import bitmap_store
                bitmap_store(self)
        self.prepared_for_write = True
        self.written = True

    def reload_refcounts(self):
        self._refcounts = None
        self.metadata_changed()

    @property
    def l1(self):
        """The active L1 table (array of host-order entries), read on first use."""
        if self._l1 is None:
            h = self.header
            self._l1 = decode_table(self.file.pread(h.l1_table_offset, h.l1_size * 8))
        return self._l1

    @l1.setter
    def l1(self, table):
        self._l1 = table

    @property
    def refcounts(self):
        """The refcount table and block cache (refcounts.Refcounts), read on first use."""
        if self._refcounts is None:
            from .refcounts import Refcounts
            self._refcounts = Refcounts(self)
        return self._refcounts

    @refcounts.setter
    def refcounts(self, value):
        self._refcounts = value

    def check_writable(self):
        if self.header.incompatible_features & hdr.INCOMPAT_CORRUPT:
            raise ReadOnlyImage("%s: the image is marked corrupt; it can be read but not written "
                                "(repair it with 'check -r all')" % self.filename)
        super(Qcow2Image, self).check_writable()

    def _l2_for_write(self, gc):
        """The L2 table (writable, refcount 1) for guest cluster gc and the entry index in it."""
        l1i, l2i = divmod(gc, self.l2_entries)
        l2off, l1e = self._l2_offset(l1i)
        if l2off and l1e & COPIED:
            return l2off, self._load_l2(l2off), l2i * self.l2_step
        from array import array  # not at the top: importing array imports collections (start-up time)
        new = self.refcounts.alloc(1)
        self.refcounts.flush()
        if l2off:
            table = array("Q", self._load_l2(l2off))
            # the copy is shared with snapshots: no entry in it may claim refcount 1
            for i in range(0, len(table), self.l2_step):
                table[i] &= ~COPIED
            self.pending_decrefs.append((l2off, 1))
        else:
            table = array("Q", bytes(self.cluster_size))
        self._write_l2(new, table)
        self.l2_cache[new] = table
        self.l1[l1i] = new | COPIED
        self.l1_dirty.add(l1i)
        return new, table, l2i * self.l2_step

    def _release(self, e):
        """Queue the refcount decrease for what L2 entry e referenced."""
        if self.has_data_file:
            return  # clusters in an external data file are not refcounted
        if e & COMPRESSED:
            x = 62 - (self.cluster_bits - 8)
            host = e & ((1 << x) - 1)
            sectors = (e >> x) & ((1 << (62 - x)) - 1)
            last = (host & ~511) + (sectors + 1) * 512 - 1
            for c in range(host >> self.cluster_bits, (last >> self.cluster_bits) + 1):
                self.pending_decrefs.append((c << self.cluster_bits, 1))
        elif e & OFFSET_MASK:
            self.pending_decrefs.append((e & OFFSET_MASK, 1))

    def _set_entry(self, l2off, table, idx, e, bitmap=None):
        table[idx] = e
        if bitmap is not None:
            table[idx + 1] = bitmap
        self.l2_dirty[l2off] = table

    def _commit_metadata(self):
        """Write back metadata in crash-safe order (see module docstring)."""
        self.refcounts.flush()
        for off in sorted(self.l2_dirty):
            self._write_l2(off, self.l2_dirty[off])
        for i in sorted(self.l1_dirty):
            self.check_metadata_write(self.header.l1_table_offset + 8 * i, 8, "L1 table")
            self._pwrite(self.header.l1_table_offset + 8 * i, struct.pack(">Q", self.l1[i]))
        self.l1_dirty.clear()
        if self.pending_decrefs:
            pending, self.pending_decrefs = self.pending_decrefs, []
            for off, n in pending:
                self.refcounts.add(off >> self.cluster_bits, -n)
            self.refcounts.flush()

    def write(self, offset, data):
        self.check_range(offset, len(data))
        self._prepare_write()
        view = memoryview(bytes(data) if not isinstance(data, (bytes, bytearray)) else data)
        cs = self.cluster_size
        pos = 0
        try:
            while pos < len(view):
                guest = offset + pos
                in_off = guest & (cs - 1)
                n = min(cs - in_off, len(view) - pos)
                self._write_cluster(guest >> self.cluster_bits, in_off, view[pos:pos + n])
                pos += n
        finally:
            self._commit_metadata()
            self._mark_dirty(offset, len(view))

    def _mark_dirty(self, offset, length):
        """The guest range a write, zero-write or discard asked for goes into the enabled bitmaps."""
        if self.bitmap_store is not None:
            self.bitmap_store.mark(offset, length)

    def _write_cluster(self, gc, in_off, chunk):
        cs = self.cluster_size
        if self.crypto is not None:
            self.crypto._need()
            self._crypt_gc = gc
            lead = in_off % 512
            tail = -(in_off + len(chunk)) % 512
            if lead or tail:
                # encryption works on whole sectors: merge the chunk into the current content
                start = (gc << self.cluster_bits) + in_off - lead
                span = lead + len(chunk) + tail
                avail = min(span, self.size - start)
                buf = bytearray(self.read(start, avail)) + bytearray(span - avail)
                buf[lead:lead + len(chunk)] = chunk
                in_off -= lead
                chunk = memoryview(bytes(buf))
        l2off, table, idx = self._l2_for_write(gc)
        e = table[idx]
        host = e & OFFSET_MASK
        n = len(chunk)
        in_place = bool(host) and e & COPIED and not e & COMPRESSED
        if self.has_data_file:
            if e & COMPRESSED:
                raise ImageCorrupt("%s: Compressed cluster entry found in image with external data file"
                                   % self.filename)
            host = self._data_host(gc, e)
            in_place = bool(e & COPIED)
        if not self.extended_l2:
            if in_place:
                if host % cs:
                    raise ImageCorrupt("%s: Cluster allocation offset %#x unaligned" % (self.filename, host))
                self._write_data(host + in_off, chunk)
                if e & ZERO_FLAG:  # preallocated zero cluster: the rest must read as zeros
                    if in_off:
                        self._write_data(host, bytes(in_off))
                    if in_off + n < cs:
                        self._write_data(host + in_off + n, bytes(cs - in_off - n))
                    self._set_entry(l2off, table, idx, host | COPIED)
                return
            content = self._patched_cluster(gc, in_off, chunk)
            new = self._new_data_cluster(gc)
            self._write_data(new, content)
            self._set_entry(l2off, table, idx, new | COPIED)
            self._release(e)
            return
        bitmap = table[idx + 1]
        sc = self.subcluster_size
        first, last = in_off // sc, (in_off + n - 1) // sc
        touched = ((1 << (last + 1)) - 1) ^ ((1 << first) - 1)
        alloc = bitmap & ALL_SUBCLUSTERS
        zero = bitmap >> 32
        if in_place:
            span_start, span_end = first * sc, (last + 1) * sc
            if (in_off > span_start and not (alloc >> first) & 1) or (
                    in_off + n < span_end and not (alloc >> last) & 1):
                view = bytearray(self.read((gc << self.cluster_bits) + span_start,
                                           min(span_end, self.size - (gc << self.cluster_bits)) - span_start))
                view += bytes(span_end - span_start - len(view))
                view[in_off - span_start:in_off - span_start + n] = chunk
                self._write_data(host + span_start, bytes(view))
            else:
                self._write_data(host + in_off, chunk)
            self._set_entry(l2off, table, idx, e, (alloc | touched) | ((zero & ~touched) << 32))
            return
        content = self._patched_cluster(gc, in_off, chunk)
        new = self._new_data_cluster(gc)
        self._write_data(new, content)
        if e & COMPRESSED:
            new_bitmap = ALL_SUBCLUSTERS
        else:
            new_bitmap = (alloc | touched) | ((zero & ~touched) << 32)
        self._set_entry(l2off, table, idx, new | COPIED, new_bitmap)
        self._release(e)

    def _new_data_cluster(self, gc):
        """Host offset for a newly allocated data cluster: refcounted in the qcow2 file, or, with a
        data file, the guest offset itself (QEMU: nothing to allocate)."""
        if self.has_data_file:
            return gc << self.cluster_bits
        new = self.refcounts.alloc(1)
        self.refcounts.flush()
        return new

    def _patched_cluster(self, gc, in_off, chunk):
        if in_off == 0 and len(chunk) == self.cluster_size:
            return chunk
        content = bytearray(self._cluster_view(gc))
        content[in_off:in_off + len(chunk)] = chunk
        if self.has_data_file:  # the data file ends with the image (a raw one must stay the guest's size)
            del content[max(in_off + len(chunk), self.size - (gc << self.cluster_bits)):]
        return content

    def write_zeroes(self, offset, length):
        self.check_range(offset, length)
        self._prepare_write()
        if self.data_file_raw and length:
            self.data_file.punch(offset, length)  # first, as QEMU: the data file stays the raw guest content
        cs = self.cluster_size
        pos = offset
        end = offset + length
        try:
            while pos < end:
                in_off = pos & (cs - 1)
                n = min(cs - in_off, end - pos)
                gc = pos >> self.cluster_bits
                full = in_off == 0 and (n == cs or pos + n == self.size)
                if not self._zero_cluster(gc, in_off, n, full):
                    self._write_cluster(gc, in_off, memoryview(bytes(n)))
                pos += n
        finally:
            self._commit_metadata()
            self._mark_dirty(offset, length)

    def _zero_cluster(self, gc, in_off, n, full):
        """Zero by metadata where the format allows; False means: write zero data instead."""
        v3 = self.header.version >= 3
        if not self.extended_l2:
            if not full:
                return False
            if not v3 and self.backing is not None:
                return False  # v2 has no zero flag: unallocated would expose the backing file
            l2off, table, idx = self._l2_for_write(gc)
            e = table[idx]
            new = ZERO_FLAG if v3 else 0
            if self.data_file_raw:  # the allocation stays: a raw data file keeps its 1:1 mapping
                new |= self._data_host(gc, e) | COPIED
            self._set_entry(l2off, table, idx, new)
            self._release(e)
            return True
        sc = self.subcluster_size
        if in_off % sc or ((in_off + n) % sc and (gc << self.cluster_bits) + in_off + n < self.size):
            return False
        l2off, table, idx = self._l2_for_write(gc)
        e = table[idx]
        if self.has_data_file:
            self._data_host(gc, e)
        elif e & COMPRESSED or (e & OFFSET_MASK and not e & COPIED):
            if not full:
                return False
            self._set_entry(l2off, table, idx, 0, ALL_ZERO_BITS)
            self._release(e)
            return True
        first, last = in_off // sc, (in_off + n - 1) // sc
        if full:
            first, last = 0, 31
        touched = ((1 << (last + 1)) - 1) ^ ((1 << first) - 1)
        bitmap = table[idx + 1]
        alloc = (bitmap & ALL_SUBCLUSTERS) & ~touched
        zero = (bitmap >> 32) | touched
        self._set_entry(l2off, table, idx, e, alloc | (zero << 32))
        return True

    def discard(self, offset, length):
        """Drop whole clusters inside the range (QEMU's non-full discard); partial ones are left alone."""
        self.check_range(offset, length)
        self._prepare_write()
        cs = self.cluster_size
        start = -(-offset // cs) * cs
        end = offset + length
        if end != self.size:
            end = end // cs * cs
        v3 = self.header.version >= 3
        punch = []  # with a data file: the host ranges to deallocate there once the metadata says so
        try:
            for gc in range(start >> self.cluster_bits, -(-end // cs)):
                l1i = gc // self.l2_entries
                if not self._l2_offset(l1i)[0] and self.backing is None:
                    continue  # nothing allocated, reads zeros already
                l2off, table, idx = self._l2_for_write(gc)
                e = table[idx]
                allocated = bool(e & (COMPRESSED | OFFSET_MASK)) or (
                    self.extended_l2 and table[idx + 1] & ALL_SUBCLUSTERS)
                if self.has_data_file and (e & OFFSET_MASK or e & COPIED):
                    allocated = True
                    host = self._data_host(gc, e)
                    if punch and punch[-1][1] == host:
                        punch[-1][1] = min(host + cs, self.size)
                    else:
                        punch.append([host, min(host + cs, self.size)])
                if self.extended_l2:
                    bitmap = ALL_ZERO_BITS if (self.backing is not None or allocated) else 0
                    self._set_entry(l2off, table, idx, 0, bitmap)
                else:
                    keep_zero = v3 and (self.backing is not None or allocated or e & ZERO_FLAG)
                    self._set_entry(l2off, table, idx, ZERO_FLAG if keep_zero else 0)
                self._release(e)
        finally:
            self._commit_metadata()
            self._mark_dirty(offset, length)
        for a, b in punch:  # QEMU passes the discard on to the data file
            self.data_file.punch(a, b - a)

    def flush(self):
        if self.written and not self.read_only:
            self._commit_metadata()
            self.sync()

    def close_self(self):
        if self.file is None:
            return
        try:
            if self.written and not self.read_only:
                self._commit_metadata()
                self.sync()
            if self.bitmap_store is not None and not self.read_only:
                self.bitmap_store.store()
        finally:
            try:
                self._close_data_file()
            finally:
                self.file.close()
                self.file = None

    def activate_snapshot(self, snapshot_id=None, name=None):
        """Switch this (read-only) device to an internal snapshot's content, chosen by id and/or name."""
        if not self.read_only:
            raise ReadOnlyImage("%s: snapshots can only be read from an image opened read-only" % self.filename)
        for snap in self.snapshots:
            if (snapshot_id is None or snap.id == snapshot_id) and (name is None or snap.name == name):
                break
        else:
            raise ImageNotFound("Failed to load snapshot: Can't find snapshot")
        from .snapshot_ops import validate_snapshot_l1
        bad = validate_snapshot_l1(self, snap)  # qcow2_snapshot_load_tmp()'s checks and messages
        if bad:
            raise ImageCorrupt("Failed to load snapshot: %s" % bad[0])
        if snap.l1_table_offset + snap.l1_size * 8 > self.file_end_limit():
            raise ImageCorrupt("%s: snapshot '%s' has an invalid L1 table" % (self.filename, snap.name))
        self.l1 = decode_table(self.file.pread(snap.l1_table_offset, snap.l1_size * 8))
        self.size = snap.disk_size
        self.l2_cache.clear()
        self._last_compressed = (None, None)
        return snap

    # ------------------------------------------------------------------ facts
    def actual_size(self):
        return self.file.allocated_bytes()

    def metadata_preallocated(self):
        """QEMU's heuristic: far more clusters in use (by refcount) than the file really allocates.

        Only then does qemu-img map look at holes in the file under data clusters.
        """
        real_clusters = self.actual_size() // self.cluster_size
        threshold = max(real_clusters * 10 // 9, real_clusters + 2)
        return self.refcounts.count_used(-(-self.file_size // self.cluster_size), threshold) >= threshold

    def format_specific(self):
        h = self.header
        data = {"compat": "1.1" if h.version >= 3 else "0.10"}
        if h.version >= 3:
            data["compression-type"] = hdr.COMPRESSION_NAMES.get(h.compression_type, "zlib")
            data["lazy-refcounts"] = bool(h.compatible_features & hdr.COMPAT_LAZY_REFCOUNTS)
        else:
            data["compression-type"] = "zlib"
        if self.bitmaps:
            from .bitmaps import bitmap_info
            data["bitmaps"] = [bitmap_info(b) for b in self.bitmaps]
        data["refcount-bits"] = h.refcount_bits
        if h.data_file is not None:
            data["data-file"] = h.data_file
        if self.has_data_file:
            data["data-file-raw"] = self.data_file_raw
        if self.crypto is not None:
            data["encrypt"] = self.crypto.info()
        if h.version >= 3:
            data["corrupt"] = bool(h.incompatible_features & hdr.INCOMPAT_CORRUPT)
            data["extended-l2"] = self.extended_l2
        return {"type": "qcow2", "data": data}

    def info_fields(self):
        d = {"cluster-size": self.cluster_size,
             "dirty-flag": bool(self.header.incompatible_features & hdr.INCOMPAT_DIRTY)}
        if self.snapshots and not self.has_data_file:  # QEMU lists no snapshots with a data file (-ENOTSUP)
            from .snapshots import snapshot_info
            d["snapshots"] = [snapshot_info(s) for s in self.snapshots]
        if self.crypto is not None:
            d["encrypted"] = True
        return d
