# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""rebase and commit --progress=json: one {"done", "total", "elapsed"} object per line, as convert's."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import sys

import pytest

from conftest import ROOT, run
from helpers import qemu_img_create, qemu_io

MiB = 1024 * 1024
QIMG = os.path.join(ROOT, "bin", "qimg")


def _chain(d):
    qemu_img_create(d / "old.qcow2", "qcow2", 8 * MiB)
    qemu_io(d / "old.qcow2", "write -P 1 0 5M")
    qemu_img_create(d / "new.qcow2", "qcow2", 8 * MiB)
    qemu_img_create(d / "top.qcow2", "qcow2", 8 * MiB, backing="old.qcow2", backing_fmt="qcow2")
    qemu_io(d / "top.qcow2", "write -P 2 6M 1M")


def _lines(out):
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines and all(set(x) == {"done", "total", "elapsed"} for x in lines)
    assert [x["done"] for x in lines] == sorted(x["done"] for x in lines)
    assert lines[-1]["done"] == lines[-1]["total"]
    return lines


def test_rebase_json_progress(tmp_path):
    _chain(tmp_path)
    proc = run([sys.executable, QIMG, "rebase", "--progress=json", "-b", "new.qcow2", "-F", "qcow2", "top.qcow2"],
               cwd=str(tmp_path))
    lines = _lines(proc.stdout)
    assert lines[-1]["total"] == 8 * MiB
    assert len(lines) >= 3   # one per compared 2 MiB step


def test_commit_json_progress(tmp_path):
    _chain(tmp_path)
    proc = run([sys.executable, QIMG, "commit", "--progress=json", "top.qcow2"], cwd=str(tmp_path))
    body, tail = proc.stdout.rsplit("\n", 2)[0], proc.stdout.rsplit("\n", 2)[1]
    assert tail == "Image committed."
    assert _lines(body)[-1]["total"] == MiB
    # nothing left to commit: one line, 0 of 0
    proc = run([sys.executable, QIMG, "commit", "--progress=json", "top.qcow2"], cwd=str(tmp_path))
    assert _lines(proc.stdout.rsplit("\n", 2)[0])[-1]["total"] == 0


@pytest.mark.parametrize("cmd", ["rebase", "commit"])
def test_progress_argument_checked_and_quiet(tmp_path, cmd):
    _chain(tmp_path)
    args = ["-b", "new.qcow2", "-F", "qcow2"] if cmd == "rebase" else []
    proc = run([sys.executable, QIMG, cmd, "--progress=xml"] + args + ["top.qcow2"], cwd=str(tmp_path), check=False)
    assert proc.returncode == 1
    assert proc.stderr == "qimg: --progress must be used with human or json as argument.\n"
    proc = run([sys.executable, QIMG, cmd, "-q", "--progress=json"] + args + ["top.qcow2"], cwd=str(tmp_path))
    assert proc.stdout == ""
