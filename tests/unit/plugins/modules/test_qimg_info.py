# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import shutil
import subprocess

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_info import main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest(), os.stat(path).st_mtime_ns


@pytest.fixture
def chain(tmp_path):
    base = str(tmp_path / "base.qcow2")
    overlay = str(tmp_path / "overlay.qcow2")
    create_image(base, "qcow2", size="16M", options={"cluster_size": "4k", "compat": "0.10"})
    create_image(overlay, "qcow2", backing_file="base.qcow2", backing_fmt="qcow2")
    return base, overlay


def test_info_qcow2(chain, run):
    base, overlay = chain
    res = run.ok(main, dict(path=base))
    assert res["changed"] is False
    assert res["format"] == "qcow2"
    assert res["virtual_size"] == 16 << 20
    assert res["cluster_size"] == 4096
    assert res["format_specific"]["data"]["compat"] == "0.10"
    assert res["format_specific"]["data"]["refcount_bits"] == 16
    assert "images" not in res
    assert "size" not in res
    assert not [k for k in res if "-" in k]


def test_info_backing_chain(chain, run):
    base, overlay = chain
    res = run.ok(main, dict(path=overlay, backing_chain=True))
    assert res["changed"] is False
    assert res["backing_filename"] == "base.qcow2"
    assert res["backing_filename_format"] == "qcow2"
    names = [os.path.basename(i["filename"]) for i in res["images"]]
    assert names == ["overlay.qcow2", "base.qcow2"]
    assert res["images"][0]["virtual_size"] == 16 << 20
    assert res["images"][1]["cluster_size"] == 4096
    assert res["filename"] == res["images"][0]["filename"]


def test_info_check_mode_changes_nothing(chain, run):
    base, overlay = chain
    before = _digest(overlay), _digest(base)
    for check_mode in (True, False):
        res = run.ok(main, dict(path=overlay, backing_chain=True, force_share=True),
                     check_mode=check_mode)
        assert res["changed"] is False
    assert (_digest(overlay), _digest(base)) == before


def test_info_raw_is_never_probed_up(chain, run):
    base, overlay = chain
    res = run.ok(main, dict(path=base, format="raw"))
    assert res["format"] == "raw"
    size = os.path.getsize(base)
    assert res["virtual_size"] in (size, (size + 511) // 512 * 512)  # qemu rounds to sectors


def test_info_raw(tmp_path, run):
    path = tmp_path / "disk.img"
    path.write_bytes(b"\0" * 4096)
    res = run.ok(main, dict(path=str(path)))
    assert res["format"] == "raw"
    assert res["virtual_size"] == 4096
    assert "format_specific" not in res or res["format_specific"]["type"] == "raw"


def test_info_missing_file(tmp_path, run):
    res = run.fail(main, dict(path=str(tmp_path / "missing.qcow2")))
    assert "missing.qcow2" in res["msg"]
    assert "Traceback" not in res["msg"]


def test_info_corrupt_header_is_one_line_error(tmp_path, run):
    path = tmp_path / "bad.qcow2"
    # qcow2 magic, version 3, then garbage: a clean error, never a traceback
    path.write_bytes(b"QFI\xfb\x00\x00\x00\x03" + b"\xff" * 504)
    res = run.fail(main, dict(path=str(path)))
    assert res["msg"]
    assert "\n" not in res["msg"]


def test_info_matches_qemu_img(chain, run):
    tool = shutil.which("qemu-img")
    if tool is None:
        pytest.skip("qemu-img not installed")
    import json
    base, overlay = chain
    want = json.loads(subprocess.run([tool, "info", "--output=json", overlay],
                                     capture_output=True, text=True, check=True).stdout)
    res = run.ok(main, dict(path=overlay))
    for key in ("virtual-size", "format", "cluster-size", "backing-filename",
                "backing-filename-format"):
        assert res[key.replace("-", "_")] == want[key], key
    want_data = want["format-specific"]["data"]
    got_data = res["format_specific"]["data"]
    for key, value in want_data.items():
        assert got_data[key.replace("-", "_")] == value, key
