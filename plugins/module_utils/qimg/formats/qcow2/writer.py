# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Build a new qcow2 image front to back (for convert).

Guest clusters must arrive in ascending order. Data goes to the file in large contiguous writes;
each L2 table is written as soon as the guest offset moves past its range, so memory holds one L2
table, the L1 table and the refcounts of compressed host clusters. At the end the L1 table, the
refcount structures (sized to cover themselves) and, last, the header are written.

With an external data file (create options data_file / data_file_raw), guest cluster N goes to
offset N * cluster_size of the data file and only the tables go to the qcow2 file; data_file_raw
maps every guest cluster (QEMU's metadata preallocation), so the data file alone is the raw image.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import array
import struct

from ...errors import InvalidArgument, QimgError
from ...fileio import BackgroundWriter
from . import header as hdr
from .create import plan_header
from .entries import ALL_SUBCLUSTERS, COMPRESSED, COPIED, ZERO_FLAG, encode_table
from .refcounts import encode_block


def _div_up(a, b):
    return -(-a // b)


class _Coalescer(object):
    """Contiguous writes gathered into large pwritev calls on one background writer."""

    def __init__(self, io):
        self.io = io
        self.off, self.parts, self.length = None, [], 0

    def queue(self, off, data):
        if self.off is not None and self.off + self.length == off and self.length < (8 << 20):
            self.parts.append(data)
            self.length += len(data)
            return
        self.drain()
        self.off, self.parts, self.length = off, [data], len(data)

    def drain(self):
        if self.off is not None:
            self.io.submit(self.off, self.parts)
            self.off, self.parts, self.length = None, [], 0


class Qcow2StreamWriter(object):
    """Writes a fresh qcow2 image into an empty file (a protocol node: protocols/file.py)."""

    def __init__(self, file, size, data_node=None, **create_options):
        self.file = file
        self.header = h = plan_header(size, **create_options)
        self.external = h.data_file is not None
        self.map_all = bool(create_options.get("data_file_raw")) and self.external
        self.cs = cs = h.cluster_size
        self.cb = h.cluster_bits
        self.size = h.size
        self.extended_l2 = h.extended_l2
        self.step = 2 if self.extended_l2 else 1
        self.l2_entries = cs // (8 * self.step)
        self.max_refcount = (1 << h.refcount_bits) - 1
        self.l1 = array.array("Q", [0]) * h.l1_size
        self.cursor = cs                      # next free host byte (cluster 0 is the header)
        self.l2 = None                        # (l1 index, array) of the table being filled
        self.last_guest_cluster = -1
        self.compressed_counts = {}           # host cluster -> refcount (only for shared/compressed ones)
        self.pending = []                     # [(host offset, bytes)] contiguous data not yet written
        self.pending_off = None
        self.pending_len = 0
        self.x_bits = 62 - (self.cb - 8)
        self.mapped_to = 0                    # map_all: guest clusters below this have their entry
        if self.external:
            # as QEMU creates it: the guest's size, its first block allocated
            data_node.truncate(self.size)
            if self.size:
                data_node.pwrite(0, bytes(512 if self.size < 4096 else 4096))
        self.io = BackgroundWriter(file)
        self.data = _Coalescer(BackgroundWriter(data_node)) if self.external else None

    # --- L2 handling ---
    def _entry_slot(self, gc):
        if gc <= self.last_guest_cluster:
            raise InvalidArgument("stream writer: guest clusters must ascend (%d after %d)"
                                  % (gc, self.last_guest_cluster))
        self.last_guest_cluster = gc
        if self.map_all:
            self._map_up_to(gc)
        return self._slot(gc)

    def _slot(self, gc):
        l1i, l2i = divmod(gc, self.l2_entries)
        if self.l2 is None or self.l2[0] != l1i:
            self._flush_l2()
            self.l2 = (l1i, array.array("Q", [0]) * (self.l2_entries * self.step))
        return self.l2[1], l2i * self.step

    def _map_up_to(self, end):
        """data_file_raw: entries guest offset | COPIED for the clusters [mapped_to, end) not written
        (their subclusters stay unallocated: they read as the zeros of the fresh data file)."""
        gc = max(self.mapped_to, 0)
        step, cs = self.step, self.cs
        while gc < end:
            table, idx = self._slot(gc)
            n = min(end - gc, self.l2_entries - idx // step)
            table[idx:idx + n * step:step] = array.array("Q", range(gc * cs | COPIED, (gc + n) * cs | COPIED, cs))
            gc += n
        self.mapped_to = max(self.mapped_to, end + 1)

    def _flush_l2(self):
        if self.l2 is None:
            return
        l1i, table = self.l2
        self.l2 = None
        self._align_cursor()
        off = self._take(self.cs)
        self._queue(off, encode_table(table))
        self.l1[l1i] = off | COPIED

    # --- host space ---
    def _align_cursor(self):
        self.cursor = _div_up(self.cursor, self.cs) * self.cs

    def _take(self, n):
        off = self.cursor
        self.cursor += n
        return off

    def _queue(self, off, data):
        """Coalesce contiguous writes into one large pwrite."""
        if self.pending_off is not None and self.pending_off + self.pending_len == off \
                and self.pending_len < (8 << 20):
            self.pending.append(data)
            self.pending_len += len(data)
            return
        self._drain()
        self.pending_off, self.pending, self.pending_len = off, [data], len(data)

    def _drain(self):
        if self.pending_off is None:
            return
        self.io.submit(self.pending_off, self.pending)
        self.pending_off, self.pending, self.pending_len = None, [], 0

    def after_writes(self, fn):
        """Run fn once everything queued so far is written (the caller may then reuse its buffers)."""
        self._drain()
        if self.external:
            self.data.drain()
            self.data.io.after_writes(fn)  # guest buffers only go to the data file
            return
        self.io.after_writes(fn)

    # --- guest content ---
    def write_clusters(self, gc, data, masks=None):
        """Store whole guest clusters starting at guest cluster gc (data is a multiple of the cluster
        size, except that the image's last cluster may be short). Extended L2: masks are the
        clusters' subcluster allocation bitmaps (default: all allocated)."""
        cs = self.cs
        n = _div_up(len(data), cs)
        if self.external:
            host = gc * cs  # guest offset == host offset; the data file ends with the image
            self.data.queue(host, data)
            for k in range(n):
                table, idx = self._entry_slot(gc + k)
                table[idx] = (host + k * cs) | COPIED
                if self.extended_l2:
                    table[idx + 1] = ALL_SUBCLUSTERS if masks is None else masks[k]
            return
        self._align_cursor()
        host = self._take(n * cs)
        self._queue(host, data)
        if len(data) % cs:  # the image's last cluster: pad to a whole cluster
            self._queue(host + len(data), bytes(n * cs - len(data)))
        for k in range(n):
            table, idx = self._entry_slot(gc + k)
            table[idx] = (host + k * cs) | COPIED
            if self.extended_l2:
                table[idx + 1] = ALL_SUBCLUSTERS if masks is None else masks[k]

    def write_compressed(self, gc, cdata):
        """Store one guest cluster as compressed bytes (packed byte-wise, as QEMU does)."""
        if self.external:  # QEMU: -ENOTSUP for compressed writes with a data file
            raise QimgError("error while writing at byte %d: Operation not supported" % (gc * self.cs))
        start = self.cursor
        first_cluster = start >> self.cb
        end = start + len(cdata)
        last_cluster = (end - 1) >> self.cb
        # a host cluster may hold several compressed clusters, within the refcount width
        if start % self.cs and self.compressed_counts.get(first_cluster, 0) >= self.max_refcount:
            self._align_cursor()
            return self.write_compressed(gc, cdata)
        if start + len(cdata) > hdr.HOST_OFFSET_LIMIT or start >= (1 << self.x_bits):
            raise InvalidArgument("compressed cluster offset out of range")
        self.cursor = end
        self._queue(start, bytes(cdata))
        for c in range(first_cluster, last_cluster + 1):
            self.compressed_counts[c] = self.compressed_counts.get(c, 0) + 1
        sectors = ((end - 1) >> 9) - (start >> 9)
        table, idx = self._entry_slot(gc)
        table[idx] = COMPRESSED | (sectors << self.x_bits) | start

    def zero_cluster(self, gc):
        """Make a guest cluster read as zeros (hiding the backing file)."""
        if self.header.version < 3:  # v2 has no zero flag: store a cluster of zeros
            self.write_clusters(gc, bytes(min(self.cs, self.size - gc * self.cs)))
            return
        table, idx = self._entry_slot(gc)
        if self.extended_l2:
            table[idx + 1] = ALL_SUBCLUSTERS << 32
        else:
            table[idx] = ZERO_FLAG

    # --- the end ---
    def abort(self):
        """Stop the background writes after a failure (the caller discards the file)."""
        for io in (self.io, self.data.io if self.external else None):
            try:
                if io is not None:
                    io.wait()
            except Exception:  # the original failure is what the caller reports
                pass

    def finish(self):
        h = self.header
        cs = self.cs
        if self.map_all:
            self._map_up_to(_div_up(self.size, cs))
        if self.external:
            self.data.drain()
            self.data.io.wait()  # guest data reaches the data file before the tables mapping it
        self._flush_l2()
        self._align_cursor()
        l1_off = 0   # an empty image has no L1 table (QEMU: offset 0; a cluster for it would leak)
        if h.l1_size:
            l1_off = self._take(_div_up(h.l1_size * 8, cs) * cs)
            self._queue(l1_off, encode_table(self.l1))
        self._drain()
        self.io.wait()  # all data and tables are in the file before the refcounts and header
        # refcount structures after everything, covering themselves
        data_clusters = self.cursor >> self.cb
        entries_per_block = cs * 8 // h.refcount_bits
        blocks = table = 0
        while True:
            total = data_clusters + blocks + table
            nb = _div_up(total, entries_per_block)
            nt = max(1, _div_up(nb * 8, cs))
            if (nb, nt) == (blocks, table):
                break
            blocks, table = nb, nt
        if table * cs > hdr.MAX_REFTABLE_BYTES:
            raise InvalidArgument("The image is too large for its cluster size and refcount width")
        rt_off = self.cursor
        rb_off = rt_off + table * cs
        used = data_clusters + blocks + table
        reftable = bytearray(table * cs)
        for i in range(blocks):
            struct.pack_into(">Q", reftable, 8 * i, rb_off + i * cs)
        by_block = {}
        for c, v in self.compressed_counts.items():
            by_block.setdefault(c // entries_per_block, []).append((c % entries_per_block, v))
        for i in range(blocks):
            first = i * entries_per_block
            n = max(0, min(entries_per_block, used - first))
            values = [1] * n + [0] * (entries_per_block - n)
            for j, v in by_block.get(i, ()):
                values[j] = v
            self.file.pwrite(rb_off + i * cs, encode_block(values, h.refcount_bits))
        self.file.pwrite(rt_off, bytes(reftable))
        h.l1_table_offset = l1_off
        h.refcount_table_offset = rt_off
        h.refcount_table_clusters = table
        raw = hdr.header_cluster_bytes(h, cs)
        self.file.pwrite(0, raw + bytes(cs - len(raw)))  # the whole cluster, as QEMU writes it
