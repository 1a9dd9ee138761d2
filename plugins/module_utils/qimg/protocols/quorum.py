# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""quorum (block/quorum.c), read side: reads go to every child and the content that at least
vote-threshold children agree on wins (read-pattern=quorum), or to the first child that answers
(read-pattern=fifo); writes go to every child. No block status (it reports data), no directory
(relative backing names of an image on quorum cannot be resolved, as in QEMU)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno

from ..errors import BlockIOError, QimgError
from .base import ProtocolNode


class QuorumNode(ProtocolNode):
    driver = "quorum"

    def __init__(self, filename, children, threshold, read_pattern="quorum", read_only=True):
        super(QuorumNode, self).__init__(filename, read_only)
        self.children = list(children)
        self.threshold = threshold
        self.fifo = read_pattern == "fifo"

    def length(self):
        return min(c.length() for c in self.children)

    def preadinto(self, offset, view):
        view[:] = self.pread(offset, len(view))

    def pread(self, offset, n):
        votes = {}
        failure = None
        for child in self.children:
            try:
                data = child.pread(offset, n)
            except QimgError as e:
                failure = failure or e
                continue
            if self.fifo:
                return data
            votes[data] = votes.get(data, 0) + 1
            if votes[data] >= self.threshold:
                return data
        if failure is not None and not votes:
            raise failure
        raise BlockIOError(errno.EIO, offset)

    def allocated_bytes(self):
        sizes = [c.allocated_bytes() for c in self.children]
        return None if None in sizes else sum(sizes)

    def pwritev(self, offset, buffers):
        self.check_writable()
        for child in self.children:
            child.pwritev(offset, buffers)

    def punch(self, offset, n):
        self.check_writable()
        for child in self.children:
            child.punch(offset, n)

    def flush(self):
        for child in self.children:
            child.flush()

    def close(self):
        children, self.children = self.children, []
        for child in children:
            child.close()
