# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import shutil
import subprocess

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_measure import main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image

MiB = 1 << 20
GiB = 1 << 30


def _qemu_measure(*args):
    tool = shutil.which("qemu-img")
    if tool is None:
        pytest.skip("qemu-img not installed")
    out = subprocess.run([tool, "measure", "--output=json"] + list(args), capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def _snake(figures):
    return dict((k.replace("-", "_"), v) for k, v in figures.items())


def test_measure_size(run):
    for check_mode in (False, True):
        res = run.ok(main, dict(size="1G"), check_mode=check_mode)
        assert res["changed"] is False
        assert res["required"] == 393216
        assert res["fully_allocated"] == 1074135040
        assert "bitmaps" not in res
    res = run.ok(main, dict(size="1G", target_format="raw"))
    assert res["required"] == GiB
    assert res["fully_allocated"] == GiB


def test_measure_size_options(run):
    options = dict(cluster_size="2M", refcount_bits=64, extended_l2=True)
    res = run.ok(main, dict(size="1G", options=options))
    want = _qemu_measure("--size", "1G", "-O", "qcow2", "-o",
                         "cluster_size=2M,refcount_bits=64,extended_l2=on")
    assert dict(required=res["required"], fully_allocated=res["fully_allocated"]) == _snake(want)


def test_measure_raw_file(tmp_path, run):
    path = str(tmp_path / "disk.img")
    with open(path, "wb") as f:
        f.truncate(4 * MiB)
        f.seek(MiB)
        f.write(b"x" * 70000)
    res = run.ok(main, dict(path=path, format="raw", options=dict(cluster_size="64k")))
    assert res["required"] == _qemu_measure("-f", "raw", "-O", "qcow2", path)["required"]
    assert "bitmaps" not in res


def test_measure_qcow2_file_has_bitmaps(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    create_image(path, "qcow2", size="16M")
    res = run.ok(main, dict(path=path))
    assert _snake(_qemu_measure("-O", "qcow2", path)) == dict(
        (k, res[k]) for k in ("required", "fully_allocated", "bitmaps"))
    res = run.ok(main, dict(path=path, options=dict(compat=0.1)))
    assert "bitmaps" not in res


def test_measure_snapshot(tmp_path, run):
    tool = shutil.which("qemu-img")
    if tool is None or shutil.which("qemu-io") is None:
        pytest.skip("qemu-img/qemu-io not installed")
    path = str(tmp_path / "snap.qcow2")
    subprocess.run([tool, "create", "-q", "-f", "qcow2", path, "4M"], check=True)
    subprocess.run([tool, "snapshot", "-c", "empty", path], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0xaa 0 1M", path], check=True, capture_output=True)
    now = run.ok(main, dict(path=path))
    want = _qemu_measure("-O", "qcow2", "-l", "empty", path)
    for snapshot in ("empty", "1", "snapshot.id=1"):
        res = run.ok(main, dict(path=path, snapshot=snapshot))
        assert res["required"] == want["required"], snapshot
        assert res["required"] < now["required"]
    res = run.fail(main, dict(path=path, snapshot="nope"))
    assert "snapshot" in res["msg"]


@pytest.mark.parametrize("args, message", [
    (dict(), "one of the following is required: path, size"),
    (dict(size="1G", path="/x"), "mutually exclusive"),
    (dict(size="1G", snapshot="s"), "missing parameter(s) required by 'snapshot'"),
    (dict(size="1G", target_format="raw", options=dict(cluster_size="4k")),
     "not supported by format raw: cluster_size"),
    (dict(size="lots"), "Invalid image size"),
])
def test_invalid(run, args, message):
    res = run.fail(main, args)
    assert message in res["msg"]


def test_missing_file(tmp_path, run):
    res = run.fail(main, dict(path=str(tmp_path / "missing.img")))
    assert "missing.img" in res["msg"]
