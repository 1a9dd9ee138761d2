# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_resize import main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info

MiB = 1 << 20


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.fixture(params=["qcow2", "raw"])
def image(request, tmp_path):
    path = str(tmp_path / ("disk." + request.param))
    create_image(path, request.param, size="4M")
    return path


def _size(path):
    return image_info(path, force_share=True)["virtual-size"]


def test_grow_ladder(image, run):
    args = {"path": image, "size": "8M"}
    r = run.ok(main, args, check_mode=True, diff=True)
    assert r["changed"] and r["virtual_size"] == 8 * MiB
    assert r["diff"] == {"before": {"virtual_size": 4 * MiB}, "after": {"virtual_size": 8 * MiB}}
    assert _size(image) == 4 * MiB
    r = run.ok(main, args, diff=True)
    assert r["changed"] and r["virtual_size"] == 8 * MiB and r["old_virtual_size"] == 4 * MiB
    assert _size(image) == 8 * MiB
    before = _digest(image)
    for check in (True, False):
        r = run.ok(main, args, check_mode=check)
        assert not r["changed"]
    assert _digest(image) == before


def test_shrink_needs_shrink(image, run):
    before = _digest(image)
    r = run.fail(main, {"path": image, "size": "1M"})
    assert "shrink=true" in r["msg"]
    r = run.fail(main, {"path": image, "size": "1M"}, check_mode=True)
    assert "shrink=true" in r["msg"]
    assert _digest(image) == before
    r = run.ok(main, {"path": image, "size": "1M", "shrink": True})
    assert r["changed"] and _size(image) == MiB
    assert not run.ok(main, {"path": image, "size": "1M", "shrink": True})["changed"]


@pytest.mark.parametrize("size", ["+1M", "-1M"])
def test_relative_refused(image, run, size):
    r = run.fail(main, {"path": image, "size": size})
    assert "absolute" in r["msg"]


def test_unaligned_raw_is_idempotent(tmp_path, run):
    path = str(tmp_path / "disk.raw")
    create_image(path, "raw", size="1M")
    assert run.ok(main, {"path": path, "size": "1000001", "shrink": True})["changed"]
    assert not run.ok(main, {"path": path, "size": "1000001", "shrink": True})["changed"]


def test_qemu_refusals_in_check_mode(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    create_image(path, "qcow2", size="1M")
    r = run.fail(main, {"path": path, "size": "2000001"}, check_mode=True)
    assert "multiple of 512" in r["msg"]
    r = run.fail(main, {"path": path, "size": "8M", "preallocation": "metadata", "format": "raw"})
    assert r["failed"]


def test_preallocation(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    create_image(path, "qcow2", size="1M")
    r = run.ok(main, {"path": path, "size": "8M", "preallocation": "metadata"})
    assert r["changed"] and _size(path) == 8 * MiB


def test_missing_image(tmp_path, run):
    r = run.fail(main, {"path": str(tmp_path / "nope.qcow2"), "size": "1M"})
    assert "nope.qcow2" in r["msg"]


def test_in_use_refused(in_use, run):
    r = run.fail(main, {"path": in_use, "size": "8M"})
    assert "refusing to resize" in r["msg"]
    assert _size(in_use) == MiB
    # an image that already has the size is fine, even in use
    assert not run.ok(main, {"path": in_use, "size": "1M"})["changed"]
