# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Snapshot conformance with QEMU 7.2's iotests (217, 080, 261): our output next to qemu-img's."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import shutil
import struct

import pytest

from conftest import run
from helpers import qemu_img_create
from helpers import qemu_io as io_run


def _both(tmp_path, size="64M", writes=("write 0 64k",), options=None):
    ours, theirs = tmp_path / "ours.qcow2", tmp_path / "theirs.qcow2"
    qemu_img_create(ours, "qcow2", size, options)
    for w in writes:
        io_run(ours, w)
    shutil.copy(str(ours), str(theirs))
    return ours, theirs


def _check(path, *extra):
    p = run(["qemu-img", "check"] + list(extra) + [str(path)], check=False)
    return p.returncode, p.stdout, p.stderr


def _without_dates(data, table_offset, count):
    """The image bytes with each snapshot entry's date fields (bytes 16-31) zeroed."""
    buf = bytearray(data)
    off = table_offset
    for _ in range(count):
        id_len, name_len = struct.unpack_from(">HH", buf, off + 12)
        extra = struct.unpack_from(">I", buf, off + 36)[0]
        buf[off + 16:off + 32] = bytes(16)
        off += (40 + extra + id_len + name_len + 7) & ~7
    return bytes(buf)


@pytest.mark.parametrize("writes", [("write 0 64k",), ("write 0 64k", "write 1M 128k", "write 40M 64k"), ()])
def test_create_layout_is_qemus(as_qemu_img, tmp_path, writes):
    """qemu-img edits the tables in place; we evacuate first and write them back where they were: the
    same file, byte for byte (dates aside), so iotests that poke at offsets find the same things."""
    ours, theirs = _both(tmp_path, writes=writes)
    for name in ("a", "b"):
        assert as_qemu_img("snapshot", "-c", name, ours).returncode == 0
        run(["qemu-img", "snapshot", "-c", name, str(theirs)])
    a, b = ours.read_bytes(), theirs.read_bytes()
    assert len(a) == len(b)
    table, count = struct.unpack_from(">Q", a, 64)[0], struct.unpack_from(">I", a, 60)[0]
    assert (table, count) == (struct.unpack_from(">Q", b, 64)[0], 2)
    assert _without_dates(a, table, count) == _without_dates(b, table, count)
    assert _check(ours)[0] == 0


def test_create_layout_refcount_bits_1_refused_untouched(as_qemu_img, tmp_path):
    ours, _ = _both(tmp_path, options={"refcount_bits": "1"})
    before = ours.read_bytes()
    p = as_qemu_img("snapshot", "-c", "x", ours)
    assert p.returncode == 1 and p.stderr == "qemu-img: Could not create snapshot 'x': -22 (Invalid argument)\n"
    assert ours.read_bytes()[:512] == before[:512]


def test_217_delete_with_io_error_leaks_as_qemu(as_qemu_img, tmp_path):
    """iotest 217: an I/O error when the deleted snapshot's clusters are freed: the snapshot is gone,
    only leaks remain (exactly qemu's), and check -r leaks repairs them."""
    ours, theirs = _both(tmp_path)
    conf = tmp_path / "blkdebug.conf"
    conf.write_text('[inject-error]\nevent = "cluster_free"\nerrno = "5"\n')
    as_qemu_img("snapshot", "-c", "foo", ours)
    run(["qemu-img", "snapshot", "-c", "foo", str(theirs)])
    got = as_qemu_img("snapshot", "-d", "foo", "blkdebug:%s:%s" % (conf, ours))
    want = run(["qemu-img", "snapshot", "-d", "foo", "blkdebug:%s:%s" % (conf, theirs)], check=False)
    assert (got.returncode, got.stdout, got.stderr) == (want.returncode, want.stdout, want.stderr)
    assert got.stderr.startswith("qcow2_free_clusters failed: Input/output error\n")
    assert "Snapshot list" not in run(["qemu-img", "info", str(ours)]).stdout
    assert _check(ours) == _check(theirs)
    assert _check(ours)[0] == 3
    assert _check(ours, "-r", "leaks") == _check(theirs, "-r", "leaks")
    assert _check(ours)[0] == 0


def test_delete_by_spec_names(as_qemu_img, tmp_path):
    """snapshot takes what other commands take: json: names, --image-opts."""
    ours, _ = _both(tmp_path)
    as_qemu_img("snapshot", "-c", "one", ours)
    as_qemu_img("snapshot", "-c", "two", ours)
    spec = 'json:{"driver": "qcow2", "file": {"driver": "file", "filename": "%s"}}' % ours
    assert as_qemu_img("snapshot", "-d", "one", spec).returncode == 0
    p = as_qemu_img("snapshot", "-l", "--image-opts", "driver=qcow2,file.filename=%s" % ours)
    assert p.returncode == 0 and "two" in p.stdout and "one" not in p.stdout
    assert _check(ours)[0] == 0


def test_module_ops_still_refuse_specs(tmp_path):
    from qimg.errors import QimgError
    from qimg.ops import snapshot as S
    ours, _ = _both(tmp_path)
    with pytest.raises(QimgError) as e:
        S.create_snapshot("blkdebug::%s" % ours, "x")
    assert "pseudo-filename" in str(e.value)
