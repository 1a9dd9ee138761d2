# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The convert pipeline's parts: zero detection, reads into reused buffers, the background writer.

convert reads each chunk into one of a few pooled buffers and hands views of it to the writer
thread; a buffer goes back to the pool only after every write that uses it is done. These tests
check the zero splitting against a simple model (hypothesis), readinto() against read(), the
writer's failure path, and whole conversions of many distinct chunks with a deliberately slow
writer, which would show a buffer reused too early as wrong content under `qemu-img compare`.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import random
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import assert_check_clean, qemu_compare, qemu_img_create, qemu_io, same_bytes


# --- zero splitting ------------------------------------------------------------------------------

def _model_split(offset, data, sparse_size):
    """The obvious per-block loop: (offset, length, is_zero) runs, blocks aligned to the guest offset.
    A piece that is all zeros is one zero run, aligned or not (as qemu-img checks a whole request
    first)."""
    n = len(data)
    if sparse_size <= 0:
        return [(offset, n, False)]
    if not any(data):
        return [(offset, n, True)]
    runs = []
    pos = 0
    while pos < n:
        nxt = min(n, (offset + pos) // sparse_size * sparse_size + sparse_size - offset)
        zero = nxt - pos == sparse_size and not any(data[pos:nxt])
        if runs and runs[-1][2] == zero:
            runs[-1] = (runs[-1][0], runs[-1][1] + nxt - pos, zero)
        else:
            runs.append((offset + pos, nxt - pos, zero))
        pos = nxt
    return runs


@st.composite
def _block_data(draw):
    sparse_size = draw(st.sampled_from([512, 4096, 65536, 0]))
    unit = sparse_size or 512
    offset = draw(st.integers(0, 3 * unit))
    parts = []
    for kind in draw(st.lists(st.sampled_from(["zero", "data", "lead0", "tail", "partial"]), min_size=1, max_size=12)):
        length = unit * draw(st.integers(1, 3))
        if kind == "zero":
            parts.append(bytes(length))
        elif kind == "data":
            parts.append(b"\x5a" * length)
        elif kind == "lead0":  # a first byte of zero: a candidate that is not all zero
            parts.append(bytes(1) + b"\x01" * (length - 1))
        elif kind == "tail":  # zeros but for the very last byte
            parts.append(bytes(length - 1) + b"\x01")
        else:
            parts.append(bytes(draw(st.integers(1, unit - 1))))
    data = b"".join(parts)
    lo = draw(st.integers(0, 700))  # where the data sits in the buffer
    return offset, data, lo, sparse_size


@settings(max_examples=400, deadline=None)
@given(_block_data())
def test_split_zeros_matches_model(case):
    from qimg.ops.convert import _split_zeros
    offset, data, lo, sparse_size = case
    buf = bytearray(b"\xee" * lo) + bytearray(data) + bytearray(b"\xee" * 100)  # junk around it
    pieces = _split_zeros(offset, buf, lo, lo + len(data), sparse_size)
    assert [(o, n, d is None) for o, n, d in pieces] == _model_split(offset, data, sparse_size)
    assert b"".join(bytes(n) if d is None else bytes(d) for o, n, d in pieces) == data


# --- readinto ------------------------------------------------------------------------------------

def _images(tmp_path):
    base = tmp_path / "base.qcow2"
    qemu_img_create(base, "qcow2", "3M", {"cluster_size": "4k"})
    qemu_io(base, "write -P 7 0 1M", "write -z 512k 64k", "write -P 8 2M 100k")
    top = tmp_path / "top.qcow2"
    qemu_img_create(top, "qcow2", "4M", {"cluster_size": "64k"}, backing="base.qcow2", backing_fmt="qcow2")
    qemu_io(top, "write -P 9 100k 200k", "write -z 1M 512k", "write -c -P 10 3M 64k", "write -P 11 4032k 64k")
    raw = tmp_path / "short.raw"
    raw.write_bytes(os.urandom(1000))  # QEMU sizes it 1024: the tail past the file reads as zeros
    return [(str(top), "qcow2"), (str(base), "qcow2"), (str(raw), "raw")]


def test_readinto_matches_read(qemu_img, qemu_io, tmp_path):
    from qimg.image import open_image
    rnd = random.Random(5)
    for path, fmt in _images(tmp_path):
        with open_image(path, fmt) as dev:
            windows = [(0, dev.size)] + [(rnd.randrange(dev.size), 0) for dummy in range(40)]
            for off, n in windows:
                n = n or rnd.randrange(1, dev.size - off + 1)
                buf = bytearray(b"\xaa" * (n + 8))  # stale content must all be overwritten
                dev.readinto(off, memoryview(buf)[4:4 + n])
                same_bytes(bytes(buf[4:4 + n]), dev.read(off, n), "%s [%d, +%d)" % (path, off, n))
                assert buf[:4] == buf[4 + n:] == b"\xaa" * 4, "readinto wrote outside its view"


# --- the background writer -----------------------------------------------------------------------

def test_background_writer_failure_runs_callbacks_and_raises(tmp_path):
    from qimg.fileio import BackgroundWriter
    path = tmp_path / "ro"
    path.write_bytes(b"")
    fd = os.open(str(path), os.O_RDONLY)  # every write fails with EBADF
    released = []
    try:
        io = BackgroundWriter(fd)
        with pytest.raises(OSError) as err:
            for i in range(10):
                io.submit(i * 4096, [b"x" * 4096])
                io.after_writes(lambda i=i: released.append(i))
                time.sleep(0.01)
        assert err.value.errno == errno.EBADF
        with pytest.raises(OSError):
            io.wait()
    finally:
        os.close(fd)
    # every callback queued before the failure was noticed still ran: no buffer is lost
    assert released == list(range(len(released))) and released
    assert os.path.getsize(str(path)) == 0


def test_background_writer_orders_callbacks_after_writes(tmp_path):
    from qimg.fileio import BackgroundWriter
    path = tmp_path / "out"
    fd = os.open(str(path), os.O_RDWR | os.O_CREAT, 0o600)
    seen = []
    try:
        io = BackgroundWriter(fd)
        for i in range(20):
            io.submit(i * 512, [bytes([i + 1]) * 512])
            io.after_writes(lambda i=i: seen.append(os.pread(fd, 512, i * 512)))
        io.wait()
    finally:
        os.close(fd)
    assert seen == [bytes([i + 1]) * 512 for i in range(20)]


# --- whole conversions through the buffer pool ----------------------------------------------------

@pytest.fixture
def slow_writes(monkeypatch):
    """Make every background write wait a little, so the reader runs as far ahead as the pool lets it."""
    from qimg.protocols import file as fileio  # the host-file node: the write choke point
    real = fileio.pwritev_all

    def slow(fd, offset, buffers):
        time.sleep(0.004)
        real(fd, offset, buffers)
    monkeypatch.setattr(fileio, "pwritev_all", slow)


def _many_chunks_source(tmp_path):
    """Sixteen 4 MiB chunks (more than the pool holds), each with its own content, some zero blocks."""
    from qimg.ops.convert import CHUNK, POOL_BUFFERS
    count = POOL_BUFFERS * 2 + 4
    rnd = random.Random(9)
    path = tmp_path / "src.raw"
    with open(str(path), "wb") as f:
        for i in range(count):
            chunk = bytearray(rnd.randbytes(CHUNK))
            for dummy in range(8):
                at = rnd.randrange(CHUNK // 4096) * 4096
                n = len(chunk[at:at + 4096 * rnd.randrange(1, 4)])
                chunk[at:at + n] = bytes(n)
            f.write(chunk)
    return path, count * CHUNK


@pytest.mark.parametrize("out_fmt,kw", [
    ("raw", {}),
    ("qcow2", {}),
    ("qcow2", {"options": {"cluster_size": 4096}}),
    ("qcow2", {"sparse_size": 0}),
    ("qcow2", {"compress": True}),
], ids=["raw", "qcow2", "qcow2-4k", "qcow2-S0", "qcow2-c"])
def test_many_chunks_with_slow_writer(qemu_img, tmp_path, slow_writes, out_fmt, kw):
    from qimg.ops.convert import convert
    src, size = _many_chunks_source(tmp_path)
    out = tmp_path / ("out." + out_fmt)
    convert([str(src)], str(out), src_fmt="raw", out_fmt=out_fmt, **kw)
    if out_fmt == "qcow2":
        assert_check_clean(out)
    proc = qemu_compare(out, src, out_fmt, "raw", strict=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_many_chunks_into_existing_target(qemu_img, tmp_path, slow_writes):
    from qimg.ops.convert import convert
    src, size = _many_chunks_source(tmp_path)
    target = tmp_path / "target.qcow2"
    qemu_img_create(target, "qcow2", size)
    convert([str(src)], str(target), src_fmt="raw", out_fmt="qcow2", target_exists=True)
    assert_check_clean(target)
    proc = qemu_compare(target, src, "qcow2", "raw")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_failed_write_stops_reader_and_leaves_no_output(tmp_path, monkeypatch):
    """A write failing mid-way must not leave the reading thread stuck waiting for a buffer."""
    from qimg.protocols import file as fileio  # the host-file node: the write choke point
    from qimg.errors import QimgError
    from qimg.ops.convert import convert
    src, size = _many_chunks_source(tmp_path)
    calls = []

    def failing(fd, offset, buffers):
        calls.append(offset)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(fileio, "pwritev_all", failing)
    before = threading.active_count()
    with pytest.raises(QimgError) as err:
        convert([str(src)], str(tmp_path / "out.qcow2"), src_fmt="raw", out_fmt="qcow2")
    assert "No space left on device" in str(err.value)
    assert sorted(os.listdir(str(tmp_path))) == ["src.raw"]
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.05)
    assert threading.active_count() == before, "a pipeline thread is still running"
