# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""commit into a qcow2 base is one switch: a kill at any write leaves the base's old or new content
as a whole (never a mix), `qemu-img check` free of corruption, its snapshots intact; and -r paces it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import sys
import time

import pytest

from conftest import ROOT, run
from crashkill import kill_at_every_write, need_strace
from helpers import assert_check_clean, qemu_check, qemu_img_create, qemu_io, qemu_raw_digest

MiB = 1024 * 1024
QIMG = os.path.join(ROOT, "bin", "qimg")

KILL_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from qimg.ops.commit import commit_image
commit_image(sys.argv[2], drop=sys.argv[3] == "1", base=sys.argv[4] or None)
"""


def _build(d, base_size=2 * MiB, base_opts=None, snapshot=False, deep=False):
    base = os.path.join(str(d), "base.qcow2")
    top = os.path.join(str(d), "top.qcow2")
    qemu_img_create(base, "qcow2", base_size, options=base_opts)
    qemu_io(base, "write -P 1 0 %d" % base_size, "write -z 256k 64k")
    if snapshot:
        run(["qemu-img", "snapshot", "-c", "s1", base])
        qemu_io(base, "write -P 4 0 64k", "write -P 6 1M 4k")
    size = 2 * MiB
    under = "base.qcow2"
    if deep:
        mid = os.path.join(str(d), "mid.qcow2")
        qemu_img_create(mid, "qcow2", size, backing="base.qcow2", backing_fmt="qcow2")
        qemu_io(mid, "write -P 9 1536k 128k", "write -z 0 4k")
        under = "mid.qcow2"
    qemu_img_create(top, "qcow2", size, backing=under, backing_fmt="qcow2")
    qemu_io(top, "write -P 2 60k 136k", "write -z 512k 64k", "write -P 3 1500k 4k", "write -c -P 5 1M 64k",
            "write -z 1800k 2k")
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


SCENARIOS = {
    "plain": dict(),
    "drop": dict(drop="1"),
    "snapshot": dict(snapshot=True),
    "grow": dict(base_size=MiB),
    "big-clusters": dict(base_opts={"cluster_size": "512k"}),
    "small-clusters": dict(base_opts={"cluster_size": "4k"}),
    "v2": dict(base_opts={"compat": "0.10"}),
    "deep": dict(deep=True, base="base.qcow2"),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_kill_leaves_base_old_or_new(tmp_path, name):
    need_strace()
    cfg = dict(SCENARIOS[name])
    drop, base_name = cfg.pop("drop", "0"), cfg.pop("base", "")
    src = tmp_path / "src"
    src.mkdir()
    _build(src, **cfg)
    work = tmp_path / "work"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    top_view = qemu_raw_digest(src / "top.qcow2", tmp_path)
    old_base = qemu_raw_digest(src / "base.qcow2", tmp_path)
    snap = qemu_raw_digest(src / "base.qcow2", tmp_path, snapshot="s1") if cfg.get("snapshot") else None
    # what the base must hold after the commit: qemu-img's own commit on a copy
    ref = tmp_path / "ref"
    shutil.copytree(str(src), str(ref))
    run(["qemu-img", "commit"] + (["-d"] if drop == "1" else []) + (["-b", base_name] if base_name else [])
        + ["top.qcow2"], cwd=str(ref))
    new_base = qemu_raw_digest(ref / "base.qcow2", tmp_path)
    assert new_base != old_base
    seen = set()

    def prepare():
        if work.exists():
            shutil.rmtree(str(work))
        shutil.copytree(str(src), str(work))

    def verify(k):
        for image in ("top.qcow2", "base.qcow2"):
            rc, report = qemu_check(work / image)
            if rc not in (0, 3) or report.get("corruptions", 0) or report.get("check-errors", 0):
                return "check %s: rc=%d %s" % (image, rc, report)
        if qemu_raw_digest(work / "top.qcow2", tmp_path) != top_view:
            return "top's guest view changed"
        got = qemu_raw_digest(work / "base.qcow2", tmp_path)
        if got not in (old_base, new_base):
            return "base holds neither its old nor its new content"
        seen.add("old" if got == old_base else "new")
        if snap is not None and qemu_raw_digest(work / "base.qcow2", tmp_path, snapshot="s1") != snap:
            return "base's snapshot changed"
        if k == 0:
            if got != new_base:
                return "complete run: base is not what qemu-img commit gives"
            for image in ("top.qcow2", "base.qcow2"):
                assert_check_clean(work / image)
        return None

    argv = [sys.executable, str(script), os.path.join(ROOT, "plugins", "module_utils"), str(work / "top.qcow2"),
            drop, base_name]
    trials, failures = kill_at_every_write(prepare, argv, [work / "top.qcow2", work / "base.qcow2"], verify)
    assert trials >= 3
    assert not failures, failures[:5]
    assert seen == {"old", "new"}


def _raw(path, tmp_path, name):
    out = str(tmp_path / name)
    run(["qemu-img", "convert", "-O", "raw", str(path), out])
    with open(out, "rb") as f:
        data = f.read()
    os.unlink(out)
    return data


@pytest.mark.parametrize("name", ["plain", "snapshot", "grow", "big-clusters"])
def test_kill_cli_in_place_each_cluster_old_or_new(tmp_path, name):
    """The CLI writes the base in place (qemu-img's layout): after a kill, no corruption and each
    cluster the commit writes old or new."""
    need_strace()
    cfg = dict(SCENARIOS[name])
    cfg.pop("drop", None)
    src = tmp_path / "src"
    src.mkdir()
    _build(src, **cfg)
    # the unit written at once: a cluster of the base, or of the top (64 KiB) inside a bigger one
    cs = min(64, int(((cfg.get("base_opts") or {}).get("cluster_size", "64k")).rstrip("k"))) * 1024
    work = tmp_path / "work"
    top_view = qemu_raw_digest(src / "top.qcow2", tmp_path)
    old = _raw(src / "base.qcow2", tmp_path, "old.raw")
    ref = tmp_path / "ref"
    shutil.copytree(str(src), str(ref))
    run(["qemu-img", "commit", "top.qcow2"], cwd=str(ref))
    new = _raw(ref / "base.qcow2", tmp_path, "new.raw")

    def prepare():
        if work.exists():
            shutil.rmtree(str(work))
        shutil.copytree(str(src), str(work))

    def verify(k):
        for image in ("top.qcow2", "base.qcow2"):
            rc, report = qemu_check(work / image)
            if rc not in (0, 3) or report.get("corruptions", 0) or report.get("check-errors", 0):
                return "check %s: rc=%d %s" % (image, rc, report)
        if qemu_raw_digest(work / "top.qcow2", tmp_path) != top_view:
            return "top's guest view changed"
        got = _raw(work / "base.qcow2", tmp_path, "got.raw")
        for off in range(0, len(got), cs):
            part = got[off:off + cs]
            if part != new[off:off + cs] and part != old[off:off + cs].ljust(len(part), b"\0"):
                return "base cluster at %#x is neither old nor new" % off
        return None

    argv = [sys.executable, QIMG, "commit", str(work / "top.qcow2")]
    trials, failures = kill_at_every_write(prepare, argv, [work / "top.qcow2", work / "base.qcow2"], verify)
    assert trials >= 3
    assert not failures, failures[:5]


ATOMIC_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from qimg.ops.commit import commit_image
args = sys.argv[2:]
drop = "-d" in args
base = args[args.index("-b") + 1] if "-b" in args else None
commit_image(args[-1], drop=drop, base=base)
"""


@pytest.mark.parametrize("how", ["cli", "atomic"])
def test_commit_result_is_qemu_img_s(tmp_path, how):
    """Complete runs of the scenarios: base equal to qemu-img's, both images check clean; the CLI
    (in place) also gives qemu-img's allocation layout."""
    script = tmp_path / "atomic.py"
    script.write_text(ATOMIC_SCRIPT)
    for name, cfg in sorted(SCENARIOS.items()):
        cfg = dict(cfg)
        drop, base_name = cfg.pop("drop", "0"), cfg.pop("base", "")
        dirs = []
        for side in ("qemu", "ours"):
            d = tmp_path / name / side
            d.mkdir(parents=True)
            _build(d, **cfg)
            dirs.append(d)
        args = ["commit"] + (["-d"] if drop == "1" else []) + (["-b", base_name] if base_name else []) + ["top.qcow2"]
        run(["qemu-img"] + args, cwd=str(dirs[0]))
        if how == "cli":
            run([sys.executable, QIMG] + args, cwd=str(dirs[1]))
        else:
            run([sys.executable, str(script), os.path.join(ROOT, "plugins", "module_utils")] + args[1:],
                cwd=str(dirs[1]))
        for image in ("base.qcow2", "top.qcow2"):
            proc = run(["qemu-img", "compare", str(dirs[0] / image), str(dirs[1] / image)], check=False)
            assert proc.returncode == 0, (name, image, proc.stdout)
            if how == "cli" or image == "top.qcow2":
                maps = [_layout(run(["qemu-img", "map", "--output=json", image], cwd=str(d)).stdout) for d in dirs]
                assert maps[0] == maps[1], (name, image)
            assert_check_clean(dirs[1] / image)
        if cfg.get("snapshot"):
            assert (qemu_raw_digest(dirs[0] / "base.qcow2", tmp_path, snapshot="s1")
                    == qemu_raw_digest(dirs[1] / "base.qcow2", tmp_path, snapshot="s1"))


@pytest.mark.parametrize("base_fmt", ["qcow2", "raw"])
def test_rate_limit_paces_the_commit(tmp_path, base_fmt):
    """-r RATE: bytes per second, as qemu's block job speed (paced in 512 KiB steps)."""
    base = str(tmp_path / ("base." + base_fmt))
    top = str(tmp_path / "top.qcow2")
    qemu_img_create(base, base_fmt, 4 * MiB)
    qemu_img_create(top, "qcow2", 4 * MiB, backing=os.path.basename(base), backing_fmt=base_fmt)
    elapsed = {}
    for pattern, args in ((3, []), (4, ["-r", "0"]), (2, ["-r", "1M"])):
        qemu_io(top, "write -P %d 0 2M" % pattern)
        start = time.monotonic()
        proc = run([sys.executable, QIMG, "commit"] + args + [top])
        elapsed[" ".join(args)] = time.monotonic() - start
        assert proc.stdout == "Image committed.\n"
    assert qemu_raw_digest(base, tmp_path, fmt=base_fmt) == qemu_raw_digest(top, tmp_path)
    # 2 MiB at 1 MiB/s: the last 512 KiB step starts after 1.5 s; no limit (or -r 0): no pacing
    assert 1.4 <= elapsed["-r 1M"] < 10, elapsed
    assert elapsed["-r 1M"] - max(elapsed[""], elapsed["-r 0"]) >= 1.0, elapsed
