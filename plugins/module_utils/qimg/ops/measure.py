# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`measure`: the file size a conversion would need, computed the way qemu-img computes it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import InvalidArgument
from ..image import chain_block_status, open_image
from ..sizes import parse_size
from .convert import activate_snapshot
from .create import normalize_options

SECTOR = 512


def _div_up(a, b):
    return -(-a // b)


def _round_up(a, b):
    return _div_up(a, b) * b


def refcount_metadata_size(clusters, cluster_size, refcount_order):
    """Bytes of refcount table and blocks needed to cover `clusters` clusters (and themselves)."""
    per_table_cluster = cluster_size // 8
    per_block = cluster_size * 8 // (1 << refcount_order)
    table = blocks = 0
    n = 0
    while True:
        last = n
        blocks = _div_up(clusters + table + blocks, per_block)
        table = _div_up(blocks, per_table_cluster)
        n = clusters + blocks + table
        if n == last:
            return (blocks + table) * cluster_size


def prealloc_size(total, cluster_size, refcount_order, extended_l2):
    """Size of a fully allocated qcow2 image of `total` guest bytes (metadata + data)."""
    aligned = _round_up(total, cluster_size)
    l2e = 16 if extended_l2 else 8
    meta = cluster_size                                   # header
    nl2e = _round_up(aligned // cluster_size, cluster_size // l2e)
    meta += nl2e * l2e                                    # L2 tables
    nl1e = _round_up(nl2e * l2e // cluster_size, cluster_size // 8)
    meta += nl1e * 8                                      # L1 table
    meta += refcount_metadata_size((meta + aligned) // cluster_size, cluster_size, refcount_order)
    return meta + aligned


def _required_data(dev, cluster_size):
    """Guest bytes holding data, each touched cluster counted whole (qemu's accounting)."""
    exts = chain_block_status(dev, 0, dev.size)
    required = 0
    pos = 0
    i = 0
    while pos < dev.size:
        while exts[i].start + exts[i].length <= pos:
            i += 1
        e = exts[i]
        pnum = e.start + e.length - pos
        if not e.zero and e.data and e.present:
            pnum = _round_up(pos + pnum, cluster_size) - pos
            required += pos % cluster_size + pnum
        pos += pnum
    return required


def _bitmaps_size(dev, cluster_size):
    bitmaps = getattr(dev, "bitmaps", None) or []
    total = 0
    dir_size = 0
    for b in bitmaps:
        granularity = 1 << b.granularity_bits
        nbytes = _div_up(_div_up(dev.size, granularity), 8)
        clusters = _div_up(nbytes, cluster_size)
        total += clusters * cluster_size
        total += _round_up(clusters * 8, cluster_size)
        dir_size += _round_up(24 + len(b.name.encode("utf-8")), 8)
    return total + _round_up(dir_size, cluster_size)


def check_qcow2_options(typed):
    """qcow2_measure()'s option errors (typed options as normalize_options() returns them)."""
    from ..formats.qcow2.create import plan_header
    o = typed
    plan_header(0, cluster_size=o.get("cluster_size", 65536), compat=o.get("compat", "1.1"),
                refcount_bits=o.get("refcount_bits", 16), lazy_refcounts=o.get("lazy_refcounts", False),
                extended_l2=o.get("extended_l2", False), preallocation=o.get("preallocation", "off"),
                compression_type=o.get("compression_type", "zlib"))


def measure(filename=None, size=None, fmt=None, out_fmt="raw", options=None, snapshot=None,
            force_share=False, allow_unsafe_backing=False):
    """{"required": n, "fully-allocated": n[, "bitmaps": n]} like `qemu-img measure --output=json`."""
    if (filename is None) == (size is None):
        raise InvalidArgument("Either --size N or one filename must be specified.")
    opts = normalize_options(out_fmt, None, options)
    if out_fmt not in ("raw", "qcow2"):
        raise InvalidArgument("Unknown file format '%s'" % out_fmt)
    dev = None
    if filename is not None:
        dev = open_image(filename, fmt, read_only=True, force_share=force_share,
                         allow_unsafe_backing=allow_unsafe_backing)
    try:
        if dev is not None and snapshot:
            activate_snapshot(dev, snapshot)
        virtual_size = dev.size if dev is not None else parse_size(size)
        if out_fmt == "raw":
            required = virtual_size if dev is not None else _round_up(virtual_size, SECTOR)
            return {"required": required, "fully-allocated": required}
        cluster_size = opts.get("cluster_size", 65536)
        refcount_bits = opts.get("refcount_bits", 16)
        extended_l2 = opts.get("extended_l2", False)
        if refcount_bits not in (1, 2, 4, 8, 16, 32, 64):
            raise InvalidArgument("Refcount width must be a power of two and may not exceed 64 bits")
        virtual_size = _round_up(virtual_size, cluster_size)
        l2_entries = cluster_size // (16 if extended_l2 else 8)
        if _div_up(virtual_size, cluster_size * l2_entries) * 8 > 32 * 1024 * 1024:
            raise InvalidArgument("The image size is too large (try using a larger cluster size)")
        data = _required_data(dev, cluster_size) if dev is not None else 0
        full = prealloc_size(virtual_size, cluster_size, refcount_bits.bit_length() - 1, extended_l2)
        out = {"required": full - virtual_size + data, "fully-allocated": full}
        if opts.get("preallocation", "off") in ("falloc", "full"):
            out["required"] = full
        compat = opts.get("compat", "1.1")
        # qemu-img reports bitmaps when the target can hold them and the source can have them
        if dev is not None and dev.format_name == "qcow2" and dev.header.version >= 3 and compat not in ("0.10", "v2"):
            out["bitmaps"] = _bitmaps_size(dev, cluster_size)
        return out
    finally:
        if dev is not None:
            dev.close()
