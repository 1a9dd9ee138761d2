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

import glob
import os
import re
import shutil
import subprocess
import sys

import pytest
from hypothesis import given, settings, strategies as st

from conftest import QIMG, assert_same_as_qemu_img, run
from helpers import qemu_compare
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


@pytest.mark.parametrize("name", ["none", "directsync", "writeback"])
def test_data_file_inherits_the_cache_mode(tmp_path, name):
    """The external data file an image names is opened with the image's cache mode, as QEMU's
    children inherit it: O_DIRECT and O_DSYNC on both descriptors, and the content reads back."""
    from qimg.image import open_single
    img = tmp_path / "a.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "data_file=%s" % (tmp_path / "a.data"), str(img), "1M"])
    run(["qemu-io", "-c", "write -P 7 0 64k", str(img)])
    with open_single(str(img), "qcow2", read_only=False, cache=name) as dev:
        for fd in (dev.file.fd, dev.data_file.fd):
            assert bool(_fd_flags(fd) & os.O_DIRECT) == cache_mode(name).direct
            assert bool(_fd_flags(fd) & os.O_DSYNC) == cache_mode(name).dsync
        assert dev.read(0, 65536) == b"\x07" * 65536
        dev.write(65536, b"\x08" * 4096)
    assert run(["qemu-io", "-c", "read -P 8 64k 4k", str(img)]).returncode == 0


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
    initial = os.urandom(20000)
    path, fd, io = _direct_pair(tmp_path, initial)
    model = bytearray(initial)
    try:
        for off, n in ((0, 1), (1, 511), (4095, 2), (4096, 4096), (5000, 9000), (19990, 5), (30000, 100)):
            data = os.urandom(n)
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


