# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import shutil
import struct
import subprocess

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_check import main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info

FIGURES = ("check_errors", "corruptions", "leaks", "corruptions_fixed", "leaks_fixed", "total_clusters",
           "allocated_clusters", "fragmented_clusters", "compressed_clusters", "image_end_offset")
CS = 65536


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _u64(path, offset):
    with open(path, "rb") as f:
        f.seek(offset)
        return struct.unpack(">Q", f.read(8))[0]


def _poke(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def _set_refcount(path, cluster, value):
    """16-bit refcounts, one refcount block (small images)."""
    block = _u64(path, _u64(path, 48))
    _poke(path, block + 2 * cluster, struct.pack(">H", value))


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / "disk.qcow2")
    create_image(path, "qcow2", size="16M")
    return path


@pytest.fixture
def leaky(image):
    """A fresh image with two leaked clusters appended to the file."""
    with open(image, "r+b") as f:
        f.truncate(12 * CS)
    _set_refcount(image, 10, 1)
    _set_refcount(image, 11, 1)
    return image


@pytest.fixture
def corrupt(image):
    """The refcount of the L1 table's cluster dropped to zero."""
    l1_cluster = _u64(image, 40) // CS
    _set_refcount(image, l1_cluster, 0)
    return image


def _qemu_check_rc(path):
    tool = shutil.which("qemu-img")
    if tool is None:
        return None
    return subprocess.run([tool, "check", path], capture_output=True, text=True, check=False).returncode


def test_clean_image(image, run):
    before = _digest(image)
    res = run.ok(main, dict(path=image))
    assert res["changed"] is False
    assert res["status"] == "clean"
    assert res["format"] == "qcow2"
    assert res["messages"] == []
    for key in FIGURES:
        assert isinstance(res[key], int), key
    assert res["total_clusters"] == 256
    assert res["leaks"] == res["corruptions"] == res["check_errors"] == 0
    assert res["image_end_offset"] > 0
    assert res["dirty_flag"] is False and res["corrupt_flag"] is False
    assert not [k for k in res if "-" in k]
    assert _digest(image) == before


def test_leaks_ladder(leaky, run):
    before = _digest(leaky)
    res = run.ok(main, dict(path=leaky))
    assert res["changed"] is False
    assert res["status"] == "leaks"
    assert res["leaks"] == 2
    assert "Leaked cluster 10 refcount=1 reference=0" in res["messages"]
    assert _digest(leaky) == before

    args = dict(path=leaky, repair="leaks")
    res = run.ok(main, args, check_mode=True)
    assert res["changed"] is True
    assert res["status"] == "leaks"
    assert res["leaks"] == 2 and res["leaks_fixed"] == 0
    assert _digest(leaky) == before

    res = run.ok(main, args)
    assert res["changed"] is True
    assert res["status"] == "clean"
    assert res["leaks_fixed"] == 2
    assert res["leaks"] == 0
    assert _qemu_check_rc(leaky) in (0, None)

    after = _digest(leaky)
    res = run.ok(main, args, check_mode=True)
    assert res["changed"] is False
    res = run.ok(main, args)
    assert res["changed"] is False
    assert res["status"] == "clean"
    assert res["leaks_fixed"] == 0
    assert _digest(leaky) == after


def test_repair_none_is_a_check(leaky, run):
    before = _digest(leaky)
    res = run.ok(main, dict(path=leaky, repair="none"))
    assert res["changed"] is False and res["status"] == "leaks"
    assert _digest(leaky) == before


def test_corrupt_fails_by_default(corrupt, run):
    before = _digest(corrupt)
    res = run.fail(main, dict(path=corrupt))
    assert res["status"] == "corrupt"
    assert res["corruptions"] >= 1
    assert "corrupt" in res["msg"] and corrupt in res["msg"]
    assert any(m.startswith("ERROR cluster") for m in res["messages"])
    assert res["changed"] is False
    assert _digest(corrupt) == before


