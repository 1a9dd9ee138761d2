# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qcow2 internal snapshot table (QEMU docs/interop/qcow2.txt, "Snapshots")."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...errors import ImageCorrupt

SNAPSHOT_HEADER = struct.Struct(">QIHHIIQII")  # 40 bytes
EXTRA_DATA = struct.Struct(">QQQ")  # vm_state_size_large, disk_size, icount
MAX_EXTRA = 1024
MAX_TABLE_BYTES = 64 * 1024 * 1024
MAX_NAME_BYTES = 255  # QEMUSnapshotInfo.name is char[256]
NO_ICOUNT = 0xFFFFFFFFFFFFFFFF


class Snapshot(object):
    __slots__ = ("l1_table_offset", "l1_size", "id", "name", "date_sec", "date_nsec",
                 "vm_clock_nsec", "vm_state_size", "disk_size", "icount", "extra", "raw_id", "raw_name")

    def copy(self):
        other = Snapshot()
        for slot in self.__slots__:
            setattr(other, slot, getattr(self, slot, None))
        return other


def _pread_zeros(img, off, n):
    """n bytes at off, zeros past the end of the file (as QEMU's file driver reads)."""
    if n <= 0:
        return b""
    data = img.file.pread(off, n) if off < img.file_size else b""
    return data + bytes(n - len(data)) if len(data) < n else data


class SnapshotTableError(ImageCorrupt):
    """The snapshot table cannot be read as it stands; `repairable` says how check -r all fixes it."""

    def __init__(self, message, hint=None, repairable=None):
        super(SnapshotTableError, self).__init__(message, hint=hint)
        self.repairable = repairable


def read_snapshots(img, repair=None, check=False):
    """Parse the snapshot table (QEMU's qcow2_read_snapshots()). Each entry's L1 table is checked
    where it is used, as QEMU does, not here.

    repair: None, or a dict that check -r all passes: entries with too much extra data are cut to
    MAX_EXTRA (repair["extra_dropped"] counts them) and the snapshots from the first one that makes
    the table too big on are dropped (repair["overhanging"]); the lines QEMU prints about it go to
    repair["messages"]. check: an image opened by check, which reads the table itself: a table
    that cannot be read leaves the list empty here.
    """
    if check and repair is None:
        try:
            return read_snapshots(img)
        except SnapshotTableError:
            img.snapshots_size = 0
            return []
    h = img.header
    out = []
    img.snapshots_size = 0
    if not h.nb_snapshots:
        return out
    off = h.snapshots_offset
    total = 0
    for n in range(h.nb_snapshots):
        pre = off
        off = (off + 7) & ~7
        total = (total + 7) & ~7
        raw = _pread_zeros(img, off, SNAPSHOT_HEADER.size)
        s = Snapshot()
        (s.l1_table_offset, s.l1_size, id_size, name_size, s.date_sec, s.date_nsec,
         s.vm_clock_nsec, vm_state_size, extra_size) = SNAPSHOT_HEADER.unpack(raw)
        stored_extra = extra_size
        if extra_size > MAX_EXTRA:
            if repair is None:
                raise SnapshotTableError("Could not open '%s': Too much extra metadata in snapshot table entry %d"
                                         % (img.filename, n),
                                         ["You can force-remove this extra metadata with qemu-img check -r all"],
                                         "extra")
            repair["messages"].append("Discarding too much extra metadata in snapshot table entry %d (%d > %d)"
                                      % (n, extra_size, MAX_EXTRA))
            repair["extra_dropped"] += 1
            extra_size = MAX_EXTRA
        extra = _pread_zeros(img, off + SNAPSHOT_HEADER.size, extra_size)
        pos = off + SNAPSHOT_HEADER.size + stored_extra
        names = _pread_zeros(img, pos, id_size + name_size)
        end = pos + id_size + name_size
        total += SNAPSHOT_HEADER.size + extra_size + id_size + name_size
        if total > MAX_TABLE_BYTES or end - h.snapshots_offset > 0x7FFFFFFF:
            left = h.nb_snapshots - n
            if repair is None:
                raise SnapshotTableError("Could not open '%s': Snapshot table is too big" % img.filename,
                                         ["You can force-remove all %d overhanging snapshots with qemu-img "
                                          "check -r all" % left], "overhanging")
            repair["messages"].append("Discarding %d overhanging snapshots (snapshot table is too big)" % left)
            repair["overhanging"] += left
            off = pre
            break
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
        s.raw_id = bytes(names[:id_size])
        s.raw_name = bytes(names[id_size:])
        # QEMU keeps them as C strings: what follows a NUL is not part of the id or name
        s.id = s.raw_id.split(b"\0", 1)[0].decode("utf-8", "replace")
        s.name = s.raw_name.split(b"\0", 1)[0].decode("utf-8", "replace")
        out.append(s)
        off = end
    img.snapshots_size = off - h.snapshots_offset
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