def test_aligned_io_threads_sharing_blocks(tmp_path):
    """Two threads writing interleaved 100-byte slots of the same blocks: no write is lost to the
    other's read-modify-write (AlignedIO serialises its writes)."""
    import threading
    path, fd, io = _direct_pair(tmp_path, bytes(64 << 10))
    slot = 100
    count = (64 << 10) // slot

    def writer(parity):
        for i in range(parity, count, 2):
            io.pwrite(i * slot, bytes([1 + parity]) * slot)
    try:
        threads = [threading.Thread(target=writer, args=(p,)) for p in (0, 1)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        got = io.pread(0, count * slot)
    finally:
        os.close(fd)
    want = b"".join(bytes([1 + (i % 2)]) * slot for i in range(count))
    assert got == want


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


# ------------------------------------------------------------------------ strace helpers
_LINE = re.compile(r"^(\d+\.\d+) (\w+)\((.*)\) += (-?\d+)")


def _need_strace():
    if shutil.which("strace") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("strace is required (CI installs it)")
        pytest.skip("strace not installed")


_CALLS = "openat,pwrite64,pwritev,pwritev2,pread64,preadv,preadv2,fsync,fdatasync,rename,renameat,renameat2,ftruncate"


def traced(args, cwd, calls=_CALLS, check=True):
    """Run bin/qimg args under strace -f (one file per thread, so no call is split); return
    (CompletedProcess, [(time, name, args text, result)] of all threads in time order)."""
    _need_strace()
    prefix = os.path.join(str(cwd), ".strace")
    proc = run(["strace", "-ff", "-y", "-qq", "-ttt", "-o", prefix, "-e", "trace=" + calls,
                sys.executable, QIMG] + list(args), cwd=str(cwd), check=check)
    out = []
    for name in glob.glob(prefix + ".*"):
        with open(name) as f:
            for line in f:
                m = _LINE.match(line.strip())
                if m:
                    out.append((float(m.group(1)), m.group(2), m.group(3), int(m.group(4))))
        os.unlink(name)
    out.sort(key=lambda c: c[0])
    return proc, out


def _on(call, needle):
    """Whether the call's first argument (fd, strace -y annotated) or path names needle."""
    return needle in call[2].split(", ")[0] or needle in call[2].split(", ", 1)[0]


def _writes_to(calls, needle):
    """[(offset, length)] of the write calls on fds whose path contains needle."""
    out = []
    for c in calls:
        if c[1] in ("pwrite64", "pwritev", "pwritev2", "preadv2", "preadv", "pread64") and _on(c, needle):
            nums = [int(x) for x in re.findall(r"(?:^|, )(\d+)(?=,|$)", c[2].rsplit("]", 1)[-1] if "[" in c[2]
                                               else c[2].rsplit('"', 1)[-1])]
            if c[1] in ("pwrite64", "pread64"):
                length, offset = nums[-2], nums[-1]
            elif c[1] in ("pwritev2", "preadv2"):
                length, offset = c[3], nums[-2]
            else:
                length, offset = c[3], nums[-1]
            out.append((c[1], offset, length))
    return out


def _opened_flags(calls, needle):
    return [c[2].split(", ")[2] for c in calls if c[1] == "openat" and needle in c[2].split(", ")[1]]


@pytest.fixture(scope="module")
def source(tmp_path_factory, qemu_img):
    """A qcow2 source with data at unaligned guest offsets, zeros and holes."""
    d = tmp_path_factory.mktemp("src")
    path = str(d / "src.qcow2")
    run([qemu_img, "create", "-q", "-f", "qcow2", path, "24M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 7 1000 70000", "-c", "write -P 9 5M 1M",
         "-c", "write -z 8M 1M", "-c", "write -P 3 23M 12345", path])
    return path


def _qemu_io_reads(img, *cmds):
    cmd = ["qemu-io", "-f", "qcow2"]
    for c in cmds:
        cmd += ["-c", c]
    out = run(cmd + [img]).stdout
    assert "failed" not in out and out.count("read ") == len(cmds), out


# ------------------------------------------------------- O_DIRECT through the CLI (ext4)
@pytest.mark.parametrize("mode", ["none", "directsync"])
@pytest.mark.parametrize("fmt,extra", [("raw", []), ("qcow2", []), ("qcow2", ["-c"]),
                                       ("qcow2", ["-o", "cluster_size=512"])])
def test_convert_o_direct_output(tmp_path, source, mode, fmt, extra):
    out = str(tmp_path / ("out." + fmt))
    proc, calls = traced(["convert", "-t", mode, "-T", mode, "-O", fmt] + extra + [source, out], tmp_path)
    assert proc.returncode == 0, proc.stderr
    flags = _opened_flags(calls, ".qimg-tmp")
    assert any("O_DIRECT" in f for f in flags), flags
    assert any("O_DIRECT" in f for f in _opened_flags(calls, "src.qcow2")), "-T %s: source without O_DIRECT" % mode
    assert ("O_DSYNC" in " ".join(flags)) == (mode == "directsync")
    io = _writes_to(calls, ".qimg-tmp")
    assert io, "no writes seen"
    for name, offset, length in io:
        assert offset % 4096 == 0 and (length % 4096 == 0 or name.startswith("pread")), (name, offset, length)
    for name, offset, length in _writes_to(calls, "src.qcow2"):
        assert offset % 4096 == 0, (name, offset, length)
    assert qemu_compare(source, out, "qcow2", fmt).returncode == 0
    if fmt == "qcow2":
        run(["qemu-img", "check", "-q", out])


def test_create_and_check_repair_o_direct(tmp_path):
    img = str(tmp_path / "c.qcow2")
    proc, calls = traced(["create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", img, "100M"], tmp_path)
    # create has no -t in qemu-img: writeback, no O_DIRECT
    assert not any("O_DIRECT" in f for f in _opened_flags(calls, ".qimg-tmp"))
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 3M 129k", img])
    proc, calls = traced(["check", "-r", "all", "-T", "none", img], tmp_path)
    assert any("O_DIRECT" in f for f in _opened_flags(calls, "c.qcow2"))
    run(["qemu-img", "check", img])
    _qemu_io_reads(img, "read -P 5 3M 129k")


def test_engine_o_direct_fd_and_rmw(tmp_path, source, qemu_img):
    """open_image(cache="none"): the kernel says O_DIRECT; unaligned guest writes land right."""
    from qimg.image import open_image
    img = str(tmp_path / "w.qcow2")
    shutil.copy(source, img)
    with open_image(img, read_only=False, cache="none") as dev:
        assert _fd_flags(dev.file.fd) & os.O_DIRECT
        assert dev.read(1000, 70000) == b"\7" * 70000
        dev.write(12345, b"\x42" * 100001)
        dev.write_zeroes(5 << 20, 4096)
        dev.write(23 << 20, b"\x11" * 3)
    run([qemu_img, "check", img])
    _qemu_io_reads(img, "read -P 0x42 12345 100001", "read -P 0 5M 4k", "read -P 9 5246976 1044480",
                   "read -P 0x11 23M 3", "read -P 3 24117251 12342")


# ---------------------------------------------- a file system that refuses O_DIRECT
@pytest.mark.parametrize("args", [
    ["convert", "-t", "none", "-O", "raw", "a.qcow2", "b.raw"],
    ["convert", "-t", "directsync", "-O", "qcow2", "a.qcow2", "b.qcow2"],
    ["convert", "-T", "none", "-O", "raw", "a.qcow2", "c.raw"],
    ["convert", "-t", "writethrough", "-O", "qcow2", "a.qcow2", "d.qcow2"],
    ["check", "-T", "none", "a.qcow2"],
    ["check", "-r", "all", "-T", "directsync", "a.qcow2"],
    ["compare", "-T", "none", "a.qcow2", "a.qcow2"],
    ["convert", "-t", "bogus", "-O", "raw", "a.qcow2", "b.raw"],
    ["convert", "-T", "bogus", "-O", "raw", "a.qcow2", "b.raw"],
    ["check", "-T", "bogus", "a.qcow2"],
])
def test_refused_o_direct_as_qemu_img(no_odirect_dir, qemu_img, as_qemu_img, args):
    img = os.path.join(no_odirect_dir, "a.qcow2")
    if not os.path.exists(img):
        run([qemu_img, "create", "-q", "-f", "qcow2", img, "1M"])
    for name in ("b.raw", "b.qcow2", "c.raw", "d.qcow2"):
        if os.path.exists(os.path.join(no_odirect_dir, name)):
            os.unlink(os.path.join(no_odirect_dir, name))
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img, args, no_odirect_dir)
    if "O_DIRECT" in got.stderr and args[0] == "convert":
        # qemu-img leaves the file it created behind; ours never left a temporary file
        assert not [n for n in os.listdir(no_odirect_dir) if n.endswith(".qimg-tmp")]


