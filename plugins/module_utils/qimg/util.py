# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Small shared helpers: atomic whole-file output, flushed as the cache mode asks, and the host
file hints qemu's file driver applies to a new file (nocow, extent size hint)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import signal
import sys

from .errors import InvalidArgument, QimgError
from .protocols.cache import cache_mode, flush_directory, flush_fd, reopen_fd
from .protocols.file import HostFile

# linux/fs.h
_FS_NOCOW_FL = 0x00800000
_FS_XFLAG_EXTSIZE = 0x00000800
_FSXATTR_SIZE = 28  # struct fsxattr: five __u32 and 8 bytes of padding
DEFAULT_EXTENT_SIZE_HINT = 1 << 20  # qemu's file driver sets 1 MiB unless told otherwise


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


def _ioc(direction, kind, nr, size):
    return (direction << 30) | (size << 16) | (ord(kind) << 8) | nr


def _long_size():
    import struct
    return struct.calcsize("l")


def set_nocow(fd):
    """Set FS_NOCOW_FL on an empty file (btrfs: no copy-on-write for its data), as qemu's file
    driver does: GETFLAGS, add the flag, SETFLAGS. Failure is ignored (qemu: an optimisation that
    must not block the work), so file systems without the flag are unaffected. Returns True when
    the flag was set."""
    try:
        import fcntl
        import struct
    except ImportError:
        return False
    get_flags = _ioc(2, "f", 1, _long_size())  # FS_IOC_GETFLAGS (the kernel reads an int)
    set_flags = _ioc(1, "f", 2, _long_size())  # FS_IOC_SETFLAGS
    buf = bytearray(8)
    try:
        fcntl.ioctl(fd, get_flags, buf)
        attr = struct.unpack("=i", bytes(buf[:4]))[0] | _FS_NOCOW_FL
        fcntl.ioctl(fd, set_flags, bytearray(struct.pack("=i", attr) + bytes(4)))
    except (OSError, IOError, struct.error):
        return False
    return True


def set_extent_size_hint(fd, hint):
    """FS_IOC_FSSETXATTR with FS_XFLAG_EXTSIZE and fsx_extsize=hint (XFS honours it; ext4 accepts
    and ignores it; btrfs, tmpfs refuse). Returns None on success, else the OSError."""
    try:
        import fcntl
        import struct
    except ImportError as e:
        return OSError(0, str(e))
    get_x = _ioc(2, "X", 31, _FSXATTR_SIZE)  # FS_IOC_FSGETXATTR
    set_x = _ioc(1, "X", 32, _FSXATTR_SIZE)  # FS_IOC_FSSETXATTR
    buf = bytearray(_FSXATTR_SIZE)
    try:
        fcntl.ioctl(fd, get_x, buf)
        xflags, dummy_extsize, nextents, projid, cowextsize = struct.unpack_from("=5I", buf)
        struct.pack_into("=5I", buf, 0, xflags | _FS_XFLAG_EXTSIZE, hint, nextents, projid, cowextsize)
        fcntl.ioctl(fd, set_x, buf)
    except (OSError, IOError) as e:
        return e
    return None


def check_extent_size_hint(hint):
    """qemu's limit on the option (an fsxattr field is 32 bits)."""
    if hint is not None and hint > 0xFFFFFFFF:
        raise InvalidArgument("Extent size hint is too large")


def apply_host_hints(fd, nocow=False, extent_size_hint=None, warn=None):
    """What qemu's file driver does to a new, empty file before any data: NOCOW when asked, then
    the extent size hint (1 MiB unless given). A failure to set the hint is only reported, through
    warn(message), when the hint was given and is not 0 (qemu's warning)."""
    check_extent_size_hint(extent_size_hint)
    if nocow:
        set_nocow(fd)
    hint = DEFAULT_EXTENT_SIZE_HINT if extent_size_hint is None else extent_size_hint
    err = set_extent_size_hint(fd, hint)
    if err is not None and extent_size_hint and warn is not None:
        warn("Failed to set extent size hint: %s" % (err.strerror or err))


class _interrupts_held:
    """Hold SIGINT around the rename that commits an output, so that "interrupted" always means "the
    old file is untouched": the block asks interrupted() before renaming and gives up if one came;
    one that comes after the rename is dropped, as the command has nothing left to undo.
    A no-op off the main thread or without pthread_sigmask (Python handles signals in the main
    thread only, so an interrupt cannot land in the middle there)."""

    def __init__(self):
        threading = sys.modules.get("threading")  # not imported: then this is the only thread
        self.active = hasattr(signal, "pthread_sigmask") and (
            threading is None or threading.current_thread() is threading.main_thread())

    def __enter__(self):
        if self.active:
            signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])
        return self.interrupted

    def interrupted(self):
        return self.active and self._take_pending()

    @staticmethod
    def _take_pending():
        if signal.SIGINT not in signal.sigpending():
            return False
        signal.sigtimedwait([signal.SIGINT], 0)
        return True

    def __exit__(self, *exc):
        if self.active:
            self._take_pending()
            signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGINT])
        return False


def atomic_output(filename, build, cache=None, nocow=False, extent_size_hint=None, warn=None):
    """Call build(node) on a fresh temporary file next to filename and rename it into place.

    The temporary file gets the host hints first (apply_host_hints: nocow, extent size hint), then
    is opened with the cache mode's flags (O_DIRECT, O_DSYNC: protocols/cache.py); build gets it as
    a protocol node (protocols/file.HostFile, aligned I/O under O_DIRECT) named filename. Unless
    the mode is unsafe, its data are synced before the rename and the directory after it, so the
    new file is durable when this returns; with unsafe nothing is synced (qemu-img convert's
    default, which does not flush its output either).

    On any failure (including KeyboardInterrupt) the temporary file is removed and an existing
    file at filename is left untouched.
    """
    mode = cache_mode(cache)
    check_extent_size_hint(extent_size_hint)
    directory = os.path.dirname(os.path.abspath(filename))
    try:
        fd, tmp = _create_temp(directory, os.path.basename(filename))
    except OSError as e:
        raise QimgError("Could not create '%s': %s" % (filename, e.strerror))
    io_fd = None
    try:
        try:
            mode_bits = os.stat(filename).st_mode & 0o7777
        except OSError:
            umask = os.umask(0)
            os.umask(umask)
            mode_bits = 0o666 & ~umask
        os.fchmod(fd, mode_bits)
        apply_host_hints(fd, nocow, extent_size_hint, warn)
        try:
            io_fd = reopen_fd(fd, tmp, mode)
        except OSError as e:
            raise QimgError("Could not open '%s': Could not open '%s': %s" % (filename, filename, e.strerror))
        build(HostFile(filename, read_only=False, fd=io_fd, lock=False, cache=mode))
        flush_fd(io_fd, mode)
        if io_fd != fd:
            os.close(io_fd)
        io_fd = None
        os.close(fd)
        fd = None
        with _interrupts_held() as interrupted:
            if interrupted():
                raise KeyboardInterrupt
            os.rename(tmp, filename)
            tmp = None
            flush_directory(directory, mode)
    except OSError as e:
        raise QimgError("Could not create '%s': %s" % (filename, e.strerror))
    finally:
        if io_fd is not None and io_fd != fd:
            os.close(io_fd)
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
