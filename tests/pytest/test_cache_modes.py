# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Cache modes (-t/-T, cache=): open flags, O_DIRECT with aligned bounce buffers, flush policy.

O_DIRECT runs on /tmp (ext4 here); the refusal is tested on a ramfs mount made by the test (tmpfs
accepts O_DIRECT since Linux 6.6, ramfs still refuses it, with qemu-img's "filesystem does not
support O_DIRECT"). Flushes are seen with strace (fsync/fdatasync) and with counting doubles.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import random
import subprocess

import pytest
from hypothesis import given, settings, strategies as st

from conftest import run
from qimg.errors import InvalidArgument
from qimg.protocols import cache as cachemod
from qimg.protocols.cache import AlignedIO, cache_mode, open_fd


def _fd_flags(fd):
    """The open flags of our own fd, as the kernel has them (/proc/self/fdinfo, octal)."""
    with open("/proc/self/fdinfo/%d" % fd) as f:
        for line in f:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    raise AssertionError("no flags line")


# ------------------------------------------------------------------------------ the policy
@pytest.mark.parametrize("name,direct,dsync,flush", [
    ("none", True, False, True), ("off", True, False, True), ("writeback", False, False, True),
    ("writethrough", False, True, True), ("directsync", True, True, True), ("unsafe", False, False, False)])
def test_mode_table(name, direct, dsync, flush):
    m = cache_mode(name)
    assert (m.direct, m.dsync, m.flush) == (direct, dsync, flush)
    flags = m.open_flags()
    assert bool(flags & os.O_DIRECT) == direct
    assert bool(flags & os.O_DSYNC) == dsync


def test_defaults_and_errors():
    assert cache_mode(None).name == "writeback"
    assert cache_mode(None, default=cachemod.CONVERT_CACHE).name == "unsafe"
    assert cache_mode(cache_mode("none")) is cache_mode("none")
    with pytest.raises(InvalidArgument, match="^Invalid cache option: bogus$"):
        cache_mode("bogus")
    with pytest.raises(InvalidArgument, match="^Invalid source cache option: bogus$"):
        cache_mode("bogus", source=True)


@pytest.mark.parametrize("name", ["none", "writethrough", "directsync", "writeback"])
def test_open_fd_flags_in_kernel(tmp_path, name):
    path = str(tmp_path / "f")
    fd = open_fd(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, name, 0o600)
    try:
        flags = _fd_flags(fd)
        assert bool(flags & os.O_DIRECT) == cache_mode(name).direct
        assert bool(flags & os.O_DSYNC) == cache_mode(name).dsync
    finally:
        os.close(fd)


def test_logical_block_size_floor(tmp_path):
    fd = os.open(str(tmp_path), os.O_RDONLY)
    try:
        al = cachemod.logical_block_size(fd)
    finally:
        os.close(fd)
    assert al >= 4096 and al & (al - 1) == 0


# ---------------------------------------------------------------------- aligned I/O (ext4)
def _direct_pair(tmp_path, initial=b""):
    path = str(tmp_path / "d")
    with open(path, "wb") as f:
        f.write(initial)
    fd = open_fd(path, os.O_RDWR, "none")
    assert _fd_flags(fd) & os.O_DIRECT
    return path, fd, AlignedIO(fd)


def test_aligned_io_unaligned_requests(tmp_path):
    rnd = random.Random(1)
    initial = bytes(rnd.getrandbits(8) for _ in range(20000))
    path, fd, io = _direct_pair(tmp_path, initial)
    model = bytearray(initial)
    try:
        for off, n in ((0, 1), (1, 511), (4095, 2), (4096, 4096), (5000, 9000), (19990, 5), (30000, 100)):
            data = bytes(rnd.getrandbits(8) for _ in range(n))
            io.pwrite(off, data)
            if off + n > len(model):
                model.extend(bytes(off + n - len(model)))
            model[off:off + n] = data
            assert os.fstat(fd).st_size == len(model)
        assert io.pread(0, len(model) + 5000) == bytes(model) + bytes(5000)
        assert io.pread(123, 7) == bytes(model[123:130])
    finally:
        os.close(fd)
    with open(path, "rb") as f:
        assert f.read() == bytes(model)


def test_aligned_io_pwritev_and_large(tmp_path):
    path, fd, io = _direct_pair(tmp_path)
    try:
        big = os.urandom(cachemod.MAX_BOUNCE + 12345)
        io.pwritev(100, [b"abc", memoryview(big), bytearray(b"xyz")])
        want = bytes(100) + b"abc" + big + b"xyz"
        assert os.fstat(fd).st_size == len(want)
        got = bytearray(len(want))
        io.preadinto(0, memoryview(got))
        assert bytes(got) == want
    finally:
        os.close(fd)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 70000), st.integers(0, 9000), st.integers(0, 255)), max_size=12))
