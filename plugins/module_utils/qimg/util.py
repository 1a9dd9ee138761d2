# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small shared helpers: atomic whole-file output."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os

from .errors import QimgError


def _create_temp(directory, base):
    """A new, empty file (mode 0600) with a random name next to the destination: (fd, path).
    (tempfile.mkstemp does the same but importing tempfile costs a few ms of every start.)"""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
    for dummy in range(100):
        tag = "".join("%02x" % b for b in bytearray(os.urandom(6)))
        path = os.path.join(directory, ".%s.%s.qimg-tmp" % (base, tag))
        try:
            return os.open(path, flags, 0o600), path
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
    raise OSError(errno.EEXIST, "no unused temporary file name")


def atomic_output(filename, build):
    """Call build(fd) on a fresh temporary file next to filename and rename it into place.

    On any failure (including KeyboardInterrupt) the temporary file is removed and an existing
    file at filename is left untouched. When an existing file is replaced, the new content is
    fsynced before the rename so that a crash cannot leave neither version; a brand-new file is
    not synced (as with qemu-img, which does not flush its output either).
    """
    directory = os.path.dirname(os.path.abspath(filename))
    try:
        fd, tmp = _create_temp(directory, os.path.basename(filename))
    except OSError as e:
        raise QimgError("Could not create '%s': %s" % (filename, e.strerror))
    try:
        replacing = True
        try:
            mode = os.stat(filename).st_mode & 0o7777
        except OSError:
            replacing = False
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.fchmod(fd, mode)
        build(fd)
        if replacing:
            os.fsync(fd)
        os.close(fd)
        fd = None
        os.rename(tmp, filename)
        tmp = None
        if not replacing:
            return
        try:
            dfd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError:
            pass
    except OSError as e:
        raise QimgError("Could not create '%s': %s" % (filename, e.strerror))
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
