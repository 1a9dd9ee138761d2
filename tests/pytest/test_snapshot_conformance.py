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
    for dummy in range(count):
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
    ours, dummy = _both(tmp_path, options={"refcount_bits": "1"})
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
    ours, dummy = _both(tmp_path)
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
    ours, dummy = _both(tmp_path)
    with pytest.raises(QimgError) as e:
        S.create_snapshot("blkdebug::%s" % ours, "x")
    assert "pseudo-filename" in str(e.value)


# ---------------------------------------------------------------- hostile tables, side by side
def _poke(path, offset, data):
    with open(str(path), "r+b") as f:
        f.seek(offset)
        f.write(data)


def _peek(path, offset, fmt):
    with open(str(path), "rb") as f:
        f.seek(offset)
        return struct.unpack(fmt, f.read(struct.calcsize(fmt)))[0]


def _filtered(text, ignore):
    return "".join(line for line in text.splitlines(True) if not line.startswith(("disk size:",) + ignore))


def _side_by_side(as_qemu_img, tmp_path, setup, steps, ignore=()):
    """setup(path) builds the image with QEMU's tools in two directories; each step runs as ours in
    one and as qemu-img in the other (same relative name): stdout, stderr and exit codes must agree."""
    dirs = []
    for name in ("ours", "theirs"):
        d = tmp_path / name
        d.mkdir()
        dirs.append(d)
    setup(dirs[0] / "t.qcow2")
    for f in dirs[0].iterdir():
        shutil.copy(str(f), str(dirs[1] / f.name))
    for step in steps:
        if callable(step):
            for d in dirs:
                step(d / "t.qcow2")
            continue
        got = as_qemu_img(*step, cwd=str(dirs[0]))
        want = run(["qemu-img"] + list(step), cwd=str(dirs[1]), check=False)
        assert (got.returncode, _filtered(got.stdout, ignore), got.stderr) == \
            (want.returncode, _filtered(want.stdout, ignore), want.stderr), step
        assert "Traceback" not in got.stderr


def _with_snapshot(path):
    qemu_img_create(path, "qcow2", "64M")
    io_run(path, "write 0 512")
    run(["qemu-img", "snapshot", "-c", "test", str(path)])


def _poke_snap1(field_offset, data):
    def poke(path):
        table = _peek(path, 64, ">Q")
        _poke(path, table + field_offset, data)
    return poke


def test_080_snapshot_table_size_limit(as_qemu_img, tmp_path):
    def setup(path):
        qemu_img_create(path, "qcow2", "64M")
        _poke(path, 64, struct.pack(">Q", 16 << 20))   # past the end of the file: zeros
        _poke(path, 60, struct.pack(">I", 0x10000))
    _side_by_side(as_qemu_img, tmp_path, setup, [["snapshot", "-c", "test", "t.qcow2"]])


@pytest.mark.parametrize("entry", [b"\xbf\xff\xff\xff\xff\xff\x00\x00", b"\x80\x00\x00\xff\xff\xff\x00\x00"])
def test_080_l2_entry_huge_offset(as_qemu_img, tmp_path, entry):
    def setup(path):
        qemu_img_create(path, "qcow2", "64M")
        io_run(path, "write 0 512")
        _poke(path, 0x40000, entry)
    _side_by_side(as_qemu_img, tmp_path, setup, [["snapshot", "-c", "test", "t.qcow2"]])


@pytest.mark.parametrize("field,data", [(0, b"\x00\x00\x00\x00\x00\x40\x02\x00"), (8, b"\x10\x00\x00\x00")])
def test_080_bad_snapshot_l1(as_qemu_img, tmp_path, field, data):
    """Opened as QEMU opens it; each command that uses the snapshot's L1 table refuses it in qemu's words."""
    def setup(path):
        _with_snapshot(path)
        _poke_snap1(field, data)(path)
    _side_by_side(as_qemu_img, tmp_path, setup, [
        ["info", "t.qcow2"],
        ["convert", "-l", "test", "t.qcow2", "t.snap"],
        ["amend", "-o", "compat=0.10", "t.qcow2"],
        ["snapshot", "-a", "test", "t.qcow2"],
        ["snapshot", "-d", "test", "t.qcow2"],
        ["check", "t.qcow2"],
    ])


def _v2_with_incomplete_entries(path):
    qemu_img_create(path, "qcow2", "64M", {"compat": "0.10"})
    for name in ("sn0", "sn1"):
        run(["qemu-img", "snapshot", "-c", name, str(path)])
    # now claim v3: entries without 16 bytes of extra data are incomplete there
    _poke(path, 4, b"\x00\x00\x00\x03")
    _poke(path, 100, b"\x00\x00\x00\x68")
    _poke(path, 96, b"\x00\x00\x00\x04")


def test_261_incomplete_v3_entries(as_qemu_img, tmp_path):
    _side_by_side(as_qemu_img, tmp_path, _v2_with_incomplete_entries, [
        ["check", "t.qcow2"],
        ["check", "-r", "all", "t.qcow2"],
        ["check", "t.qcow2"],
        ["snapshot", "-l", "t.qcow2"],
    ])


