# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The raw format: guest offset == file offset; holes found with SEEK_DATA/SEEK_HOLE."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os

from ..errors import InvalidArgument, QimgError
from ..image import DATA, ZERO, BlockDevice, Extent
from .qcow2.io import pread_exact, pwrite_all

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
        import ctypes.util
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
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


class RawImage(BlockDevice):
    format_name = "raw"

    def __init__(self, filename, fd, read_only=True):
        super(RawImage, self).__init__(filename, read_only)
        self.fd = fd
        self.size = os.fstat(fd).st_size
        self.lock = None

    def read(self, offset, length):
        self.check_range(offset, length)
        return pread_exact(self.fd, offset, length)

    def write(self, offset, data):
        self.check_writable()
        self.check_range(offset, len(data))
        pwrite_all(self.fd, offset, data)

    def write_zeroes(self, offset, length):
        self.check_writable()
        self.check_range(offset, length)
        punch_hole(self.fd, offset, length)

    def discard(self, offset, length):
        self.write_zeroes(offset, length)

    def block_status(self, offset, length):
        self.check_range(offset, length)
        return [Extent(s, n, DATA if is_data else ZERO, s)
                for s, n, is_data in file_extents(self.fd, offset, length)]

    def flush(self):
        if not self.read_only:
            os.fsync(self.fd)

    def close_self(self):
        if self.fd is None:
            return
        try:
            if not self.read_only:
                os.fsync(self.fd)
        finally:
            if self.lock is not None:
                self.lock.release()
            os.close(self.fd)
            self.fd = None

    def actual_size(self):
        return os.fstat(self.fd).st_blocks * 512


def create_raw(fd, size, preallocation="off"):
    """Size an empty file descriptor as a raw image with the given preallocation."""
    if preallocation not in ("off", "falloc", "full"):
        raise InvalidArgument("Invalid parameter '%s'" % preallocation)
    try:
        os.ftruncate(fd, size)
        if preallocation == "falloc" and size:
            os.posix_fallocate(fd, 0, size)
        elif preallocation == "full" and size:
            write_zero_data(fd, 0, size)
    except OSError as e:
        raise QimgError("Could not preallocate image: %s" % e.strerror)
