# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_compare import main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.convert import convert
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image

MiB = 1 << 20


def _write_raw(path, size, chunks):
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in chunks.items():
            f.seek(offset)
            f.write(data)


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns


@pytest.fixture
def images(tmp_path):
    raw = str(tmp_path / "a.img")
    _write_raw(raw, 2 * MiB, {65536: b"data" * 1024})
    qcow = str(tmp_path / "a.qcow2")
    convert([raw], qcow, out_fmt="qcow2")
    return raw, qcow


def test_identical_across_formats(images, run):
    raw, qcow = images
    before = _digest(raw), _digest(qcow)
    for check_mode in (False, True):
        res = run.ok(main, dict(path1=raw, path2=qcow, format1="raw"), check_mode=check_mode)
        assert res["changed"] is False
        assert res["identical"] is True
        assert res["result"] == "identical"
        assert res["offset"] is None
        assert res["size_mismatch"] is False
    assert (_digest(raw), _digest(qcow)) == before


def test_content_mismatch_offset(images, run):
    raw, qcow = images
    with open(raw, "r+b") as f:
        f.seek(MiB + 700)
        f.write(b"x")
    res = run.ok(main, dict(path1=raw, path2=qcow))
    assert res["changed"] is False
    assert res["identical"] is False
    assert res["result"] == "content-mismatch"
    assert res["offset"] == MiB + 512
    assert res["size_mismatch"] is False


def test_size_mismatch(tmp_path, run):
    small = str(tmp_path / "small.qcow2")
    big = str(tmp_path / "big.qcow2")
    create_image(small, "qcow2", size="1M")
    create_image(big, "qcow2", size="2M")
    res = run.ok(main, dict(path1=small, path2=big))
    assert res["identical"] is True
    assert res["size_mismatch"] is True
    res = run.ok(main, dict(path1=small, path2=big, strict=True))
    assert res["identical"] is False
    assert res["result"] == "size-mismatch"
    assert res["offset"] is None
    assert res["size_mismatch"] is True


def test_strict_block_status_mismatch(tmp_path, run):
    zeros = str(tmp_path / "zeros.img")
    with open(zeros, "wb") as f:
        f.write(bytes(MiB))
    empty = str(tmp_path / "empty.qcow2")
    create_image(empty, "qcow2", size="1M")
    assert run.ok(main, dict(path1=zeros, path2=empty))["identical"] is True
    res = run.ok(main, dict(path1=zeros, path2=empty, strict=True))
    assert res["result"] == "block-status-mismatch"
    assert res["offset"] == 0


def test_format_raw_is_not_probed(images, run):
    raw, qcow = images
    res = run.ok(main, dict(path1=qcow, format1="raw", path2=qcow))
    assert res["identical"] is False


def test_missing_image_fails(tmp_path, images, run):
    raw, dummy = images
    res = run.fail(main, dict(path1=raw, path2=str(tmp_path / "missing.qcow2")))
    assert "missing.qcow2" in res["msg"]
    assert not res.get("changed")
