# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""resize and amend against qemu-img, point by point as qemu-iotests 061, 082, 112, 113 and 125
check them: preallocation of the grown range, data_file / data_file_raw amends, amend progress,
option help and refusals. Each case compares with qemu-img's own result on a copy."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import sys

import pytest

from conftest import ROOT, run
from crashkill import kill_at_every_write

from qimg.ops.amend import amend_image
from qimg.ops.resize import resize_image


def _host_size(path):
    st = os.stat(str(path))
    return st.st_blocks * 512, st.st_size


def _check_clean(qemu_img, path):
    proc = run([qemu_img, "check", "--output=json", str(path)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _same_content(qemu_img, a, b, fmt="qcow2"):
    return run([qemu_img, "compare", "-q", "-f", fmt, "-F", fmt, str(a), str(b)], check=False).returncode == 0


def _info(qemu_img, path, *extra):
    d = json.loads(run([qemu_img, "info", "--output=json"] + list(extra) + [str(path)]).stdout)
    for k in ("filename", "actual-size"):
        d.pop(k, None)
    return d


# ------------------------------------------------------------------ resize preallocation (125)
CREATION = 2 * 1024 * 1024 - 48 * 1024  # 48 KiB below 2 MiB: the old end inside a 64k cluster


@pytest.mark.parametrize("cluster", ["512", "64k"])
@pytest.mark.parametrize("create_mode", ["off", "metadata", "falloc", "full"])
@pytest.mark.parametrize("growth_mode", ["metadata", "falloc", "full"])
@pytest.mark.parametrize("growth", [16, 80])
def test_grow_preallocation_holds_like_qemu_img(qemu_img, tmp_path, cluster, create_mode, growth_mode, growth):
    """What iotest 125 checks: after a preallocated grow, writing the old and the new range
    neither lengthens the file nor (falloc/full) grows it on the host; the cluster the old end
    falls in is relocated into the preallocated run as QEMU does. Content and check as qemu-img."""
    ours, ref = tmp_path / "ours.qcow2", tmp_path / "ref.qcow2"
    run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "preallocation=%s,cluster_size=%s" % (create_mode, cluster),
         str(ours), str(CREATION)])
    run(["qemu-io", "-c", "write -P 0x5a 0 1000k", str(ours)])
    shutil.copy(str(ours), str(ref))
    run([qemu_img, "resize", "-q", "-f", "qcow2", "--preallocation=" + growth_mode, str(ref), "+%dK" % growth])
    resize_image(str(ours), CREATION + growth * 1024, fmt="qcow2", preallocation=growth_mode)
    _check_clean(qemu_img, ours)
    assert _same_content(qemu_img, ours, ref)
    host0, len0 = _host_size(ours)
    run(["qemu-io", "-c", "write -P 0x11 0 %d" % CREATION, str(ours)])
    host1, len1 = _host_size(ours)
    run(["qemu-io", "-c", "write -P 0x22 %d %dk" % (CREATION, growth), str(ours)])
    host2, len2 = _host_size(ours)
    if create_mode != "off":
        assert len1 <= len0
        if create_mode != "metadata":
            assert host1 <= host0
    assert len2 <= len1
    if growth_mode != "metadata":
        assert host2 <= host1
    _check_clean(qemu_img, ours)


def test_grow_full_copies_the_old_end_cluster_with_backing(qemu_img, tmp_path):
    """iotest 125's tail: unaligned sizes over a backing file, preallocation=full and metadata;
    the old end's cluster keeps the backing data before the old end, zeros after, 7 clusters."""
    base = tmp_path / "base.raw"
    run([qemu_img, "create", "-q", "-f", "raw", str(base), "128k"])
    run(["qemu-io", "-f", "raw", "-c", "write -q -P 1 0 128k", str(base)])
    for orig in ("31k", "33k"):
        for dst in (96 * 1024, 128 * 1024):
            for mode in ("metadata", "full"):
                ours, ref = tmp_path / "o.qcow2", tmp_path / "r.qcow2"
                for p in (ours, ref):
                    run([qemu_img, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), "-o",
                         "cluster_size=64k", str(p), orig])
                run([qemu_img, "resize", "-q", "--preallocation=" + mode, str(ref), str(dst)])
                resize_image(str(ours), dst, preallocation=mode)
                _check_clean(qemu_img, ours)
                assert _same_content(qemu_img, ours, ref)
                assert os.path.getsize(str(ours)) == 7 * 65536
