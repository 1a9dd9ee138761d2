# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Positional I/O helpers shared by the qcow2 modules."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

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


def pwrite_all(fd, offset, data):
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n
