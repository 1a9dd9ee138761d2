# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""File I/O helpers shared by the drivers: positional reads and writes, holes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import errno
import os


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


def punch_hole(fd, offset, length):
    """Deallocate a file range (reads back zeros). Falls back to writing zeros."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)  # the C library already loaded (no ldconfig subprocess)
        fallocate = libc.fallocate
        fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
        if fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, offset, length) == 0:
            return
    except (OSError, AttributeError, ImportError):
        pass
    write_zero_data(fd, offset, length)


def write_zero_data(fd, offset, length):
    chunk = bytes(min(length, 1 << 20))
    while length > 0:
        n = min(length, len(chunk))
        pwrite_all(fd, offset, chunk[:n])
        offset += n
        length -= n


class BackgroundWriter(object):
    """Positional writes done by worker threads (os.pwritev releases the GIL), at most max_pending
    in flight so memory stays bounded. wait() re-raises the first failure."""

    def __init__(self, fd, workers=1, max_pending=2):
        from concurrent.futures import ThreadPoolExecutor
        self.fd = fd
        self.pool = ThreadPoolExecutor(max_workers=workers)
        self.max_pending = max_pending
        self.pending = collections.deque()

    def submit(self, offset, buffers):
        while len(self.pending) >= self.max_pending:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(pwritev_all, self.fd, offset, list(buffers)))

    def wait(self):
        try:
            while self.pending:
                self.pending.popleft().result()
        finally:
            self.pool.shutdown(wait=True)
