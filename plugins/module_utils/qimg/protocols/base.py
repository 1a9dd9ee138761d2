# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The protocol-node contract (QEMU's "file" child of a format node).

Format drivers do all their I/O through one of these, so the same qcow2 or raw code runs over a
local file, a null device, an NBD export or an error-injecting filter. Offsets and lengths are
bytes; reads past the end return zeros, as QEMU's do.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import ReadOnlyImage, UnsupportedFeature


class ProtocolNode(object):
    """Defaults for nodes that only read: subclasses override what they support."""

    driver = None

    def __init__(self, filename, read_only=True):
        self.filename = filename
        self.read_only = read_only
        self.fd = None          # a local file descriptor (locks, fstat), when there is one
        self.lock = None        # the ImageLock held, if any

    # --- reading ---
    def length(self):
        raise NotImplementedError

    def pread(self, offset, n):
        buf = bytearray(n)
        self.preadinto(offset, memoryview(buf))
        return bytes(buf)

    def preadinto(self, offset, view):
        raise NotImplementedError

    def extents(self, offset, n):
        """[(start, length, is_data)] covering the range; a node that cannot tell says data."""
        return [(offset, n, True)] if n else []

    def allocated_bytes(self):
        return None

    # --- writing ---
    def check_writable(self):
        if self.read_only:
            raise ReadOnlyImage("%s: image is opened read-only" % self.filename)

    def pwrite(self, offset, data):
        self.pwritev(offset, [data])

    def pwritev(self, offset, buffers):
        raise UnsupportedFeature("%s: the '%s' driver does not support writing" % (self.filename, self.driver))

    def truncate(self, size):
        raise UnsupportedFeature("%s: the '%s' driver does not support resizing" % (self.filename, self.driver))

    def allocate(self, offset, n):
        """Reserve the range (posix_fallocate); nodes without the notion write nothing."""

    def punch(self, offset, n):
        """Deallocate the range so that it reads back zeros."""
        self.pwrite(offset, bytes(n))

    def flush(self):
        pass

    def close(self):
        pass
