# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Lay out a new qcow2 image the way qemu-img does.

Cluster 0 header (+ extensions, backing name), then the refcount table, its refcount blocks and
the L1 table; with preallocation, the L2 tables and data clusters follow. Everything is built in
memory per table and written in large pieces; the header is written last.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import struct

from ...errors import InvalidArgument, QimgError
from . import header as hdr
from .entries import COPIED
from ...protocols.cache import write_zeros
from .refcounts import encode_block


def _div_up(a, b):
    return -(-a // b)


def plan_header(size, cluster_size=65536, compat="1.1", refcount_bits=16, lazy_refcounts=False,
                extended_l2=False, preallocation="off", compression_type="zlib",
                backing_file=None, backing_fmt=None, data_file=None, data_file_raw=False):
    """Validate create options (qemu-img's rules and messages) and return the new image's Header.

    Table offsets are left for the caller to fill in. data_file is the external data file's name as
    it goes into the header (QEMU's "data-file" / "data-file-raw"; docs/interop/qcow2.txt, incompatible
    bit 2, autoclear bit 1).
    """
    if cluster_size & (cluster_size - 1) or not 512 <= cluster_size <= 2 * 1024 * 1024:
        raise InvalidArgument("Cluster size must be a power of two between 512 and 2048k")
    cb = cluster_size.bit_length() - 1
    if refcount_bits not in (1, 2, 4, 8, 16, 32, 64):
        raise InvalidArgument("Refcount width must be a power of two and may not exceed 64 bits")
    version = {"0.10": 2, "v2": 2, "1.1": 3, "v3": 3}.get(str(compat))
    if version is None:
        raise InvalidArgument("Parameter 'version' does not accept value '%s'" % compat)
    if version == 2:
        if refcount_bits != 16:
            raise InvalidArgument("Different refcount widths than 16 bits require compatibility level 1.1 or above "
                                  "(use version=v3 or greater)")
        if lazy_refcounts:
            raise InvalidArgument("Lazy refcounts only supported with compatibility level 1.1 and above "
                                  "(use version=v3 or greater)")
        if extended_l2:
            raise InvalidArgument("Extended L2 entries are only supported with compatibility level 1.1 "
                                  "and above (use version=v3 or greater)")
    if extended_l2 and cluster_size < 16384:
        raise InvalidArgument("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes")
    if compression_type not in ("zlib", "zstd"):
        raise InvalidArgument("Parameter 'compression-type' does not accept value '%s'" % compression_type)
    if compression_type == "zstd":
        if version == 2:
            raise InvalidArgument("Non-zlib compression type is only supported with compatibility level 1.1 "
                                  "and above (use version=v3 or greater)")
    if preallocation not in ("off", "metadata", "falloc", "full"):
        raise InvalidArgument("Parameter 'preallocation' does not accept value '%s'" % preallocation)
    if backing_file and preallocation != "off" and not extended_l2:
        raise InvalidArgument("Backing file and preallocation can only be used at the same time if "
                              "extended_l2 is on")
    if size % 512:
        raise InvalidArgument("Image size must be a multiple of 512 bytes")
    check_data_file_options(version, data_file, data_file_raw, backing_file)

    step = 2 if extended_l2 else 1
    l2_entries = cluster_size // (8 * step)
    l1_size = _div_up(size, cluster_size * l2_entries)
    if l1_size * 8 > hdr.MAX_L1_BYTES:
        raise InvalidArgument("The image size is too large for file format 'qcow2' (try using a larger cluster size)")
    h = hdr.Header()
    h.version = version
    h.cluster_bits = cb
    h.size = size
    h.l1_size = l1_size
    h.refcount_order = refcount_bits.bit_length() - 1
    if version == 3:
        h.header_length = hdr.HEADER_V3_LENGTH
        if lazy_refcounts:
            h.compatible_features |= hdr.COMPAT_LAZY_REFCOUNTS
        if extended_l2:
            h.incompatible_features |= hdr.INCOMPAT_EXTL2
        if compression_type == "zstd":
            h.incompatible_features |= hdr.INCOMPAT_COMPRESSION
            h.compression_type = hdr.COMPRESSION_ZSTD
        h.feature_table = list(hdr.FEATURE_NAMES)
    else:
        h.header_length = hdr.HEADER_V2.size
    if backing_file:
        h.backing_file = backing_file
        h.backing_format = backing_fmt
    if data_file is not None:
        h.incompatible_features |= hdr.INCOMPAT_DATA_FILE
        h.data_file = data_file
        if data_file_raw:
            h.autoclear_features |= hdr.AUTOCLEAR_DATA_FILE_RAW
    return h


def check_data_file_options(version, data_file, data_file_raw, backing_file):
    """QEMU's qcow2_co_create() rules for external data files, with its messages."""
    if data_file_raw and data_file is None:
        raise InvalidArgument("data-file-raw requires data-file")
    if data_file_raw and backing_file:
        raise InvalidArgument("Backing file and data-file-raw cannot be used at the same time")
    if data_file is not None and version < 3:
        raise InvalidArgument("External data files are only supported with compatibility level 1.1 and above "
                              "(use version=v3 or greater)")


def effective_preallocation(preallocation, data_file_raw):
    """data_file_raw needs a 1:1 mapping of every guest cluster: QEMU raises "off" to "metadata"."""
    return "metadata" if data_file_raw and preallocation == "off" else preallocation


def create_qcow2(file, size, preallocation="off", data_node=None, encryption=None, **options):
    """Write a new, empty qcow2 image into the (empty) file, a protocol node (protocols/file.py).

    With options data_file (the name for the header), data_node is the (empty) external data file:
    guest cluster N lives at offset N * cluster_size there, nothing in it is refcounted, and
    preallocation applies to it (the qcow2 file gets the L2 tables only).

    encryption: None, or an object with `crypt_method` (1 AES, 2 LUKS), `header_length` (bytes of
    the LUKS header area, 0 for AES) and `write_header(write, base)` that writes the LUKS header
    through write(offset, data) at file offset base (see ops/create.py).
    """
    h = plan_header(size, preallocation=preallocation, **options)
    preallocation = effective_preallocation(preallocation, options.get("data_file_raw"))
    external = h.data_file is not None
    if encryption is not None:
        if preallocation != "off":
            raise InvalidArgument("Preallocation is not supported with encryption")
        h.crypt_method = encryption.crypt_method
    crypt_clusters = _div_up(encryption.header_length, h.cluster_size) if encryption is not None else 0
    cluster_size = h.cluster_size
    refcount_bits = h.refcount_bits
    extended_l2 = h.extended_l2
    l1_size = h.l1_size
    step = 2 if extended_l2 else 1
    l2_entries = cluster_size // (8 * step)
    l1_clusters = _div_up(l1_size * 8, cluster_size)   # a zero-size image has none (QEMU: offset 0)
    prealloc = preallocation != "off"
    n_l2 = l1_size if prealloc else 0
    n_data = _div_up(size, cluster_size) if prealloc and not external else 0
    n_mapped = _div_up(size, cluster_size) if prealloc else 0

    # refcount structures sized to cover themselves and everything else
    entries_per_block = cluster_size * 8 // refcount_bits
    rt_clusters, rb_clusters = 1, 1
    while True:
        total = 1 + rt_clusters + rb_clusters + l1_clusters + crypt_clusters + n_l2 + n_data
        need_rb = _div_up(total, entries_per_block)
        need_rt = max(1, _div_up(need_rb * 8, cluster_size))
        if need_rb <= rb_clusters and need_rt <= rt_clusters:
            break
        rb_clusters, rt_clusters = max(rb_clusters, need_rb), max(rt_clusters, need_rt)
    if rt_clusters * cluster_size > hdr.MAX_REFTABLE_BYTES:
        raise InvalidArgument("The image size is too large for file format 'qcow2' (try using a larger cluster size)")

    rt_off = cluster_size
    rb_off = rt_off + rt_clusters * cluster_size
    l1_off = rb_off + rb_clusters * cluster_size
    crypt_off = l1_off + l1_clusters * cluster_size
    l2_off = crypt_off + crypt_clusters * cluster_size
    data_off = l2_off + n_l2 * cluster_size
    end = data_off + n_data * cluster_size
    used_clusters = end // cluster_size

    h.l1_table_offset = l1_off if l1_size else 0
    h.refcount_table_offset = rt_off
    h.refcount_table_clusters = rt_clusters
    if crypt_clusters:
        # the full disk encryption header pointer extension: offset and length of the LUKS header
        h.unknown_extensions.append((hdr.EXT_CRYPTO, struct.pack(">QQ", crypt_off, encryption.header_length)))
    try:
        raw_header = hdr.header_cluster_bytes(h, cluster_size)
    except QimgError as e:
        raise InvalidArgument(str(e))

    try:
        # refcount table
        table = bytearray(rt_clusters * cluster_size)
        for i in range(rb_clusters):
            struct.pack_into(">Q", table, 8 * i, rb_off + i * cluster_size)
        file.pwrite(rt_off, bytes(table))
        # refcount blocks: every used cluster has refcount 1
        for i in range(rb_clusters):
            first = i * entries_per_block
            count = max(0, min(entries_per_block, used_clusters - first))
            values = [1] * count + [0] * (entries_per_block - count)
            file.pwrite(rb_off + i * cluster_size, encode_block(values, refcount_bits))
        # L2 tables and L1 when preallocating
        l1 = bytearray(l1_size * 8)
        if prealloc:
            # like QEMU: host clusters are reserved, subclusters stay unallocated (reads fall through)
            sc_bitmap = 0
            for t in range(n_l2):
                l2 = bytearray(cluster_size)
                first = t * l2_entries
                count = min(l2_entries, n_mapped - first)
                base = 0 if external else data_off  # an external data file maps guest offset == host offset
                for k in range(count):
                    struct.pack_into(">Q", l2, 8 * step * k, (base + (first + k) * cluster_size) | COPIED)
                    if extended_l2:
                        struct.pack_into(">Q", l2, 8 * step * k + 8, sc_bitmap)
                file.pwrite(l2_off + t * cluster_size, bytes(l2))
                struct.pack_into(">Q", l1, 8 * t, (l2_off + t * cluster_size) | COPIED)
        if l1:
            file.pwrite(l1_off, bytes(l1))
        if external:
            _prepare_data_file(data_node, size, preallocation)
        if crypt_clusters:
            file.truncate(max(file.length(), l2_off))
            encryption.write_header(file.pwrite, crypt_off)
        if prealloc:
            file.truncate(end)
            if preallocation == "falloc" and n_data:
                file.allocate(data_off, n_data * cluster_size)
            elif preallocation == "full" and n_data:
                write_zeros(file, data_off, n_data * cluster_size)
        # the whole first cluster, as QEMU writes it (its allocation counts in QEMU's heuristic that
        # detects metadata preallocation)
        file.pwrite(0, bytes(raw_header) + bytes(cluster_size - len(raw_header)))
    except OSError as e:
        raise QimgError("Could not write the image: %s" % e.strerror)


def _prepare_data_file(data, size, preallocation):
    """The external data file at the virtual size, preallocated as asked (QEMU creates it with the
    image's size and forwards falloc/full to it)."""
    try:
        data.truncate(size)
    except OSError as e:
        if e.errno == errno.EFBIG:  # as qemu-img words it
            raise InvalidArgument("The image size is too large for file format 'qcow2' (try using a larger "
                                  "cluster size)")
        raise
    if preallocation == "falloc" and size:
        data.allocate(0, size)
    elif preallocation == "full" and size:
        write_zeros(data, 0, size)
    if preallocation != "full" and size:
        # QEMU's file driver allocates the first block of a file it grows from 0 (for its alignment
        # probing); `qemu-img map` then sees the same data/hole layout in our data file as in its own
        data.pwrite(0, bytes(512 if size < 4096 else 4096))
