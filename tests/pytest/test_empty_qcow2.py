# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A zero-size qcow2 image has no L1 table (l1_size 0, offset 0), as QEMU writes it: convert gives
one without a leaked cluster (iotest 042), and growing one frees no cluster for the empty table."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct
import sys

import pytest

from conftest import ROOT, run
from helpers import assert_check_clean, qemu_img_create, qemu_io

QIMG = os.path.join(ROOT, "bin", "qimg")


def _l1(path):
    with open(str(path), "rb") as f:
        raw = f.read(48)
    return struct.unpack(">IQ", raw[36:48])


@pytest.mark.parametrize("compress", [False, True])
def test_convert_empty_image(tmp_path, compress):
    src, dst = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    qemu_img_create(src, "qcow2", 0)
    run([sys.executable, QIMG, "convert"] + (["-c"] if compress else []) + ["-O", "qcow2", str(src), str(dst)])
    assert _l1(dst) == (0, 0)
    assert_check_clean(dst)


@pytest.mark.parametrize("maker", ["qemu-img", "qimg"])
def test_grow_empty_image(tmp_path, maker):
    path = tmp_path / "e.qcow2"
    if maker == "qemu-img":
        qemu_img_create(path, "qcow2", 0)
    else:
        run([sys.executable, QIMG, "create", "-q", "-f", "qcow2", str(path), "0"])
    run([sys.executable, QIMG, "resize", str(path), "1M"])
    assert_check_clean(path)
    qemu_io(path, "write -P 1 0 64k")
    assert_check_clean(path)
