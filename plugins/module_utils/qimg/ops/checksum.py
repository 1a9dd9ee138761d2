# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`checksum`: a digest of an image's guest-visible content, independent of its format.

The construction is blkhash's (the block hash of the ``blksum`` tool and ``libblkhash``, by Nir
Soffer; written here from its description, not from its code), so the same content gives the same
digest in raw, qcow2 (any options, compressed, encrypted, through a backing chain) and from
``blksum``. Its reference description (test/blkhash.py in the blkhash repository) reads:

    Compute block checksum for raw image.

    The hash is:

        H( H(block 1) || ... || H(block N) || length)

with ``BLOCK_SIZE = 64 * 1024`` ("Values must match the compiled values in blksum.c. Changing
these will change the computed checksum."), and the README: "Instead of computing a digest for the
entire image, it computes a digest of every block, and created a image digest from the block
digests. When detecting a block containing only zeroes, it uses a precomputed zero block digest."

What that means exactly, as the reference and the library do it:
- the message is cut into blocks of 64 KiB from offset 0; every block but the last is whole; the
  last one is hashed with its own (shorter) length, not padded;
- the outer hash H gets the binary digest (not the hex text) of each block in order, then the
  message length in bytes as 8 little-endian bytes (struct "<Q"); an empty message is H(le64(0));
- an all-zero whole block has the digest H(64 KiB of zeros), computed once.

The message is the guest-visible content, dev.size bytes: as QEMU (and so blksum through qemu-nbd)
sees a raw file whose size is no multiple of 512, it ends with zeros up to the next 512 bytes
(blksum reading such a file directly hashes the file's own length).

Ranges that block status reports as zero or unallocated (through the backing chain) are not read:
their blocks get the precomputed zero-block digest. Data is read one chunk ahead in this thread and
hashed in a thread pool (hashlib releases the GIL for buffers over 2 KiB).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import bisect
import collections
import hashlib
import os
import struct
import time

from ..errors import InvalidArgument
from ..fileio import zero_view
from ..image import chain_block_status, open_image
from ..protocols.cache import cache_mode

BLOCK_SIZE = 64 * 1024          # blkhash's block size: part of the digest's definition
CHUNK = 4 << 20                 # guest bytes read and handed to a hashing task at once
STATUS_WINDOW = 64 * CHUNK      # guest bytes whose block status is taken at once
MAX_STATUS_WINDOW = 1 << 40     # ... growing up to this over zero windows
ZERO_RUN_BLOCKS = 1 << 18       # zero-block digests fed to the outer hash per update (8 MiB of sha256)
DEFAULT_ALGORITHM = "sha256"

_LENGTH = struct.Struct("<Q")


def algorithms():
    """The algorithm names -a takes: hashlib's, less those with a variable digest length."""
    return sorted(a for a in hashlib.algorithms_available if not a.lower().startswith("shake"))


def new_hash(algorithm):
    """hashlib.new(algorithm), or InvalidArgument for a name hashlib lacks (or a shake_* XOF)."""
    name = (algorithm or "").lower()
    if name.startswith("shake"):
        raise InvalidArgument("Unsupported hash algorithm '%s': its digest length is not fixed" % algorithm)
    try:
        return hashlib.new(name)
    except (ValueError, TypeError):
        raise InvalidArgument("Unsupported hash algorithm '%s'" % algorithm)


class BlockHash(object):
    """The blkhash construction over a message given in order, as data (update) and known zeros
    (zero). Block digests may be computed elsewhere and fed with add_digests (for threads)."""

    def __init__(self, algorithm=DEFAULT_ALGORITHM):
        self.algorithm = algorithm
        self.outer = new_hash(algorithm)
        self.name = self.outer.name
        self.zero_md = self.block_digest(zero_view(BLOCK_SIZE))
        self._zero_run = None
        self.length = 0
        self.pending = bytearray()     # the start of a block not complete yet

    def block_digest(self, data):
        return hashlib.new(self.name, data).digest()

    def add_digests(self, digests, nbytes):
        """Block digests already computed for nbytes at a block boundary."""
        if self.pending:
            raise ValueError("add_digests() needs a block boundary")
        self.outer.update(b"".join(digests) if not isinstance(digests, bytes) else digests)
        self.length += nbytes

    def zero_blocks(self, count):
        """count whole zero blocks at a block boundary, without hashing them."""
        if self.pending:
            raise ValueError("zero_blocks() needs a block boundary")
        if self._zero_run is None:
            self._zero_run = self.zero_md * min(count, ZERO_RUN_BLOCKS)
        run_blocks = len(self._zero_run) // len(self.zero_md)
        left = count
        while left > 0:
            n = min(left, run_blocks)
            self.outer.update(self._zero_run if n == run_blocks else self._zero_run[:n * len(self.zero_md)])
            left -= n
        self.length += count * BLOCK_SIZE

    def update(self, data):
        """Data in message order (any length)."""
        view = memoryview(data)
        if self.pending:
            take = BLOCK_SIZE - len(self.pending)
            self.pending += view[:take]
            view = view[take:]
            if len(self.pending) < BLOCK_SIZE:
                return
            self.outer.update(self.block_digest(self.pending))
            self.length += BLOCK_SIZE
            self.pending = bytearray()
        whole = len(view) - len(view) % BLOCK_SIZE
        for off in range(0, whole, BLOCK_SIZE):
            self.outer.update(self.block_digest(view[off:off + BLOCK_SIZE]))
        self.length += whole
        if whole < len(view):
            self.pending += view[whole:]

    def zero(self, length):
        """length zero bytes in message order."""
        if self.pending:
            take = min(length, BLOCK_SIZE - len(self.pending))
            self.update(zero_view(take))
            length -= take
        if length >= BLOCK_SIZE:
            self.zero_blocks(length // BLOCK_SIZE)
            length %= BLOCK_SIZE
        if length:
            self.update(zero_view(length))

    def digest(self):
        if self.pending:
            self.outer.update(self.block_digest(self.pending))   # the short last block, as it is
            self.length += len(self.pending)
            self.pending = bytearray()
        self.outer.update(_LENGTH.pack(self.length))
        return self.outer.digest()

    def hexdigest(self):
        import binascii
        return binascii.hexlify(self.digest()).decode("ascii")


def _hash_chunk(name, buf, n, zero_md):
    """Block digests of buf[:n] (n a multiple of BLOCK_SIZE, or the image's short end)."""
    view = memoryview(buf)
    zero_block = zero_view(BLOCK_SIZE)
    out = []
    new = hashlib.new
    for off in range(0, n, BLOCK_SIZE):
        end = min(n, off + BLOCK_SIZE)
        if end - off == BLOCK_SIZE and buf.startswith(zero_block, off, end):
            out.append(zero_md)           # a memcmp instead of a hash (written zeros)
        else:
            out.append(new(name, view[off:end]).digest())
    return b"".join(out)


def _zero_ranges(dev, start, length):
    """[(s, e)] of [start, start+length) that read as zeros, merged."""
    runs = []
    for ext in chain_block_status(dev, start, length):
        if not ext.zero:
            continue
        s, e = ext.start, ext.start + ext.length
        if runs and runs[-1][1] == s:
            runs[-1] = (runs[-1][0], e)
        else:
            runs.append((s, e))
    return runs


def _fill(dev, pos, n, zeros, buf):
    """Read [pos, pos+n) into buf, writing zeros (not reading) where zeros (sorted) cover it."""
    view = memoryview(buf)
    cur = pos
    for s, e in zeros:
        s, e = max(s, pos), min(e, pos + n)
        if s >= e:
            continue
        if s > cur:
            dev.readinto(cur, view[cur - pos:s - pos])
        view[s - pos:e - pos] = zero_view(e - s)
        cur = e
    if cur < pos + n:
        dev.readinto(cur, view[cur - pos:n])


def _zero_end(zeros, pos):
    """The end of the zero range that contains pos (zeros sorted and merged), or pos."""
    i = bisect.bisect_right(zeros, (pos, float("inf"))) - 1
    if i >= 0 and zeros[i][0] <= pos < zeros[i][1]:
        return zeros[i][1]
    return pos


def digest_device(dev, algorithm=DEFAULT_ALGORITHM, progress=None, workers=None):
    """The blkhash digest (hex) of an open device's guest content.

    progress(done, total, elapsed), when given, is called after each chunk.
    """
    from concurrent.futures import ThreadPoolExecutor
    h = BlockHash(algorithm)
    total = dev.size
    workers = workers or max(1, os.cpu_count() or 1)
    pending = collections.deque()   # ["zero", nblocks] | ["data", future, nbytes, buf], in message order
    free = []
    max_inflight = 2 * workers + 2
    start_time = time.time()

    def drain(limit):
        while pending and (len(pending) > limit or pending[0][0] == "zero"):
            entry = pending.popleft()
            if entry[0] == "zero":
                h.zero_blocks(entry[1])
            else:
                h.add_digests(entry[1].result(), entry[2])
                free.append(entry[3])

    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            pos = 0
            window = STATUS_WINDOW
            while pos < total:
                wend = min(total, pos + window)
                zeros = _zero_ranges(dev, pos, wend - pos)
                # a window that is all zeros makes the next one larger (huge empty images)
                all_zero = len(zeros) == 1 and zeros[0][0] <= pos and zeros[0][1] >= wend
                window = min(window * 4, MAX_STATUS_WINDOW) if all_zero else STATUS_WINDOW
                while pos < wend:
                    zend = _zero_end(zeros, pos)
                    whole = (min(zend, wend) - pos) // BLOCK_SIZE * BLOCK_SIZE
                    if whole:
                        # whole zero blocks: no read, no hash (merged with a zero run before them)
                        if pending and pending[-1][0] == "zero":
                            pending[-1][1] += whole // BLOCK_SIZE
                        else:
                            pending.append(["zero", whole // BLOCK_SIZE])
                        pos += whole
                        continue
                    n = min(CHUNK, wend - pos)
                    buf = free.pop() if free else bytearray(CHUNK)
                    _fill(dev, pos, n, zeros, buf)
                    pending.append(["data", pool.submit(_hash_chunk, h.name, buf, n, h.zero_md), n, buf])
                    pos += n
                    drain(max_inflight)
                    if progress is not None:
                        progress(pos, total, time.time() - start_time)
            drain(0)
        except BaseException:
            for entry in pending:
                if entry[0] == "data":
                    entry[1].cancel()
            raise
    if progress is not None:
        progress(total, total, time.time() - start_time)
    return h.hexdigest()


def image_checksum(filename, fmt=None, algorithm=DEFAULT_ALGORITHM, force_share=False, progress=None,
                   allow_unsafe_backing=False, cache=None):
    """{"checksum": hex digest, "algorithm": name, "virtual-size": n} of an image's guest content."""
    new_hash(algorithm)   # an unknown algorithm fails before the image is opened
    with open_image(filename, fmt, read_only=True, force_share=force_share,
                    allow_unsafe_backing=allow_unsafe_backing, cache=cache_mode(cache, source=True)) as dev:
        digest = digest_device(dev, algorithm, progress)
        return {"checksum": digest, "algorithm": algorithm.lower(), "virtual-size": dev.size}
