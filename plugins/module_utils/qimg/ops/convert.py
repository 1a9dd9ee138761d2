# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`convert`: copy guest content from one or more images (concatenated) into a new image.

Reading runs in a background thread one chunk ahead of writing (os.pread/os.pwrite and zlib
release the GIL); holes and zero runs in the source are never written as data; compression runs
in a thread pool. The output goes to a temporary file that is renamed into place when complete,
except with target_exists (-n), which writes into the existing image.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import threading
import time

try:
    import queue
except ImportError:  # Python 2 spelling, for sanity tests on old interpreters
    import Queue as queue  # type: ignore

from ..errors import ImageNotFound, InvalidArgument, UnsupportedFeature
from ..formats.qcow2.compress import compress_cluster, zstd_available
from ..formats.qcow2.writer import Qcow2StreamWriter
from ..fileio import pwrite_all
from ..image import chain_block_status, full_backing_path, open_image
from ..util import atomic_output
from .create import normalize_options

CHUNK = 4 << 20          # guest bytes per pipeline step
COMPRESS_BATCH = 32      # clusters handed to one compression task


def _open_sources(filenames, fmt, snapshot, force_share):
    devs = []
    try:
        for name in filenames:
            dev = open_image(name, fmt, read_only=True, force_share=force_share)
            devs.append(dev)
            if snapshot:
                if dev.format_name != "qcow2":
                    raise UnsupportedFeature("Failed to load snapshot: '%s' has no internal snapshots" % name)
                snap_id, snap_name = snapshot
                if snap_id is None and snap_name is not None:
                    # `-s X` / `-l X`: an id first, then a name, as QEMU looks it up
                    try:
                        dev.activate_snapshot(snapshot_id=snap_name)
                        continue
                    except ImageNotFound:
                        pass
                dev.activate_snapshot(snapshot_id=snap_id, name=snap_name)
        return devs
    except BaseException:
        for dev in devs:
            dev.close()
        raise


def parse_snapshot_param(text):
    """`-l` syntax: "snapshot.id=ID,snapshot.name=NAME" or a bare id-or-name."""
    if text is None:
        return None
    if "=" not in text:
        return (None, text)
    snap_id = snap_name = None
    for item in text.split(","):
        key, _, value = item.partition("=")
        if key == "snapshot.id":
            snap_id = value
        elif key == "snapshot.name":
            snap_name = value
        else:
            raise InvalidArgument("Invalid parameter '%s'" % key)
    return (snap_id, snap_name)


def _source_segments(devs, start, length):
    """(offset, length, data-or-None) over the concatenated sources; None means reads as zeros."""
    out = []
    base = 0
    end = start + length
    for dev in devs:
        lo, hi = max(start, base), min(end, base + dev.size)
        if lo < hi:
            for ext in chain_block_status(dev, lo - base, hi - lo):
                if ext.zero:
                    out.append((base + ext.start, ext.length, None))
                else:
                    out.append((base + ext.start, ext.length, dev.read(ext.start, ext.length)))
        base += dev.size
    return out


