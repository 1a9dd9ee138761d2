# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""File I/O helpers shared by the drivers: positional reads and writes, holes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os

_ZEROS = {}
_SHARED_ZEROS = [memoryview(b"")]


def zero_bytes(n):
    """A shared all-zero bytes object of length n, for the few sizes that repeat (table sizes)."""
    z = _ZEROS.get(n)
    if z is None:
        if len(_ZEROS) > 32:
            _ZEROS.clear()
        z = _ZEROS[n] = bytes(n)
    return z


def zero_view(n):
    """n zero bytes as a read-only view of one shared block, for fills, writes and compares of
    any length without allocating each time (bytes(n) is calloc'd: untouched pages cost nothing)."""
    if n > (64 << 20):
        return memoryview(bytes(n))
    v = _SHARED_ZEROS[0]
    if len(v) < n:
        v = _SHARED_ZEROS[0] = memoryview(bytes(max(n, 4 << 20)))
    return v[:n]


def pread_exact(fd, offset, length):
    """Read length bytes at offset; past the end of the file reads zeros (as QEMU does)."""
    chunks = []
    got = 0
    while got < length:
        data = os.pread(fd, length - got, offset + got)
        if not data:
            break
        chunks.append(data)
        got += len(data)
    if got < length:
        chunks.append(bytes(length - got))
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def pread_into(fd, offset, view):
    """Fill the writable buffer `view` from the file at offset; past the end of the file fills zeros."""
    n = len(view)
    got = 0
    while got < n:
        if hasattr(os, "preadv"):
            k = os.preadv(fd, [view[got:]], offset + got)
        else:
            data = os.pread(fd, n - got, offset + got)
            k = len(data)
            view[got:got + k] = data
        if not k:
            view[got:] = zero_view(n - got)
            break
        got += k


def pwritev_all(fd, offset, buffers):
    """Write a list of buffers contiguously at offset (one system call when possible)."""
    if not hasattr(os, "pwritev") or len(buffers) == 1:
        for buf in buffers:
            pwrite_all(fd, offset, buf)
            offset += len(buf)
        return
    views = [memoryview(b).cast("B") for b in buffers]
    while views:
        n = os.pwritev(fd, views[:1024], offset)
        offset += n
        while views and n >= len(views[0]):
            n -= len(views[0])
            views.pop(0)
        if n:
            views[0] = views[0][n:]


def pwrite_all(fd, offset, data):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


_PUNCH_HOLE = 0x02
_KEEP_SIZE = 0x01


def file_extents(fd, offset, length):
    """[(start, length, is_data)] for the file range, from SEEK_DATA/SEEK_HOLE (all data if unsupported)."""
    end = offset + length
    out = []
    pos = offset
    while pos < end:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:  # no data after pos
                out.append((pos, end - pos, False))
                break
            out.append((pos, end - pos, True))
            break
        if data > pos:
            out.append((pos, min(data, end) - pos, False))
            pos = min(data, end)
            if pos >= end:
                break
        hole = os.lseek(fd, pos, os.SEEK_HOLE)
        stop = min(hole, end)
        out.append((pos, stop - pos, True))
        pos = stop
    return out


def punch_hole(fd, offset, length, fallback=True):
    """Deallocate a file range (reads back zeros). Falls back to writing zeros, unless fallback
    is False: then returns whether the range was deallocated."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded (no ldconfig subprocess)
        fallocate = libc.fallocate
        fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        if fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, offset, length) == 0:
            return True
    except (OSError, AttributeError, ImportError):
        pass
    if not fallback:
        return False
    write_zero_data(fd, offset, length)
    return True


def write_zero_data(fd, offset, length):
    chunk = bytes(min(length, 1 << 20))
    while length > 0:
        n = min(length, len(chunk))
        pwrite_all(fd, offset, chunk[:n])
        offset += n
        length -= n


def _queue_module():
    """queue (and threading), imported when a pipeline needs them: not at every CLI start."""
    try:
        import queue
    except ImportError:  # Python 2 spelling, for sanity tests on old interpreters
        import Queue as queue  # type: ignore
    return queue


class BufferPool(object):
    """Large buffers reused from step to step of a pipeline: a fresh multi-MiB allocation per step
    costs a page fault per page, a good part of a copy's time. Up to count buffers are made by
    make() on first need; get() then waits for one to be released."""

    def __init__(self, count, make):
        queue = _queue_module()
        self._empty = queue.Empty
        self.free = queue.Queue()
        self.left_to_make = count
        self.make = make

    def get(self, stop):
        """A free buffer, or None once the threading.Event stop is set."""
        if self.left_to_make and self.free.empty():
            self.left_to_make -= 1
            return self.make()
        while not stop.is_set():
            try:
                return self.free.get(timeout=0.1)
            except self._empty:
                pass
        return None

    def release(self, buf):
        self.free.put(buf)


class BackgroundWriter(object):
    """Positional writes done in order by one worker thread (os.pwritev releases the GIL), with at
    most max_pending queued so memory stays bounded.

    after_writes(fn) runs fn in the worker once every write submitted before it is done (or has
    failed), which is when the caller may reuse those buffers. After a failure the remaining writes
    are skipped, callbacks still run, and submit() and wait() raise the first failure.
    """

    def __init__(self, fd, max_pending=2):
        """fd: a file descriptor, or a protocol node (its pwritev, e.g. aligned for O_DIRECT)."""
        import threading
        self.fd = fd
        self.write = fd.pwritev if hasattr(fd, "pwritev") else self._pwritev_fd
        self.queue = _queue_module().Queue(maxsize=max_pending)
        self.error = None
        self.thread = threading.Thread(target=self._run, name="qimg-writer")
        self.thread.daemon = True
        self.thread.start()

    def _run(self):
        while True:
            item = self.queue.get()
            if item is None:
                return
            offset, buffers, callback = item
            if callback is not None:
                callback()
            elif self.error is None:
                try:
                    self.write(offset, buffers)
                except BaseException as e:  # re-raised in the submitting thread
                    self.error = e

    def _pwritev_fd(self, offset, buffers):
        pwritev_all(self.fd, offset, buffers)

    def submit(self, offset, buffers):
        if self.error is not None:
            raise self.error
        self.queue.put((offset, list(buffers), None))

    def after_writes(self, fn):
        self.queue.put((None, None, fn))

    def wait(self):
        """Finish every queued write; re-raise the first failure."""
        if self.thread is not None:
            self.queue.put(None)
            self.thread.join()
            self.thread = None
        if self.error is not None:
            raise self.error
