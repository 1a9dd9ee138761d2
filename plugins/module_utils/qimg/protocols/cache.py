# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host cache modes (qemu's `-t`/`-T`, `cache=`): open flags, flush policy and aligned I/O.

  mode          open flags          each write durable   flush() / before rename
  none (off)    O_DIRECT            no                   fdatasync
  writeback     -                   no                   fdatasync
  writethrough  O_DSYNC             yes                  fdatasync
  directsync    O_DIRECT|O_DSYNC    yes                  fdatasync
  unsafe        -                   no                   nothing

qemu-img's defaults: convert writes with `unsafe` (`-t`), everything else (create, check -r,
snapshot, commit, rebase, amend, and every `-T` source) uses BDRV_DEFAULT_CACHE, `writeback`.

O_DIRECT needs offsets, lengths and memory aligned to the device's logical block size: the
AlignedIO class does positional I/O on such an fd through page-aligned bounce buffers (mmap),
reading and rewriting the partial blocks at either end of a request (under a lock, so two writers
never lose each other's bytes in a shared block).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat

from ..errors import InvalidArgument, UnsupportedFeature

DEFAULT_CACHE = "writeback"   # qemu's BDRV_DEFAULT_CACHE
CONVERT_CACHE = "unsafe"      # qemu-img convert's -t default
MIN_ALIGNMENT = 4096          # a safe floor for O_DIRECT (512e and 4Kn disks alike)
MAX_BOUNCE = 8 << 20          # bytes of one direct request; larger ones are split
NO_ODIRECT = "filesystem does not support O_DIRECT"  # qemu's reason text (file-posix.c)

_O_DIRECT = getattr(os, "O_DIRECT", 0)
_O_DSYNC = getattr(os, "O_DSYNC", 0) or getattr(os, "O_SYNC", 0)
_BLKSSZGET = 0x1268


class CacheMode(object):
    """One parsed cache mode: `direct` (O_DIRECT), `dsync` (O_DSYNC: every write durable) and
    `flush` (False only for unsafe: flush() and the pre-rename sync do nothing)."""

    __slots__ = ("name", "direct", "dsync", "flush")

    def __init__(self, name, direct, dsync, flush):
        self.name = name
        self.direct = direct
        self.dsync = dsync
        self.flush = flush

    def open_flags(self):
        """The os.open flags this mode adds."""
        if self.direct and not _O_DIRECT:
            raise UnsupportedFeature("cache mode '%s' needs O_DIRECT, which this platform does not have"
                                     % self.name)
        return (_O_DIRECT if self.direct else 0) | (_O_DSYNC if self.dsync else 0)

    def __repr__(self):
        return "CacheMode(%r)" % self.name

    def __eq__(self, other):
        return isinstance(other, CacheMode) and other.name == self.name

    def __ne__(self, other):
        return not self == other

    def __hash__(self):
        return hash(self.name)


_MODES = {
    "none": CacheMode("none", True, False, True),
    "off": CacheMode("none", True, False, True),
    "writeback": CacheMode("writeback", False, False, True),
    "writethrough": CacheMode("writethrough", False, True, True),
    "directsync": CacheMode("directsync", True, True, True),
    "unsafe": CacheMode("unsafe", False, False, False),
}
MODES = ("none", "off", "writeback", "writethrough", "directsync", "unsafe")


def cache_mode(name, default=DEFAULT_CACHE, source=False):
    """A CacheMode from its qemu name (a CacheMode passes through, None means `default`).
    An unknown name raises InvalidArgument with qemu-img's message."""
    if isinstance(name, CacheMode):
        return name
    if name is None:
        name = default
    mode = _MODES.get(name)
    if mode is None:
        raise InvalidArgument("Invalid %scache option: %s" % ("source " if source else "", name))
    return mode


def open_fd(path, flags, cache=None, create_mode=0o666):
    """os.open with the cache mode's flags. A file system that refuses O_DIRECT raises OSError
    EINVAL whose strerror is qemu's reason ("filesystem does not support O_DIRECT").

    With O_CREAT, the file is created without O_DIRECT first (Linux creates the file before it
    refuses the flag, which would leave it behind), then opened again with the mode's flags.
    """
    mode = cache_mode(cache)
    extra = mode.open_flags()
    if not extra:
        return os.open(path, flags, create_mode)
    if flags & os.O_CREAT:
        os.close(os.open(path, flags & ~os.O_TRUNC, create_mode))
        flags &= ~(os.O_CREAT | os.O_EXCL)
    try:
        return os.open(path, flags | extra)
    except OSError as e:
        if e.errno == errno.EINVAL and mode.direct:
            raise OSError(errno.EINVAL, NO_ODIRECT, path)
        raise


def reopen_fd(fd, path, cache):
    """An fd of the same file at `path` opened with the cache mode's flags (for a file made with
    plain flags, e.g. a temporary output). Returns fd itself when the mode adds no flags;
    otherwise the caller owns both."""
    mode = cache_mode(cache)
    extra = mode.open_flags()
    if not extra:
        return fd
    flags = os.O_RDWR | getattr(os, "O_CLOEXEC", 0)
    try:
        new = os.open(path, flags | extra)
    except OSError as e:
        if e.errno == errno.EINVAL and mode.direct:
            raise OSError(errno.EINVAL, NO_ODIRECT, path)
        raise
    st1, st2 = os.fstat(fd), os.fstat(new)
    if (st1.st_dev, st1.st_ino) != (st2.st_dev, st2.st_ino):
        os.close(new)
        raise OSError(errno.ESTALE, "file was replaced while it was open", path)
    return new


def flush_fd(fd, cache):
    """Make the file's data durable as the mode asks (fdatasync, as qemu's file driver; nothing for
    unsafe). Returns True when a sync was issued."""
    if not cache_mode(cache).flush:
        return False
    if hasattr(os, "fdatasync"):
        os.fdatasync(fd)
    else:
        os.fsync(fd)
    return True


def flush_directory(path, cache):
    """fsync the directory `path` (a rename or creation in it becomes durable) unless unsafe.
    File systems that cannot sync a directory are tolerated, as the rename already happened."""
    if not cache_mode(cache).flush:
        return False
    try:
        dfd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return False
    try:
        os.fsync(dfd)
    except OSError as e:
        if e.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
        return False
    finally:
        os.close(dfd)
    return True


def _sysfs_block_size(st_dev):
    base = "/sys/dev/block/%d:%d" % (os.major(st_dev), os.minor(st_dev))
    for rel in ("queue/logical_block_size", "../queue/logical_block_size"):
        try:
            with open(os.path.join(base, rel)) as f:
                return int(f.read().strip())
        except (OSError, IOError, ValueError):
            continue
    return None


def logical_block_size(fd):
    """The alignment O_DIRECT requests on fd need: the device's logical block size (BLKSSZGET for
    a block device, sysfs for the device holding a file), never below MIN_ALIGNMENT."""
    size = None
    try:
        st = os.fstat(fd)
        if stat.S_ISBLK(st.st_mode):
            import fcntl
            import struct
            buf = bytearray(4)
            fcntl.ioctl(fd, _BLKSSZGET, buf)
            size = struct.unpack("=i", bytes(buf))[0]
        else:
            size = _sysfs_block_size(st.st_dev)
    except (OSError, IOError, ImportError, ValueError):
        size = None
    if not size or size < MIN_ALIGNMENT or size & (size - 1):
        return MIN_ALIGNMENT
    return min(size, 1 << 16)


def write_zeros(node, offset, length, chunk=1 << 20):
    """Write length zero bytes at offset through node.pwrite, a bounded chunk at a time."""
    from ..fileio import zero_view
    while length > 0:
        n = min(length, chunk)
        node.pwrite(offset, zero_view(n))
        offset += n
        length -= n


class AlignedIO(object):
    """Positional reads and writes of any offset and length on an O_DIRECT fd.

    Each request is widened to whole blocks of `align` bytes and goes through a page-aligned bounce
    buffer (one per thread, grown as needed up to MAX_BOUNCE plus two blocks). A write that starts
    or ends inside a block reads that block first; one that pads past the end of the file trims
    the file back to the end the caller asked for. Reads past the end give zeros.
    """

    def __init__(self, fd, align=None):
        import threading  # (not at module import: the CLI's start-up stays lean)
        self.fd = fd
        self.align = align or logical_block_size(fd)
        self._local = threading.local()
        self._write_lock = threading.Lock()

    def _bounce(self, n):
        buf = getattr(self._local, "buf", None)
        if buf is None or len(buf) < n:
            import mmap
            size = max(n, 1 << 20)
            size = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
            buf = self._local.buf = mmap.mmap(-1, size)
        return memoryview(buf)

    def _read_blocks(self, mv, start):
        """Fill mv (aligned length) from the file at the aligned offset start; returns the bytes
        read (less than len(mv) at the end of the file) and zero-fills the rest."""
        got = 0
        n = len(mv)
        while got < n:
            k = os.preadv(self.fd, [mv[got:]], start + got)
            if not k:
                break
            got += k
            if got % self.align:
                break  # the end of the file is inside this block
        if got < n:
            mv[got:n] = bytes(n - got)
        return got

    # ------------------------------------------------------------------ reads
    def preadinto(self, offset, view):
        view = memoryview(view).cast("B")
        al = self.align
        step = MAX_BOUNCE
        done = 0
        total = len(view)
        while done < total:
            n = min(step, total - done)
            off = offset + done
            a = off - off % al
            e = -(-(off + n) // al) * al
            mv = self._bounce(e - a)
            try:
                self._read_blocks(mv[:e - a], a)
                view[done:done + n] = mv[off - a:off - a + n]
            finally:
                mv.release()
            done += n

    def pread(self, offset, n):
        out = bytearray(n)
        self.preadinto(offset, out)
        return bytes(out)

    # ----------------------------------------------------------------- writes
    def pwrite(self, offset, data):
        self.pwritev(offset, [data])

    def pwritev(self, offset, buffers):
        views = [memoryview(b).cast("B") for b in buffers]
        with self._write_lock:
            pending = []
            size = 0
            for v in views:
                while len(v):
                    take = min(len(v), MAX_BOUNCE - size)
                    pending.append(v[:take])
                    size += take
                    v = v[take:]
                    if size == MAX_BOUNCE:
                        self._write_span(offset, pending, size)
                        offset += size
                        pending, size = [], 0
            if size:
                self._write_span(offset, pending, size)

    def _write_span(self, offset, parts, n):
        al = self.align
        a = offset - offset % al
        end = offset + n
        e = -(-end // al) * al
        mv = self._bounce(e - a)
        try:
            eof = None  # set when a read block shows where the file ends
            if offset > a:
                got = self._read_blocks(mv[:al], a)
                if got < al:
                    eof = a + got
            if end < e and (offset == a or e - al > a):  # a partial last block not read as the head
                got = self._read_blocks(mv[e - a - al:e - a], e - al)
                if got < al:
                    eof = e - al + got
            pos = offset - a
            for p in parts:
                mv[pos:pos + len(p)] = p
                pos += len(p)
            written = 0
            span = e - a
            while written < span:
                written += os.pwritev(self.fd, [mv[written:span]], a + written)
            if eof is not None and e > max(eof, end):
                os.ftruncate(self.fd, max(eof, end))
        finally:
            mv.release()
