# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`snapshot`: list, create, apply and delete internal snapshots (qemu-img snapshot -l/-c/-a/-d).

Functions take a file name and return plain data: snapshots as qemu-img's SnapshotInfo JSON
objects (`id`, `name`, `vm-state-size`, `date-sec`, `date-nsec`, `vm-clock-sec`, `vm-clock-nsec`,
`icount`). Failures are QimgError with qemu-img's messages ("Could not create snapshot 'x': ...").
The writes are crash-safe: see formats/qcow2/snapshot_ops.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import time

from ..errors import ImageNotFound, QimgError, UnsupportedFeature
from ..formats.qcow2 import snapshot_ops
from ..formats.qcow2.snapshots import find_snapshot, find_snapshot_by_id_or_name, snapshot_info
from ..image import open_image, refuse_pseudo_filename


class SnapshotNotFound(ImageNotFound):
    """No snapshot with that id or name."""


class SnapshotFailed(QimgError):
    """The operation failed; `lines` are every line qemu-img prints (first_line first)."""

    def __init__(self, message, first_line=None, notes=()):
        super(SnapshotFailed, self).__init__(message)
        self.lines = ([first_line] if first_line else []) + [self.message]
        self.notes = list(notes)  # printed first, as they are: QEMU's driver's own stderr lines


def _open(filename, fmt, read_only, force_share=False, specs=False):
    """specs: the name may be any image specification (json:, protocols, an --image-opts spec.ImageName),
    as qemu-img's command line takes it; otherwise only a local file (the modules)."""
    if not specs:
        refuse_pseudo_filename(filename, "Image file name")
    return open_image(filename, fmt, read_only=read_only, force_share=force_share and read_only)


def _is_qcow2(dev):
    return dev.format_name == "qcow2"


def snapshots_of(dev):
    """SnapshotInfo dicts of an open device ([] for formats without internal snapshots)."""
    if not _is_qcow2(dev):
        return []
    return [snapshot_info(s) for s in dev.snapshots]


def list_snapshots(filename, fmt=None, force_share=False, specs=False):
    """The snapshot table as qemu-img's SnapshotInfo list (empty when there is none)."""
    dev = _open(filename, fmt, True, force_share, specs)
    try:
        return snapshots_of(dev)
    finally:
        dev.close()


def open_for_nothing(filename, fmt=None, force_share=False, specs=False):
    """qemu-img snapshot without an action: the image is opened read-write (locks, checks) and closed."""
    _open(filename, fmt, False, force_share, specs).close()


def _strerror(err):
    return os.strerror(err)


def create_snapshot(filename, name, fmt=None, now=None, specs=False):
    """Add a snapshot called name (the next free numeric id, QEMU's extra data). Returns its SnapshotInfo."""
    dev = _open(filename, fmt, False, specs=specs)
    try:
        if not _is_qcow2(dev):
            raise SnapshotFailed("Could not create snapshot '%s': -%d (%s)"
                                 % (name, errno.ENOTSUP, _strerror(errno.ENOTSUP)))
        t = time.time() if now is None else now
        sec = int(t)
        usec = int(round((t - sec) * 1000000)) % 1000000
        try:
            snap = snapshot_ops.create(dev, name, sec & 0xFFFFFFFF, usec * 1000)
        except snapshot_ops.SnapshotOpError as e:
            raise SnapshotFailed("Could not create snapshot '%s': -%d (%s)" % (name, e.errno, _strerror(e.errno)))
        return snapshot_info(snap)
    finally:
        dev.close()


def _find(dev, snapshot_id, name):
    if snapshot_id is None and name is None:
        return -1
    return find_snapshot(dev.snapshots, snapshot_id=snapshot_id, name=name)


def apply_snapshot(filename, snapshot, fmt=None, specs=False):
    """Revert the active image to the snapshot whose id (first) or name is `snapshot`. Returns its SnapshotInfo."""
    dev = _open(filename, fmt, False, specs=specs)
    try:
        if not _is_qcow2(dev):
            raise SnapshotFailed("Could not apply snapshot '%s': Block driver does not support snapshots" % snapshot)
        index = find_snapshot_by_id_or_name(dev.snapshots, snapshot)
        if index < 0:
            raise SnapshotNotFound("Could not apply snapshot '%s': Failed to load snapshot: No such file or directory"
                                   % snapshot)
        try:
            snap = snapshot_ops.apply(dev, index)
        except snapshot_ops.SnapshotOpError as e:
            raise SnapshotFailed("Could not apply snapshot '%s': %s" % (snapshot, e.message), e.first_line)
        return snapshot_info(snap)
    finally:
        dev.close()


def delete_snapshot(filename, name=None, snapshot_id=None, fmt=None, specs=False):
    """Delete the first snapshot with that name and/or id (qemu-img -d: by name). Returns its SnapshotInfo."""
    what = name if name is not None else snapshot_id
    dev = _open(filename, fmt, False, specs=specs)
    try:
        index = _find(dev, snapshot_id, name) if _is_qcow2(dev) else -1
        if index < 0:
            raise SnapshotNotFound("Could not delete snapshot '%s': snapshot not found" % what)
        try:
            snap = snapshot_ops.delete(dev, index)
        except snapshot_ops.SnapshotOpError as e:
            raise SnapshotFailed("Could not delete snapshot '%s': %s" % (what, e.message), e.first_line, e.notes)
        return snapshot_info(snap)
    finally:
        dev.close()


def active_equals_snapshot(filename, snapshot, fmt=None, force_share=False, chunk=4 * 1024 * 1024):
    """Whether the active image already reads as the snapshot (id first, then name): decided from the
    tables when they are the same (L1 entries without flags, virtual size), else from guest content.
    Raises SnapshotNotFound when there is no such snapshot."""
    refuse_pseudo_filename(filename, "Image file name")
    dev = open_image(filename, fmt, read_only=True, force_share=force_share)
    try:
        if not _is_qcow2(dev):
            raise UnsupportedFeature("%s: the image format has no internal snapshots" % filename)
        index = find_snapshot_by_id_or_name(dev.snapshots, snapshot)
        if index < 0:
            raise SnapshotNotFound("Could not apply snapshot '%s': Failed to load snapshot: No such file or directory"
                                   % snapshot)
        snap = dev.snapshots[index]
        if snap.disk_size != dev.size:
            return False
        if snapshot_ops.validate_snapshot_l1(dev, snap):
            return False
        active = [e & snapshot_ops.L1_OFFSET_MASK for e in dev.l1]
        raw = dev._pread(snap.l1_table_offset, snap.l1_size * 8) if snap.l1_size else b""
        from ..formats.qcow2.entries import decode_table
        theirs = [e & snapshot_ops.L1_OFFSET_MASK for e in decode_table(raw)]
        n = max(len(active), len(theirs))
        active += [0] * (n - len(active))
        theirs += [0] * (n - len(theirs))
        if active == theirs:
            return True
        other = open_image(filename, fmt, read_only=True, force_share=True)
        try:
            other.activate_snapshot(snapshot_id=snap.id, name=snap.name)
            size = dev.size
            off = 0
            while off < size:
                n = min(chunk, size - off)
                if dev.read(off, n) != other.read(off, n):
                    return False
                off += n
            return True
        finally:
            other.close()
    finally:
        dev.close()
