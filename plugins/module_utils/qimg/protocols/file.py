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


def open_fd(filename, read_only):
    """os.open() with qemu-img's messages; only regular files and block devices are images."""
    flags = os.O_RDONLY if read_only else os.O_RDWR
    flags |= getattr(os, "O_CLOEXEC", 0)
    if "\0" in filename:
        raise ImageNotFound("Could not open '%s': file name contains a NUL byte" % filename.replace("\0", "\\0"))
    try:
        fd = os.open(filename, flags)
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

    def __init__(self, filename, read_only=True, force_share=False, fd=None, lock=True):
        super(HostFile, self).__init__(filename, read_only)
        self.fd = open_fd(filename, read_only) if fd is None else fd
        if lock and not (force_share and read_only):
            from ..locking import ImageLock
            try:
                self.lock = ImageLock(self.fd, filename, not read_only)
            except ImageInUse as e:
                os.close(self.fd)
                self.fd = None
                raise ImageInUse("Could not open '%s': %s" % (filename, e.message), hint=e.hint)

    def length(self):
        return os.fstat(self.fd).st_size

    def pread(self, offset, n):
        return pread_exact(self.fd, offset, n)

    def preadinto(self, offset, view):
        pread_into(self.fd, offset, view)

    def extents(self, offset, n):
        return file_extents(self.fd, offset, n)

    def allocated_bytes(self):
        return os.fstat(self.fd).st_blocks * 512

    def pwrite(self, offset, data):
        pwrite_all(self.fd, offset, data)

    def pwritev(self, offset, buffers):
        pwritev_all(self.fd, offset, buffers)

    def truncate(self, size):
        os.ftruncate(self.fd, size)

    def allocate(self, offset, n):
        os.posix_fallocate(self.fd, offset, n)

    def punch(self, offset, n):
        punch_hole(self.fd, offset, n)

    def flush(self):
        if not self.read_only:
            os.fsync(self.fd)

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
