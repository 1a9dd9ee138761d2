# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compressed clusters: raw deflate (zlib without header, as QEMU writes) and optional zstd."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import zlib

from ...errors import ImageCorrupt, UnsupportedFeature
from .header import COMPRESSION_ZLIB, COMPRESSION_ZSTD


# Where zstd comes from, best first: the standard library's (Python 3.14), its backport, then the
# two third-party bindings. The first two and pyzstd share one API.
ZSTD_MODULES = ("compression.zstd", "backports.zstd", "zstandard", "pyzstd")
ZSTD_NEEDED = "compression.zstd (Python 3.14) or the backports.zstd, zstandard or pyzstd Python package"
_ZSTD = []


def _zstd_module():
    """The zstd module to use (found once), or None."""
    if not _ZSTD:
        found = None
        for name in ZSTD_MODULES:
            try:
                mod = __import__(name, globals(), None, ["ZstdDecompressor"], 0)
            except ImportError:
                continue
            if hasattr(mod, "ZstdDecompressor"):
                found = mod
                break
        _ZSTD.append(found)
    return _ZSTD[0]


def zstd_available():
    return _zstd_module() is not None


def decompress_cluster(data, cluster_size, ctype, filename):
    """Decompress one cluster's worth; data may carry trailing garbage (sector padding)."""
    if ctype == COMPRESSION_ZLIB:
        try:
            d = zlib.decompressobj(-15)
            out = d.decompress(data, cluster_size)
        except zlib.error as e:
            raise ImageCorrupt("%s: cannot decompress cluster: %s" % (filename, e))
    elif ctype == COMPRESSION_ZSTD:
        mod = _zstd_module()
        if mod is None:
            raise UnsupportedFeature("%s: zstd-compressed clusters need %s" % (filename, ZSTD_NEEDED))
        try:
            if mod.__name__ == "zstandard":
                out = mod.ZstdDecompressor().decompressobj().decompress(data)[:cluster_size]
            else:   # compression.zstd, backports.zstd, pyzstd: one frame, trailing padding ignored
                out = mod.ZstdDecompressor().decompress(data, max_length=cluster_size)
        except Exception as e:  # zstd libraries raise their own error types
            raise ImageCorrupt("%s: cannot decompress cluster: %s" % (filename, e))
    else:
        raise UnsupportedFeature("%s: unknown compression type %d" % (filename, ctype))
    if len(out) != cluster_size:
        raise ImageCorrupt("%s: compressed cluster decompresses to %d bytes, expected %d"
                           % (filename, len(out), cluster_size))
    return out


def compress_cluster(data, ctype):
    """Compress one cluster; returns None when compression does not save space."""
    if ctype == COMPRESSION_ZLIB:
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -12)
        out = c.compress(data) + c.flush()
    elif ctype == COMPRESSION_ZSTD:
        mod = _zstd_module()
        if mod is None:
            raise UnsupportedFeature("zstd compression needs %s" % ZSTD_NEEDED)
        if mod.__name__ == "zstandard":
            out = mod.ZstdCompressor().compress(data)
        else:
            out = mod.compress(data)
    else:
        raise UnsupportedFeature("unknown compression type %d" % ctype)
    return out if len(out) < len(data) else None
