# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The null-co / null-aio protocols: a device of a given size (default 1 GiB) that reads zeros
and drops writes. QEMU leaves the read buffer alone unless read-zeroes is on; we always zero
it (so reads are deterministic) and report the range as data then, as QEMU does."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..fileio import zero_view
from .base import ProtocolNode

DEFAULT_SIZE = 1 << 30


class NullNode(ProtocolNode):
    def __init__(self, filename, size=DEFAULT_SIZE, read_zeroes=False, read_only=True, driver="null-co"):
        super(NullNode, self).__init__(filename, read_only)
        self.driver = driver
        self.size = size
        self.read_zeroes = read_zeroes

    def length(self):
        return self.size

    def preadinto(self, offset, view):
        view[:] = zero_view(len(view))

    def extents(self, offset, n):
        # for a format on top: data unless known to read zeros (QEMU: not allocated at all)
        return [(offset, n, not self.read_zeroes)] if n else []

    def block_status(self, offset, n):
        """NBD-style flags (1 hole, 2 zero): QEMU's null block status is OFFSET_VALID, plus ZERO
        with read-zeroes; without DATA, so a null node on top maps as not present."""
        return [(offset, n, 3 if self.read_zeroes else 1)] if n else []

    def allocated_bytes(self):
        return 0

    def pwritev(self, offset, buffers):
        self.check_writable()

    def punch(self, offset, n):
        self.check_writable()

    def truncate(self, size):
        self.check_writable()
        self.size = size
