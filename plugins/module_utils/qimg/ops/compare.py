# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`compare`: do two images hold the same guest content?

Ranges that read as zeros in both images (holes, zero clusters, unallocated everywhere) are
skipped without reading. A larger image equals a smaller one when its tail reads as zeros,
unless strict. Offsets are reported like qemu-img: the first differing 512-byte sector.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import threading

try:
    import queue
except ImportError:  # Python 2 spelling, for sanity tests on old interpreters
    import Queue as queue  # type: ignore

from ..errors import BlockIOError
from ..fileio import BufferPool, zero_view
from ..image import chain_block_status, open_image
from ..protocols.cache import cache_mode

CHUNK = 8 << 20          # guest bytes per block status step of a tail scan
WINDOW = 64 << 20        # guest bytes whose block status is taken at once
BUF = 2 << 20            # bytes of each image read per step (qemu-img compare reads 2 MiB too)
SECTOR = 512

IDENTICAL = "identical"
CONTENT_MISMATCH = "content-mismatch"
SIZE_MISMATCH = "size-mismatch"          # strict only
STATUS_MISMATCH = "block-status-mismatch"  # strict only


def _first_diff(a, b, lo, hi):
    """Offset of the first differing 512-byte sector of a[lo:hi] and b[lo:hi] (counted from lo,
    None if equal). a is bytes or a bytearray, b any buffer; startswith() with a view of b is a
    memcmp in place, without copies."""
    vb = memoryview(b)
    if a.startswith(vb[lo:hi], lo, hi):
        return None
    base, end = lo, hi
    # binary search on prefixes, in whole sectors from base
    while end - lo > SECTOR:
        mid = base + (lo - base + (end - lo) // 2) // SECTOR * SECTOR
        if mid <= lo:
            mid = lo + SECTOR
        if a.startswith(vb[lo:mid], lo, mid):
            lo = mid
        else:
            end = mid
    return lo - base


def _status(dev, pos, n):
    """[(start, end, present, zero)] for the chain in [pos, pos+n)."""
    try:
        return [(e.start, e.start + e.length, e.present, e.zero) for e in chain_block_status(dev, pos, n)]
    except BlockIOError as e:
        if e.message.startswith("Error while reading"):
            raise
        raise BlockIOError(e.errno, pos, "Error while reading offset %d of %s: %s" % (pos, dev.filename, e.message))


def _fill(dev, zero, buf, pos, p, q):
    view = memoryview(buf)[p - pos:q - pos]
    if zero:
        view[:] = zero_view(q - p)
    else:
        try:
            dev.readinto(p, view)
        except BlockIOError as e:
            if e.message.startswith("Error while reading"):
                raise
            raise BlockIOError(e.errno, p, "Error while reading offset %d of %s: %s" % (p, dev.filename, e.message))


def _chunks(dev1, dev2, start, end, strict, pool, stop):
    """Yield (pos, ranges, bufs, status_mismatch) per buffer: bufs (a pooled pair, or None) hold
    both contents of each range [lo, hi) (offsets from pos) to compare; status_mismatch is the
    offset of a strict-mode block status mismatch, which ends the scan after those ranges.

    Block status is taken a window at a time; ranges that read as zeros in both images are
    skipped without reading, and only the rest fills buffers of BUF bytes (small buffers: page
    faults on big fresh ones cost more than the extra steps)."""
    wpos = start
    while wpos < end and not stop.is_set():
        wend = min(end, wpos + WINDOW)
        st1, st2 = _status(dev1, wpos, wend - wpos), _status(dev2, wpos, wend - wpos)
        i = j = 0
        p = wpos
        bpos, ranges, bufs = None, [], None
        while p < wend:
            while st1[i][1] <= p:
                i += 1
            while st2[j][1] <= p:
                j += 1
            s1, s2 = st1[i], st2[j]
            q = min(s1[1], s2[1])
            if strict and (s1[2], s1[3]) != (s2[2], s2[3]):
                yield (p if bpos is None else bpos), ranges, bufs, p
                return
            if s1[3] and s2[3]:
                p = q
                continue
            while p < q:
                if bpos is not None and p >= bpos + BUF:
                    yield bpos, ranges, bufs, None
                    bpos, ranges, bufs = None, [], None
                if bpos is None:
                    bufs = pool.get(stop)
                    if bufs is None:
                        return
                    bpos = p
                r = min(q, bpos + BUF)
                _fill(dev1, s1[3], bufs[0], bpos, p, r)
                _fill(dev2, s2[3], bufs[1], bpos, p, r)
                ranges.append((p - bpos, r - bpos))
                p = r
        if bpos is not None:
            yield bpos, ranges, bufs, None
        wpos = wend


def _read_ahead(make_gen, depth=2):
    """Run the generator make_gen(stop) in a thread, `depth` items ahead (reads release the GIL),
    for overlap of reading and comparing. Exceptions reach the consumer."""
    q = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run():
        try:
            for item in make_gen(stop):
                if stop.is_set():
                    return
                q.put((True, item))
            q.put((False, None))
        except BaseException as e:  # handed over to the consumer
            q.put((False, e))

    t = threading.Thread(target=run)
    t.daemon = True
    t.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                if item is not None:
                    raise item
                return
            yield item
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        t.join()


def _scan(dev1, dev2, start, end, strict):
    """Compare [start, end) of both; returns (kind, offset) or None when equal."""
    pool = BufferPool(4, lambda: (bytearray(BUF), bytearray(BUF)))
    for pos, ranges, bufs, status_mismatch in _read_ahead(
            lambda stop: _chunks(dev1, dev2, start, end, strict, pool, stop)):
        for lo, hi in ranges:
            d = _first_diff(bufs[0], bufs[1], lo, hi)
            if d is not None:
                return CONTENT_MISMATCH, pos + lo + d
        if status_mismatch is not None:
            return STATUS_MISMATCH, status_mismatch
        if bufs is not None:
            pool.release(bufs)
    return None


def _tail_nonzero(dev, start, end):
    """First non-zero sector of dev in [start, end), or None."""
    pos = start
    while pos < end:
        n = min(CHUNK, end - pos)
        for e in chain_block_status(dev, pos, n):
            if e.zero:
                continue
            try:
                data = dev.read(e.start, e.length)
            except BlockIOError as err:
                raise BlockIOError(err.errno, e.start, "Error while reading offset %d of %s: %s"
                                   % (e.start, dev.filename, err.message))
            d = _first_diff(data, zero_view(len(data)), 0, len(data))
            if d is not None:
                return e.start + d
        pos += n
    return None


def compare_images(filename1, filename2, fmt1=None, fmt2=None, strict=False, force_share=False,
                   allow_unsafe_backing=False, src_cache=None):
    """Returns {"result": IDENTICAL|CONTENT_MISMATCH|SIZE_MISMATCH|STATUS_MISMATCH,
    "offset": first differing offset or None, "size-mismatch": bool}.

    "size-mismatch" is true when the sizes differ (qemu-img then warns "Warning: Image size
    mismatch!" before it compares); the larger image's tail must read as zeros."""
    mode = cache_mode(src_cache, source=True)  # qemu-img compare's -T (default writeback)
    with open_image(filename1, fmt1, read_only=True, force_share=force_share,
                    allow_unsafe_backing=allow_unsafe_backing, cache=mode) as dev1:
        with open_image(filename2, fmt2, read_only=True, force_share=force_share,
                        allow_unsafe_backing=allow_unsafe_backing, cache=mode) as dev2:
            return compare_devices(dev1, dev2, strict)


def compare_devices(dev1, dev2, strict=False):
    """compare_images() of two open devices, which the caller keeps (the CLI has them open
    already; an NBD server may take one connection at a time, so they are not opened twice)."""
    size_mismatch = dev1.size != dev2.size
    if size_mismatch and strict:
        return {"result": SIZE_MISMATCH, "offset": None, "size-mismatch": True}
    common = min(dev1.size, dev2.size)
    found = _scan(dev1, dev2, 0, common, strict)
    if found is None and size_mismatch:
        bigger = dev1 if dev1.size > dev2.size else dev2
        off = _tail_nonzero(bigger, common, bigger.size)
        if off is not None:
            found = (CONTENT_MISMATCH, off)
    if found is None:
        return {"result": IDENTICAL, "offset": None, "size-mismatch": size_mismatch}
    return {"result": found[0], "offset": found[1], "size-mismatch": size_mismatch}
