# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""QEMU-compatible advisory image locks.

QEMU's file driver takes open-file-description locks on single bytes: byte 100+n means "I use
permission n", byte 200+n means "I do not let others have permission n" (n: 0 consistent read,
1 write, 2 write unchanged, 3 resize). Taking the same locks lets us refuse to write a running
VM's disk, and lets QEMU refuse to start on an image we are writing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct

from .errors import ImageInUse

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None

PERM_BASE = 100
SHARED_BASE = 200
CONSISTENT_READ, WRITE, WRITE_UNCHANGED, RESIZE = 0, 1, 2, 3
PERM_NAMES = {CONSISTENT_READ: "consistent read", WRITE: "write", WRITE_UNCHANGED: "write unchanged",
              RESIZE: "resize"}
_F_OFD_GETLK = getattr(fcntl, "F_OFD_GETLK", 36)
_F_OFD_SETLK = getattr(fcntl, "F_OFD_SETLK", 37)
_FLOCK = "hhqqixxxx"


def _flock(ltype, start):
    return struct.pack(_FLOCK, ltype, os.SEEK_SET, start, 1, 0)


class ImageLock(object):
    """The locks one open image holds."""

    def __init__(self, fd, filename, writable):
        self.fd = fd
        self.held = []
        if fcntl is None or not hasattr(os, "uname") or os.uname()[0] != "Linux":
            return
        used = [CONSISTENT_READ] + ([WRITE, RESIZE] if writable else [])
        unshared = [WRITE, RESIZE] if writable else [WRITE]
        try:
            for perm in used:
                if self._someone_has(SHARED_BASE + perm):
                    raise ImageInUse('Failed to get "%s" lock' % PERM_NAMES[perm],
                                     hint=["Is another process using the image [%s]?" % filename])
            for perm in unshared:
                if self._someone_has(PERM_BASE + perm):
                    raise ImageInUse('Failed to get shared "%s" lock' % PERM_NAMES[perm],
                                     hint=["Is another process using the image [%s]?" % filename])
            for byte in [PERM_BASE + p for p in used] + [SHARED_BASE + p for p in unshared]:
                fcntl.fcntl(fd, _F_OFD_SETLK, _flock(fcntl.F_RDLCK, byte))
                self.held.append(byte)
        except OSError:
            # the file system does not support OFD locks: proceed unlocked, as QEMU does
            self.held = []

    def _someone_has(self, byte):
        res = fcntl.fcntl(self.fd, _F_OFD_GETLK, _flock(fcntl.F_WRLCK, byte))
        return struct.unpack(_FLOCK, res)[0] != fcntl.F_UNLCK

    def release(self):
        for byte in self.held:
            try:
                fcntl.fcntl(self.fd, _F_OFD_SETLK, _flock(fcntl.F_UNLCK, byte))
            except OSError:
                pass
        self.held = []
