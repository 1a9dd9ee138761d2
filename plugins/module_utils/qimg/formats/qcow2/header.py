# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qcow2 header and header extensions (QEMU docs/interop/qcow2.txt, "Header").

parse_header() validates every field before anything else trusts it; serialize() writes the
header back with unknown extensions preserved.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ...errors import ImageCorrupt, UnsupportedFeature

MAGIC = b"QFI\xfb"
HEADER_V2 = struct.Struct(">4sIQIIQIIQQIIQ")  # 72 bytes, through snapshots_offset
HEADER_V3_EXTRA = struct.Struct(">QQQII")      # bytes 72..103
HEADER_V3_LENGTH = 112                          # what we write: through compression_type, padded

INCOMPAT_DIRTY = 1 << 0
INCOMPAT_CORRUPT = 1 << 1
INCOMPAT_DATA_FILE = 1 << 2
INCOMPAT_COMPRESSION = 1 << 3
INCOMPAT_EXTL2 = 1 << 4
INCOMPAT_KNOWN = INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2
COMPAT_LAZY_REFCOUNTS = 1 << 0
AUTOCLEAR_BITMAPS = 1 << 0
AUTOCLEAR_DATA_FILE_RAW = 1 << 1
AUTOCLEAR_KNOWN = AUTOCLEAR_BITMAPS | AUTOCLEAR_DATA_FILE_RAW

EXT_END = 0x00000000
EXT_BACKING_FORMAT = 0xE2792ACA
EXT_FEATURE_TABLE = 0x6803F857
EXT_BITMAPS = 0x23852875
EXT_CRYPTO = 0x0537BE77
EXT_DATA_FILE = 0x44415441
EXT_HEADER = struct.Struct(">II")
BITMAPS_EXT = struct.Struct(">IIQQ")

COMPRESSION_ZLIB = 0
COMPRESSION_ZSTD = 1
COMPRESSION_NAMES = {COMPRESSION_ZLIB: "zlib", COMPRESSION_ZSTD: "zstd"}

MIN_CLUSTER_BITS = 9
MAX_CLUSTER_BITS = 21
MAX_L1_BYTES = 32 * 1024 * 1024
MAX_REFTABLE_BYTES = 8 * 1024 * 1024
MAX_BACKING_NAME = 1023
MAX_SNAPSHOTS = 65536
HOST_OFFSET_LIMIT = 1 << 56

# Feature names we write on create (type, bit, name), as QEMU does.
FEATURE_NAMES = [
    (0, 0, "dirty bit"),
    (0, 1, "corrupt bit"),
    (0, 2, "external data file"),
    (0, 3, "compression type"),
    (0, 4, "extended L2 entries"),
    (1, 0, "lazy refcounts"),
    (2, 0, "bitmaps"),
    (2, 1, "raw external data"),
]


class Header(object):
    """Decoded qcow2 header plus its extensions."""

    def __init__(self):
        self.version = 3
        self.backing_file_offset = 0
        self.backing_file_size = 0
        self.cluster_bits = 16
        self.size = 0
        self.crypt_method = 0
        self.l1_size = 0
        self.l1_table_offset = 0
        self.refcount_table_offset = 0
        self.refcount_table_clusters = 0
        self.nb_snapshots = 0
        self.snapshots_offset = 0
        self.incompatible_features = 0
        self.compatible_features = 0
        self.autoclear_features = 0
        self.refcount_order = 4
        self.header_length = HEADER_V3_LENGTH
        self.compression_type = COMPRESSION_ZLIB
        self.extra_header = b""         # v3 header bytes past compression_type we do not know
        self.backing_file = None        # str
        self.backing_format = None      # str
        self.feature_table = []         # [(type, bit, name)]
        self.bitmaps_ext = None         # (nb_bitmaps, dir_size, dir_offset)
        self.data_file = None
        self.unknown_extensions = []    # [(type, bytes)] preserved on rewrite

    @property
    def cluster_size(self):
        return 1 << self.cluster_bits

    @property
    def refcount_bits(self):
        return 1 << self.refcount_order

    @property
    def extended_l2(self):
        return bool(self.incompatible_features & INCOMPAT_EXTL2)

    def feature_name(self, kind, bit):
        for t, b, name in self.feature_table:
            if t == kind and b == bit:
                return name
        return None


