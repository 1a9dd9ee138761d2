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

import bisect
import errno
import os
import threading
import time

try:
    import queue
except ImportError:  # Python 2 spelling, for sanity tests on old interpreters
    import Queue as queue  # type: ignore

from ..errors import BlockIOError, ImageInUse, ImageNotFound, InvalidArgument, UnsupportedFeature
from ..formats.qcow2.compress import ZSTD_NEEDED, compress_cluster, zstd_available
from ..formats.qcow2.writer import Qcow2StreamWriter
from ..fileio import BufferPool, zero_view
from ..image import BlockDevice, ChainExtent, chain_block_status, full_backing_path, open_image
from ..util import atomic_output
from ..protocols.file import HostFile
from ..protocols.cache import CONVERT_CACHE, cache_mode
from .create import data_file_options, host_options, normalize_options, with_data_file


class Tuning(object):
    """How qemu-img convert's -m, -W, -C and -r shape the copy (none of them changes the content).

    workers (-m, 1..16): threads that compress clusters for a compressed target (default: one
        per core, at least two).
    in_order (False with -W): qemu-img may then complete writes out of order. Our writers always
        write in guest order, which -W allows; it is kept so callers state what they asked for.
    copy_offload (-C): data of a raw source on a local file is copied into a new raw target with
        copy_file_range (in the kernel, a reflink where the file system shares extents) instead
        of being read and written; where the kernel refuses it for these files, the copy falls
        back to reading and writing, as qemu-img turns copy offloading off on the first failure.
    rate_limit (-r): bytes per second written to the target, on average (0: no limit).
    """

    def __init__(self, workers=None, in_order=True, copy_offload=False, rate_limit=0):
        if workers is not None and not 1 <= workers <= 16:
            raise InvalidArgument("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16")
        if rate_limit < 0:
            raise InvalidArgument("Invalid rate limit specified")
        self.workers = workers
        self.in_order = in_order
        self.copy_offload = copy_offload
        self.rate_limit = rate_limit


CHUNK = 4 << 20          # guest bytes per pipeline step (a multiple of every cluster size)
STATUS_WINDOW = 64 * CHUNK  # guest bytes whose block status is taken at once
COMPRESS_BATCH = 32      # clusters handed to one compression task
POOL_BUFFERS = 6         # chunk buffers: one being read, two queued, the rest being written


def _open_sources(filenames, fmt, snapshot, force_share, allow_unsafe_backing=False, cache=None):
    devs = []
    try:
        for name in filenames:
            if isinstance(name, BlockDevice):   # already open (dd's input window): convert closes it
                devs.append(name)
                continue
            dev = open_image(name, fmt, read_only=True, force_share=force_share,
                             allow_unsafe_backing=allow_unsafe_backing, cache=cache)
            devs.append(dev)
            if snapshot:
                activate_snapshot(dev, snapshot)
        return devs
    except BaseException:
        for dev in devs:
            dev.close()
        raise


def activate_snapshot(dev, snapshot):
    """Switch an open (read-only) image to an internal snapshot given as `-l`/`-s` text or (id, name)."""
    if dev.format_name != "qcow2":
        raise UnsupportedFeature("Failed to load snapshot: '%s' has no internal snapshots" % dev.filename)
    snap_id, snap_name = parse_snapshot_param(snapshot) if not isinstance(snapshot, tuple) else snapshot
    if snap_id is None and snap_name is not None:
        # a bare `-l X` / `-s X`: an id first, then a name, as QEMU looks it up
        try:
            return dev.activate_snapshot(snapshot_id=snap_name)
        except ImageNotFound:
            pass
    return dev.activate_snapshot(snapshot_id=snap_id, name=snap_name)


def parse_snapshot_param(text):
    """`-l` syntax: "snapshot.id=ID,snapshot.name=NAME" or a bare id-or-name."""
    if text is None:
        return None
    if "=" not in text:
        return (None, text)
    snap_id = snap_name = None
    for item in text.split(","):
        key, value = item.partition("=")[::2]
        if key == "snapshot.id":
            snap_id = value
        elif key == "snapshot.name":
            snap_name = value
        else:
            raise InvalidArgument("Invalid parameter '%s'" % key)
    return (snap_id, snap_name)


