# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The local-file protocol node (QEMU's "file" driver): positional I/O on one descriptor."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

from ..errors import ImageInUse, ImageNotFound
from ..fileio import file_extents, pread_exact, pread_into, punch_hole, pwrite_all, pwritev_all
from .base import ProtocolNode
from .cache import AlignedIO, cache_mode, flush_fd, write_zeros
from .cache import open_fd as cache_open


def open_fd(filename, read_only, cache=None):
    """os.open() with qemu-img's messages; only regular files and block devices are images.
    cache: the cache mode whose flags (O_DIRECT, O_DSYNC) the descriptor gets."""
    flags = os.O_RDONLY if read_only else os.O_RDWR
    flags |= getattr(os, "O_CLOEXEC", 0)
    if "\0" in filename:
        raise ImageNotFound("Could not open '%s': file name contains a NUL byte" % filename.replace("\0", "\\0"))
    try:
        fd = cache_open(filename, flags, cache)
    except OSError as e:
        raise ImageNotFound("Could not open '%s': Could not open '%s': %s" % (filename, filename, e.strerror))
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) and not stat.S_ISBLK(st.st_mode):
        os.close(fd)
        raise ImageNotFound("Could not open '%s': 'file' driver requires '%s' to be a regular file"
                            % (filename, filename))
    return fd


class HostFile(ProtocolNode):
    """A local file or block device. Owns its descriptor and the QEMU-compatible lock on it."""

    driver = "file"

    def __init__(self, filename, read_only=True, force_share=False, fd=None, lock=True, cache=None):
        super(HostFile, self).__init__(filename, read_only)
        self.cache = cache_mode(cache)  # protocols/cache.py: flags, flush policy, alignment
        self.fd = open_fd(filename, read_only, self.cache) if fd is None else fd
        self.direct = AlignedIO(self.fd) if self.cache.direct else None  # O_DIRECT: aligned bounce I/O
        if lock and not (force_share and read_only):
            from ..locking import ImageLock
            try:
                self.lock = ImageLock(self.fd, filename, not read_only)
            except ImageInUse as e:
                os.close(self.fd)
                self.fd = None
                raise ImageInUse("Could not open '%s': %s" % (filename, e.message), hint=e.hint)

    def length(self):
        st = os.fstat(self.fd)
        if stat.S_ISBLK(st.st_mode):  # st_size is 0 for a block device: its end is its size
            return os.lseek(self.fd, 0, os.SEEK_END)
        return st.st_size

    def pread(self, offset, n):
        if self.direct is not None:
            return self.direct.pread(offset, n)
        return pread_exact(self.fd, offset, n)

    def preadinto(self, offset, view):
        if self.direct is not None:
            return self.direct.preadinto(offset, view)
        pread_into(self.fd, offset, view)

    def extents(self, offset, n):
        return file_extents(self.fd, offset, n)

    def allocated_bytes(self):
        return os.fstat(self.fd).st_blocks * 512

    def pwrite(self, offset, data):
        if self.direct is not None:
            return self.direct.pwrite(offset, data)
        pwrite_all(self.fd, offset, data)

    def pwritev(self, offset, buffers):
        if self.direct is not None:
            return self.direct.pwritev(offset, buffers)
        pwritev_all(self.fd, offset, buffers)

    def truncate(self, size):
        os.ftruncate(self.fd, size)

    def allocate(self, offset, n):
        os.posix_fallocate(self.fd, offset, n)

    def punch(self, offset, n):
        if self.direct is None:
            punch_hole(self.fd, offset, n)
        elif not punch_hole(self.fd, offset, n, fallback=False):
            write_zeros(self, offset, n)  # no hole punching here: zeros through the aligned path

    def flush(self):
        """fdatasync, as qemu's file driver, unless the cache mode is unsafe."""
        if not self.read_only:
            flush_fd(self.fd, self.cache)

    def close(self):
        if self.fd is None:
            return
        try:
            if self.lock is not None:
                self.lock.release()
                self.lock = None
        finally:
            os.close(self.fd)
            self.fd = None
