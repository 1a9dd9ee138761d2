# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_amend import main
from ansible_collections.qimg.disk.plugins.modules.qimg_create import main as create_main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _data(path):
    return image_info(path, force_share=True)["format-specific"]["data"]


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / "disk.qcow2")
    create_image(path, "qcow2", size="4M")
    return path


@pytest.mark.parametrize("options,key,value", [
    ({"compat": "0.10"}, "compat", "0.10"),
    ({"compat": "v2"}, "compat", "0.10"),
    ({"refcount_bits": 64}, "refcount-bits", 64),
    ({"refcount_bits": 1}, "refcount-bits", 1),
    ({"lazy_refcounts": True}, "lazy-refcounts", True),
])
def test_ladder(image, run, options, key, value):
    args = {"path": image, "options": options}
    r = run.ok(main, args, check_mode=True, diff=True)
    assert r["changed"] and r["differences"]
    assert r["diff"]["before"] != r["diff"]["after"]
    assert _data(image)[key] != value
    r = run.ok(main, args, diff=True)
    assert r["changed"]
    assert _data(image)[key] == value
    before = _digest(image)
    for check in (True, False):
        r = run.ok(main, args, check_mode=check, diff=True)
        assert not r["changed"], r
        assert r["diff"]["before"] == r["diff"]["after"]
    assert _digest(image) == before
    # qimg_create still finds the amended image matching what it asks for
    create_args = {"path": image, "size": "4M", "options": options}
    assert not run.ok(create_main, create_args)["changed"]


def test_create_only_options(image, run):
    assert not run.ok(main, {"path": image, "options": {"cluster_size": "64k"}})["changed"]
    r = run.fail(main, {"path": image, "options": {"cluster_size": "4k"}})
    assert "only be set when an image is created" in r["msg"]
    r = run.fail(main, {"path": image, "options": {"extended_l2": True}})
    assert "extended_l2" in r["msg"]


def test_refusals_change_nothing(image, run):
    before = _digest(image)
    r = run.fail(main, {"path": image, "options": {"compat": "0.10", "refcount_bits": 8}}, check_mode=True)
    assert "require compatibility level 1.1" in r["msg"]
    r = run.fail(main, {"path": image, "options": {"compat": "0.10", "lazy_refcounts": True}})
    assert "Lazy refcounts" in r["msg"]
    r = run.fail(main, {"path": image, "options": {"compat": "2"}})
    assert "options.compat" in r["msg"]
    assert _digest(image) == before


def test_raw_refused(tmp_path, run):
    path = str(tmp_path / "disk.raw")
    create_image(path, "raw", size="1M")
    r = run.fail(main, {"path": path, "options": {"compat": "1.1"}})
    assert "does not support option amendment" in r["msg"]


def test_in_use_refused(in_use, run):
    r = run.fail(main, {"path": in_use, "options": {"compat": "0.10"}})
    assert "refusing to amend" in r["msg"]
    assert _data(in_use)["compat"] == "1.1"
    assert not run.ok(main, {"path": in_use, "options": {"compat": "1.1"}})["changed"]


def _with_data_file(tmp_path, monkeypatch, raw=True):
    monkeypatch.chdir(str(tmp_path))  # qemu takes a relative data file name from the working directory
    path = str(tmp_path / "df.qcow2")
    create_image(path, "qcow2", size="4M", options={"data_file": "df.data", "data_file_raw": raw})
    return path


def test_data_file_ladder(tmp_path, monkeypatch, run):
    image = _with_data_file(tmp_path, monkeypatch)
    args = {"path": image, "options": {"data_file": "df.data", "data_file_raw": False}}
    r = run.ok(main, args, check_mode=True, diff=True)
    assert r["changed"] and r["differences"] == ["data_file_raw on != off"]
    assert r["diff"]["before"]["data_file_raw"] and not r["diff"]["after"]["data_file_raw"]
    assert _data(image)["data-file-raw"]
    r = run.ok(main, args, diff=True)
    assert r["changed"] and not _data(image)["data-file-raw"]
    before = _digest(image)
    for check in (True, False):
        assert not run.ok(main, args, check_mode=check, diff=True)["changed"]
    assert _digest(image) == before
    args = {"path": image, "options": {"data_file": "moved.data"}}
    r = run.ok(main, args, diff=True)
    assert r["changed"] and r["diff"]["after"]["data_file"] == "moved.data"
    assert _data(image)["data-file"] == "moved.data"


def test_data_file_refusals(tmp_path, monkeypatch, image, run):
    r = run.fail(main, {"path": image, "options": {"data_file": "x.data"}})
    assert r["msg"] == "data-file can only be set for images that use an external data file"
    df = _with_data_file(tmp_path, monkeypatch, raw=False)
    before = _digest(df)
    r = run.fail(main, {"path": df, "options": {"data_file_raw": True}}, check_mode=True)
    assert r["msg"] == "data-file-raw cannot be set on existing images"
    assert _digest(df) == before