# ------------------------------------------------------------------- flushes per mode
def _syncs(calls):
    return [(c[1], c[2]) for c in calls if c[1] in ("fsync", "fdatasync", "rename", "renameat", "renameat2")]


@pytest.mark.parametrize("mode,durable_writes", [
    (None, False), ("unsafe", False), ("writeback", False), ("none", False), ("writethrough", True),
    ("directsync", True)])
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_convert_flush_policy(tmp_path, source, mode, durable_writes, fmt):
    out = str(tmp_path / "o.img")
    args = ["convert", "-O", fmt] + (["-t", mode] if mode else []) + [source, out]
    proc, calls = traced(args, tmp_path)
    syncs = _syncs(calls)
    names = [s[0] for s in syncs]
    if mode in (None, "unsafe"):  # convert's default is unsafe: nothing synced
        assert names == ["rename"], syncs
    else:
        # the new file's data, then the rename, then the directory holding it
        assert names == ["fdatasync", "rename", "fsync"], syncs
        assert ".qimg-tmp" in syncs[0][1]
        assert syncs[2][1].endswith("<%s>" % str(tmp_path)), syncs
    flags = " ".join(_opened_flags(calls, ".qimg-tmp"))
    assert ("O_DSYNC" in flags) == durable_writes
    assert qemu_compare(source, out, "qcow2", fmt).returncode == 0


@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_create_is_durable(tmp_path, fmt):
    """qemu-img create writes with writeback and flushes before it returns: file, rename, directory."""
    img = str(tmp_path / "n.img")
    proc, calls = traced(["create", "-q", "-f", fmt, img, "1G"], tmp_path)
    names = [s[0] for s in _syncs(calls)]
    assert names == ["fdatasync", "rename", "fsync"], _syncs(calls)


@pytest.mark.parametrize("mode,expect", [(None, True), ("writeback", True), ("unsafe", False),
                                         ("writethrough", True), ("none", True)])
def test_check_repair_flushes(tmp_path, qemu_img, mode, expect):
    img = str(tmp_path / "leak.qcow2")
    run([qemu_img, "create", "-q", "-f", "qcow2", img, "4M"])
    with open(img, "r+b") as f:   # a leaked cluster: the file grows by one unreferenced cluster
        f.seek(0, 2)
        f.write(b"\1" * 65536)
    proc, calls = traced(["check", "-r", "leaks"] + (["-T", mode] if mode else []) + [img], tmp_path)
    syncs = [s for s in _syncs(calls) if "leak.qcow2" in s[1]]
    assert bool(syncs) == expect, syncs
    run([qemu_img, "check", img])
    proc, calls = traced(["check", img], tmp_path)
    assert not _syncs(calls), "a read-only check must not sync"


