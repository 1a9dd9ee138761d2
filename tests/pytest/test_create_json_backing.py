# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""create -b with a json: or protocol name typed on the command line: stored and opened as qemu-img
does (iotest 020); names read from images stay refused (the module needs allow_unsafe_backing)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys

import pytest

from conftest import ROOT, assert_same_as_qemu_img
from helpers import qemu_img_create, qemu_info

sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))


def _json(base):
    return ("json:{'driver': 'qcow2', 'file': { 'driver': 'blkdebug', 'inject-error': [{ 'event': 'write_aio', "
            "'errno': 28, 'once': true }], 'image': { 'driver': 'file', 'filename': '%s' }}}" % base)


@pytest.mark.parametrize("extra", [[], ["-u", "-o", "size=1M"]], ids=str)
def test_json_backing_name_like_qemu_img(qemu_img, as_qemu_img, tmp_path, extra):
    base = str(tmp_path / "base.qcow2")
    qemu_img_create(base, "qcow2", 1024 * 1024)
    args = ["create", "-f", "qcow2", "-b", _json(base), "-F", "qcow2"] + extra + ["t.qcow2"]
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img, args, str(tmp_path))
    assert got.returncode == 0
    info = qemu_info(tmp_path / "t.qcow2")
    assert info["backing-filename"] == _json(base)
    assert info["virtual-size"] == 1024 * 1024


@pytest.mark.parametrize("name", ["json:{}", "json:{'driver': 'qcow2', 'file': {'driver': 'file', 'filename': 'nope'}}"])
def test_bad_json_backing_like_qemu_img(qemu_img, as_qemu_img, tmp_path, name):
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img, ["create", "-f", "qcow2", "-b", name, "-F", "qcow2",
                                                          "t.qcow2"], str(tmp_path))
    assert got.returncode == 1


def test_engine_refuses_json_backing_unless_allowed(tmp_path):
    from qimg.errors import QimgError
    from qimg.ops.create import create_image
    base = str(tmp_path / "base.qcow2")
    qemu_img_create(base, "qcow2", 1024 * 1024)
    with pytest.raises(QimgError) as e:
        create_image(str(tmp_path / "a.qcow2"), "qcow2", backing_file=_json(base), backing_fmt="qcow2")
    assert "json:" in str(e.value)
    assert not os.path.exists(str(tmp_path / "a.qcow2"))
    create_image(str(tmp_path / "b.qcow2"), "qcow2", backing_file=_json(base), backing_fmt="qcow2",
                 allow_unsafe_backing=True)
    assert qemu_info(tmp_path / "b.qcow2")["virtual-size"] == 1024 * 1024
