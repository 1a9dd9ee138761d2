# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`commit` into the direct backing file, against qemu-img 7.2 run on identical copies."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import sys

import pytest

from conftest import ROOT, assert_same_as_qemu_img, run
from crashkill import kill_at_every_write, need_strace
from helpers import assert_check_clean, qemu_check, qemu_img_create, qemu_io, qemu_raw_digest

MiB = 1024 * 1024


def _build(d, base_fmt, base_size=2 * MiB, top_size=2 * MiB, snapshot=False):
    base = os.path.join(str(d), "base." + base_fmt)
    top = os.path.join(str(d), "top.qcow2")
    qemu_img_create(base, base_fmt, base_size)
    qemu_io(base, "write -P 1 0 %d" % base_size, fmt=base_fmt)
    if snapshot:
        run(["qemu-img", "snapshot", "-c", "s1", base])
        qemu_io(base, "write -P 4 0 64k")
    qemu_img_create(top, "qcow2", top_size, backing="base." + base_fmt, backing_fmt=base_fmt)
    qemu_io(top, "write -P 2 64k 128k", "write -z 512k 64k", "write -P 3 %d 4k" % (top_size - 512 * 1024),
            "write -c -P 5 1M 64k")
    return base, top


def _layout(map_json):
    """qemu-img map entries without host offsets, adjacent equal ones merged (host layouts differ)."""
    out = []
    for e in json.loads(map_json):
        key = (e["depth"], e["present"], e["zero"], e["data"])
        if out and out[-1][0] == key and out[-1][1] + out[-1][2] == e["start"]:
            out[-1][2] += e["length"]
        else:
            out.append([key, e["start"], e["length"]])
    return out


CASES = [("qcow2", 2 * MiB, ()), ("qcow2", 2 * MiB, ("-d",)), ("raw", 2 * MiB, ()), ("raw", 2 * MiB, ("-d",)),
         ("qcow2", 1 * MiB, ()), ("raw", 1 * MiB, ()), ("qcow2", 2 * MiB, ("-q",)),
         ("qcow2", 2 * MiB, ("-b", "base.qcow2")), ("qcow2", 2 * MiB, ("-p",)), ("qcow2", 2 * MiB, ("-r", "1M"))]


@pytest.mark.parametrize("base_fmt,base_size,args", CASES, ids=str)
def test_commit_like_qemu_img(qemu_img, as_qemu_img, tmp_path, base_fmt, base_size, args):
    a, b = tmp_path / "qemu", tmp_path / "ours"
    a.mkdir()
    b.mkdir()
    _build(a, base_fmt, base_size)
    base, top = _build(b, base_fmt, base_size)
    before = qemu_raw_digest(top, tmp_path)
    want = run([qemu_img, "commit"] + list(args) + ["top.qcow2"], cwd=str(a), check=False)
    got = as_qemu_img("commit", *(list(args) + ["top.qcow2"]), cwd=str(b))
    if "-p" in args:   # the block job's progress steps are not reproduced: the end state is
        assert got.stdout.endswith("    (100.00/100%)\nImage committed.\n")
        assert (got.stderr, got.returncode) == (want.stderr, want.returncode)
    else:
        assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    assert got.returncode == 0
    for name, fmt in (("base." + base_fmt, base_fmt), ("top.qcow2", "qcow2")):
        proc = run(["qemu-img", "compare", "-f", fmt, "-F", fmt, str(a / name), str(b / name)], check=False)
        assert proc.returncode == 0, (name, proc.stdout)
        if fmt == "qcow2":
            assert_check_clean(b / name)
    assert os.path.getsize(str(b / ("base." + base_fmt))) >= 2 * MiB or base_fmt == "qcow2"
    assert qemu_raw_digest(top, tmp_path) == before
    maps = [_layout(run(["qemu-img", "map", "--output=json", "-f", "qcow2", "top.qcow2"], cwd=str(d)).stdout)
            for d in (a, b)]
    if "-d" not in args and "-b" not in args:
        assert maps[0] == maps[1]   # emptied: everything from the base (host layouts may differ)