def _salvage_status(dev, start, length, warn):
    """chain_block_status() for --salvage (qemu-img's convert_iteration_sectors): a failing query
    is retried on a quarter of the range down to one sector, which is then taken as data."""
    out = []
    pos, end = start, start + length
    while pos < end:
        n = end - pos
        while True:
            try:
                exts = chain_block_status(dev, pos, n)
                break
            except BlockIOError as e:
                if n > 512:
                    n = ((n + 511) // 512 + 3) // 4 * 512
                    continue
                warn("error while reading block status at offset %d: %s" % (pos, e.message))
                exts = [ChainExtent(pos, min(512, end - pos), 0, True, False, True, None, None)]
                break
        out.extend(exts)
        pos = exts[-1].start + exts[-1].length if exts else end
    return out


def _salvage_readinto(dev, offset, view, warn):
    """dev.readinto() for --salvage (convert_co_read): a failing read is redone sector by sector,
    and the sectors that still fail read as zeros, each with qemu-img's warning."""
    try:
        dev.readinto(offset, view)
        return
    except BlockIOError:
        pass
    for i in range(0, len(view), 512):
        part = view[i:i + 512]
        try:
            dev.readinto(offset + i, part)
        except BlockIOError as e:
            warn("error while reading offset %d: %s" % (offset + i, e.message))
            part[:] = zero_view(len(part))


def _source_status(devs, start, length, salvage=None):
    """[(offset, length, zero, dev, dev_offset)] over the concatenated sources, merged zero runs.
    salvage: the warning callback of --salvage (None: errors propagate)."""
    out = []
    base = 0
    end = start + length
    for dev in devs:
        lo, hi = max(start, base), min(end, base + dev.size)
        if lo < hi:
            exts = chain_block_status(dev, lo - base, hi - lo) if salvage is None else \
                _salvage_status(dev, lo - base, hi - lo, salvage)
            for ext in exts:
                if ext.zero and out and out[-1][2] and out[-1][0] + out[-1][1] == base + ext.start:
                    last = out[-1]
                    out[-1] = (last[0], last[1] + ext.length, True, None, None)
                else:
                    out.append((base + ext.start, ext.length, ext.zero, dev, ext.start))
        base += dev.size
    return out


class CopyRange(object):
    """A piece of a raw source to be copied file to file (-C) instead of read: (fd, offset)."""
    __slots__ = ("fd", "offset")

    def __init__(self, fd, offset):
        self.fd, self.offset = fd, offset


def _offload_fd(dev):
    """The descriptor whose bytes are dev's guest bytes at the same offsets (a raw image on a
    local file, without O_DIRECT), or None."""
    from ..formats.raw import RawImage
    node = getattr(dev, "file", None)
    if not isinstance(dev, RawImage) or not isinstance(node, HostFile) or node.direct is not None:
        return None
    return node.fd


def _read_pieces(status, start, end, sparse_size, buf, salvage=None, offload=False, first=0):
    """Pieces (offset, length, data-or-None) of [start, end): data extents are read into buf (at
    their offset from start) and passed on as views of it, zero runs are None. offload (-C):
    data of a raw source on a local file becomes a CopyRange instead (not read, not checked for
    zeros, as qemu-img's copy offloading). status is sorted: the scan starts at status[first] and
    stops past end (a window's status is scanned once over its chunks, not once per chunk)."""
    view = memoryview(buf)
    pieces = []
    for i in range(first, len(status)):
        off, ln, zero, dev, dev_off = status[i]
        if off >= end:
            break
        s, e = max(off, start), min(off + ln, end)
        if s >= e:
            continue
        fd = _offload_fd(dev) if offload and not zero else None
        if zero:
            pieces.append((s, e - s, None))
        elif fd is not None:
            pieces.append((s, e - s, CopyRange(fd, dev_off + (s - off))))
        else:
            if salvage is None:
                dev.readinto(dev_off + (s - off), view[s - start:e - start])
            else:
                _salvage_readinto(dev, dev_off + (s - off), view[s - start:e - start], salvage)
            pieces.extend(_split_zeros(s, buf, s - start, e - start, sparse_size))
    return pieces


def _split_zeros(offset, buf, lo, hi, sparse_size):
    """Cut buf[lo:hi] (guest bytes from offset) into (offset, length, view-or-None), turning
    all-zero blocks of sparse_size bytes, aligned to the guest offset, into None.

    Works in C on buf in place: startswith() is a memcmp without a copy, and only the blocks whose
    first byte is zero (few, in real data) are compared one by one.
    """
    n = hi - lo
    view = memoryview(buf)
    if sparse_size <= 0:
        return [(offset, n, view[lo:hi])]
    if buf.startswith(zero_view(n), lo, hi):
        return [(offset, n, None)]
    first = lo + (-offset) % sparse_size          # the first whole block (aligned to the guest offset)
    count = max(0, (hi - first) // sparse_size)  # whole blocks; a partial head or tail is data
    zero_block = zero_view(sparse_size)
    heads = buf[first:first + count * sparse_size:sparse_size]
    out = []
    run_start = lo
    i = heads.find(0)
    while i >= 0:
        b = first + i * sparse_size
        if buf.startswith(zero_block, b, b + sparse_size):
            z = b + sparse_size
            i += 1
            while i < count and heads[i] == 0 and buf.startswith(zero_block, z, z + sparse_size):
                z += sparse_size
                i += 1
            if b > run_start:
                out.append((offset + run_start - lo, b - run_start, view[run_start:b]))
            out.append((offset + b - lo, z - b, None))
            run_start = z
        else:
            i += 1
        i = heads.find(0, i)
    if run_start < hi:
        out.append((offset + run_start - lo, hi - run_start, view[run_start:hi]))
    return out


def _reader(devs, total, sparse_size, q, stop, pool, salvage=None, offload=False):
    """Produce chunks (aligned to CHUNK): block status is taken a window at a time, and runs of
    chunks that read as zeros go out as one chunk without being read."""
    try:
        pos = 0
        while pos < total and not stop.is_set():
            # with --salvage, status and reads alternate per chunk (as qemu-img's warnings do)
            wend = min(total, pos + (STATUS_WINDOW if salvage is None else CHUNK))
            status = _source_status(devs, pos, wend - pos, salvage)
            zero_ends = [(off + ln) for off, ln, zero, dummy, dummy2 in status if zero]
            zero_starts = [off for off, ln, zero, dummy, dummy2 in status if zero]

            def all_zero(a, b):
                i = bisect.bisect_right(zero_starts, a) - 1
                return i >= 0 and zero_ends[i] >= b

            first = 0  # the first status entry that ends after pos
            while pos < wend and not stop.is_set():
                while first < len(status) and status[first][0] + status[first][1] <= pos:
                    first += 1
                n = min(CHUNK, wend - pos)
                if sparse_size and all_zero(pos, pos + n):  # (fully allocated output writes every chunk)
                    z = pos + n
                    while z < wend and all_zero(z, min(z + CHUNK, wend)):
                        z = min(z + CHUNK, wend)
                    q.put(("chunk", pos, z - pos, [(pos, z - pos, None)], None))
                    pos = z
                    continue
                buf = pool.get(stop)
                if buf is None:
                    break
                pieces = _read_pieces(status, pos, pos + n, sparse_size, buf, salvage, offload, first)
                q.put(("chunk", pos, n, pieces, buf))
                pos += n
        q.put(("end", None, None, None, None))
    except BaseException as e:  # handed to the writing thread, which re-raises it
        q.put(("error", e, None, None, None))


def _chunks(devs, total, sparse_size, salvage=None, offload=False):
    """Yield (pos, n, pieces, release) with reading one chunk ahead in a thread. The pieces' data
    are views of a pooled buffer (or CopyRange with offload): the consumer calls release() (None
    when nothing was read) once nothing it wrote still needs them. Close the generator before
    closing devs."""
    q = queue.Queue(maxsize=2)
    stop = threading.Event()
    pool = BufferPool(POOL_BUFFERS, lambda: bytearray(CHUNK))
    t = threading.Thread(target=_reader, args=(devs, total, sparse_size, q, stop, pool, salvage, offload))
    t.daemon = True
    t.start()
    try:
        while True:
            kind, a, b, c, buf = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise a
            yield a, b, c, (None if buf is None else _releaser(pool, buf))
    finally:
        stop.set()
        while t.is_alive():
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        t.join()


def _releaser(pool, buf):
    return lambda: pool.release(buf)


class _Progress(object):
    def __init__(self, callback, total):
        self.callback = callback
        self.total = total
        self.start = time.time()

    def __call__(self, done):
        if self.callback is not None:
            self.callback(done, self.total, time.time() - self.start)


def _write_raw(node, chunks, total, fully_allocated, progress):
    """Write the chunks into a raw file from this thread: a write into the page cache is a copy
    the reading thread overlaps anyway, and a third (writing) thread only adds GIL hand-offs
    (measured: more CPU and no gain on the qcow2 -> raw case of bench/bench_startup.py).
    node: the target's protocol node (aligned for O_DIRECT under cache=none)."""
    node.truncate(total)
    if total and not fully_allocated:
        # as QEMU's file driver, which allocates the first block of a file it creates
        node.pwrite(0, bytes(min(total, 512 if total < 4096 else 4096)))
    offload = [True]  # until the kernel refuses copy_file_range for these files
    for pos, n, pieces, release in chunks:
        try:
            for off, ln, data in pieces:
                if isinstance(data, CopyRange):
                    _copy_range(data, node, off, ln, offload)
                elif data is not None:
                    node.pwritev(off, [data])
                elif fully_allocated:
                    node.pwritev(off, [zero_view(ln)])
        finally:
            if release is not None:
                release()
        progress(pos + n)


_NO_OFFLOAD = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF, errno.EPERM)


def _copy_range(piece, node, off, ln, offload):
    """Copy ln source bytes at piece.offset to the target at off with copy_file_range; once the
    kernel refuses it (offload[0] turns False), read and write instead."""
    done = 0
    copy = getattr(os, "copy_file_range", None)
    while done < ln and offload[0] and copy is not None:
        try:
            n = copy(piece.fd, node.fd, ln - done, piece.offset + done, off + done)
        except OSError as e:
            if e.errno not in _NO_OFFLOAD:
                raise BlockIOError("error while writing at byte %d: %s" % (off + done, e.strerror))
            offload[0] = False
            break
        if n == 0:  # the source file ended early: the rest reads as zeros
            return
        done += n
    while done < ln:
        n = min(CHUNK, ln - done)
        node.pwrite(off + done, os.pread(piece.fd, n, piece.offset + done) or bytes(n))
        done += n


def _throttled(chunks, rate, fully_allocated):
    """-r: hand out the next chunk only when the bytes written so far are due at `rate` per second
    (qemu-img throttles the target's writes on average, the same way)."""
    start = time.monotonic()
    written = 0
    for item in chunks:
        yield item
        written += sum(ln for off, ln, data in item[2] if data is not None or fully_allocated)
        delay = start + written / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def _data_runs(pos, n, pieces, cs, fully_allocated):
    """Runs of target clusters in the chunk [pos, pos+n) that hold data: (first cluster, content).

    The chunk starts on a cluster boundary. content covers whole clusters (the image's last one
    may be short); a single piece that covers a run is passed on without copying.
    """
    first_c = pos // cs
    nc = -(-n // cs)
    has = bytearray(b"\1" * nc) if fully_allocated else bytearray(nc)
    for off, ln, data in pieces:
        if data is not None:
            a, b = (off - pos) // cs, (off + ln - 1 - pos) // cs
            has[a:b + 1] = b"\1" * (b - a + 1)
    c = 0
    while c < nc:
        if not has[c]:
            nxt = has.find(b"\1", c)
            if nxt < 0:
                return
            c = nxt
            continue
        stop = has.find(b"\0", c)
        stop = nc if stop < 0 else stop
        lo, hi = pos + c * cs, min(pos + n, pos + stop * cs)
        yield first_c + c, _assemble(pieces, lo, hi)
        c = stop


def _assemble(pieces, lo, hi):
    parts = []
    for off, ln, data in pieces:
        s, e = max(off, lo), min(off + ln, hi)
        if s >= e:
            continue
        if data is None:
            parts.append(zero_view(e - s))
        else:
            parts.append(data[s - off:e - off])
    if len(parts) == 1:
        return parts[0]
    return b"".join(parts)


def _subcluster_masks(pieces, gc, nbytes, cs):
    """Allocation bitmaps (extended L2) of the clusters gc.. covering nbytes: a subcluster is
    allocated when a data piece touches it."""
    sc = cs // 32
    lo, hi = gc * cs, gc * cs + nbytes
    masks = [0] * (-(-nbytes // cs))
    for off, ln, data in pieces:
        if data is None:
            continue
        s, e = max(off, lo), min(off + ln, hi)
        while s < e:
            c = (s - lo) // cs
            cend = min(e, lo + (c + 1) * cs)
            first, last = (s - lo - c * cs) // sc, (cend - 1 - lo - c * cs) // sc
            masks[c] |= ((1 << (last + 1)) - 1) ^ ((1 << first) - 1)
            s = cend
    return masks


def _write_qcow2(writer, chunks, cs, compress, ctype, fully_allocated, backing, progress, workers=None):
    pool = None
    if compress:
        from concurrent.futures import ThreadPoolExecutor
        pool = ThreadPoolExecutor(max_workers=workers or max(2, (os.cpu_count() or 2)))
    try:
        for pos, n, pieces, release in chunks:
            runs = _data_runs(pos, n, pieces, cs, fully_allocated)
            if writer.extended_l2 and backing is None and not compress and not fully_allocated:
                # as qemu-img: only the subclusters the data pieces touch are allocated
                for gc, content in runs:
                    writer.write_clusters(gc, content, _subcluster_masks(pieces, gc, len(content), cs))
                runs = ()
            if backing is not None:
                _emit_over_backing(writer, pos, n, list(runs), cs, backing)
            elif compress:
                _emit_compressed(writer, runs, cs, ctype, pool)
            else:
                for gc, content in runs:
                    writer.write_clusters(gc, content)
            if release is not None:
                writer.after_writes(release)
            progress(pos + n)
    finally:
        if pool is not None:
            pool.shutdown(wait=True)


def _emit_compressed(writer, runs, cs, ctype, pool):
    todo = []
    for gc, content in runs:
        view = memoryview(content)
        for k in range(0, len(view), cs):
            todo.append((gc + k // cs, view[k:k + cs]))

    def work(batch):
        out = []
        for gc, d in batch:
            raw = bytes(d)
            if len(raw) < cs:
                raw += bytes(cs - len(raw))
            out.append((gc, d, compress_cluster(raw, ctype)))
        return out
    batches = [todo[i:i + COMPRESS_BATCH] for i in range(0, len(todo), COMPRESS_BATCH)]
    for result in pool.map(work, batches):
        for gc, d, cdata in result:
            if cdata is None:
                writer.write_clusters(gc, d)
            else:
                writer.write_compressed(gc, cdata)


def _emit_over_backing(writer, pos, n, runs, cs, backing):
    """-B: store only clusters whose content differs from the backing file's."""
    by_cluster = {}
    for gc, content in runs:
        view = memoryview(content)
        for k in range(0, len(view), cs):
            by_cluster[gc + k // cs] = bytes(view[k:k + cs])
    for gc in range(pos // cs, -(-(pos + n) // cs)):
        start = gc * cs
        want = by_cluster.get(gc)
        below = backing.read(start, min(cs, backing.size - start)) if start < backing.size else b""
        if want is None:
            if below.strip(b"\0"):
                writer.zero_cluster(gc)
            continue
        if want[:len(below)] == below and not want[len(below):].strip(b"\0"):
            continue  # same as the backing file: leave it unallocated
        writer.write_clusters(gc, want)


def _write_into(dev, chunks, target_is_zero, progress):
    """-n: write into an existing image through the generic driver."""
    for pos, n, pieces, release in chunks:
        for off, ln, data in pieces:
            if off >= dev.size:
                continue
            ln = min(ln, dev.size - off)
            if data is not None:
                dev.write(off, bytes(data[:ln]))
            elif not target_is_zero:
                dev.write_zeroes(off, ln)
        if release is not None:
            release()
        progress(pos + n)


def _copy_bitmaps_into(src, target, skip_broken, warn):
    """-n --bitmaps: into the open qcow2 v3 target (checked before the copy, as qemu-img does)."""
    from ..formats.qcow2.bitmap_ops import copy_bitmaps
    copy_bitmaps(src, target, skip_broken, warn)


def convert(sources, dest, src_fmt=None, out_fmt="raw", options=None, compress=False,
            sparse_size=4096, snapshot=None, backing_file=None, backing_fmt=None,
            target_exists=False, target_is_zero=False, progress=None, force_share=False,
            allow_unsafe_backing=False, cache=None, src_cache=None, warn=None, salvage=None, tuning=None,
            bitmaps=False, skip_broken_bitmaps=False):
    """Convert sources (concatenated) into dest. Returns {"virtual-size": n}.

    tuning: a Tuning (qemu-img's -m, -W, -C, -r), default none of them.

    cache: the output's cache mode (qemu-img's `-t`, default unsafe: nothing is synced);
    src_cache: the sources' (`-T`, default writeback). warn(message) gets qemu's warnings.
    salvage: a callable taking a warning (qemu-img --salvage): block status and read errors of the
    sources are warned about and the unreadable sectors written as zeros.
    bitmaps: copy the persistent bitmaps of the (single, qcow2) source after the data (--bitmaps);
    skip_broken_bitmaps: leave out, with a warning, the inconsistent ones instead of failing."""
    mode = cache_mode(cache, default=CONVERT_CACHE)
    src_mode = cache_mode(src_cache, source=True)
    if not sources:
        raise InvalidArgument("Expecting at least one source image")
    if sparse_size < 0 or sparse_size % 512:
        raise InvalidArgument("Invalid buffer size for sparse output specified")
    # out_fmt None: --target-image-opts, the target's spec names its driver
    from ..crypto.convert import encrypted_target
    encrypted = not target_exists and encrypted_target(out_fmt, options)
    opts = normalize_options(out_fmt or "raw", None, options, backing_file, backing_fmt, allow_encryption=encrypted)
    hints = host_options(out_fmt or "raw", options)
    backing_file = opts.pop("backing_file", None)
    backing_fmt = opts.pop("backing_fmt", None)
    if compress and out_fmt != "qcow2":
        raise InvalidArgument("Compression not supported for this file format")
    if backing_file and out_fmt != "qcow2":
        raise InvalidArgument("Backing file not supported for file format '%s'" % out_fmt)
    ctype_name = opts.get("compression_type", "zlib")
    if compress and ctype_name == "zstd" and not zstd_available():
        raise UnsupportedFeature("zstd compression needs %s" % ZSTD_NEEDED)
    if target_exists and target_is_zero is None:
        target_is_zero = False
    if compress and sparse_size:
        # qemu-img writes a compressed target cluster by cluster and skips the all-zero ones:
        # -S has no other effect there
        sparse_size = opts.get("cluster_size", 65536)
    devs = _open_sources(sources, src_fmt, snapshot, force_share, allow_unsafe_backing, src_mode)
    total = sum(d.size for d in devs)
    if salvage is not None:
        # qemu-img first counts the allocated sectors (the status warnings come once from there)
        for dev in devs:
            _salvage_status(dev, 0, dev.size, salvage)
    tuning = tuning or Tuning()
    if tuning.copy_offload and (compress or salvage is not None):
        raise InvalidArgument("Cannot enable copy offloading when -c is used" if compress else
                              "Cannot use copy offloading in salvaging mode")
    offload = tuning.copy_offload and out_fmt == "raw" and not target_exists
    # (its reading thread starts on the first chunk)
    chunks = source_chunks = _chunks(devs, total, sparse_size, salvage, offload)
    try:
        report = _Progress(progress, total)
        fully_allocated = sparse_size == 0
        if tuning.rate_limit:
            chunks = _throttled(source_chunks, tuning.rate_limit, fully_allocated)
        if target_exists:
            with open_image(dest, None if out_fmt is None else out_fmt, read_only=False, cache=mode) as target:
                if bitmaps and (target.format_name != "qcow2" or target.header.version < 3):
                    raise UnsupportedFeature("Format driver '%s' does not support bitmaps" % target.format_name)
                if target.size < total:
                    raise InvalidArgument("Output image is too small")
                _write_into(target, chunks, target_is_zero, report)
                if bitmaps:
                    _copy_bitmaps_into(devs[0], target, skip_broken_bitmaps, warn)
            return {"virtual-size": total}
        if "size" in opts and opts["size"] != total:
            raise InvalidArgument("Invalid parameter 'size'")
        if encrypted:
            from ..crypto.convert import convert_into_encrypted
            convert_into_encrypted(dest, out_fmt, options, total,
                                   lambda dev, zero: _write_into(dev, chunks, zero, report),
                                   backing_file=backing_file, cache=mode, warn=warn)
            return {"virtual-size": total}
        if out_fmt == "raw":
            prealloc = opts.get("preallocation", "off")

            def build(node):
                _write_raw(node, chunks, total, fully_allocated or prealloc == "full",
                           report)
                if prealloc == "falloc" and total:
                    node.allocate(0, total)
            atomic_output(dest, build, cache=mode, warn=warn, **hints)
            return {"virtual-size": total}
        if out_fmt != "qcow2":
            raise InvalidArgument("Unknown file format '%s'" % out_fmt)
        if opts.get("preallocation", "off") != "off":
            raise UnsupportedFeature("convert with preallocation is not supported yet")
        backing = None
        if backing_file:
            path = full_backing_path(dest, backing_file)
            backing = open_image(path, backing_fmt, read_only=True, force_share=True,
                                 allow_unsafe_backing=allow_unsafe_backing, cache=mode)
            backing_fmt = backing_fmt or backing.format_name
        try:
            create_opts = dict(cluster_size=opts.get("cluster_size", 65536), compat=opts.get("compat", "1.1"),
                               refcount_bits=opts.get("refcount_bits", 16),
                               lazy_refcounts=opts.get("lazy_refcounts", False),
                               extended_l2=opts.get("extended_l2", False), compression_type=ctype_name,
                               backing_file=backing_file, backing_fmt=backing_fmt)
            create_opts.update(data_file_options(dict(opts, backing_file=backing_file)))
            size = (total + 511) // 512 * 512

            def build_qcow2(node):
                with_data_file(create_opts, lambda data_node: build_into(node, data_node), image=dest, cache=mode)

            def build_into(node, data_node):
                writer = Qcow2StreamWriter(node, size, data_node=data_node, **create_opts)
                if CHUNK % writer.cs:
                    raise InvalidArgument("cluster size larger than the conversion chunk")
                try:
                    _write_qcow2(writer, chunks, writer.cs, compress,
                                 writer.header.compression_type, fully_allocated, backing, report, tuning.workers)
                except BaseException:
                    writer.abort()
                    raise
                writer.finish()
                if bitmaps:
                    from ..formats.qcow2.bitmap_ops import copy_bitmaps_to_node
                    copy_bitmaps_to_node(devs[0], node, dest, data_node, skip_broken_bitmaps, warn)
            atomic_output(dest, build_qcow2, cache=mode, warn=warn, **hints)
        finally:
            if backing is not None:
                backing.close()
        return {"virtual-size": total}
    finally:
        source_chunks.close()  # stops the reading thread before its sources close
        for dev in devs:
            dev.close()


# ---------------------------------------------------------------------------------------------
# What qemu-img convert checks before it writes anything, in its order (the CLI and the modules
# call this first; convert() repeats the checks it needs itself).

CACHE_MODES = ("none", "off", "writeback", "writethrough", "directsync", "unsafe")


def open_sources(filenames, fmt=None, force_share=False, snapshot=None, cache=None):
    """Open the sources read-only as qemu-img convert does before creating the target, the
    internal snapshot (``-l`` text) activated in the first one, with the cache mode (``-T``).
    The caller closes them."""
    devs = []
    try:
        for name in filenames:
            devs.append(open_image(name, fmt, read_only=True, force_share=force_share, cache=cache))
        if snapshot is not None:
            if len(filenames) > 1 and not snapshot.startswith("snapshot."):
                raise InvalidArgument("No support for concatenating multiple snapshot")
            snap_id, snap_name = parse_snapshot_param(snapshot)
            dev = devs[0]
            if not hasattr(dev, "activate_snapshot"):
                raise ImageNotFound("Failed to load snapshot: Can't find snapshot")
            if snap_id is None:
                try:
                    dev.activate_snapshot(snapshot_id=snap_name)
                except ImageNotFound:
                    dev.activate_snapshot(snapshot_id=None, name=snap_name)
            else:
                dev.activate_snapshot(snapshot_id=snap_id, name=snap_name)
        return devs
    except BaseException:
        for dev in devs:
            dev.close()
        raise


def check_qcow2_target(dest, size, typed, backing_file, backing_fmt):
    """qcow2 create errors convert reports as "DEST: error while converting qcow2: MESSAGE"."""
    from ..formats.qcow2.create import plan_header
    o = typed
    try:
        plan_header(size, cluster_size=o.get("cluster_size", 65536), compat=o.get("compat", "1.1"),
                    refcount_bits=o.get("refcount_bits", 16), lazy_refcounts=o.get("lazy_refcounts", False),
                    extended_l2=o.get("extended_l2", False), preallocation=o.get("preallocation", "off"),
                    compression_type=o.get("compression_type", "zlib"), backing_file=backing_file,
                    backing_fmt=backing_fmt, data_file=o.get("data_file"),
                    data_file_raw=bool(o.get("data_file_raw", False)))
    except InvalidArgument as err:
        raise InvalidArgument("%s: error while converting qcow2: %s" % (dest, err.message), hint=err.hint)
    name = o.get("data_file")
    if name is not None and (name == dest or (os.path.exists(name) and os.path.exists(dest)
                                              and os.path.samefile(name, dest))):
        raise ImageInUse('%s: error while converting qcow2: Failed to get shared "resize" lock' % dest,
                         hint=["Is another process using the image [%s]?" % name])


def check_backing(dest, backing_file, backing_fmt):
    """The target's backing file must open (qemu-img convert opens the new target with it)."""
    from ..errors import QimgError
    try:
        with open_image(full_backing_path(dest, backing_file), backing_fmt, read_only=True, force_share=True):
            pass
    except QimgError as err:
        message = err.message
        twice = "Could not open '%s': " % backing_file
        if message.startswith(twice + twice):
            message = message[len(twice):]
        raise type(err)("Could not open '%s': Could not open backing file: %s" % (dest, message), hint=err.hint)


def _bochs(name):
    """Whether name is a local file with the bochs format's magic (an image QEMU would open)."""
    try:
        with open(str(name), "rb") as f:
            return f.read(32).startswith(b"Bochs Virtual HD Image\0")
    except (OSError, ValueError):
        return False


def prepare_convert(sources, dest, src_fmt=None, out_fmt="raw", options=None, compress=False,
                    backing_file=None, backing_fmt=None, snapshot=None, target_exists=False,
                    target_is_zero=False, bitmaps=False, cache="unsafe", force_share=False, inspect=None,
                    src_cache=None, skip_broken_bitmaps=False):
    """Run qemu-img convert's checks in its order, with the sources open; nothing is written.

    ``options`` is the ``-o`` text. Returns {"options": dict for convert(), "typed": typed target
    options, "skip": message or None}: with "skip" set qemu-img prints the message and exits 0
    without converting. ``inspect(devs)``, when given, is called with the open sources (progress
    planning, with the typed target options). Raises QimgError subclasses with qemu-img's messages.
    """
    from .create import NO_CREATE_DRIVERS, check_create_format, parse_option_string
    from ..crypto.convert import encrypted_target
    if not target_exists and out_fmt in NO_CREATE_DRIVERS and src_fmt == "bochs" and all(map(_bochs, sources)):
        # qemu-img opens the sources first, then refuses the output format: with sources in a
        # format only QEMU reads, that refusal is what it prints
        check_create_format(out_fmt)
    devs = open_sources(sources, src_fmt, force_share, snapshot, cache_mode(src_cache, source=True))
    try:
        total = sum((d.size + 511) // 512 * 512 for d in devs)
        optdict, typed = {}, {}
        if not target_exists:
            check_create_format(out_fmt)
            optdict = parse_option_string(options) if options is not None else {}
            optdict.pop("size", None)       # qemu-img sets the size from the sources
            typed = normalize_options(out_fmt, None, optdict, allow_encryption=encrypted_target(out_fmt, optdict))
            if out_fmt == "raw" and backing_file:
                raise InvalidArgument("Backing file not supported for file format 'raw'")
            if out_fmt == "raw" and backing_fmt:
                raise InvalidArgument("Backing file format not supported for file format 'raw'")
        plan = {"options": optdict, "typed": typed, "skip": None}
        backing = backing_file or optdict.get("backing_file")
        if target_is_zero and backing:
            # qemu-img 7.2 reports this and exits 0 without converting
            plan["skip"] = "Cannot use --target-is-zero when the destination image has a backing file"
            return plan
        if len(sources) > 1 and backing:
            raise InvalidArgument("Having a backing file for the target makes no sense when concatenating "
                                  "multiple input images")
        if not target_exists and backing and not (backing_fmt or optdict.get("backing_fmt")):
            raise InvalidArgument("Use of backing file requires explicit backing format")
        if compress:
            if not target_exists and out_fmt != "qcow2":
                raise InvalidArgument("Compression not supported for this file format")
            if optdict.get("preallocation", "off") != "off":
                raise InvalidArgument("Compression and preallocation not supported at the same time")
        if bitmaps and len(sources) > 1:
            raise InvalidArgument("Copying bitmaps only possible with single source")
        if bitmaps and devs[0].format_name != "qcow2":
            raise UnsupportedFeature("Source lacks bitmap support")
        if bitmaps:
            from ..formats.qcow2.bitmap_ops import check_copyable
            check_copyable(devs[0], skip_broken_bitmaps)
        if not target_exists and out_fmt == "qcow2":
            check_qcow2_target(dest, total, typed, backing, backing_fmt)
        if not target_exists and encrypted_target(out_fmt, optdict):
            from ..crypto.convert import check_target
            check_target(dest, out_fmt, optdict, typed, compress)
        cache_mode(cache, default=CONVERT_CACHE)  # "Invalid cache option: X"
        if backing and not target_exists:
            check_backing(dest, backing, backing_fmt or optdict.get("backing_fmt"))
        if bitmaps and not target_exists and (out_fmt != "qcow2" or typed.get("compat", "1.1") in ("0.10", "v2")):
            raise UnsupportedFeature("Format driver '%s' does not support bitmaps" % out_fmt)
        if inspect is not None:
            inspect(devs, typed)
        return plan
    finally:
        for dev in devs:
            dev.close()
