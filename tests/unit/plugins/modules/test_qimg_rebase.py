# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_rebase import main
from ansible_collections.qimg.disk.plugins.modules import qimg_create
from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import open_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info

MiB = 1 << 20


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write(path, offset, data, fmt="qcow2"):
    with open_image(path, fmt=fmt, read_only=False) as dev:
        dev.write(offset, data)


def _guest(path):
    with open_image(path) as dev:
        return hashlib.sha256(dev.read(0, dev.size)).hexdigest()


@pytest.fixture
def chain(tmp_path):
    """old.qcow2 (pattern 1 over the first MiB), new.raw (pattern 1 over the first 512 KiB),
    top.qcow2 on old.qcow2 writing 64 KiB at 2 MiB."""
    d = str(tmp_path)
    old, new, top = (os.path.join(d, n) for n in ("old.qcow2", "new.raw", "top.qcow2"))
    create_image(old, "qcow2", size="4M")
    _write(old, 0, b"\1" * MiB)
    create_image(new, "raw", size="4M")
    _write(new, 0, b"\1" * (MiB // 2), fmt="raw")
    create_image(top, "qcow2", backing_file="old.qcow2", backing_fmt="qcow2")
    _write(top, 2 * MiB, b"\2" * 65536)
    return d


def _ladder(run, args):
    first = run.ok(main, args, check_mode=True, diff=True)
    second = run.ok(main, args, diff=True)
    third = run.ok(main, args, check_mode=True, diff=True)
    fourth = run.ok(main, args)
    assert first["changed"] and second["changed"]
    assert not third["changed"] and not fourth["changed"]
    assert first["diff"] == second["diff"]
    assert third["diff"]["before"] == third["diff"]["after"]
    return first, second, third, fourth


def test_safe_rebase_ladder(run, chain):
    top = os.path.join(chain, "top.qcow2")
    view = _guest(top)
    first, second, third, fourth = _ladder(run, {"path": top, "backing_file": "new.raw", "backing_format": "raw"})
    assert first["diff"] == {"before": {"backing_file": "old.qcow2", "backing_format": "qcow2"},
                             "after": {"backing_file": "new.raw", "backing_format": "raw"}}
    assert first["copied_bytes"] == second["copied_bytes"] == MiB // 2
    assert third["copied_bytes"] == fourth["copied_bytes"] == 0
    assert (second["backing_file"], second["backing_format"]) == ("new.raw", "raw")
    assert second["backing_filename"] == "new.raw" and second["virtual_size"] == 4 * MiB
    assert _guest(top) == view


def test_check_mode_writes_nothing(run, chain):
    top = os.path.join(chain, "top.qcow2")
    before = _digest(top)
    run.ok(main, {"path": top, "backing_file": "new.raw", "backing_format": "raw"}, check_mode=True)
    run.ok(main, {"path": top, "backing_file": ""}, check_mode=True)
    assert _digest(top) == before


def test_format_probed_and_kept(run, chain):
    top = os.path.join(chain, "top.qcow2")
    r = run.ok(main, {"path": top, "backing_file": "old.qcow2"})
    assert not r["changed"] and r["backing_format"] == "qcow2"
    r = run.ok(main, {"path": top, "backing_file": "new.raw"}, check_mode=True)
    assert r["changed"] and r["backing_format"] == "raw"


@pytest.mark.parametrize("value", ["", None])
def test_remove_backing_flattens(run, chain, value):
    top = os.path.join(chain, "top.qcow2")
    view = _guest(top)
    args = {"path": top, "backing_file": value}
    first, second, _third, _fourth = _ladder(run, args)
    assert first["diff"]["after"] == {"backing_file": None, "backing_format": None}
    assert first["copied_bytes"] == second["copied_bytes"] == MiB
    assert image_info(top).get("backing-filename") is None
    assert _guest(top) == view


def test_unsafe_after_rename(run, chain):
    top = os.path.join(chain, "top.qcow2")
    os.rename(os.path.join(chain, "old.qcow2"), os.path.join(chain, "moved.qcow2"))
    args = {"path": top, "backing_file": "moved.qcow2", "backing_format": "qcow2", "safe": False}
    first, second, _third, _fourth = _ladder(run, args)
    assert first["copied_bytes"] == second["copied_bytes"] == 0
    assert image_info(top, backing_chain=True)[1]["filename"].endswith("moved.qcow2")


def test_failures(run, chain):
    top = os.path.join(chain, "top.qcow2")
    r = run.fail(main, {"path": top, "backing_file": "missing.qcow2", "backing_format": "qcow2"})
    assert "Could not open new backing file 'missing.qcow2'" in r["msg"]
    r = run.fail(main, {"path": top, "backing_file": "missing.qcow2"})
    assert r["msg"].startswith("backing_format is needed when the new backing file missing.qcow2 cannot be read")
    r = run.fail(main, {"path": top, "backing_format": "qcow2"})
    assert r["msg"] == "backing_format needs backing_file"
    r = run.fail(main, {"path": os.path.join(chain, "old.qcow2"), "backing_file": "top.qcow2",
                        "backing_format": "qcow2"})
    assert "loop" in r["msg"]
    r = run.fail(main, {"path": os.path.join(chain, "new.raw"), "backing_file": "old.qcow2",
                        "backing_format": "qcow2"})
    assert "only qcow2 images" in r["msg"]
    r = run.fail(main, {"path": os.path.join(chain, "nope.qcow2"), "backing_file": ""})
    assert not r["changed"]


def test_in_use_refused(run, in_use, tmp_path):
    before = _digest(in_use)
    create_image(str(tmp_path / "b.qcow2"), "qcow2", size="1M")
    r = run.fail(main, {"path": in_use, "backing_file": str(tmp_path / "b.qcow2"), "backing_format": "qcow2"})
    assert r["msg"].startswith("refusing to rebase %s" % in_use)
    assert _digest(in_use) == before
    r = run.ok(main, {"path": in_use, "backing_file": ""})  # nothing to change: not refused
    assert not r["changed"]


def test_create_agrees_after_rebase(run, chain):
    """An overlay created, rebased, and created again with the new backing file: no change."""
    top = os.path.join(chain, "ov.qcow2")
    create = {"path": top, "format": "qcow2", "backing_file": "old.qcow2", "backing_format": "qcow2"}
    assert run.ok(qimg_create.main, create)["changed"]
    assert run.ok(main, {"path": top, "backing_file": "new.raw", "backing_format": "raw"})["changed"]
    create.update(backing_file="new.raw", backing_format="raw")
    assert not run.ok(qimg_create.main, create)["changed"]
    assert not run.ok(main, {"path": top, "backing_file": "new.raw", "backing_format": "raw"})["changed"]