def test_corrupt_passes_without_fail_on_corruption(corrupt, run):
    res = run.ok(main, dict(path=corrupt, fail_on_corruption=False))
    assert res["changed"] is False
    assert res["status"] == "corrupt"
    assert res["corruptions"] >= 1


def test_leak_repair_keeps_a_corrupt_image_failing(corrupt, run):
    before = _digest(corrupt)
    res = run.fail(main, dict(path=corrupt, repair="leaks"), check_mode=True)
    assert res["status"] == "corrupt"
    assert res["changed"] is False
    assert _digest(corrupt) == before


def test_repair_all_ladder(corrupt, run):
    before = _digest(corrupt)
    args = dict(path=corrupt, repair="all")
    res = run.ok(main, args, check_mode=True)
    assert res["changed"] is True
    assert res["status"] == "corrupt"  # the image as it is: nothing written in check mode
    assert _digest(corrupt) == before

    res = run.ok(main, args)
    assert res["changed"] is True
    assert res["status"] == "clean"
    assert res["corruptions_fixed"] >= 1
    assert res["corruptions"] == 0
    assert _qemu_check_rc(corrupt) in (0, None)

    res = run.ok(main, args, check_mode=True)
    assert res["changed"] is False
    res = run.ok(main, args)
    assert res["changed"] is False
    assert res["status"] == "clean"


@pytest.mark.parametrize("bit,key", [(1, "dirty_flag"), (2, "corrupt_flag")])
def test_repair_all_clears_header_bits(image, run, bit, key):
    _poke(image, 72, struct.pack(">Q", bit))
    res = run.ok(main, dict(path=image))
    assert res["changed"] is False and res[key] is True
    assert res["status"] == "clean"

    res = run.ok(main, dict(path=image, repair="all"), check_mode=True)
    assert res["changed"] is True and res[key] is True

    res = run.ok(main, dict(path=image, repair="all"))
    assert res["changed"] is True
    assert res[key] is False
    info = image_info(image)
    assert info["dirty-flag"] is False
    assert info["format-specific"]["data"]["corrupt"] is False

    res = run.ok(main, dict(path=image, repair="all"))
    assert res["changed"] is False


def test_raw_is_not_supported(tmp_path, run):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\0" * 65536)
    for repair in ("none", "all"):
        res = run.fail(main, dict(path=str(path), repair=repair))
        assert "This image format does not support checks" in res["msg"]
        assert str(path) in res["msg"]
        assert res["changed"] is False
    assert path.read_bytes() == b"\0" * 65536


def test_qcow2_read_as_raw_is_not_supported(image, run):
    res = run.fail(main, dict(path=image, format="raw"))
    assert "does not support checks" in res["msg"]


def test_missing_file(tmp_path, run):
    res = run.fail(main, dict(path=str(tmp_path / "missing.qcow2")))
    assert "missing.qcow2" in res["msg"]
    assert "\n" not in res["msg"]


def test_bad_header_is_one_line_error(tmp_path, run):
    path = tmp_path / "bad.qcow2"
    path.write_bytes(b"QFI\xfb\x00\x00\x00\x03" + b"\xff" * 504)
    res = run.fail(main, dict(path=str(path), repair="all"))
    assert res["msg"] and "\n" not in res["msg"]
    assert "Traceback" not in res["msg"]


def test_force_share(image, run):
    res = run.ok(main, dict(path=image, force_share=True))
    assert res["status"] == "clean"


def test_matches_qemu_img(leaky, run):
    tool = shutil.which("qemu-img")
    if tool is None:
        pytest.skip("qemu-img not installed")
    import json
    proc = subprocess.run([tool, "check", "--output=json", leaky], capture_output=True, text=True, check=False)
    assert proc.returncode == 3
    want = json.loads(proc.stdout)
    res = run.ok(main, dict(path=leaky))
    for key in ("check-errors", "corruptions", "leaks", "total-clusters", "allocated-clusters",
                "fragmented-clusters", "compressed-clusters", "image-end-offset"):
        assert res[key.replace("-", "_")] == want.get(key, 0), key