def _split_zeros(offset, data, sparse_size):
    """Cut data into (offset, length, data-or-None), turning aligned all-zero blocks into None."""
    if sparse_size <= 0:
        return [(offset, len(data), data)]
    view = memoryview(data)
    if not data.strip(b"\0"):
        return [(offset, len(data), None)]
    zero_block = bytes(sparse_size)
    out = []
    pos = 0
    n = len(data)
    run_start, run_zero = 0, None
    while pos < n:
        # blocks are aligned to the guest offset so that results do not depend on chunking
        nxt = min(n, (offset + pos) // sparse_size * sparse_size + sparse_size - offset)
        is_zero = (nxt - pos == sparse_size and view[pos:nxt] == zero_block)
        if run_zero is None:
            run_zero = is_zero
        elif is_zero != run_zero:
            out.append((offset + run_start, pos - run_start, None if run_zero else view[run_start:pos]))
            run_start, run_zero = pos, is_zero
        pos = nxt
    out.append((offset + run_start, n - run_start, None if run_zero else view[run_start:n]))
    return out


def _reader(devs, total, sparse_size, q, stop):
    try:
        pos = 0
        while pos < total and not stop.is_set():
            n = min(CHUNK, total - pos)
            pieces = []
            for off, ln, data in _source_segments(devs, pos, n):
                if data is None:
                    pieces.append((off, ln, None))
                else:
                    pieces.extend(_split_zeros(off, data, sparse_size))
            q.put(("chunk", pos, n, pieces))
            pos += n
        q.put(("end", None, None, None))
    except BaseException as e:  # handed to the writing thread, which re-raises it
        q.put(("error", e, None, None))


def _chunks(devs, total, sparse_size):
    """Yield (pos, n, pieces) with reading one chunk ahead in a thread."""
    q = queue.Queue(maxsize=2)
    stop = threading.Event()
    t = threading.Thread(target=_reader, args=(devs, total, sparse_size, q, stop))
    t.daemon = True
    t.start()
    try:
        while True:
            kind, a, b, c = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise a
            yield a, b, c
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        t.join()


class _Progress(object):
    def __init__(self, callback, total):
        self.callback = callback
        self.total = total
        self.start = time.time()

    def __call__(self, done):
        if self.callback is not None:
            self.callback(done, self.total, time.time() - self.start)


def _write_raw(fd, chunks, total, fully_allocated, progress):
    os.ftruncate(fd, total)
    for pos, n, pieces in chunks:
        for off, ln, data in pieces:
            if data is not None:
                pwrite_all(fd, off, data)
            elif fully_allocated:
                pwrite_all(fd, off, bytes(ln))
        progress(pos + n)


def _cluster_pieces(pieces, cs, total):
    """Regroup (off, len, data) pieces into whole target clusters: (first cluster, [cluster data|None])."""
    clusters = []
    first = None
    for off, ln, data in pieces:
        if first is None:
            first = off // cs
        end = off + ln
        pos = off
        while pos < end:
            idx = pos // cs
            in_off = pos % cs
            m = min(end - pos, cs - in_off)
            k = idx - first
            while len(clusters) <= k:
                clusters.append(None)
            if data is not None:
                cur = clusters[k]
                if cur is None:
                    cur = clusters[k] = bytearray(min(cs, total - idx * cs))
                cur[in_off:in_off + m] = data[pos - off:pos - off + m]
            pos += m
    return first, clusters


def _write_qcow2(writer, chunks, total, cs, compress, ctype, fully_allocated, backing, progress):
    pool = None
    if compress:
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(max_workers=max(2, (os.cpu_count() or 2)))
    carry = []  # pieces of a target cluster that straddles chunk boundaries
    try:
        for pos, n, pieces in chunks:
            pieces = carry + pieces
            end = pos + n
            cut = end if end == total else end // cs * cs
            carry = [(o, ln, d) for o, ln, d in _clip(pieces, cut, None)]
            pieces = list(_clip(pieces, None, cut))
            if pieces:
                first, clusters = _cluster_pieces(pieces, cs, total)
                _emit(writer, first, clusters, cs, total, compress, ctype, fully_allocated, backing, pool)
            progress(end)
        if carry:
            first, clusters = _cluster_pieces(carry, cs, total)
            _emit(writer, first, clusters, cs, total, compress, ctype, fully_allocated, backing, pool)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _clip(pieces, lo, hi):
    for off, ln, data in pieces:
        s, e = off, off + ln
        if lo is not None:
            s = max(s, lo)
        if hi is not None:
            e = min(e, hi)
        if s < e:
            yield (s, e - s, None if data is None else data[s - off:e - off])


def _emit(writer, first, clusters, cs, total, compress, ctype, fully_allocated, backing, pool):
    todo = []
    for k, data in enumerate(clusters):
        gc = first + k
        if backing is not None:
            start = gc * cs
            want = bytes(data) if data is not None else None
            below = backing.read(start, min(cs, backing.size - start)) if start < backing.size else b""
            if want is None:
                if below.strip(b"\0"):
                    writer.zero_cluster(gc)
                continue
            if want[:len(below)] == below and not want[len(below):].strip(b"\0"):
                continue  # same as the backing file: leave unallocated
            todo.append((gc, want))
            continue
        if data is None:
            if fully_allocated:
                todo.append((gc, bytes(min(cs, total - gc * cs))))
            continue
        todo.append((gc, data))
    if not todo:
        return
    if compress:
        def work(batch):
            return [(gc, d, compress_cluster(bytes(d) + bytes(cs - len(d)), ctype)) for gc, d in batch]
        batches = [todo[i:i + COMPRESS_BATCH] for i in range(0, len(todo), COMPRESS_BATCH)]
        for result in pool.map(work, batches):
            for gc, d, cdata in result:
                if cdata is None:
                    writer.write_clusters(gc, d)
                else:
                    writer.write_compressed(gc, cdata)
        return
    # contiguous guest clusters go out as one write
    i = 0
    while i < len(todo):
        j = i + 1
        while j < len(todo) and todo[j][0] == todo[j - 1][0] + 1:
            j += 1
        writer.write_clusters(todo[i][0], b"".join(bytes(d) for _, d in todo[i:j]))
        i = j


def _write_into(dev, chunks, target_is_zero, progress):
    """-n: write into an existing image through the generic driver."""
    for pos, n, pieces in chunks:
        for off, ln, data in pieces:
            if off >= dev.size:
                continue
            ln = min(ln, dev.size - off)
            if data is not None:
                dev.write(off, bytes(data[:ln]))
            elif not target_is_zero:
                dev.write_zeroes(off, ln)
        progress(pos + n)


def convert(sources, dest, src_fmt=None, out_fmt="raw", options=None, compress=False,
            sparse_size=4096, snapshot=None, backing_file=None, backing_fmt=None,
            target_exists=False, target_is_zero=False, progress=None, force_share=False):
    """Convert sources (concatenated) into dest. Returns {"virtual-size": n}."""
    if not sources:
        raise InvalidArgument("Expecting at least one source image")
    if sparse_size < 0 or sparse_size % 512:
        raise InvalidArgument("Invalid buffer size for sparse output specified")
    opts = normalize_options(out_fmt, None, options, backing_file, backing_fmt)
    backing_file = opts.pop("backing_file", None)
    backing_fmt = opts.pop("backing_fmt", None)
    if compress and out_fmt != "qcow2":
        raise InvalidArgument("Compression not supported for this file format")
    if backing_file and out_fmt != "qcow2":
        raise InvalidArgument("Backing file not supported for file format '%s'" % out_fmt)
    ctype_name = opts.get("compression_type", "zlib")
    if compress and ctype_name == "zstd" and not zstd_available():
        raise UnsupportedFeature("zstd compression needs the zstandard or pyzstd Python package")
    if target_exists and target_is_zero is None:
        target_is_zero = False
    devs = _open_sources(sources, src_fmt, parse_snapshot_param(snapshot), force_share)
    try:
        total = sum(d.size for d in devs)
        report = _Progress(progress, total)
        fully_allocated = sparse_size == 0
        if target_exists:
            with open_image(dest, None if out_fmt is None else out_fmt, read_only=False) as target:
                if target.size < total:
                    raise InvalidArgument("Output image is too small")
                _write_into(target, _chunks(devs, total, sparse_size), target_is_zero, report)
            return {"virtual-size": total}
        if "size" in opts and opts["size"] != total:
            raise InvalidArgument("Invalid parameter 'size'")
        if out_fmt == "raw":
            prealloc = opts.get("preallocation", "off")

            def build(fd):
                _write_raw(fd, _chunks(devs, total, sparse_size), total, fully_allocated or prealloc == "full",
                           report)
                if prealloc == "falloc" and total:
                    os.posix_fallocate(fd, 0, total)
            atomic_output(dest, build)
            return {"virtual-size": total}
        if out_fmt != "qcow2":
            raise InvalidArgument("Unknown file format '%s'" % out_fmt)
        if opts.get("preallocation", "off") != "off":
            raise UnsupportedFeature("convert with preallocation is not supported yet")
        backing = None
        if backing_file:
            path = full_backing_path(dest, backing_file)
            backing = open_image(path, backing_fmt, read_only=True, force_share=True)
            backing_fmt = backing_fmt or backing.format_name
        try:
            create_opts = dict(cluster_size=opts.get("cluster_size", 65536), compat=opts.get("compat", "1.1"),
                               refcount_bits=opts.get("refcount_bits", 16),
                               lazy_refcounts=opts.get("lazy_refcounts", False),
                               extended_l2=opts.get("extended_l2", False), compression_type=ctype_name,
                               backing_file=backing_file, backing_fmt=backing_fmt)
            size = (total + 511) // 512 * 512

            def build_qcow2(fd):
                writer = Qcow2StreamWriter(fd, size, **create_opts)
                _write_qcow2(writer, _chunks(devs, total, sparse_size), total, writer.cs, compress,
                             writer.header.compression_type, fully_allocated, backing, report)
                writer.finish()
            atomic_output(dest, build_qcow2)
        finally:
            if backing is not None:
                backing.close()
        return {"virtual-size": total}
    finally:
        for dev in devs:
            dev.close()
