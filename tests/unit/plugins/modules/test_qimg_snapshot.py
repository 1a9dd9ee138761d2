# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import subprocess

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_snapshot import main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import open_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops import snapshot as ops_snapshot
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write(path, offset, data):
    with open_image(path, fmt="qcow2", read_only=False) as dev:
        dev.write(offset, data)


def _names(path):
    return [s["name"] for s in ops_snapshot.list_snapshots(path)]


@pytest.fixture
def image(tmp_path):
    path = str(tmp_path / "disk.qcow2")
    create_image(path, "qcow2", size="4M")
    _write(path, 0, b"\1" * 65536)
    return path


def _ladder(run, args):
    first = run.ok(main, args, check_mode=True, diff=True)
    assert first["changed"]
    second = run.ok(main, args, diff=True)
    assert second["changed"]
    assert second["diff"] == first["diff"]
    third = run.ok(main, args, check_mode=True, diff=True)
    assert not third["changed"]
    assert third["diff"]["before"] == third["diff"]["after"]
    fourth = run.ok(main, args)
    assert not fourth["changed"]
    return first, second, third, fourth


def test_present_ladder(run, image):
    before = _digest(image)
    first, second, _third, fourth = _ladder(run, {"path": image, "name": "clean"})
    assert first["diff"] == {"before": {"snapshots": []}, "after": {"snapshots": ["1 clean"]}}
    assert [s["name"] for s in second["snapshots"]] == ["clean"]
    assert set(second["snapshots"][0]) >= {"id", "name", "vm_state_size", "date_sec", "date_nsec",
                                           "vm_clock_sec", "vm_clock_nsec", "icount"}
    assert second["virtual_size"] == 4 * 1024 * 1024
    assert fourth["snapshots"] == second["snapshots"]
    assert _digest(image) != before


def test_check_mode_writes_nothing(run, image):
    before = _digest(image)
    for state in ("present", "absent"):
        run.ok(main, {"path": image, "name": "x", "state": state}, check_mode=True)
    assert _digest(image) == before


def test_absent_ladder_deletes_every_one_of_that_name(run, image):
    ops_snapshot.create_snapshot(image, "old")
    ops_snapshot.create_snapshot(image, "keep")
    ops_snapshot.create_snapshot(image, "old")
    first, _second, _third, _fourth = _ladder(run, {"path": image, "name": "old", "state": "absent"})
    assert first["diff"] == {"before": {"snapshots": ["1 old", "2 keep", "3 old"]},
                             "after": {"snapshots": ["2 keep"]}}
    assert _names(image) == ["keep"]


def test_absent_when_none(run, image):
    result = run.ok(main, {"path": image, "name": "nope", "state": "absent"})
    assert not result["changed"]


def test_applied_ladder(run, image):
    ops_snapshot.create_snapshot(image, "clean")
    _write(image, 0, b"\2" * 4096)
    first, _second, _third, _fourth = _ladder(run, {"path": image, "name": "clean", "state": "applied"})
    assert first["diff"]["before"]["active"] == "current"
    assert first["diff"]["after"]["active"] == "snapshot clean (id 1)"
    with open_image(image) as dev:
        assert dev.read(0, 65536) == b"\1" * 65536


def test_applied_equal_content_is_not_a_change(run, image):
    """Tables differ (the active image rewrote a cluster) but the guest content is the same."""
    ops_snapshot.create_snapshot(image, "clean")
    _write(image, 0, b"\1" * 4096)  # copy-on-write with the same bytes
    result = run.ok(main, {"path": image, "name": "clean", "state": "applied"})
    assert not result["changed"]


def test_applied_missing_fails(run, image):
    result = run.fail(main, {"path": image, "name": "nope", "state": "applied"})
    assert "no snapshot called 'nope'" in result["msg"]


def test_raw_fails(run, tmp_path):
    path = str(tmp_path / "r.raw")
    create_image(path, "raw", size="1M")
    result = run.fail(main, {"path": path, "name": "x"})
    assert "qcow2" in result["msg"]


def test_in_use_refused(run, in_use):
    before = _digest(in_use)
    result = run.fail(main, {"path": in_use, "name": "x"})
    assert result["msg"].startswith("refusing to change the snapshots of %s" % in_use)
    assert _digest(in_use) == before
    # nothing to change: not refused
    result = run.ok(main, {"path": in_use, "name": "x", "state": "absent"})
    assert not result["changed"]


def test_qemu_img_agrees(run, image):
    run.ok(main, {"path": image, "name": "one"})
    out = subprocess.run(["qemu-img", "snapshot", "-l", image], stdout=subprocess.PIPE, check=True,
                         universal_newlines=True).stdout
    assert " one " in out
    subprocess.run(["qemu-img", "check", image], check=True, stdout=subprocess.DEVNULL)


def test_long_name_refused(run, image):
    result = run.fail(main, {"path": image, "name": "x" * 256})
    assert result["msg"] == "name is longer than 255 bytes"
    assert _names(image) == []
