# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qcow2 internal snapshot table (QEMU docs/interop/qcow2.txt, "Snapshots")."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...errors import ImageCorrupt

SNAPSHOT_HEADER = struct.Struct(">QIHHIIQII")  # 40 bytes
MAX_EXTRA = 1024
MAX_TABLE_BYTES = 64 * 1024 * 1024


class Snapshot(object):
    __slots__ = ("l1_table_offset", "l1_size", "id", "name", "date_sec", "date_nsec",
                 "vm_clock_nsec", "vm_state_size", "disk_size", "icount", "extra")


def read_snapshots(img):
    """Parse the snapshot table; every entry is validated before use."""
    h = img.header
    out = []
    if not h.nb_snapshots:
        return out
    off = h.snapshots_offset
    cs = img.cluster_size
    limit = img.file_size
    total = 0
    for n in range(h.nb_snapshots):
        raw = img.file.pread(off, SNAPSHOT_HEADER.size)
        s = Snapshot()
        (s.l1_table_offset, s.l1_size, id_size, name_size, s.date_sec, s.date_nsec,
         s.vm_clock_nsec, vm_state_size, extra_size) = SNAPSHOT_HEADER.unpack(raw)
        if extra_size > MAX_EXTRA:
            raise ImageCorrupt("Could not open '%s': Too much extra metadata in snapshot table entry %d"
                               % (img.filename, n))
        unpadded = SNAPSHOT_HEADER.size + extra_size + id_size + name_size
        entry_len = (unpadded + 7) & ~7
        total += entry_len
        # qemu-img does not write the padding after the last entry: the file may end before it
        if total > MAX_TABLE_BYTES or off + unpadded > limit:
            raise ImageCorrupt("Could not open '%s': Snapshot table is not inside the image file"
                               % img.filename)
        body = img.file.pread(off + SNAPSHOT_HEADER.size, entry_len - SNAPSHOT_HEADER.size)
        extra = body[:extra_size]
        s.extra = extra
        s.vm_state_size = vm_state_size
        s.disk_size = h.size
        s.icount = None
        if extra_size >= 8:
            s.vm_state_size = struct.unpack_from(">Q", extra, 0)[0]
        if extra_size >= 16:
            s.disk_size = struct.unpack_from(">Q", extra, 8)[0]
        if extra_size >= 24:
            s.icount = struct.unpack_from(">Q", extra, 16)[0]
        s.id = body[extra_size:extra_size + id_size].decode("utf-8", "replace")
        s.name = body[extra_size + id_size:extra_size + id_size + name_size].decode("utf-8", "replace")
        if s.l1_table_offset % cs:
            raise ImageCorrupt("Could not open '%s': Snapshot L1 table offset invalid" % img.filename)
        if s.l1_size > 32 * 1024 * 1024 // 8:
            raise ImageCorrupt("Could not open '%s': Snapshot L1 table too large" % img.filename)
        out.append(s)
        off += entry_len
    return out


def snapshot_info(s):
    """qemu-img's SnapshotInfo JSON for one snapshot."""
    d = {
        "id": s.id,
        "name": s.name,
        "vm-state-size": s.vm_state_size,
        "date-sec": s.date_sec,
        "date-nsec": s.date_nsec,
        "vm-clock-sec": s.vm_clock_nsec // 1000000000,
        "vm-clock-nsec": s.vm_clock_nsec % 1000000000,
    }
    if s.icount is not None and s.icount != 0xFFFFFFFFFFFFFFFF:
        d["icount"] = s.icount
    return d
