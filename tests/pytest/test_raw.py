# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The raw driver: I/O, hole punching, SEEK_DATA/SEEK_HOLE block status and preallocation."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from helpers import MiB, qemu_img_create, qemu_info, qemu_map, qimg_json, same_bytes

BLOCK = 4096


def _open(path, read_only=False):
    from qimg.image import open_image
    return open_image(str(path), fmt="raw", read_only=read_only)


def _allocated(path):
    os.sync()
    return os.stat(str(path)).st_blocks * 512


def _sparse_file(path, size, regions):
    """A sparse file with bytes written at the given (offset, length, byte) regions."""
    with open(str(path), "wb") as f:
        f.truncate(size)
        for off, length, val in regions:
            f.seek(off)
            f.write(bytes([val]) * length)


def test_read_write_roundtrip(qemu_img, tmp_path):
    p = tmp_path / "a.raw"
    size = 3 * MiB + 1000  # a raw file need not be sector-aligned
    _sparse_file(p, size, [])
    model = bytearray(size)
    writes = [(0, 1, 1), (511, 2, 2), (4095, 8194, 3), (MiB - 7, 70000, 4), (size - 13, 13, 5)]
    with _open(p) as dev:
        assert dev.format_name == "raw"
        # like qemu-img, the virtual size is the file length rounded up to a sector
        assert dev.size == qemu_info(p, fmt="raw")["virtual-size"] == -(-size // 512) * 512
        for off, length, val in writes:
            dev.write(off, bytes([val]) * length)
            model[off:off + length] = bytes([val]) * length
        same_bytes(dev.read(0, size), bytes(model))
        same_bytes(dev.read(4000, 200), bytes(model[4000:4200]))
        same_bytes(dev.read(size, dev.size - size), bytes(dev.size - size))  # the sector tail reads as zeros
        dev.flush()
    same_bytes(p.read_bytes(), bytes(model))
    assert os.path.getsize(str(p)) == size


def test_write_zeroes_reads_zero(tmp_path):
    p = tmp_path / "a.raw"
    _sparse_file(p, 2 * MiB, [(0, 2 * MiB, 0xAB)])
    with _open(p) as dev:
        dev.write_zeroes(1000, 5000)
        dev.write_zeroes(MiB, 512 * 1024)
        dev.flush()
    data = p.read_bytes()
    same_bytes(data[:1000], b"\xab" * 1000)
    same_bytes(data[1000:6000], bytes(5000))
    same_bytes(data[6000:MiB], b"\xab" * (MiB - 6000))
    same_bytes(data[MiB:MiB + 512 * 1024], bytes(512 * 1024))
    same_bytes(data[MiB + 512 * 1024:], b"\xab" * (512 * 1024))


def test_discard_punches_holes(tmp_path):
    p = tmp_path / "a.raw"
    _sparse_file(p, 2 * MiB, [(0, 2 * MiB, 0xCD)])
    before = _allocated(p)
    assert before >= 2 * MiB
    with _open(p) as dev:
        dev.discard(256 * 1024, MiB)
        dev.flush()
    after = _allocated(p)
    assert after <= before - MiB, "discard did not punch a hole: %d -> %d bytes allocated" % (before, after)
    data = p.read_bytes()
    same_bytes(data[:256 * 1024], b"\xcd" * (256 * 1024))
    same_bytes(data[256 * 1024:256 * 1024 + MiB], bytes(MiB))
    same_bytes(data[256 * 1024 + MiB:], b"\xcd" * (MiB - 256 * 1024))
    assert os.path.getsize(str(p)) == 2 * MiB  # a hole, not a truncation


def test_discard_unaligned_keeps_outside(tmp_path):
    p = tmp_path / "a.raw"
    _sparse_file(p, MiB, [(0, MiB, 0x11)])
    with _open(p) as dev:
        dev.discard(1000, 10000)
    data = p.read_bytes()
    same_bytes(data[:1000], b"\x11" * 1000)
    same_bytes(data[11000:], b"\x11" * (MiB - 11000))


def _data_ranges_from_map(entries):
    out = []
    for e in entries:
        if e["data"] and out and out[-1][1] == e["start"]:
            out[-1] = (out[-1][0], e["start"] + e["length"])
        elif e["data"]:
            out.append((e["start"], e["start"] + e["length"]))
    return out


def _data_ranges_from_extents(extents):
    from qimg.image import DATA
    out = []
    for x in extents:
        if x.status == DATA and out and out[-1][1] == x.start:
            out[-1] = (out[-1][0], x.start + x.length)
        elif x.status == DATA:
            out.append((x.start, x.start + x.length))
    return out


SPARSE_LAYOUTS = [
    ("all-hole", 4 * MiB, []),
    ("all-data", MiB, [(0, MiB, 1)]),
    ("scattered", 8 * MiB, [(0, 100, 1), (64 * 1024, 4096, 2), (3 * MiB + 5, 10, 3), (8 * MiB - 4096, 4096, 4)]),
    ("unaligned-size", 5 * MiB + 333, [(MiB, 2 * MiB, 5), (5 * MiB, 333, 6)]),
]


@pytest.mark.parametrize("size,regions", [x[1:] for x in SPARSE_LAYOUTS], ids=[x[0] for x in SPARSE_LAYOUTS])
def test_block_status_agrees_with_qemu_map(qemu_img, tmp_path, size, regions):
    p = tmp_path / "a.raw"
    _sparse_file(p, size, regions)
    theirs = qemu_map(p, fmt="raw")
    with _open(p, read_only=True) as dev:
        extents = dev.block_status(0, size)
    assert extents[0].start == 0 and sum(x.length for x in extents) == size, "extents must cover the range"
    assert _data_ranges_from_extents(extents) == _data_ranges_from_map(theirs)
    assert qimg_json("map", "--output=json", "-f", "raw", str(p)) == theirs


@pytest.mark.parametrize("prealloc", ["off", "falloc", "full"])
def test_create_preallocation(qemu_img, tmp_path, prealloc):
    from qimg.ops.create import create_image
    ours, theirs = tmp_path / "ours.raw", tmp_path / "theirs.raw"
    opts = {} if prealloc == "off" else {"preallocation": prealloc}
    create_image(str(ours), "raw", size="3M", options=opts)
    qemu_img_create(theirs, "raw", "3M", opts)
    assert os.path.getsize(str(ours)) == os.path.getsize(str(theirs)) == 3 * MiB
    a, b = _allocated(ours), _allocated(theirs)
    if prealloc == "off":
        # qemu-img allocates the first block (an O_DIRECT alignment-probing aid); sparse otherwise
        assert a <= b <= BLOCK, (a, b)
    else:
        assert a == b, "allocated bytes: ours %d, qemu-img %d" % (a, b)
    same_bytes(ours.read_bytes(), bytes(3 * MiB))
    info = qemu_info(ours)
    assert info["format"] == "raw" and info["virtual-size"] == 3 * MiB


def test_qcow2_file_opened_as_raw_stays_raw(qemu_img, tmp_path):
    """Probing never upgrades a file the caller called raw."""
    p = tmp_path / "looks-like.qcow2"
    qemu_img_create(p, "qcow2", "1M")
    with _open(p, read_only=True) as dev:
        assert dev.format_name == "raw"
        assert dev.size == qemu_info(p, fmt="raw")["virtual-size"]
        same_bytes(dev.read(0, 4), b"QFI\xfb")


def test_out_of_range_is_a_clean_error(tmp_path):
    from qimg.errors import QimgError
    p = tmp_path / "a.raw"
    _sparse_file(p, MiB, [])
    with _open(p) as dev:
        with pytest.raises(QimgError):
            dev.read(MiB - 10, 20)
        with pytest.raises(QimgError):
            dev.write(MiB, b"x")
    with _open(p, read_only=True) as dev:
        with pytest.raises(QimgError):
            dev.write(0, b"x")