def test_commit_keeps_base_snapshots(tmp_path):
    base, top = _build(tmp_path, "qcow2", snapshot=True)
    snap_before = qemu_raw_digest(base, tmp_path, snapshot="s1")
    proc = run([sys.executable, os.path.join(ROOT, "bin", "qimg"), "commit", top])
    assert proc.stdout == "Image committed.\n"
    assert qemu_raw_digest(base, tmp_path, snapshot="s1") == snap_before
    assert_check_clean(base)


@pytest.mark.parametrize("args", [(), ("-b", "nonexistent"), ("-b", "top.qcow2"), ("-t", "bogus"), ("-r", "x"),
                                  ("top.qcow2", "extra")], ids=str)
def test_refusals_like_qemu_img(qemu_img, as_qemu_img, tmp_path, args):
    _build(tmp_path, "qcow2")
    qemu_img_create(tmp_path / "lone.qcow2", "qcow2", MiB)
    target = ["lone.qcow2"] if not args else ["top.qcow2"]
    if args and args[0] == "top.qcow2":
        target = []
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img, ["commit"] + list(args) + target, str(tmp_path))
    assert got.returncode == 1


KILL_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from qimg.ops.commit import commit_image
commit_image(sys.argv[2], drop=sys.argv[3] == "1")
"""


@pytest.mark.parametrize("base_fmt,drop", [("qcow2", "0"), ("raw", "0"), ("qcow2", "1")])
def test_kill_at_every_write(tmp_path, base_fmt, drop):
    """After a kill at any write: no corruption in either image, the top's guest view unchanged."""
    need_strace()
    src = tmp_path / "src"
    src.mkdir()
    _build(src, base_fmt)
    work = tmp_path / "work"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    original = qemu_raw_digest(src / "top.qcow2", tmp_path)

    def prepare():
        if work.exists():
            shutil.rmtree(str(work))
        shutil.copytree(str(src), str(work))

    def verify(k):
        for name, fmt in (("top.qcow2", "qcow2"), ("base." + base_fmt, base_fmt)):
            if fmt != "qcow2":
                continue
            rc, report = qemu_check(work / name)
            if rc not in (0, 3) or report.get("corruptions", 0):
                return "check %s: rc=%d %s" % (name, rc, report)
        if qemu_raw_digest(work / "top.qcow2", tmp_path) != original:
            return "top's guest view changed"
        return None

    argv = [sys.executable, str(script), os.path.join(ROOT, "plugins", "module_utils"), str(work / "top.qcow2"), drop]
    trials, failures = kill_at_every_write(prepare, argv, [work / "top.qcow2", work / ("base." + base_fmt)], verify)
    assert trials >= 1
    assert not failures, failures[:5]


@pytest.mark.parametrize("base_fmt", ["qcow2", "raw"])
def test_commit_into_deeper_base_like_qemu_img(qemu_img, as_qemu_img, tmp_path, base_fmt):
    """-b an image below the backing file: what every image above it allocates goes in; -d implied."""
    dirs = []
    for name in ("qemu", "ours"):
        d = tmp_path / name
        d.mkdir()
        _build(d, base_fmt, MiB)
        os.rename(str(d / "top.qcow2"), str(d / "mid.qcow2"))
        qemu_img_create(d / "top.qcow2", "qcow2", 3 * MiB, backing="mid.qcow2", backing_fmt="qcow2")
        qemu_io(d / "top.qcow2", "write -P 7 96k 64k", "write -z 1M 4k", "write -P 8 2500k 8k")
        dirs.append(d)
    a, b = dirs
    before = [qemu_raw_digest(b / n, tmp_path) for n in ("top.qcow2", "mid.qcow2")]
    args = ["commit", "-b", "base." + base_fmt, "top.qcow2"]
    want = run([qemu_img] + args, cwd=str(a), check=False)
    got = as_qemu_img(*args, cwd=str(b))
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    assert got.returncode == 0
    name = "base." + base_fmt
    proc = run(["qemu-img", "compare", "-f", base_fmt, "-F", base_fmt, str(a / name), str(b / name)], check=False)
    assert proc.returncode == 0, proc.stdout
    assert [qemu_raw_digest(b / n, tmp_path) for n in ("top.qcow2", "mid.qcow2")] == before
    for n in ("top.qcow2", "mid.qcow2"):
        assert_check_clean(b / n)