def _entry_bytes(s):
    """One snapshot table entry as QEMU's qcow2_write_snapshots() writes it (without padding)."""
    raw_id = s.raw_id if getattr(s, "raw_id", None) is not None else s.id.encode("utf-8")
    raw_name = s.raw_name if getattr(s, "raw_name", None) is not None else s.name.encode("utf-8")
    raw_id = raw_id.split(b"\0", 1)[0]  # strlen(), as QEMU writes them
    raw_name = raw_name.split(b"\0", 1)[0]
    unknown = bytes(s.extra[EXTRA_DATA.size:]) if s.extra else b""
    extra = EXTRA_DATA.pack(s.vm_state_size, s.disk_size,
                            NO_ICOUNT if s.icount is None else s.icount) + unknown
    # a VM state too big for the 32-bit field: older readers see a disk-only snapshot
    small_vm_state = s.vm_state_size if s.vm_state_size <= 0xFFFFFFFF else 0
    head = SNAPSHOT_HEADER.pack(s.l1_table_offset, s.l1_size, len(raw_id), len(raw_name), s.date_sec,
                                s.date_nsec, s.vm_clock_nsec, small_vm_state, len(extra))
    return head + extra + raw_id + raw_name


def encode_snapshot_table(snapshots):
    """The whole table: entries padded to multiples of 8 (qcow2.txt "Snapshots"). Returns bytes."""
    out = bytearray()
    for s in snapshots:
        out += bytes((-len(out)) % 8)
        out += _entry_bytes(s)
    if len(out) > MAX_TABLE_BYTES:
        raise ImageCorrupt("Snapshot table is too big")
    return bytes(out)


def new_snapshot(snap_id, name, l1_table_offset, l1_size, disk_size, date_sec, date_nsec,
                 vm_clock_nsec=0, vm_state_size=0, icount=0):
    s = Snapshot()
    s.l1_table_offset, s.l1_size = l1_table_offset, l1_size
    s.raw_id = snap_id.encode("utf-8")
    s.raw_name = name.encode("utf-8", "surrogateescape")[:MAX_NAME_BYTES]
    s.id = s.raw_id.decode("utf-8", "replace")
    s.name = s.raw_name.decode("utf-8", "replace")
    s.date_sec, s.date_nsec, s.vm_clock_nsec = date_sec, date_nsec, vm_clock_nsec
    s.vm_state_size, s.disk_size, s.icount = vm_state_size, disk_size, icount
    s.extra = b""
    return s


def _strtoul(text):
    """C strtoul(text, NULL, 10) for the ids QEMU compares (leading digits, else 0)."""
    text = text.lstrip(" \t\n\r\f\v")
    neg = text[:1] == "-"
    if text[:1] in "+-" and text:
        text = text[1:]
    digits = ""
    for ch in text:
        if ch not in "0123456789":
            break
        digits += ch
    value = int(digits) if digits else 0
    if value > 0xFFFFFFFFFFFFFFFF:
        value = 0xFFFFFFFFFFFFFFFF
    elif neg:
        value = (-value) & 0xFFFFFFFFFFFFFFFF
    return value


def next_snapshot_id(snapshots):
    """QEMU's find_new_snapshot_id(): one more than the largest numeric id."""
    top = 0
    for s in snapshots:
        top = max(top, _strtoul(s.id))
    return "%d" % ((top + 1) & 0xFFFFFFFFFFFFFFFF)


def find_snapshot(snapshots, snapshot_id=None, name=None):
    """Index of the first snapshot matching id and/or name (QEMU's find_snapshot_by_id_and_name), or -1."""
    for i, s in enumerate(snapshots):
        if (snapshot_id is None or s.id == snapshot_id) and (name is None or s.name == name):
            if snapshot_id is None and name is None:
                return -1
            return i
    return -1


def find_snapshot_by_id_or_name(snapshots, text):
    """QEMU's find_snapshot_by_id_or_name(): an id match first, then a name match."""
    i = find_snapshot(snapshots, snapshot_id=text)
    return i if i >= 0 else find_snapshot(snapshots, name=text)
