# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Amending a qcow2 image's options in place (QEMU's qcow2_amend_options), crash-safe.

- compat 0.10 -> 1.1 (upgrade): snapshot table entries without the v3 extra data are rewritten
  into fresh clusters; one header write switches to version 3 (with the feature name table).
- compat 1.1 -> 0.10 (downgrade): zero clusters are expanded into what v2 can express (nothing
  allocated when there is no backing file, else zeroed data clusters), each L2 table rewritten
  with one write after its new clusters are zeroed; the header write to version 2 comes last.
- refcount_bits: a complete refcount table and blocks of the new width are written past the
  end of the image beside the old ones, one header write switches to them, the old structure
  is freed afterwards.
- lazy_refcounts: one header write (a dirty image was repaired when it was opened).
Every step keeps the guest content of both the old and the new header's view, so a kill at any
write leaves the old or the new image, with leaked clusters at worst.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import heapq
import os
import struct

from ...errors import InvalidArgument, QimgError, UnsupportedFeature
from . import header as hdr
from .entries import COMPRESSED, COPIED, OFFSET_MASK, ZERO_FLAG, decode_table, encode_table
from .refcounts import encode_block

# qemu-img amend -o help for qcow2 (name, qemu type, help), in its order
AMEND_OPTIONS = [
    ("backing_file", "str", "File name of a base image"),
    ("backing_fmt", "str", "Image format of the base image"),
    ("compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"),
    ("data_file", "str", "File name of an external data file"),
    ("data_file_raw", "bool", "The external data file must stay valid as a raw image"),
    ("encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds"),
    ("encrypt.keyslot", "num", "Select a single keyslot to modify explicitly"),
    ("encrypt.new-secret", "str", "New secret to set in the matching keyslots. Empty string to erase"),
    ("encrypt.old-secret", "str", "Select all keyslots that match this password"),
    ("encrypt.state", "str", "Select new state of affected keyslots (active/inactive)"),
    ("lazy_refcounts", "bool", "Postpone refcount updates"),
    ("refcount_bits", "num", "Width of a reference count entry in bits"),
    ("size", "size", "Virtual disk size"),
]
_WRITE_BATCH = 8 * 1024 * 1024