# ------------------------------------------------------------- atomic_output on its own
class _Counting(object):
    def __init__(self, monkeypatch):
        from qimg import util
        from qimg.protocols import cache as c
        self.calls = []
        real_fdatasync, real_fsync, real_rename = os.fdatasync, os.fsync, os.rename

        def fdatasync(fd):
            self.calls.append(("fdatasync", os.readlink("/proc/self/fd/%d" % fd)))
            real_fdatasync(fd)

        def fsync(fd):
            self.calls.append(("fsync", os.readlink("/proc/self/fd/%d" % fd)))
            real_fsync(fd)

        def rename(a, b):
            self.calls.append(("rename", b))
            real_rename(a, b)
        monkeypatch.setattr(c.os, "fdatasync", fdatasync)
        monkeypatch.setattr(c.os, "fsync", fsync)
        monkeypatch.setattr(util.os, "rename", rename)


@pytest.mark.parametrize("mode", cachemod.MODES)
def test_atomic_output_flush_order(tmp_path, monkeypatch, mode):
    from qimg.util import atomic_output
    counting = _Counting(monkeypatch)
    dest = str(tmp_path / "x.img")
    seen = {}

    def build(node):
        seen["flags"] = _fd_flags(node.fd)
        node.pwrite(0, b"hello" * 1000)
    atomic_output(dest, build, cache=mode)
    with open(dest, "rb") as f:
        assert f.read() == b"hello" * 1000
    m = cache_mode(mode)
    assert bool(seen["flags"] & os.O_DIRECT) == m.direct
    assert bool(seen["flags"] & os.O_DSYNC) == m.dsync
    if m.flush:
        assert [c[0] for c in counting.calls] == ["fdatasync", "rename", "fsync"]
        assert counting.calls[0][1].endswith(".qimg-tmp")
        assert counting.calls[2][1] == str(tmp_path)
    else:
        assert [c[0] for c in counting.calls] == ["rename"]


def test_atomic_output_refused_leaves_nothing(no_odirect_dir):
    from qimg.errors import QimgError
    from qimg.util import atomic_output
    dest = os.path.join(no_odirect_dir, "y.img")
    with open(dest, "wb") as f:
        f.write(b"old")
    with pytest.raises(QimgError) as e:
        atomic_output(dest, lambda node: node.pwrite(0, b"new"), cache="none")
    assert e.value.message == "Could not open '%s': Could not open '%s': filesystem does not support O_DIRECT" % (
        dest, dest)
    assert sorted(os.listdir(no_odirect_dir)) == ["a.qcow2", "y.img"] or "y.img" in os.listdir(no_odirect_dir)
    assert not [n for n in os.listdir(no_odirect_dir) if n.endswith(".qimg-tmp")]
    with open(dest, "rb") as f:
        assert f.read() == b"old"
    os.unlink(dest)


# ------------------------------------------- a block device with 4096-byte logical sectors
@pytest.fixture
def loop_4k(tmp_path):
    backing = str(tmp_path / "lo.img")
    with open(backing, "wb") as f:
        f.truncate(32 << 20)
    proc = subprocess.run(["losetup", "-f", "--show", "--sector-size", "4096", backing], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if proc.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("no loop device: %s" % proc.stderr.strip())
        pytest.skip("no loop device: %s" % proc.stderr.strip())
    dev = proc.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.call(["losetup", "-d", dev])


def test_convert_into_block_device_o_direct(tmp_path, qemu_img, loop_4k):
    """convert -n -t none -T none onto a 4Kn loop device: BLKSSZGET alignment, the device's size."""
    fd = os.open(loop_4k, os.O_RDONLY)
    try:
        assert cachemod.logical_block_size(fd) == 4096
    finally:
        os.close(fd)
    src = str(tmp_path / "s.qcow2")
    run([qemu_img, "create", "-q", "-f", "qcow2", src, "32M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 777 1M", "-c", "write -P 6 31M 4095", src])
    proc, calls = traced(["convert", "-n", "-t", "none", "-T", "none", "-O", "raw", src, loop_4k], tmp_path)
    assert any("O_DIRECT" in f for f in _opened_flags(calls, loop_4k))
    for name, offset, length in _writes_to(calls, loop_4k):
        assert offset % 4096 == 0 and length % 4096 == 0, (name, offset, length)
    assert qemu_compare(src, loop_4k, "qcow2", "raw").returncode == 0
