# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`bin/qimg snapshot` against `qemu-img snapshot`: the same stdout, stderr and exit code."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import shutil
import subprocess
import time

import pytest

from conftest import assert_same_as_qemu_img, run
from helpers import assert_check_clean, qemu_img_create, qemu_raw_digest
from helpers import qemu_io as io_run


@pytest.fixture
def images(qemu_img, tmp_path):
    a = tmp_path / "a.qcow2"
    qemu_img_create(a, "qcow2", "4M")
    io_run(a, "write -P 1 0 1M")
    for name in ("first", "a-rather-long-snapshot-name", "x"):
        run(["qemu-img", "snapshot", "-c", name, str(a)])
        io_run(a, "write -P 2 0 64k")
    (tmp_path / "r.raw").write_bytes(bytes(65536))
    qemu_img_create(tmp_path / "empty.qcow2", "qcow2", "1M")
    return tmp_path


CASES = [
    ["snapshot", "-l", "a.qcow2"],
    ["snapshot", "-l", "empty.qcow2"],
    ["snapshot", "-l", "-U", "a.qcow2"],
    ["snapshot", "--force-share", "-l", "a.qcow2"],
    ["snapshot", "-l", "r.raw"],
    ["snapshot", "-l", "missing.qcow2"],
    ["snapshot", "-l", "-l", "a.qcow2"],
    ["snapshot", "-l", "-c", "x", "a.qcow2"],
    ["snapshot", "-c"],
    ["snapshot", "-x", "a.qcow2"],
    ["snapshot", "-f", "qcow2", "-l", "a.qcow2"],
    ["snapshot"],
    ["snapshot", "-l", "a.qcow2", "empty.qcow2"],
    ["snapshot", "-d", "nope", "a.qcow2"],
    ["snapshot", "-d", "1", "a.qcow2"],
    ["snapshot", "-a", "nope", "a.qcow2"],
    ["snapshot", "-c", "x", "r.raw"],
    ["snapshot", "-a", "x", "r.raw"],
    ["snapshot", "-d", "x", "r.raw"],
    ["snapshot", "-q", "-c", "x", "missing.qcow2"],
    ["snapshot", "a.qcow2"],
]


@pytest.mark.parametrize("args", CASES, ids=[" ".join(c[1:]) or "none" for c in CASES])
def test_same_as_qemu_img(qemu_img, as_qemu_img, images, args):
    assert_same_as_qemu_img(qemu_img, as_qemu_img, args, str(images))


def _undated_listing(path):
    info = json.loads(run(["qemu-img", "info", "--output=json", str(path)]).stdout)
    return [dict((k, v) for k, v in s.items() if not k.startswith("date")) for s in info.get("snapshots", [])]


@pytest.mark.parametrize("action", [["-c", "new"], ["-a", "first"], ["-a", "2"], ["-d", "x"], ["-d", "first"],
                                    ["-q", "-c", "new"]])
def test_actions_same_result(qemu_img, as_qemu_img, images, action):
    """Same output and exit code, and afterwards the same snapshots and contents as qemu-img's run."""
    ours, theirs = images / "ours.qcow2", images / "theirs.qcow2"
    shutil.copyfile(str(images / "a.qcow2"), str(ours))
    shutil.copyfile(str(images / "a.qcow2"), str(theirs))
    got = as_qemu_img("snapshot", *(action + [str(ours)]))
    want = run([qemu_img, "snapshot"] + action + [str(theirs)], check=False)
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    assert_check_clean(ours)
    assert _undated_listing(ours) == _undated_listing(theirs)
    assert qemu_raw_digest(ours, images) == qemu_raw_digest(theirs, images)
    for sn in _undated_listing(ours):
        assert qemu_raw_digest(ours, images, snapshot=sn["name"]) == qemu_raw_digest(theirs, images,
                                                                                     snapshot=sn["name"])


def test_listing_after_our_create(qemu_img, as_qemu_img, images):
    """A snapshot we make lists the same in both tools (date, VM size, clock, icount)."""
    shutil.copyfile(str(images / "a.qcow2"), str(images / "b.qcow2"))
    assert as_qemu_img("snapshot", "-c", "ours", "b.qcow2", cwd=str(images)).returncode == 0
    assert_same_as_qemu_img(qemu_img, as_qemu_img, ["snapshot", "-l", "b.qcow2"], str(images))
    assert_same_as_qemu_img(qemu_img, as_qemu_img, ["info", "b.qcow2"], str(images))
    assert_same_as_qemu_img(qemu_img, as_qemu_img, ["info", "--output=json", "b.qcow2"], str(images))


def _hold(path):
    """qemu-io holding path open for writing, once its lock is seen; None when it exited first (our probe
    takes a lock for a moment, and qemu-io starting in that moment gives up)."""
    proc = subprocess.Popen(["qemu-io", "-f", "qcow2", str(path)], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.1)
    deadline = time.time() + 10
    while time.time() < deadline and proc.poll() is None:
        if run(["qemu-img", "info", str(path)], check=False).returncode:
            return proc
        time.sleep(0.05)
    proc.stdin.close()
    proc.wait(timeout=10)
    return None


@pytest.fixture
def busy(images):
    """a.qcow2 held open for writing by qemu-io (as a running VM holds its disk)."""
    for dummy in range(10):
        proc = _hold(images / "a.qcow2")
        if proc is not None:
            break
    else:
        pytest.fail("qemu-io never took the image's write lock")
    try:
        yield images
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)


@pytest.mark.parametrize("args", [["snapshot", "-l", "a.qcow2"], ["snapshot", "-l", "-U", "a.qcow2"],
                                  ["snapshot", "-c", "y", "a.qcow2"], ["snapshot", "-a", "x", "a.qcow2"],
                                  ["snapshot", "-d", "x", "a.qcow2"], ["snapshot", "-U", "-c", "y", "a.qcow2"]],
                         ids=["list", "list-U", "create", "apply", "delete", "create-U"])
def test_in_use(qemu_img, as_qemu_img, busy, args):
    before = (busy / "a.qcow2").read_bytes()
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img, args, str(busy))
    assert (busy / "a.qcow2").read_bytes() == before, got
