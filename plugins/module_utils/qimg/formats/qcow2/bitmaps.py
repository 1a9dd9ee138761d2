# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qcow2 persistent dirty bitmaps (QEMU docs/interop/qcow2.txt, "Bitmaps").

Reading the directory (what `info` shows and every open checks). Before the first guest write
the in_use flag of every bitmap is set in the file, as QEMU does when it opens an image
read-write; the guest writes then go into the bitmaps in memory and, on close, the bitmaps are
stored back with in_use cleared (bitmap_ops.py), so a kill in between leaves no bitmap that
claims to be consistent while it is stale.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...errors import ImageCorrupt

DIR_ENTRY = struct.Struct(">QIIBBHI")  # 24 bytes
FLAG_IN_USE = 1 << 0
FLAG_AUTO = 1 << 1
FLAG_EXTRA_DATA_COMPATIBLE = 1 << 2
MAX_BITMAPS = 65535
MAX_DIR_BYTES = 64 * 1024 * 1024
MAX_PHYS_BYTES = 512 * 1024 * 1024  # QEMU's BME_MAX_PHYS_SIZE: a table covers at most this much data


class Bitmap(object):
    __slots__ = ("entry_offset", "table_offset", "table_size", "flags", "type", "granularity_bits", "name",
                 "inconsistent")


BDRV_MAX_LENGTH = (1 << 63) - (1 << 30)  # QEMU's largest request end (INT64_MAX aligned down to 1 GiB)


def read_bitmaps(img):
    """Parse the bitmap directory. Returns [] when there is no (consistent) extension."""
    h = img.header
    if h.bitmaps_ext is None:
        return []
    nb, dsize, doff = h.bitmaps_ext

    def corrupt(msg):
        return ImageCorrupt("Could not open '%s': %s" % (img.filename, msg))

    if nb == 0 or nb > MAX_BITMAPS:
        raise corrupt("bitmaps_ext: Image has %d bitmaps, exceeding the QEMU supported maximum of %d"
                      % (nb, MAX_BITMAPS))
    if dsize > MAX_DIR_BYTES or dsize < nb * DIR_ENTRY.size:
        raise corrupt("bitmaps_ext: Bitmap directory size is invalid")
    if doff % img.cluster_size or doff + dsize > img.file_size:
        raise corrupt("bitmaps_ext: Invalid bitmap directory offset")
    raw = img.file.pread(doff, dsize)
    out = []
    pos = 0
    for _index in range(nb):
        if pos + DIR_ENTRY.size > dsize:
            raise corrupt("Bitmap directory is truncated")
        b = Bitmap()
        (b.table_offset, b.table_size, b.flags, b.type, b.granularity_bits, name_size,
         extra_size) = DIR_ENTRY.unpack_from(raw, pos)
        end = pos + DIR_ENTRY.size + extra_size + name_size
        if end > dsize or name_size == 0:
            raise corrupt("Bitmap directory entry is invalid")
        b.entry_offset = doff + pos
        b.name = raw[pos + DIR_ENTRY.size + extra_size:end].decode("utf-8", "replace")
        # the bitmap table must be exactly as large as the image needs (bounds what check reads)
        if not 9 <= b.granularity_bits <= 31:
            raise corrupt("Bitmap '%s' has an unsupported granularity" % b.name)
        b.inconsistent = bool(b.flags & FLAG_IN_USE)
        bits = -(-img.size // (1 << b.granularity_bits))
        needed = -(-bits // (8 * img.cluster_size))
        # QEMU checks the size of consistent bitmaps only: an in-use one may predate a resize
        bad_size = (b.table_size != needed if not b.inconsistent else
                    not 0 < b.table_size * img.cluster_size <= MAX_PHYS_BYTES)
        if bad_size or b.table_offset % img.cluster_size:
            raise corrupt("Bitmap '%s' has an invalid bitmap table" % b.name)
        if b.table_offset + b.table_size * 8 > BDRV_MAX_LENGTH:
            # QEMU reads the table on open, and its block layer refuses a request past this
            raise corrupt("Could not read bitmap_table table from image for bitmap '%s': Input/output error"
                          % b.name)
        out.append(b)
        pos = (end + 7) & ~7
    return out


def bitmap_info(b):
    """qemu-img's Qcow2BitmapInfo JSON for one bitmap."""
    flags = []
    if b.flags & FLAG_IN_USE:
        flags.append("in-use")
    if b.flags & FLAG_AUTO:
        flags.append("auto")
    return {"name": b.name, "granularity": 1 << b.granularity_bits, "flags": flags}


def mark_in_use(img, bitmaps):
    """Set in_use on every bitmap (persisted) so none claims to be consistent after our writes."""
    for b in bitmaps:
        if b.flags & FLAG_IN_USE:
            continue
        b.flags |= FLAG_IN_USE
        img.check_metadata_write(b.entry_offset + 12, 4, "bitmap directory")
        img.file.pwrite(b.entry_offset + 12, struct.pack(">I", b.flags))
