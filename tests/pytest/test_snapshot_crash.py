# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshot create, apply and delete killed before every one of their writes.

After each kill `qemu-img check` must find no corruption (leaks are allowed) and the active
content, the snapshot list and every listed snapshot's content must each be what they were
before or after the operation (qemu-img 7.2 itself fails this: OFLAG_COPIED errors).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import sys

import pytest

from conftest import ROOT
from crashkill import kill_at_every_write, need_strace
from helpers import qemu_check, qemu_img_create, qemu_io, qemu_raw_digest, run

SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from qimg.ops import snapshot as S
op, path, arg = sys.argv[2:5]
if op == "create":
    S.create_snapshot(path, arg)
elif op == "apply":
    S.apply_snapshot(path, arg)
else:
    S.delete_snapshot(path, name=arg)
"""

SIZE = 8 * 1024 * 1024


def _build(path, options, snapshots, compressed=False, extra=None):
    qemu_img_create(path, "qcow2", SIZE, options)
    if extra == "bitmap":
        run(["qemu-img", "bitmap", "--add", str(path), "bm"])
    if compressed:
        qemu_io(path, "write -c -P 1 0 1M", "write -c -P 2 3M 256k", "write -P 3 6M 64k")
    else:
        qemu_io(path, "write -P 1 0 1M", "write -P 2 2M 2M", "write -P 3 6M 64k")
    for i, name in enumerate(snapshots):
        run(["qemu-img", "snapshot", "-c", name, str(path)])
        qemu_io(path, "write -P %d %dk 12k" % (10 + i, 64 * i + 4), "write -z 2M 8k",
                "write -P %d 7M 4k" % (20 + i))
    if extra == "resize":
        run(["qemu-img", "resize", str(path), str(2 * SIZE)])
        qemu_io(path, "write -P 9 %d 64k" % (SIZE + 8192))


def _snapshot_names(path):
    info = json.loads(run(["qemu-img", "info", "--output=json", "-U", str(path)]).stdout)
    return [s["name"] for s in info.get("snapshots", [])]


def _state(path, tmp):
    """(active digest, [names], {name: digest})."""
    names = _snapshot_names(path)
    return (qemu_raw_digest(path, tmp), names,
            dict((n, qemu_raw_digest(path, tmp, snapshot=n)) for n in names))


SCENARIOS = [
    # id, -o options, earlier snapshots, compressed, operation, argument
    ("create-first", {"cluster_size": "4k"}, [], False, "create", "new"),
    ("create-more", {"cluster_size": "4k"}, ["s1", "s2"], False, "create", "new"),
    ("create-compressed", {"cluster_size": "4k"}, ["s1"], True, "create", "new"),
    ("create-v2", {"cluster_size": "4k", "compat": "0.10"}, ["s1"], False, "create", "new"),
    ("create-el2", {"cluster_size": "16k", "extended_l2": "on", "refcount_bits": "8"}, ["s1"], False,
     "create", "new"),
    ("apply-only", {"cluster_size": "4k"}, ["s1"], False, "apply", "s1"),
    ("apply-older", {"cluster_size": "4k"}, ["s1", "s2"], False, "apply", "s1"),
    ("apply-compressed", {"cluster_size": "4k"}, ["s1", "s2"], True, "apply", "s2"),
    ("delete-only", {"cluster_size": "4k"}, ["s1"], False, "delete", "s1"),
    ("delete-middle", {"cluster_size": "4k"}, ["s1", "s2", "s3"], False, "delete", "s2"),
    ("delete-compressed", {"cluster_size": "4k"}, ["s1", "s2"], True, "delete", "s1"),
    ("delete-rb2", {"cluster_size": "4k", "refcount_bits": "2"}, ["s1", "s2"], False, "delete", "s2"),
    ("delete-64k", {}, ["s1", "s2"], False, "delete", "s1"),
    ("create-512", {"cluster_size": "512", "refcount_bits": "64"}, ["s1"], False, "create", "new"),
    ("create-bitmap", {"cluster_size": "4k"}, ["s1"], False, "create", "new", "bitmap"),
    ("delete-bitmap", {"cluster_size": "4k"}, ["s1", "s2"], False, "delete", "s2", "bitmap"),
    ("apply-resized", {"cluster_size": "4k"}, ["s1"], False, "apply", "s1", "resize"),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_kill_at_every_write(qemu_img, qemu_io, tmp_path, scenario):
    need_strace()
    _sid, options, earlier, compressed, op, arg = scenario[:6]
    base = tmp_path / "base.qcow2"
    img = tmp_path / "img.qcow2"
    _build(base, options, earlier, compressed, scenario[6] if len(scenario) > 6 else None)
    before = _state(base, tmp_path)
    argv = [sys.executable, "-c", SCRIPT, os.path.join(ROOT, "plugins", "module_utils"), op, str(img), arg]

    def prepare():
        shutil.copyfile(str(base), str(img))

    prepare()
    run(argv)
    after = _state(img, tmp_path)
    assert after != before

    def verify(k):
        rc, report = qemu_check(img)
        if rc not in (0, 3) or report.get("corruptions") or report.get("check-errors"):
            return "qemu-img check: rc=%d %s" % (rc, report)
        state = _state(img, tmp_path)
        if k == 0 and state != after:
            return "complete run: %s, expected %s" % (state, after)
        if state[0] not in (before[0], after[0]):
            return "active content is neither the old nor the new"
        if state[1] not in (before[1], after[1]):
            return "snapshot list %s is neither %s nor %s" % (state[1], before[1], after[1])
        for name, digest in state[2].items():
            if digest not in (before[2].get(name), after[2].get(name)):
                return "snapshot %s content changed" % name
        if before[1] != after[1] and state[1] == after[1] and state != after:
            return "new snapshot table with old content: %s" % (state,)
        return None

    trials, failures = kill_at_every_write(prepare, argv, [img], verify, cwd=str(tmp_path))
    print("%s: %d trials, %d failures" % (scenario[0], trials, len(failures)))
    assert trials >= 3
    assert failures == []