def _u(buf, fmt, off):
    return struct.unpack_from(fmt, buf, off)[0]


def parse_header(buf, file_size, filename, check_mode=False):
    """Decode and validate the header held in buf (the first cluster, or less if the file is small).

    check_mode: as QEMU opens an image for check (BDRV_O_CHECK), the snapshot table is left for
    check to validate (see check.py).

    file_size bounds every offset. Raises ImageCorrupt / UnsupportedFeature with one line.
    """
    def corrupt(msg):
        return ImageCorrupt("Could not open '%s': %s" % (filename, msg))

    if len(buf) < HEADER_V2.size:
        raise corrupt("Image is not in qcow2 format (file too short for a qcow2 header)")
    h = Header()
    (magic, h.version, h.backing_file_offset, h.backing_file_size, h.cluster_bits, h.size,
     h.crypt_method, h.l1_size, h.l1_table_offset, h.refcount_table_offset,
     h.refcount_table_clusters, h.nb_snapshots, h.snapshots_offset) = HEADER_V2.unpack_from(buf, 0)
    if magic != MAGIC:
        raise corrupt("Image is not in qcow2 format")
    if h.version not in (2, 3):
        raise UnsupportedFeature("Could not open '%s': Unsupported qcow2 version %d" % (filename, h.version))
    if h.version == 2:
        h.incompatible_features = h.compatible_features = h.autoclear_features = 0
        h.refcount_order = 4
        h.header_length = HEADER_V2.size
    else:
        if len(buf) < 104:
            raise corrupt("qcow2 header exceeds cluster size")
        (h.incompatible_features, h.compatible_features, h.autoclear_features,
         h.refcount_order, h.header_length) = HEADER_V3_EXTRA.unpack_from(buf, 72)
        if h.header_length < 104:
            raise corrupt("qcow2 header too short")
        if h.header_length % 8:
            raise corrupt("qcow2 header length is not a multiple of 8")
    if not MIN_CLUSTER_BITS <= h.cluster_bits <= MAX_CLUSTER_BITS:
        raise corrupt("Unsupported cluster size: 2^%d" % h.cluster_bits)
    cs = h.cluster_size
    buf = buf[:cs]
    if h.header_length > cs:
        raise corrupt("qcow2 header exceeds cluster size")
    if h.header_length > len(buf):
        raise corrupt("qcow2 header is truncated")
    if h.version == 3:
        if h.header_length > 104:
            h.compression_type = buf[104]
            h.extra_header = bytes(buf[105:h.header_length])
        # validate_compression_type(), before the feature bits (qcow2_do_open()'s order)
        if h.compression_type not in COMPRESSION_NAMES:
            raise UnsupportedFeature("Could not open '%s': qcow2: unknown compression type: %d"
                                     % (filename, h.compression_type))
        has_bit = bool(h.incompatible_features & INCOMPAT_COMPRESSION)
        if has_bit != (h.compression_type != COMPRESSION_ZLIB):
            raise corrupt("qcow2: Compression type incompatible feature bit must %sbe set"
                          % ("not " if has_bit else ""))
        unknown = h.incompatible_features & ~INCOMPAT_KNOWN
        if unknown:
            # named after the feature table below if the image provides one
            h.unknown_incompat = unknown
    if h.refcount_order > 6:
        raise corrupt("Reference count entry width too large; may not exceed 64 bits")
    if h.size > (1 << 63) - 512 * 1024 * 1024:
        raise corrupt("Image size is too large")
    if h.crypt_method not in (0, 1, 2):
        raise corrupt("Unsupported encryption method: %d" % h.crypt_method)
    # Tables: alignment and bounds before anything is read or allocated.
    # (in qcow2_do_open()'s order: refcount table, snapshot table, L1 table, then the size)
    if h.refcount_table_clusters == 0 and file_size > 0:
        raise corrupt("Image does not contain a reference count table")
    if h.refcount_table_clusters > MAX_REFTABLE_BYTES // cs:
        raise corrupt("Reference count table too large")
    _check_table(h.refcount_table_offset, h.refcount_table_clusters * cs, cs, file_size, corrupt,
                 "Reference count table")
    # qcow2_validate_table(): a size limit and an aligned offset, not a place inside the file (the
    # entries are read later, as zeros past the end of the file)
    bad = None if check_mode else snapshot_table_problem(h, cs)
    if bad:
        from .snapshots import SnapshotTableError
        raise SnapshotTableError(corrupt("Snapshot table %s" % bad[0]).message)
    if h.l1_size > MAX_L1_BYTES // 8:
        raise corrupt("Active L1 table too large")
    _check_table(h.l1_table_offset, h.l1_size * 8, cs, file_size, corrupt, "Active L1 table")
    l2_entries = cs // (16 if h.incompatible_features & INCOMPAT_EXTL2 else 8)
    needed_l1 = -(-h.size // (cs * l2_entries))
    if needed_l1 > 0x7FFFFFFF:
        raise corrupt("Image is too big")
    if h.l1_size < needed_l1:
        raise corrupt("L1 table is too small")
    # Backing file name: inside the first cluster, after the header.
    if h.backing_file_offset:
        if h.backing_file_size > MAX_BACKING_NAME or h.backing_file_size == 0:
            raise corrupt("Backing file name too long")
        end = h.backing_file_offset + h.backing_file_size
        if h.backing_file_offset < h.header_length or end > cs or end > len(buf):
            raise corrupt("Backing file name is outside the first cluster")
        raw_name = bytes(buf[h.backing_file_offset:end])
        if b"\0" in raw_name:
            raise corrupt("Backing file name contains a NUL byte")
        h.backing_file = _decode(raw_name)
    _parse_extensions(h, buf, corrupt)
    unknown = getattr(h, "unknown_incompat", 0)
    if unknown:
        # QEMU names the bits its image's feature table names, in table order (up to the first
        # unnamed entry), then the rest as one mask
        names = []
        for kind, bit, name in h.feature_table:
            if not name:
                break
            if kind == 0 and bit < 64 and unknown & (1 << bit):
                names.append(name)
                unknown &= ~(1 << bit)
        if unknown:
            names.append("Unknown incompatible feature: %x" % unknown)
        raise UnsupportedFeature("Could not open '%s': Unsupported qcow2 feature(s): %s"
                                 % (filename, ", ".join(names)))
    return h


def _decode(raw):
    return bytes(raw).decode("utf-8", "surrogateescape")


def snapshot_table_problem(h, cs):
    """qcow2_validate_table() of the snapshot table pointer: ("too large" | "offset invalid", errno) or None."""
    import errno
    if h.nb_snapshots > MAX_SNAPSHOTS:
        return "too large", errno.EFBIG
    if h.snapshots_offset % cs or (1 << 63) - 1 - h.nb_snapshots * 40 < h.snapshots_offset:
        return "offset invalid", errno.EINVAL
    return None


def _check_table(offset, nbytes, cs, file_size, corrupt, what):
    if offset % cs:
        raise corrupt("%s offset invalid" % what)
    if nbytes and (offset == 0 or offset + nbytes > max(file_size, 0) + cs or offset >= HOST_OFFSET_LIMIT):
        raise corrupt("%s is not inside the image file" % what)


def _parse_extensions(h, buf, corrupt):
    off = h.header_length
    end = h.backing_file_offset if h.backing_file_offset else len(buf)
    seen = set()
    while True:
        if off + 8 > end:
            if off + 8 > len(buf):
                break  # a v2 header may end right at the end of a tiny buffer
            raise corrupt("Header extension area overlaps the backing file name")
        ext_type, ext_len = EXT_HEADER.unpack_from(buf, off)
        off += 8
        if ext_type == EXT_END:
            break
        if ext_len > end - off:
            raise corrupt("ext_len too large")
        data = bytes(buf[off:off + ext_len])
        off += (ext_len + 7) & ~7
        # QEMU keeps the last backing format extension (old qemu-img rebase could add a second one)
        if ext_type in seen and ext_type not in (0, EXT_BACKING_FORMAT):
            raise corrupt("Duplicate header extension 0x%08x" % ext_type)
        seen.add(ext_type)
        if ext_type == EXT_BACKING_FORMAT:
            if ext_len > 1023:
                raise corrupt("Backing format name too long")
            h.backing_format = _decode(data.split(b"\0", 1)[0])
        elif ext_type == EXT_FEATURE_TABLE:
            # a short last entry reads as zero-padded, as QEMU reads it
            table = data + bytes(-len(data) % 48)
            for i in range(0, len(table), 48):
                name = table[i + 2:i + 48].split(b"\0", 1)[0].decode("utf-8", "replace")
                h.feature_table.append((data[i], data[i + 1], name))
        elif ext_type == EXT_BITMAPS:
            if ext_len != BITMAPS_EXT.size:
                raise corrupt("bitmaps_ext: Invalid extension length")
            nb, reserved, dsize, doff = BITMAPS_EXT.unpack(data)
            if reserved:
                raise corrupt("bitmaps_ext: Reserved field is not zero")
            h.bitmaps_ext = (nb, dsize, doff)
        elif ext_type == EXT_DATA_FILE:
            h.data_file = _decode(data.split(b"\0", 1)[0])  # QEMU reads it as a C string
        elif ext_type == EXT_CRYPTO:
            h.unknown_extensions.append((ext_type, data))
        else:
            h.unknown_extensions.append((ext_type, data))


def serialize(h):
    """Encode the header and extensions (without the backing name). Returns bytes."""
    out = bytearray(HEADER_V2.pack(
        MAGIC, h.version, h.backing_file_offset, h.backing_file_size, h.cluster_bits, h.size,
        h.crypt_method, h.l1_size, h.l1_table_offset, h.refcount_table_offset,
        h.refcount_table_clusters, h.nb_snapshots, h.snapshots_offset))
    if h.version >= 3:
        out += HEADER_V3_EXTRA.pack(h.incompatible_features, h.compatible_features,
                                    h.autoclear_features, h.refcount_order, h.header_length)
        tail = bytearray(h.header_length - 104)
        if tail:
            tail[0] = h.compression_type
            tail[1:1 + len(h.extra_header)] = h.extra_header[:len(tail) - 1]
        out += tail

    def ext(ext_type, data):
        out.extend(EXT_HEADER.pack(ext_type, len(data)))
        out.extend(data)
        out.extend(bytes((-len(data)) % 8))

    if h.backing_format is not None:
        ext(EXT_BACKING_FORMAT, h.backing_format.encode("utf-8", "surrogateescape"))
    if h.data_file is not None:
        ext(EXT_DATA_FILE, h.data_file.encode("utf-8", "surrogateescape"))
    # QEMU's qcow2_update_header() order: crypto, feature table, bitmaps, then the unknown ones
    for ext_type, data in h.unknown_extensions:
        if ext_type == EXT_CRYPTO:
            ext(ext_type, data)
    if h.feature_table and h.version >= 3:
        table = bytearray()
        for kind, bit, name in h.feature_table:
            table += struct.pack(">BB46s", kind, bit, name.encode("utf-8")[:46])
        ext(EXT_FEATURE_TABLE, bytes(table))
    if h.bitmaps_ext is not None:
        nb, dsize, doff = h.bitmaps_ext
        ext(EXT_BITMAPS, BITMAPS_EXT.pack(nb, 0, dsize, doff))
    for ext_type, data in h.unknown_extensions:
        if ext_type != EXT_CRYPTO:
            ext(ext_type, data)
    out.extend(EXT_HEADER.pack(EXT_END, 0))
    return bytes(out)


def header_cluster_bytes(h, cluster_size):
    """Header, extensions and backing name as they go at offset 0; sets backing_file_offset/size.

    Like QEMU, the (optional) feature name table is left out when it would not fit in the cluster.
    """
    name = h.backing_file.encode("utf-8", "surrogateescape") if h.backing_file is not None else b""
    if len(name) > MAX_BACKING_NAME:
        raise ImageCorrupt("Backing file name too long")
    if not name:
        h.backing_file_offset = h.backing_file_size = 0   # before serializing: no stale name offset
    table = h.feature_table
    for attempt in (table, []):
        h.feature_table = attempt
        raw = serialize(h)
        if len(raw) + len(name) <= cluster_size:
            break
    else:
        h.feature_table = table
        raise ImageCorrupt("Header extensions and backing file name do not fit in one cluster")
    if name:
        h.backing_file_offset, h.backing_file_size = len(raw), len(name)
        raw = serialize(h)
    h.feature_table = table
    return raw + name
