# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""L1/L2 entry bits (QEMU docs/interop/qcow2.txt, "Cluster mapping") and whole-table codecs."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import sys

from ...fileio import zero_bytes

OFFSET_MASK = 0x00FFFFFFFFFFFE00    # bits 9-55: host offset of an L2 table or data cluster
COPIED = 1 << 63                    # refcount is exactly one (active tables only)
COMPRESSED = 1 << 62
ZERO_FLAG = 1                       # v3 standard cluster reads as zeros
L1E_RESERVED = 0x7F000000000001FF
L2E_RESERVED = 0x3F000000000001FE
ALL_SUBCLUSTERS = 0xFFFFFFFF        # extended L2: allocation bits of all 32 subclusters
ALL_ZERO_BITS = ALL_SUBCLUSTERS << 32
_LITTLE = sys.byteorder == "little"


def decode_table(raw):
    """Big-endian 64-bit entries -> array('Q') in host order (one C call, no per-entry Python)."""
    from array import array  # here, not at the top: importing array imports collections (start-up time)
    arr = array("Q", raw)
    if _LITTLE:
        arr.byteswap()
    return arr


def encode_table(arr):
    from array import array
    out = array("Q", arr)
    if _LITTLE:
        out.byteswap()
    return out.tobytes()


_NONZERO_BYTES = bytes([0]) + bytes([1]) * 255


def nonzero_entries(raw, entry_size):
    """Byte offsets of the entries of raw (a table) that are not all zeros, found in C.

    Empty tables and tables whose only entries lead (the common layouts) are settled with one
    memcmp; otherwise translate() marks non-zero bytes and find() (memchr) skips empty runs.
    """
    n = len(raw)
    zeros = zero_bytes(n)
    if raw == zeros:
        return
    pos = 0
    while pos < n and raw[pos:pos + entry_size] != zeros[:entry_size]:
        yield pos
        pos += entry_size
    if raw[pos:] == zeros[pos:]:
        return
    flags = raw.translate(_NONZERO_BYTES)
    pos = flags.find(b"\1", pos)
    while pos >= 0:
        start = pos - pos % entry_size
        yield start
        pos = flags.find(b"\1", start + entry_size)