def test_261_too_much_extra_data(as_qemu_img, tmp_path):
    def setup(path):
        _with_snapshot(path)
        run(["qemu-img", "snapshot", "-c", "second", str(path)])
        table = _peek(path, 64, ">Q")
        first = (40 + _peek(path, table + 36, ">I") + _peek(path, table + 12, ">H") + _peek(path, table + 14, ">H")
                 + 7) & ~7
        _poke(path, table + first + 36, b"\x00\x01\x00\x00")
    _side_by_side(as_qemu_img, tmp_path, setup, [
        ["info", "t.qcow2"],
        ["check", "t.qcow2"],
        ["check", "-r", "all", "t.qcow2"],
        ["check", "t.qcow2"],
        ["snapshot", "-l", "t.qcow2"],
    ], ignore=("Image end offset",))  # the rewritten table's refcount block moves (QEMU: in place)


def test_261_too_many_snapshots(as_qemu_img, tmp_path):
    def setup(path):
        _with_snapshot(path)
        _poke(path, 60, struct.pack(">I", 0x10001))
    _side_by_side(as_qemu_img, tmp_path, setup, [["info", "t.qcow2"], ["check", "t.qcow2"]])


@pytest.mark.parametrize("zeroed", [False, True])
def test_271_unaligned_data_cluster(as_qemu_img, tmp_path, zeroed):
    """An unaligned L2 entry: "Data cluster" when it holds data; without allocated subclusters -r all
    makes it a zero entry (the zeroed subclusters stay zero, the rest reads from the backing file)."""
    def setup(path):
        base = path.parent / "t.base"
        qemu_img_create(base, "raw", "128k")
        run(["qemu-io", "-f", "raw", "-c", "write -q -P 0xff 0 128k", str(base)])
        qemu_img_create(path, "qcow2", "128k", {"extended_l2": "on"}, backing="t.base", backing_fmt="raw")
        io_run(path, "write -q -P 1 4k 2k")
        if zeroed:
            io_run(path, "write -q -z 4k 2k")
        _poke(path, 0x40000 + 6, b"\x02")
    _side_by_side(as_qemu_img, tmp_path, setup, [
        ["check", "t.qcow2"],
        ["check", "-r", "all", "t.qcow2"],
        ["check", "t.qcow2"],
    ])


def test_261_upgrade_writes_qemus_extra_data(as_qemu_img, tmp_path):
    """amend -o compat=1.1 of a v2 image with snapshots: every entry gets 24 bytes of extra data."""
    def extra_sizes(path):
        table, count = _peek(path, 64, ">Q"), _peek(path, 60, ">I")
        out = []
        for dummy in range(count):
            extra = _peek(path, table + 36, ">I")
            out.append(extra)
            table += (40 + extra + _peek(path, table + 12, ">H") + _peek(path, table + 14, ">H") + 7) & ~7
        return out

    def setup(path):
        qemu_img_create(path, "qcow2", "64M", {"compat": "0.10"})
        for name in ("sn0", "sn1"):
            run(["qemu-img", "snapshot", "-c", name, str(path)])
    _side_by_side(as_qemu_img, tmp_path, setup, [
        ["amend", "-o", "compat=1.1", "t.qcow2"],
        ["check", "t.qcow2"],
        ["snapshot", "-l", "t.qcow2"],
    ], ignore=("Image end offset",))
    assert extra_sizes(tmp_path / "ours" / "t.qcow2") == extra_sizes(tmp_path / "theirs" / "t.qcow2") == [24, 24]


def _poke(path, offset, data):
    with open(str(path), "r+b") as f:
        f.seek(offset)
        f.write(data)


@pytest.mark.parametrize("case", ["refcount_bits=1", "refcount_bits=2", "refcount_bits=64 msb"])
def test_failed_create_leaks_as_qemu(as_qemu_img, tmp_path, case):
    """iotest 112: when a refcount would overflow, create fails with -22 and leaves what QEMU leaves:
    the snapshot's L1 table, allocated and written before the refcounts went up (a leak, no harm)."""
    bits = case.split()[0].split("=")[1]
    ours, theirs = _both(tmp_path, writes=("write 0 512",), options={"refcount_bits": bits})
    before = []
    if bits == "2":
        before = ["a", "b"]  # two snapshots fit in 2 bits (refcount 3), a third would overflow
    if case.endswith("msb"):
        for p in (ours, theirs):
            _poke(p, 0x20028, b"\xff" * 8)                                # cluster 5: refcount 2^64 - 1
            _poke(p, 0x40000, b"\x00\x00\x00\x00\x00\x05\x00\x00")        # its L2 entry without COPIED
    for name in before:
        assert as_qemu_img("snapshot", "-c", name, ours).returncode == 0
        run(["qemu-img", "snapshot", "-c", name, str(theirs)])
    got = as_qemu_img("snapshot", "-c", "foo", ours)
    want = run(["qemu-img", "snapshot", "-c", "foo", str(theirs)], check=False)
    assert (got.returncode, got.stderr) == (want.returncode, want.stderr)
    assert "-22 (Invalid argument)" in got.stderr
    assert _check(ours) == _check(theirs)
    assert "leaked clusters were found" in _check(ours)[1]