def test_aligned_io_model(tmp_path_factory, ops):
    d = tmp_path_factory.mktemp("aio")
    path, fd, io = _direct_pair(d, b"\x5a" * 3000)
    model = bytearray(b"\x5a" * 3000)
    try:
        for off, n, byte in ops:
            data = bytes([byte]) * n
            io.pwrite(off, data)
            if n:
                if off + n > len(model):
                    model.extend(bytes(off + n - len(model)))
                model[off:off + n] = data
        assert os.fstat(fd).st_size == len(model)
        assert io.pread(0, len(model) + 100) == bytes(model) + bytes(100)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ refusing O_DIRECT
@pytest.fixture(scope="module")
def no_odirect_dir(tmp_path_factory):
    """A mounted file system that refuses O_DIRECT (ramfs: tmpfs accepts it since Linux 6.6)."""
    mnt = str(tmp_path_factory.mktemp("ramfs"))
    for fstype in ("ramfs", "tmpfs"):
        if subprocess.call(["mount", "-t", fstype, "-o", "size=64m", fstype, mnt],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) != 0:
            continue
        try:
            os.close(os.open(os.path.join(mnt, ".probe"), os.O_RDWR | os.O_CREAT | os.O_DIRECT))
            refuses = False
        except OSError:
            refuses = True
        os.unlink(os.path.join(mnt, ".probe"))
        if refuses:
            break
        subprocess.call(["umount", mnt])
    else:
        if os.environ.get("CI") == "true":
            pytest.fail("cannot mount a file system that refuses O_DIRECT")
        pytest.skip("cannot mount ramfs/tmpfs (not root?)")
    yield mnt
    subprocess.call(["umount", "-l", mnt])


def test_open_fd_refused(no_odirect_dir):
    path = os.path.join(no_odirect_dir, "x")
    with pytest.raises(OSError) as e:
        open_fd(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, "none", 0o600)
    assert e.value.strerror == "filesystem does not support O_DIRECT"
    os.unlink(path)
    fd = open_fd(path, os.O_RDWR | os.O_CREAT, "writethrough", 0o600)
    assert _fd_flags(fd) & os.O_DSYNC
    os.close(fd)


def strace_syncs(cmd, cwd=None, env=None):
    """Run cmd under strace; return [(call, path-or-fd-text)] of its fsync/fdatasync/rename calls."""
    out = os.path.join(cwd or ".", ".strace.out")
    run(["strace", "-f", "-y", "-qq", "-o", out, "-e", "trace=fsync,fdatasync,rename,renameat,renameat2"] + cmd,
        cwd=cwd, env=env)
    calls = []
    with open(out) as f:
        for line in f:
            line = line.split(None, 1)[1] if line[:1].isdigit() else line
            name = line.split("(", 1)[0]
            if name in ("fsync", "fdatasync", "rename", "renameat", "renameat2"):
                calls.append((name, line.split("(", 1)[1].rsplit(")", 1)[0]))
    os.unlink(out)
    return calls
