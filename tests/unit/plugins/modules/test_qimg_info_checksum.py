# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qimg_info's checksum option: the content digest, the same for raw and qcow2."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import struct

from ansible_collections.qimg.disk.plugins.modules.qimg_info import main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import open_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image


def _definition(data, algorithm):
    outer = hashlib.new(algorithm)
    for i in range(0, len(data), 65536):
        outer.update(hashlib.new(algorithm, data[i:i + 65536]).digest())
    outer.update(struct.pack("<Q", len(data)))
    return outer.hexdigest()


def test_info_checksum(tmp_path, run):
    qcow2 = str(tmp_path / "a.qcow2")
    raw = str(tmp_path / "a.raw")
    create_image(qcow2, "qcow2", size="1M")
    with open_image(qcow2, read_only=False) as dev:
        dev.write(70000, b"golden" * 1000)
    data = bytearray(1 << 20)
    data[70000:76000] = b"golden" * 1000
    with open(raw, "wb") as f:
        f.write(data)
    for algorithm in ("sha256", "md5"):
        want = _definition(bytes(data), algorithm)
        res = run.ok(main, dict(path=qcow2, checksum=algorithm))
        assert res["changed"] is False and res["checksum"] == want
        assert run.ok(main, dict(path=raw, checksum=algorithm), check_mode=True)["checksum"] == want
    assert "checksum" not in run.ok(main, dict(path=qcow2))


def test_info_checksum_unknown_algorithm(tmp_path, run):
    path = str(tmp_path / "a.qcow2")
    create_image(path, "qcow2", size="1M")
    res = run.fail(main, dict(path=path, checksum="nosuch"))
    assert "Unsupported hash algorithm 'nosuch'" in res["msg"]
