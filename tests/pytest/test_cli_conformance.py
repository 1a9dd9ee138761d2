# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CLI, create and header behaviour that QEMU's iotests check, against the qemu-img oracle.

Each block names the iotest it comes from (tests/qemu-iotests/NNN in QEMU 7.2).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import struct

import pytest

from conftest import assert_same_as_qemu_img as same
from conftest import oracle_in, run

FEATURE_TABLE = 0x6803F857


def _set_features(path, incompat=None, autoclear=None):
    with open(path, "r+b") as f:
        if incompat is not None:
            f.seek(72)
            f.write(struct.pack(">Q", incompat))
        if autoclear is not None:
            f.seek(88)
            f.write(struct.pack(">Q", autoclear))


def _set_feature_table(path, data):
    """Replace the header extensions of a fresh qemu-img qcow2 (only its feature table) by one table."""
    with open(path, "r+b") as f:
        f.seek(112)
        if data is None:
            f.write(bytes(8))
        else:
            f.write(struct.pack(">II", FEATURE_TABLE, len(data)) + data + bytes(-len(data) % 8) + bytes(8))


def _entry(kind, bit, name, pad=True):
    raw = bytes([kind, bit]) + name.encode()
    return raw + bytes(48 - len(raw)) if pad else raw


# ---------------------------------------------------------------------------------------------
# 036: unknown incompatible features are named from the image's feature table, in its order;
# an unknown autoclear bit is cleared by the first read-write open

@pytest.mark.parametrize("bits, table", [
    ([63], None),
    ([63], _entry(0, 63, "Test feature", pad=False)),           # a short, unpadded entry
    ([61, 62, 63], None),
    ([61, 62, 63], _entry(0, 63, "Test feature", pad=False)),
    ([61, 62, 63], _entry(0, 61, "Test feature", pad=False)),
    ([61, 62, 63], _entry(0, 61, "test1") + _entry(0, 62, "test2")),
    ([61, 62, 63], _entry(0, 61, "test1") + _entry(0, 62, "test2") + _entry(0, 63, "test3")),
    ([61, 62, 63], _entry(1, 61, "test1") + _entry(0, 62, "test2") + _entry(2, 63, "test3")
     + _entry(0, 60, "test4")),
    ([62, 63], _entry(0, 63, "b") + bytes(48) + _entry(0, 62, "after an empty entry")),
])
def test_036_unsupported_feature_names(qemu_img, as_qemu_img, tmp_path, bits, table):
    img = str(tmp_path / "t.qcow2")
    run([qemu_img, "create", "-q", "-f", "qcow2", img, "64M"])
    _set_features(img, incompat=sum(1 << b for b in bits))
    _set_feature_table(img, table)
    got = same(qemu_img, as_qemu_img, ["info", "t.qcow2"], str(tmp_path))
    assert "Unsupported qcow2 feature(s)" in got.stderr


@pytest.mark.parametrize("command", [["check", "-r", "all", "t.qcow2"], ["check", "-r", "leaks", "t.qcow2"]])
def test_036_unknown_autoclear_bit_cleared(qemu_img, as_qemu_img, tmp_path, command):
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    theirs.mkdir()
    run([qemu_img, "create", "-q", "-f", "qcow2", str(theirs / "t.qcow2"), "64M"])
    _set_features(str(theirs / "t.qcow2"), autoclear=1 << 63)
    shutil.copytree(str(theirs), str(ours))
    want = run([qemu_img] + command, cwd=str(theirs), check=False)
    got = as_qemu_img(*command, cwd=str(ours))
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    with open(str(ours / "t.qcow2"), "rb") as f, open(str(theirs / "t.qcow2"), "rb") as g:
        assert f.read(512) == g.read(512)
        f.seek(88)
        assert struct.unpack(">Q", f.read(8))[0] == 0


# ---------------------------------------------------------------------------------------------
# 049: the "Formatting" line lists options in qcow2_create_opts' order (encryption first); an
# empty backing file name is refused

@pytest.mark.parametrize("args", [
    ["-f", "qcow2", "-o", "encryption=off", "t.qcow2", "64M"],
    ["-f", "qcow2", "-o", "lazy_refcounts=on,encryption=off,cluster_size=4k", "t.qcow2", "64M"],
    ["-f", "qcow2", "-o", "encryption=off,compat=0.10", "t.qcow2", "1M"],
    ["-f", "qcow2", "-b", "", "t.qcow2", "1M"],
    ["-f", "qcow2", "-b", "", "-F", "qcow2", "t.qcow2", "1M"],
    ["-f", "qcow2", "-o", "backing_file=", "t.qcow2", "1M"],
    ["-q", "-f", "qcow2", "-b", "", "t.qcow2", "1M"],
])
def test_049_create_option_order_and_empty_backing(qemu_img, as_qemu_img, tmp_path, args):
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    theirs.mkdir()
    ours.mkdir()
    want = run([qemu_img, "create"] + args, cwd=str(theirs), check=False)
    got = as_qemu_img("create", *args, cwd=str(ours))
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    assert os.path.exists(str(ours / "t.qcow2")) == os.path.exists(str(theirs / "t.qcow2"))
    if want.returncode == 0:
        run([qemu_img, "check", str(ours / "t.qcow2")])


# ---------------------------------------------------------------------------------------------
# 054: a header size beyond what an L1 index can address is "Image is too big", checked before
# "L1 table is too small" (qcow2_do_open()'s order)

@pytest.mark.parametrize("size", [1024 ** 6, 1 << 62, (1 << 31) * (1 << 29) + 1])
@pytest.mark.parametrize("command", [["check"], ["info"], ["map", "--output=json"]])
def test_054_image_too_big(qemu_img, as_qemu_img, tmp_path, size, command):
    img = str(tmp_path / "t.qcow2")
    run([qemu_img, "create", "-q", "-f", "qcow2", img, "4G"])
    with open(img, "r+b") as f:
        f.seek(24)
        f.write(struct.pack(">Q", size))
    got = same(qemu_img, as_qemu_img, command + ["t.qcow2"], str(tmp_path))
    assert got.returncode != 0


def test_054_create_too_large(qemu_img, as_qemu_img, tmp_path):
    same(qemu_img, as_qemu_img, ["create", "-f", "qcow2", "t.qcow2", "%dT" % (1024 * 1024)], str(tmp_path))
