# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Bitmap actions, guest writes into an image with bitmaps and resize with bitmaps, killed
before every one of their writes.

After each kill `qemu-img check` must find no corruption (leaks are allowed), and no bitmap may
claim to be consistent while it is stale: every bitmap without in_use holds exactly its content
before or after the operation, and the old content only while the guest data is the old one.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import sys

import pytest

from conftest import QIMG, ROOT
from crashkill import kill_at_every_write, need_strace
from helpers import qemu_check, qemu_img_create, qemu_io, qemu_raw_digest, run
from test_bitmap import raw_bitmaps

WRITER = r"""
import sys
sys.path.insert(0, sys.argv[1])
from qimg.image import open_image
with open_image(sys.argv[2], read_only=False) as dev:
    dev.write(1 << 20, b"\x11" * 200000)
    dev.write_zeroes(5 << 20, 1 << 20)
    dev.discard(3 << 20, 1 << 20)
    dev.write(7 << 20, b"\x22" * 4096)
"""


def _build(path):
    qemu_img_create(path, "qcow2", "8M", {"cluster_size": "4k"})
    run(["qemu-img", "bitmap", "--add", str(path), "b0"])
    run(["qemu-img", "bitmap", "--add", "-g", "64k", "--disable", str(path), "off"])
    qemu_io(path, "write -P 1 0 2M", "write -P 2 3M 1M")
    run(["qemu-img", "bitmap", "--add", "-g", "512", str(path), "fine"])
    run(["qemu-img", "bitmap", "--enable", str(path), "off"])
    qemu_io(path, "write -P 3 6M 64k")


def _state(path):
    info = json.loads(run(["qemu-img", "info", "--output=json", "-U", str(path)]).stdout)
    listed = info.get("format-specific", {}).get("data", {}).get("bitmaps", [])
    return info["virtual-size"], listed, raw_bitmaps(path)


def _verifier(path, tmp, before, after_holder, guest_before):
    def verify(k):
        rc, check = qemu_check(path)
        if rc not in (0, 3) or check.get("corruptions") or check.get("check-errors"):
            return "corrupt after kill %d: %s" % (k, check)
        after = after_holder[0] if k else None
        size, listed, raw = _state(path)
        if after is not None and size not in (before[0], after[0]):
            return "virtual size %d is neither old nor new" % size
        states = [before] + ([after] if after is not None else [])
        if k == 0:
            after_holder[0] = (size, listed, raw)
            states = [after_holder[0]]
        for entry in listed:
            name = entry["name"]
            if "in-use" in entry["flags"]:
                continue
            got = raw[name]
            matches = [s for s in states if name in s[2] and s[2][name] == got and
                       [e for e in s[1] if e["name"] == name][0]["flags"] == entry["flags"]]
            if not matches:
                return "kill %d: bitmap %s is consistent with content %r, neither old nor new" % (k, name, got[2][:4])
            if guest_before is not None and k and matches == [before] and after is not None and \
                    before[2].get(name) != after[2].get(name):
                if qemu_raw_digest(path, tmp) != guest_before:
                    return "kill %d: bitmap %s claims the old content while the guest data changed" % (k, name)
        return None
    return verify


def _run_trials(tmp_path, argv, guest=False, step=1):
    need_strace()
    src = tmp_path / "src.qcow2"
    _build(src)
    path = tmp_path / "img.qcow2"
    shutil.copy(str(src), str(path))
    before = _state(path)
    guest_before = qemu_raw_digest(path, tmp_path) if guest else None

    def prepare():
        shutil.copy(str(src), str(path))

    holder = [None]
    # the complete run first gives the "after" state (kill_at_every_write verifies it last too)
    prepare()
    run(argv)
    holder[0] = _state(path)
    trials, failures = kill_at_every_write(prepare, argv, [path],
                                           _verifier(path, tmp_path, before, holder, guest_before), step=step)
    assert trials > 3
    assert not failures, failures[:5]


@pytest.mark.parametrize("actions", [
    ["--add", "-g", "4k", "--merge", "b0", "--disable"],
    ["--clear"],
    ["--remove"],
    ["--merge", "fine", "--disable"],
    ["--remove", "--add", "-g", "1k"],
], ids=["add-merge-disable", "clear", "remove", "merge-disable", "remove-add"])
def test_bitmap_actions_killed(tmp_path, actions):
    name = "new" if actions[0] == "--add" else "b0"
    _run_trials(tmp_path, [sys.executable, QIMG, "bitmap"] + actions + [str(tmp_path / "img.qcow2"), name])


def test_guest_writes_killed(tmp_path):
    _run_trials(tmp_path, [sys.executable, "-c", WRITER, os.path.join(ROOT, "plugins", "module_utils"),
                           str(tmp_path / "img.qcow2")], guest=True)


@pytest.mark.parametrize("size", ["16M", "6M"], ids=["grow", "shrink"])
def test_resize_with_bitmaps_killed(tmp_path, size):
    _run_trials(tmp_path, [sys.executable, QIMG, "resize", "--shrink", str(tmp_path / "img.qcow2"), size])
