# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The raw format: guest offset == file offset; holes found with SEEK_DATA/SEEK_HOLE."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ..errors import InvalidArgument, QimgError
from ..image import DATA, ZERO, BlockDevice, Extent
from ..fileio import file_extents, pread_exact, pread_into, punch_hole, pwrite_all, write_zero_data


class RawImage(BlockDevice):
    format_name = "raw"

    def __init__(self, filename, fd, read_only=True):
        super(RawImage, self).__init__(filename, read_only)
        self.fd = fd
        # like QEMU's block layer, a raw image's size is rounded up to whole 512-byte sectors
        self.size = (os.fstat(fd).st_size + 511) // 512 * 512
        self.lock = None

    def read(self, offset, length):
        self.check_range(offset, length)
        return pread_exact(self.fd, offset, length)

    def readinto(self, offset, view):
        self.check_range(offset, len(view))
        pread_into(self.fd, offset, view)

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