def _div_up(a, b):
    return -(-a // b)


def current_options(img):
    """The amendable options as the image has them (qimg_create's names and types)."""
    h = img.header
    return {"compat": "1.1" if h.version >= 3 else "0.10",
            "lazy_refcounts": bool(h.compatible_features & hdr.COMPAT_LAZY_REFCOUNTS),
            "refcount_bits": h.refcount_bits,
            "size": img.size,
            "data_file": h.data_file if getattr(img, "has_data_file", False) else None,
            "data_file_raw": bool(getattr(img, "data_file_raw", False))}


class _Progress(object):
    """QEMU's qcow2_amend_helper_cb(): per-operation (offset, work size) reports folded into one
    percentage over all the operations of the amend, passed to report(percent)."""

    def __init__(self, report, total_operations):
        self.report = report
        self.total = total_operations
        self.current = self.last = None
        self.offset_completed = 0
        self.operations_completed = 0
        self.last_work = 0

    def __call__(self, operation, offset, work):
        if self.report is None or not self.total:
            return
        if operation != self.last:
            if self.last is not None:
                self.offset_completed += self.last_work
                self.operations_completed += 1
            self.last = operation
        self.last_work = work
        current = self.offset_completed + work
        projected = current * (self.total - self.operations_completed - 1) // (self.operations_completed + 1)
        total = current + projected
        if total:
            self.report(100.0 * (self.offset_completed + offset) / total)


# Option groups other work provides: prefix -> AmendExtension (the LUKS keyslot amend of an
# encrypted image registers "encrypt."). See register_extension().
EXTENSIONS = {}


class AmendExtension(object):
    """A group of amend options handled outside this module (QEMU's encryption_update).

    parse(img, name, value, plan) validates one option (raise QimgError to refuse; plan.extra is
    a dict to keep what apply needs); apply(img, plan, force, status) runs after the upgrade, as
    QEMU does, with status(offset, work) for its progress. It counts as one amend operation when
    wanted(plan) is true."""

    def parse(self, img, name, value, plan):
        raise NotImplementedError

    def wanted(self, plan):
        return bool(plan.extra)

    def apply(self, img, plan, force, status):
        raise NotImplementedError


def register_extension(prefix, extension):
    """Hand the options starting with prefix (e.g. "encrypt.") to extension (an AmendExtension)."""
    EXTENSIONS[prefix] = extension


class AmendPlan(object):
    """What the options ask for, parsed in QEMU's option order before anything is written."""

    def __init__(self, img):
        h = img.header
        self.old_version = self.new_version = h.version
        self.lazy = bool(h.compatible_features & hdr.COMPAT_LAZY_REFCOUNTS)
        self.bits = h.refcount_bits
        self.new_size = 0
        self.backing = None  # (backing_file, backing_fmt) when either was given
        self.data_file = None  # the new external data file name ("" clears it), None: unchanged
        self.data_file_raw = bool(getattr(img, "data_file_raw", False))
        self.extra = {}
        self.extensions = []


def _parse_compat(img, plan, value):
    if value in ("0.10", "v2"):
        plan.new_version = 2
    elif value in ("1.1", "v3"):
        plan.new_version = 3
    else:
        raise InvalidArgument("Unknown compatibility level %s" % value)


def _parse_size(img, plan, value):
    plan.new_size = value


def _parse_backing_file(img, plan, value):
    plan.backing = (value, (plan.backing or (None, None))[1])


def _parse_backing_fmt(img, plan, value):
    plan.backing = ((plan.backing or (None, None))[0], value)


def _parse_lazy_refcounts(img, plan, value):
    plan.lazy = value


def _parse_refcount_bits(img, plan, value):
    if value <= 0 or value > 64 or value & (value - 1):
        raise InvalidArgument("Refcount width must be a power of two and may not exceed 64 bits")
    plan.bits = value


def _parse_data_file(img, plan, value):
    if value is not None and not getattr(img, "has_data_file", False):
        raise InvalidArgument("data-file can only be set for images that use an external data file")
    plan.data_file = value


def _parse_data_file_raw(img, plan, value):
    if value and not getattr(img, "data_file_raw", False):
        raise InvalidArgument("data-file-raw cannot be set on existing images")
    plan.data_file_raw = value


def _parse_encrypt(img, plan, name, value):
    for prefix, ext in EXTENSIONS.items():
        if name.startswith(prefix):
            ext.parse(img, name, value, plan)
            if ext not in plan.extensions:
                plan.extensions.append(ext)
            return
    if getattr(img, "crypto", None) is None:
        raise InvalidArgument("Can't amend encryption options - encryption not present")
    if img.header.crypt_method != 2:  # QCOW_CRYPT_LUKS
        raise UnsupportedFeature("Only LUKS encryption options can be amended")
    raise UnsupportedFeature("Amending encryption options is not supported yet")


_PARSERS = {
    "backing_file": _parse_backing_file,
    "backing_fmt": _parse_backing_fmt,
    "compat": _parse_compat,
    "data_file": _parse_data_file,
    "data_file_raw": _parse_data_file_raw,
    "lazy_refcounts": _parse_lazy_refcounts,
    "refcount_bits": _parse_refcount_bits,
    "size": _parse_size,
}


def plan_amend(img, opts):
    """Parse typed amend options (a dict) against the open image, in QEMU's order (that of
    AMEND_OPTIONS), raising QEMU's refusals of single options; returns an AmendPlan."""
    plan = AmendPlan(img)
    for name in [o[0] for o in AMEND_OPTIONS]:
        if name not in opts:
            continue
        if name.startswith("encrypt."):
            _parse_encrypt(img, plan, name, opts[name])
        else:
            _PARSERS[name](img, plan, opts[name])
    return plan


def amend(img, opts, force=False, progress=None):
    """Apply typed amend options (a dict: compat, lazy_refcounts, refcount_bits, size,
    backing_file, backing_fmt, data_file, data_file_raw, encrypt.*) in QEMU's order.
    progress(percent), when given, gets QEMU's status reports."""
    h = img.header
    plan = plan_amend(img, opts)
    img.check_writable()
    extensions = [e for e in plan.extensions if e.wanted(plan)]
    status = _Progress(progress, (plan.new_version != plan.old_version) + (plan.bits != h.refcount_bits)
                       + bool(extensions))
    if plan.new_version > plan.old_version:
        upgrade(img, lambda off, work: status("upgrade", off, work))
    for ext in extensions:
        ext.apply(img, plan, force, lambda off, work: status("encryption", off, work))
    if plan.bits != h.refcount_bits:
        if plan.new_version < 3 and plan.bits != 16:
            raise InvalidArgument("Refcount widths other than 16 bits require compatibility level 1.1 or above "
                                  "(use compat=1.1 or greater)")
        change_refcount_bits(img, plan.bits, lambda off, work: status("refcount", off, work))
    _amend_data_file(img, plan)
    if plan.backing is not None:
        if plan.backing != (h.backing_file, h.backing_format):
            raise InvalidArgument("Cannot amend the backing file", hint=["You can use 'qemu-img rebase' instead."])
    if plan.lazy != bool(h.compatible_features & hdr.COMPAT_LAZY_REFCOUNTS):
        if plan.lazy and plan.new_version < 3:
            raise InvalidArgument("Lazy refcounts only supported with compatibility level 1.1 and above "
                                  "(use compat=1.1 or greater)")
        img._prepare_write()
        if plan.lazy:
            h.compatible_features |= hdr.COMPAT_LAZY_REFCOUNTS
        else:
            h.compatible_features &= ~hdr.COMPAT_LAZY_REFCOUNTS
        _write_header(img)
    if plan.new_size:
        from .resize import check_resize, resize
        check_resize(img, plan.new_size)
        resize(img, plan.new_size)
    if plan.new_version < plan.old_version:
        downgrade(img, lambda off, work: status("downgrade", off, work))


def _amend_data_file(img, plan):
    """data_file_raw cleared (it cannot be set) and the data file's name changed or removed: one
    header write, as QEMU's qcow2_update_header() after the refcount change. The data file
    itself is neither opened nor touched (QEMU only records the name)."""
    h = img.header
    raw_bit = bool(h.autoclear_features & hdr.AUTOCLEAR_DATA_FILE_RAW)
    name = h.data_file if plan.data_file is None else (plan.data_file or None)
    if raw_bit == plan.data_file_raw and name == h.data_file:
        return
    img._prepare_write()
    old = (h.autoclear_features, h.data_file)
    if plan.data_file_raw:
        h.autoclear_features |= hdr.AUTOCLEAR_DATA_FILE_RAW
    else:
        h.autoclear_features &= ~hdr.AUTOCLEAR_DATA_FILE_RAW
    h.data_file = name
    try:
        hdr.header_cluster_bytes(h, img.cluster_size)
    except QimgError:
        h.autoclear_features, h.data_file = old
        raise QimgError("Failed to update the image header: No space left on device")
    _write_header(img)
    img.data_file_raw = img.has_data_file and plan.data_file_raw


def _write_header(img):
    img._commit_metadata()
    img.sync()
    img.write_header()
    img.sync()
    img.metadata_changed()


# ------------------------------------------------------------------------------------ upgrade
def upgrade(img, status=None):
    status = status or (lambda off, work: None)
    status(0, 2)
    img._prepare_write()
    h = img.header
    old_table = None
    if any(len(s.extra) < 16 for s in img.snapshots):
        old_table = _rewrite_snapshot_table(img)
    status(1, 2)
    h.version = 3
    h.header_length = hdr.HEADER_V3_LENGTH
    h.refcount_order = 4
    h.incompatible_features = h.compatible_features = h.autoclear_features = 0
    h.compression_type = hdr.COMPRESSION_ZLIB
    h.extra_header = b""
    h.feature_table = list(hdr.FEATURE_NAMES)
    _write_header(img)
    status(2, 2)
    if old_table is not None:
        _free_bytes(img, *old_table)


def _snapshot_table_bytes(img):
    # QEMU's qcow2_write_snapshots(): 24 bytes of extra data (vm state, disk size, icount) or more
    from .snapshots import encode_snapshot_table
    return encode_snapshot_table(img.snapshots)


def _rewrite_snapshot_table(img):
    """Write the snapshot table (v3 extra data in every entry) to fresh clusters and point the
    in-memory header at it; returns the old table's (offset, bytes) to free after the switch."""
    h = img.header
    cs = img.cluster_size
    old_bytes = getattr(img, "snapshots_size", 0)  # the table as it is on disk (snapshots.read_snapshots)
    raw = _snapshot_table_bytes(img)
    img._commit_metadata()
    off = img.refcounts.alloc(_div_up(len(raw), cs))
    img.refcounts.flush()
    img.extend_file(off + _div_up(len(raw), cs) * cs)
    img.file.pwrite(off, raw)
    img.sync()
    old = (h.snapshots_offset, old_bytes)
    h.snapshots_offset = off
    return old


def _free_bytes(img, offset, nbytes):
    cs = img.cluster_size
    for k in range(_div_up(max(nbytes, 1), cs)):
        img.refcounts.add((offset >> img.cluster_bits) + k, -1)
    img.refcounts.flush()
    img.sync()


# ---------------------------------------------------------------------------------- downgrade
def downgrade(img, status=None):
    h = img.header
    if h.refcount_order != 4:
        raise UnsupportedFeature("compat=0.10 requires refcount_bits=16")
    if getattr(img, "has_data_file", False):
        raise UnsupportedFeature("Cannot downgrade an image with a data file")
    for s in img.snapshots:
        if s.vm_state_size > 0xFFFFFFFF or s.disk_size != img.size:
            raise UnsupportedFeature("Internal snapshots prevent downgrade of image")
    incompat = h.incompatible_features & ~(hdr.INCOMPAT_COMPRESSION | hdr.INCOMPAT_DIRTY)
    if incompat:
        raise UnsupportedFeature("Cannot downgrade an image with incompatible features 0x%x set" % incompat)
    if img.bitmaps or h.bitmaps_ext is not None:
        raise UnsupportedFeature("Cannot downgrade an image with persistent dirty bitmaps")
    if h.incompatible_features & hdr.INCOMPAT_COMPRESSION and _has_compressed_clusters(img):
        raise UnsupportedFeature("Cannot downgrade an image with zstd compression type and existing "
                                 "compressed clusters")
    img._prepare_write()
    expand_zero_clusters(img, status)
    h.version = 2
    h.header_length = hdr.HEADER_V2.size
    h.incompatible_features = h.compatible_features = h.autoclear_features = 0
    h.compression_type = hdr.COMPRESSION_ZLIB
    h.extra_header = b""
    _write_header(img)


def _l1_tables(img):
    """(l1 entries) of the active table and of every snapshot."""
    yield img.l1
    from .snapshot_ops import validate_snapshot_l1
    for s in img.snapshots:
        bad = validate_snapshot_l1(img, s)  # the snapshot table is taken as QEMU opens it: check here
        if bad:
            err = QimgError(bad[0])
            err.reports = ["Failed to turn zero into data clusters: %s" % os.strerror(bad[1])]
            raise err
        yield decode_table(img.file.pread(s.l1_table_offset, s.l1_size * 8))


def _has_compressed_clusters(img):
    seen = set()
    for l1 in _l1_tables(img):
        for i in range(len(l1)):
            l2off = l1[i] & OFFSET_MASK
            if not l2off or l2off in seen:
                continue
            seen.add(l2off)
            table = decode_table(img.file.pread(l2off, img.cluster_size))
            if any(e & COMPRESSED for e in table[::img.l2_step]):
                return True
    return False


_ODD = bytes(i & 1 for i in range(256))


def expand_zero_clusters(img, status=None):
    """Turn every zero-flagged L2 entry (active and snapshot tables) into a v2 one; status(visited,
    total) after each L1 entry, as QEMU reports it."""
    cs = img.cluster_size
    cb = img.cluster_bits
    rc = img.refcounts
    img._commit_metadata()
    img.sync()
    img.l2_cache.clear()
    seen = set()
    zeros = bytes(cs)
    tables = list(_l1_tables(img))
    total = sum(len(t) for t in tables)
    visited = [0]

    def step():
        visited[0] += 1
        if status is not None:
            status(visited[0], total)
    for l1 in tables:
        for i in range(len(l1)):
            l2off = l1[i] & OFFSET_MASK
            if not l2off or l2off in seen:
                step()
                continue
            seen.add(l2off)
            if l2off % cs or l2off + cs > img.file_end_limit():
                raise QimgError("%s: L2 table offset %#x invalid (L1 index: %#x)" % (img.filename, l2off, i))
            raw = img.file.pread(l2off, cs)
            if raw[7::8].translate(_ODD).find(b"\1") < 0:
                step()
                continue  # no zero flag in this table
            table = decode_table(raw)
            l2_refs = rc.get(l2off >> cb)
            decrefs = []
            for j in range(len(table)):
                e = table[j]
                if not e & ZERO_FLAG or e & COMPRESSED:
                    continue
                host = e & OFFSET_MASK
                if host and rc.get(host >> cb) <= max(l2_refs, 1):
                    img.check_metadata_write(host, cs, "guest data")
                    img.file.pwrite(host, zeros)  # preallocated zero cluster: zeroed in place
                    table[j] = e & ~ZERO_FLAG
                    continue
                if not host and img.backing is None:
                    table[j] = 0  # reads as zeros without a backing file
                    continue
                new = rc.alloc(1)
                if l2_refs > 1:
                    rc.set(new >> cb, l2_refs)
                rc.flush()
                img.check_metadata_write(new, cs, "guest data")
                img._pwrite(new, zeros)
                table[j] = new | (COPIED if l2_refs == 1 else 0)
                if host:
                    decrefs.append((host >> cb, l2_refs))
            img.sync()
            img.check_metadata_write(l2off, cs, "L2 table")
            img.file.pwrite(l2off, encode_table(table))
            img.sync()
            for c, n in decrefs:
                rc.add(c, -n)
            rc.flush()
            step()
    img.l2_cache.clear()


# ------------------------------------------------------------------------------ refcount bits
def _first_free(used, start, n):
    c = start
    while True:
        for k in range(n):
            if c + k in used:
                c += k + 1
                break
        else:
            return c


def qemu_walks(needed, start, new_per, cs):
    """How many walks over the old refcount table QEMU's qcow2_change_refcount_order() makes:
    allocation walks until one allocates nothing, then the walk that writes the new refblocks.
    needed: the indexes of new refblocks that describe used clusters; QEMU's new refblocks and
    reftable are allocated first-fit, here from cluster start on (the end of the image)."""
    used = set()
    allocated = set()
    rt_entries = 0
    reftable = ()
    walks = 0
    while True:
        walks += 1
        new_alloc = False
        todo = sorted(set(needed) | set(c // new_per for c in used))
        heapq.heapify(todo)
        while todo:
            t = heapq.heappop(todo)
            if t in allocated:
                continue
            if t >= rt_entries:
                rt_entries = _div_up(t + 1, cs // 8) * (cs // 8)
            c = _first_free(used, start, 1)
            used.add(c)
            allocated.add(t)
            new_alloc = True
            if c // new_per > t:
                heapq.heappush(todo, c // new_per)  # the walk reaches that block later on
        if not new_alloc:
            return walks + 1
        used.difference_update(reftable)
        n = _div_up(rt_entries * 8, cs)
        c = _first_free(used, start, n)
        reftable = range(c, c + n)
        used.update(reftable)


def _walk_status(status, walk, total, entries):
    """QEMU's status reports of one walk over a reftable of `entries` entries."""
    for i in range(entries):
        status(walk * entries + i, total * entries)
    status((walk + 1) * entries, total * entries)


def change_refcount_bits(img, new_bits, status=None):
    """A refcount structure of the new width beside the old one, then one header switch.
    status(offset, work) gets the reports QEMU's walks over the old reftable make."""
    from .resize import _last_used_cluster
    status = status or (lambda off, work: None)
    h = img.header
    cs = img.cluster_size
    cb = img.cluster_bits
    img._prepare_write()
    img._commit_metadata()
    img.sync()
    rc = img.refcounts
    old_per = rc.block_entries
    new_per = cs * 8 // new_bits
    max_new = (1 << new_bits) - 1
    used_end = _last_used_cluster(rc, len(rc.table) * old_per) + 1
    start = max(img.end_cluster(), used_end)
    # new block indexes that describe a cluster with a refcount; values checked against the width
    needed = set()
    rt_size = len(rc.table)
    for t in range(rt_size):
        status(t, 3 * rt_size)  # QEMU's first walk (of at least three)
        off = rc._block_offset(t)
        if not off:
            continue
        blk = rc._load_block(off)
        if not any(blk):
            continue
        if max(blk) > max_new:
            i = next(k for k, v in enumerate(blk) if v > max_new)
            raise InvalidArgument("Cannot decrease refcount entry width to %d bits: Cluster at offset %#x has a "
                                  "refcount of %d" % (new_bits, (t * old_per + i) << cb, blk[i]))
        base = t * old_per
        step = min(new_per, old_per)
        for k in range(0, old_per, step):
            if any(blk[k:k + step]):
                needed.add((base + k) // new_per)
    # the new structure's own clusters [start, start + nb + nt) need describing too
    nb = nt = 0
    while True:
        idx = set(needed)
        idx.update(range(start // new_per, (start + nb + nt - 1) // new_per + 1) if nb + nt else ())
        entries = max(idx) + 1 if idx else 1
        nb2, nt2 = len(idx), _div_up(entries * 8, cs)
        if (nb2, nt2) == (nb, nt):
            break
        nb, nt = nb2, nt2
    if nt * cs > hdr.MAX_REFTABLE_BYTES:
        raise QimgError("Failed to change the refcount entry width: the refcount table would exceed 8 MiB")
    status(rt_size, 3 * rt_size)
    walks = qemu_walks(needed, start, new_per, cs)
    for w in range(1, walks - 1):
        _walk_status(status, w, max(w + 2, 3), rt_size)
    last = walks - 1
    order = sorted(idx)
    own = (start, start + nb + nt)
    table = [0] * (nt * cs // 8)
    batch = bytearray()
    batch_off = start << cb
    reported = 0
    for n, t in enumerate(order):
        while reported < rt_size and reported * old_per < (t + 1) * new_per:
            status(last * rt_size + reported, walks * rt_size)  # the writing walk
            reported += 1
        values = _old_values(rc, t * new_per, new_per)
        lo, hi = max(own[0], t * new_per), min(own[1], (t + 1) * new_per)
        for c in range(lo, hi):
            values[c - t * new_per] += 1
        table[t] = (start + n) << cb
        batch += encode_block(values, new_bits)
        if len(batch) >= _WRITE_BATCH:
            img.extend_file(batch_off + len(batch))
            img.file.pwrite(batch_off, bytes(batch))
            batch_off += len(batch)
            batch = bytearray()
    if batch:
        img.extend_file(batch_off + len(batch))
        img.file.pwrite(batch_off, bytes(batch))
    for i in range(reported, rt_size):
        status(last * rt_size + i, walks * rt_size)
    status(walks * rt_size, walks * rt_size)
    table_off = (start + nb) << cb
    img.extend_file(table_off + nt * cs)
    img.file.pwrite(table_off, struct.pack(">%dQ" % len(table), *table))
    img.note_allocated(start + nb + nt)
    img.sync()
    old_table = (rc.table_offset, rc.table_clusters)
    old_blocks = [off for off in rc.table if off]
    h.refcount_order = new_bits.bit_length() - 1
    h.refcount_table_offset = table_off
    h.refcount_table_clusters = nt
    img.write_header()
    img.sync()
    img.reload_refcounts()
    new_rc = img.refcounts
    for k in range(old_table[1]):
        new_rc.add((old_table[0] >> cb) + k, -1)
    for off in old_blocks:
        new_rc.add(off >> cb, -1)
    new_rc.flush()
    img.sync()
    img.metadata_changed()


def _old_values(rc, first, n):
    """Old refcounts of clusters [first, first+n) as a list."""
    out = []
    c = first
    end = first + n
    while c < end:
        t, i = divmod(c, rc.block_entries)
        k = min(end - c, rc.block_entries - i)
        off = rc._block_offset(t)
        if off:
            out.extend(rc._load_block(off)[i:i + k])
        else:
            out.extend([0] * k)
        c += k
    return out
