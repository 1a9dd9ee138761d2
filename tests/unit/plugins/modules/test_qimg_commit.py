# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import subprocess

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_commit import main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import open_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.snapshot import create_snapshot

MiB = 1 << 20


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _write(path, offset, data, fmt="qcow2"):
    with open_image(path, fmt=fmt, read_only=False) as dev:
        dev.write(offset, data)


def _guest(path, fmt=None):
    with open_image(path, fmt=fmt, open_backing=True) as dev:
        return dev.read(0, dev.size)


@pytest.fixture(params=["qcow2", "raw"])
def chain(request, tmp_path):
    """base (pattern 1 over 1 MiB, 2 MiB) <- top (4 MiB: 64 KiB of pattern 2 at 1 MiB, 4 KiB at 3 MiB)."""
    fmt = request.param
    base, top = str(tmp_path / ("base." + fmt)), str(tmp_path / "top.qcow2")
    create_image(base, fmt, size="2M")
    _write(base, 0, b"\1" * MiB, fmt=fmt)
    create_image(top, "qcow2", size="4M", backing_file="base." + fmt, backing_fmt=fmt)
    _write(top, MiB, b"\2" * 65536)
    _write(top, 3 * MiB, b"\3" * 4096)
    return top, base, fmt


def _ladder(run, args):
    first = run.ok(main, args, check_mode=True, diff=True)
    second = run.ok(main, args, diff=True)
    third = run.ok(main, args, check_mode=True, diff=True)
    fourth = run.ok(main, args)
    assert first["changed"] and second["changed"]
    assert not third["changed"] and not fourth["changed"]
    assert third["diff"]["before"] == third["diff"]["after"]
    return first, second, third, fourth


def test_commit_ladder(run, chain):
    top, base, fmt = chain
    view = _guest(top)
    first, second, third, fourth = _ladder(run, {"path": top})
    assert first["diff"]["before"]["overlay_allocated_bytes"] == 2 * 65536
    assert first["diff"]["after"]["overlay_allocated_bytes"] == 0
    assert first["diff"]["before"]["base_virtual_size"] == 2 * MiB
    assert first["diff"]["after"]["base_virtual_size"] == 4 * MiB
    assert first["diff"] == second["diff"]
    assert first["committed_bytes"] == second["committed_bytes"] > 0
    assert third["committed_bytes"] == fourth["committed_bytes"] == 0
    assert second["base"] == base and second["base_format"] == fmt and not second["drop"]
    assert second["virtual_size"] == 4 * MiB
    assert _guest(top) == view
    assert _guest(base, fmt) == view


def test_check_mode_writes_nothing(run, chain):
    top, base, _fmt = chain
    before = (_digest(top), _digest(base))
    r = run.ok(main, {"path": top}, check_mode=True)
    assert r["changed"]
    assert (_digest(top), _digest(base)) == before


def test_drop_leaves_overlay_and_settles(run, chain):
    top, base, fmt = chain
    before = _digest(top)
    first, second, _third, _fourth = _ladder(run, {"path": top, "drop": True})
    assert second["drop"]
    assert first["diff"]["after"]["overlay_allocated_bytes"] == first["diff"]["before"]["overlay_allocated_bytes"]
    assert _digest(top) == before
    assert _guest(base, fmt) == _guest(top)


def test_empty_top_is_no_change(run, tmp_path):
    base, top = str(tmp_path / "b.qcow2"), str(tmp_path / "t.qcow2")
    create_image(base, "qcow2", size="1M")
    create_image(top, "qcow2", backing_file="b.qcow2", backing_fmt="qcow2")
    r = run.ok(main, {"path": top}, diff=True)
    assert not r["changed"] and r["committed_bytes"] == 0


def test_base_snapshots_kept(run, tmp_path):
    base, top = str(tmp_path / "b.qcow2"), str(tmp_path / "t.qcow2")
    create_image(base, "qcow2", size="1M")
    _write(base, 0, b"\1" * MiB)
    create_snapshot(base, "s1")
    create_image(top, "qcow2", backing_file="b.qcow2", backing_fmt="qcow2")
    _write(top, 0, b"\2" * 4096)
    assert run.ok(main, {"path": top})["changed"]
    with open_image(base) as dev:
        dev.activate_snapshot(name="s1")
        assert dev.read(0, 4096) == b"\1" * 4096


def test_deeper_base(run, tmp_path):
    d = str(tmp_path)
    base, mid, top = (os.path.join(d, n) for n in ("base.qcow2", "mid.qcow2", "top.qcow2"))
    create_image(base, "qcow2", size="1M")
    create_image(mid, "qcow2", backing_file="base.qcow2", backing_fmt="qcow2")
    create_image(top, "qcow2", backing_file="mid.qcow2", backing_fmt="qcow2")
    _write(mid, 0, b"\5" * 4096)
    _write(top, 65536, b"\6" * 4096)
    before = (_digest(top), _digest(mid))
    first, second, _third, _fourth = _ladder(run, {"path": top, "base": base})
    assert second["drop"] and second["base"] == base
    assert first["committed_bytes"] == 2 * 65536
    assert (_digest(top), _digest(mid)) == before
    assert _guest(base) == _guest(top)
    # the direct backing file as base: the default commit (the overlay is emptied)
    r = run.ok(main, {"path": top, "base": "mid.qcow2"})
    assert r["changed"] and not r["drop"]


def test_failures(run, tmp_path, chain):
    top, _base, _fmt = chain
    lone = str(tmp_path / "lone.qcow2")
    create_image(lone, "qcow2", size="1M")
    r = run.fail(main, {"path": lone})
    assert r["msg"] == "Image does not have a backing file"
    r = run.fail(main, {"path": top, "base": lone})
    assert r["msg"] == "Did not find '%s' in the backing chain of '%s'" % (lone, top)
    r = run.fail(main, {"path": str(tmp_path / "missing.qcow2")})
    assert not r["changed"]


def test_in_use_refused(run, in_use, tmp_path):
    top = str(tmp_path / "over.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", in_use, "-F", "qcow2", top, "1M"],
                   check=True)
    with open_image(top, read_only=False, open_backing=False) as dev:
        dev.write(0, b"\7" * 65536)
    before = _digest(in_use)
    r = run.fail(main, {"path": top})
    assert r["msg"].startswith("refusing to commit into %s" % in_use)
    assert _digest(in_use) == before
