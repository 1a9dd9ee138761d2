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

from ..image import chain_block_status, open_image

CHUNK = 8 << 20
SECTOR = 512

IDENTICAL = "identical"
CONTENT_MISMATCH = "content-mismatch"
SIZE_MISMATCH = "size-mismatch"          # strict only
STATUS_MISMATCH = "block-status-mismatch"  # strict only


def _first_diff(a, b):
    """Offset of the first differing 512-byte sector of two equal-length buffers (None if equal)."""
    if a == b:
        return None
    lo, hi = 0, len(a)
    # binary search on prefixes: bytes comparisons stay in C
    while hi - lo > SECTOR:
        mid = (lo + (hi - lo) // 2) // SECTOR * SECTOR
        if mid <= lo:
            mid = lo + SECTOR
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _status(dev, pos, n):
    """[(start, end, present, zero)] for the chain in [pos, pos+n)."""
    return [(e.start, e.start + e.length, e.present, e.zero) for e in chain_block_status(dev, pos, n)]


def _segments(dev1, dev2, start, end, strict):
    """Yield (p, kind, a, b): the next range to compare with both contents, or a strict-mode
    status mismatch (kind STATUS_MISMATCH). Ranges that read as zeros in both are skipped."""
    pos = start
    while pos < end:
        n = min(CHUNK, end - pos)
        st1, st2 = _status(dev1, pos, n), _status(dev2, pos, n)
        i = j = 0
        p = pos
        while p < pos + n:
            while st1[i][1] <= p:
                i += 1
            while st2[j][1] <= p:
                j += 1
            s1, s2 = st1[i], st2[j]
            q = min(s1[1], s2[1])
            if strict and (s1[2], s1[3]) != (s2[2], s2[3]):
                yield p, STATUS_MISMATCH, None, None
                return
            if not (s1[3] and s2[3]):
                a = bytes(q - p) if s1[3] else dev1.read(p, q - p)
                b = bytes(q - p) if s2[3] else dev2.read(p, q - p)
                yield p, CONTENT_MISMATCH, a, b
            p = q
        pos += n


def _read_ahead(gen, depth=2):
    """Run a generator in a thread, `depth` items ahead (reads release the GIL), for overlap of
    reading and comparing. Exceptions reach the consumer."""
    q = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def run():
        try:
            for item in gen:
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
    for p, kind, a, b in _read_ahead(_segments(dev1, dev2, start, end, strict)):
        if kind == STATUS_MISMATCH:
            return kind, p
        d = _first_diff(a, b)
        if d is not None:
            return CONTENT_MISMATCH, p + d
    return None


def _tail_nonzero(dev, start, end):
    """First non-zero sector of dev in [start, end), or None."""
    pos = start
    while pos < end:
        n = min(CHUNK, end - pos)
        for e in chain_block_status(dev, pos, n):
            if e.zero:
                continue
            data = dev.read(e.start, e.length)
            if data.strip(b"\0"):
                d = _first_diff(data, bytes(len(data)))
                return e.start + d
        pos += n
    return None


def compare_images(filename1, filename2, fmt1=None, fmt2=None, strict=False, force_share=False):
    """Returns {"result": IDENTICAL|CONTENT_MISMATCH|SIZE_MISMATCH|STATUS_MISMATCH,
    "offset": first differing offset or None, "size-mismatch": bool}.

    "size-mismatch" is true when the sizes differ (qemu-img then warns "Warning: Image size
    mismatch!" before it compares); the larger image's tail must read as zeros."""
    with open_image(filename1, fmt1, read_only=True, force_share=force_share) as dev1:
        with open_image(filename2, fmt2, read_only=True, force_share=force_share) as dev2:
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
