# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_bitmap import main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import open_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.bitmap import bitmap, bitmap_list
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image

MiB = 1 << 20


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _bitmaps(path):
    with open_image(path, read_only=True, force_share=True, open_backing=False) as dev:
        return bitmap_list(dev)


def _write(path, offset, length):
    with open_image(path, read_only=False) as dev:
        dev.write(offset, b"\x01" * length)


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / "disk.qcow2")
    create_image(path, "qcow2", size="16M")
    return path


def _ladder(run, args, image):
    """check mode (changed), real run (changed), check mode and real run again (not changed)."""
    r = run.ok(main, args, check_mode=True, diff=True)
    assert r["changed"], r
    first = r
    r = run.ok(main, args, diff=True)
    assert r["changed"], r
    assert r["diff"]["after"] == first["diff"]["after"]
    before = _digest(image)
    for check in (True, False):
        r = run.ok(main, args, check_mode=check)
        assert not r["changed"], r
    assert _digest(image) == before
    return first


def test_add_ladder(image, run):
    first = _ladder(run, {"path": image, "name": "b0", "granularity": "128k"}, image)
    assert first["diff"]["before"] == {"bitmaps": []}
    assert first["diff"]["after"] == {"bitmaps": [{"name": "b0", "granularity": 131072, "enabled": True,
                                                   "in_use": False}]}
    assert [b["name"] for b in _bitmaps(image)] == ["b0"]


def test_disable_enable_and_remove(image, run):
    bitmap(image, "b0", [("add", None)])
    _ladder(run, {"path": image, "name": "b0", "enabled": False}, image)
    assert _bitmaps(image)[0]["flags"] == []
    _ladder(run, {"path": image, "name": "b0", "enabled": True}, image)
    assert _bitmaps(image)[0]["flags"] == ["auto"]
    _ladder(run, {"path": image, "name": "b0", "state": "absent"}, image)
    assert _bitmaps(image) == []


def test_merge_from_only_when_missing(image, tmp_path, run):
    other = str(tmp_path / "other.qcow2")
    create_image(other, "qcow2", size="16M")
    bitmap(other, "src", [("add", None)])
    _write(other, 3 * MiB, 64 * 1024)
    bitmap(image, "dst", [("add", None), ("disable", None)])
    args = {"path": image, "name": "dst", "merge_from": [{"bitmap": "src", "source_file": other}]}
    _ladder(run, args, image)
    r = run.ok(main, dict(args))
    assert r["bitmap"]["dirty_bytes"] == 64 * 1024
    # a source whose bits are all there already changes nothing; new bits change it again
    _write(other, 5 * MiB, 4096)
    r = run.ok(main, args)
    assert r["changed"] and r["bitmap"]["dirty_bytes"] == 128 * 1024


def test_clear_is_imperative(image, run):
    bitmap(image, "b0", [("add", None)])
    args = {"path": image, "name": "b0", "clear": True}
    r = run.ok(main, args, check_mode=True)
    assert not r["changed"]          # no bits set: nothing to clear
    _write(image, 0, 4096)
    r = run.ok(main, args, check_mode=True)
    assert r["changed"]
    r = run.ok(main, args)
    assert r["changed"] and r["bitmap"]["dirty_bytes"] == 0
    r = run.ok(main, args)
    assert not r["changed"]


def test_refusals(image, tmp_path, run):
    bitmap(image, "b0", [("add", None)])
    before = _digest(image)
    r = run.fail(main, {"path": image, "name": "b0", "granularity": "1M"})
    assert "granularity" in r["msg"]
    r = run.fail(main, {"path": image, "name": "b1", "granularity": "1000"}, check_mode=True)
    assert "Granularity must be power of 2 and at least 512" in r["msg"]
    r = run.fail(main, {"path": image, "name": "b0", "merge_from": [{"bitmap": "nope"}]})
    assert "Dirty bitmap 'nope' not found" in r["msg"]
    raw = str(tmp_path / "disk.raw")
    create_image(raw, "raw", size="1M")
    r = run.fail(main, {"path": raw, "name": "b0"})
    assert "only qcow2" in r["msg"]
    v2 = str(tmp_path / "v2.qcow2")
    create_image(v2, "qcow2", size="1M", options={"compat": "0.10"})
    r = run.fail(main, {"path": v2, "name": "b0"}, check_mode=True)
    assert "Cannot store dirty bitmaps in qcow2 v2 files" in r["msg"]
    assert _digest(image) == before
