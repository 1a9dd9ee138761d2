# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""check / repair against the oracle: images damaged on purpose give qemu-img check's figures,
exit code and messages; our repairs leave images qemu-img finds clean with the content qemu-img's
own repair keeps; a repair interrupted at any write never adds a corruption."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import struct

import pytest

from conftest import run
from helpers import qemu_compare, qemu_img_create, qemu_io_script

from qimg.protocols import file as host_file_mod
from qimg.ops.check import CheckNotSupported, check_image

FIGURES = ("check-errors", "corruptions", "leaks", "image-end-offset", "allocated-clusters",
           "fragmented-clusters", "compressed-clusters", "total-clusters")
COPIED = 1 << 63
COMPRESSED = 1 << 62
OFFSET_MASK = 0x00FFFFFFFFFFFE00


@pytest.fixture(autouse=True)
def _tools(qemu_img, qemu_io):
    return qemu_img, qemu_io


# --- raw qcow2 surgery --------------------------------------------------------------------------

class Layout(object):
    """The fields of a qcow2 header that the damage helpers need."""

    def __init__(self, path):
        with open(path, "rb") as f:
            raw = f.read(104)
        self.version = struct.unpack_from(">I", raw, 4)[0]
        self.cluster_bits = struct.unpack_from(">I", raw, 20)[0]
        self.cs = 1 << self.cluster_bits
        self.l1_size = struct.unpack_from(">I", raw, 36)[0]
        self.l1_offset = struct.unpack_from(">Q", raw, 40)[0]
        self.rt_offset = struct.unpack_from(">Q", raw, 48)[0]
        self.incompat = struct.unpack_from(">Q", raw, 72)[0] if self.version >= 3 else 0
        self.refcount_order = struct.unpack_from(">I", raw, 96)[0] if self.version >= 3 else 4
        self.bits = 1 << self.refcount_order
        self.per_block = self.cs * 8 // self.bits
        self.extended_l2 = bool(self.incompat & 16)
        self.path = path

    def _read(self, off, n):
        with open(self.path, "rb") as f:
            f.seek(off)
            return f.read(n)

    def _write(self, off, data):
        with open(self.path, "r+b") as f:
            f.seek(off)
            f.write(data)

    def u64(self, off):
        return struct.unpack(">Q", self._read(off, 8))[0]

    def set_u64(self, off, value):
        self._write(off, struct.pack(">Q", value))

    def l2_offset(self, l1_index=0):
        return self.u64(self.l1_offset + 8 * l1_index) & OFFSET_MASK

    def l2_entry_offset(self, index, l1_index=0):
        return self.l2_offset(l1_index) + 8 * index * (2 if self.extended_l2 else 1)

    def l2_entry(self, index, l1_index=0):
        return self.u64(self.l2_entry_offset(index, l1_index))

    def set_l2_entry(self, index, value, l1_index=0):
        self.set_u64(self.l2_entry_offset(index, l1_index), value)

    def data_cluster(self, index, l1_index=0):
        return (self.l2_entry(index, l1_index) & OFFSET_MASK) >> self.cluster_bits

    def _refcount_pos(self, cluster):
        block = self.u64(self.rt_offset + 8 * (cluster // self.per_block)) & ~(self.cs - 1)
        assert block, "no refcount block for cluster %d" % cluster
        bit = (cluster % self.per_block) * self.bits
        return block, bit

    def refcount(self, cluster):
        block, bit = self._refcount_pos(cluster)
        if self.bits >= 8:
            raw = self._read(block + bit // 8, self.bits // 8)
            return int.from_bytes(raw, "big")
        byte = self._read(block + bit // 8, 1)[0]
        return (byte >> (bit % 8)) & ((1 << self.bits) - 1)

    def set_refcount(self, cluster, value):
        block, bit = self._refcount_pos(cluster)
        if self.bits >= 8:
            self._write(block + bit // 8, value.to_bytes(self.bits // 8, "big"))
            return
        byte = self._read(block + bit // 8, 1)[0]
        mask = ((1 << self.bits) - 1) << (bit % 8)
        byte = (byte & ~mask) | ((value << (bit % 8)) & mask)
        self._write(block + bit // 8, bytes([byte]))

    def set_incompat(self, bits):
        self.set_u64(72, self.incompat | bits)

    def file_clusters(self):
        return -(-os.path.getsize(self.path) // self.cs)

    def grow(self, clusters):
        """Append zeroed clusters to the file; returns the index of the first one."""
        first = self.file_clusters()
        with open(self.path, "r+b") as f:
            f.truncate((first + clusters) * self.cs)
        return first


# --- the oracle ---------------------------------------------------------------------------------

def problem_lines(text_lines):
    return set(line.strip() for line in text_lines
               if line.startswith("ERROR") or line.startswith("Leaked"))


def qemu_figures(path):
    """(exit code, figures, problem lines) of `qemu-img check --output=json`."""
    proc = run(["qemu-img", "check", "--output=json", "-f", "qcow2", path], check=False)
    import json
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = {}
    figures = dict((k, report.get(k, 0)) for k in FIGURES)
    return proc.returncode, figures, problem_lines(proc.stderr.splitlines()), proc


def engine_figures(path, repair=None):
    report = check_image(path, repair=repair)
    figures = dict((k, report.get(k, 0)) for k in FIGURES)
    return report["exit-code"], figures, problem_lines(report["messages"]), report


def assert_same_as_qemu(path, messages=True):
    q_rc, q_fig, q_lines, proc = qemu_figures(path)
    e_rc, e_fig, e_lines, report = engine_figures(path)
    assert e_fig == q_fig, "figures differ\nqemu:   %s\nengine: %s\n%s" % (q_fig, e_fig, proc.stderr)
    assert e_rc == q_rc, (e_rc, q_rc, proc.stderr)
    if messages:
        assert e_lines == q_lines, "messages differ\nqemu only:   %s\nengine only: %s" % (
            sorted(q_lines - e_lines), sorted(e_lines - q_lines))
    return q_rc, q_fig


def copy(path, suffix):
    dst = path + "." + suffix
    shutil.copyfile(path, dst)
    return dst


def qemu_repair(path, mode):
    return run(["qemu-img", "check", "-q", "-r", mode, "-f", "qcow2", path], check=False)


def assert_repair_like_qemu(path, mode="all", content_from=None, same_figures=True):
    """Repair copies with qemu-img and with the engine: ours must be clean and hold the same content
    (as qemu-img's repair, or content_from when given)."""
    ours = copy(path, "ours-%s" % mode)
    theirs = copy(path, "qemu-%s" % mode)
    qemu_repair(theirs, mode)
    report = check_image(ours, repair=mode)
    rc, figures, lines, proc = qemu_figures(ours)
    _rc, their_figures, their_lines, _proc = qemu_figures(theirs)
    if mode == "all":
        assert rc == 0, "qemu-img check after our -r all: %s\n%s" % (figures, proc.stderr)
    else:
        assert figures["leaks"] == 0 and rc in (0, 2), (figures, proc.stderr)
        # -r leaks changes refcounts only: the image is left as qemu-img leaves it
        assert (figures, lines) == (their_figures, their_lines)
    for key in ("corruptions", "leaks", "check-errors"):
        assert figures[key] == their_figures[key] or not same_figures, (key, figures, their_figures)
    want = content_from or theirs
    cmp_proc = qemu_compare(want, ours, fmt_a="qcow2", fmt_b="qcow2")
    assert cmp_proc.returncode == 0, cmp_proc.stdout + cmp_proc.stderr
    assert report["exit-code"] == rc
    return report


def build(tmp_path, name="disk.qcow2", size="4M", options=None, writes=None):
    """A qcow2 image made by qemu-img with some data written by qemu-io."""
    path = str(tmp_path / name)
    opts = {"cluster_size": "64k"}
    opts.update(options or {})
    qemu_img_create(path, "qcow2", size, options=opts)
    if writes is None:
        writes = ["write -P 1 0 64k", "write -P 2 64k 64k", "write -P 3 1M 128k"]
    if writes:
        qemu_io_script(path, writes)
    return path


# --- damaged images: figures, exit code and messages as qemu-img's ---------------------------------

def test_leaked_cluster(tmp_path):
    path = build(tmp_path)
    lay = Layout(path)
    first = lay.grow(2)
    lay.set_refcount(first, 1)
    lay.set_refcount(first + 1, 1)
    rc, figures = assert_same_as_qemu(path)
    assert rc == 3 and figures["leaks"] == 2
    report = assert_repair_like_qemu(path, "leaks", content_from=path)
    assert report["repaired"] == {"leaks": 2, "corruptions": 0}
    assert report["leaks-fixed"] == 2
    assert_repair_like_qemu(path, "all", content_from=path)


def test_refcount_zero_under_data_cluster(tmp_path):
    path = build(tmp_path)
    lay = Layout(path)
    lay.set_refcount(lay.data_cluster(1), 0)
    rc, figures = assert_same_as_qemu(path)
    assert rc == 2 and figures["corruptions"] >= 1
    assert_repair_like_qemu(path, "all", content_from=path)


def test_refcount_zero_under_l1_table(tmp_path):
    path = build(tmp_path)
    lay = Layout(path)
    lay.set_refcount(lay.l1_offset // lay.cs, 0)
    rc, figures = assert_same_as_qemu(path)
    assert rc == 2
    assert_repair_like_qemu(path, "all", content_from=path)


def test_refcount_raised(tmp_path):
    path = build(tmp_path)
    lay = Layout(path)
    lay.set_refcount(lay.data_cluster(0), 2)
    rc, figures = assert_same_as_qemu(path)
    assert figures["leaks"] == 1
    assert_repair_like_qemu(path, "all", content_from=path)


def _l2_entry_past_the_end(tmp_path):
    path = build(tmp_path)
    lay = Layout(path)
    beyond = (lay.file_clusters() + 10) * lay.cs
    lay.set_l2_entry(5, COPIED | beyond)
    return path


def test_l2_entry_past_the_end(tmp_path):
    path = _l2_entry_past_the_end(tmp_path)
    rc, figures = assert_same_as_qemu(path, messages=False)
    assert rc == 2
    # qemu-img -r all cannot repair this (one corruption stays); the engine counts the reference,
    # grows the file over the cluster (it reads zeros either way) and leaves a clean image
    assert_repair_like_qemu(path, "all", same_figures=False)


def test_l2_entry_past_the_end_message(tmp_path):
    assert_same_as_qemu(_l2_entry_past_the_end(tmp_path))


def test_two_l2_entries_share_a_cluster(tmp_path):
    path = build(tmp_path)
    lay = Layout(path)
    lay.set_l2_entry(7, lay.l2_entry(0))
    rc, figures = assert_same_as_qemu(path)
    assert rc == 2
    assert_repair_like_qemu(path, "all")


def test_wrong_copied_flag(tmp_path):
    path = build(tmp_path)
    lay = Layout(path)
    lay.set_l2_entry(1, lay.l2_entry(1) & ~COPIED)
    rc, figures = assert_same_as_qemu(path)
    assert rc == 2 and figures["corruptions"] == 1
    assert_repair_like_qemu(path, "all", content_from=path)
    # -r leaks fixes COPIED flags too when the refcounts are right (as qemu-img does)
    assert_repair_like_qemu(path, "leaks", content_from=path)


def test_dirty_lazy_refcount_image(tmp_path):
    path = build(tmp_path, options={"lazy_refcounts": "on"}, writes=[])
    proc = run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 256k", "-c", "write -P 6 2M 64k",
                "-c", "abort", path], check=False)
    assert proc.returncode != 0
    assert Layout(path).incompat & 1, "qemu-io abort left a clean image"
    rc, figures = assert_same_as_qemu(path)
    assert rc == 2
    report = assert_repair_like_qemu(path, "all")
    assert not Layout(path + ".ours-all").incompat & 1
    assert report["repaired"]["corruptions"] >= 1


def test_corrupt_bit(tmp_path):
    path = build(tmp_path)
    lay = Layout(path)
    lay.set_incompat(2)
    assert_same_as_qemu(path)
    ours = copy(path, "ours")
    check_image(ours, repair="all")
    assert not Layout(ours).incompat & 2
    theirs = copy(path, "qemu")
    qemu_repair(theirs, "all")
    assert not Layout(theirs).incompat & 2


@pytest.mark.parametrize("bit", [1, 2], ids=["dirty", "corrupt"])
def test_header_bits_cleared_by_leak_repair(tmp_path, bit):
    path = build(tmp_path)
    Layout(path).set_incompat(bit)
    theirs = copy(path, "qemu")
    qemu_repair(theirs, "leaks")
    ours = copy(path, "ours")
    check_image(ours, repair="leaks")
    assert Layout(ours).incompat & bit == Layout(theirs).incompat & bit


def test_leaked_compressed_host_cluster(tmp_path):
    path = build(tmp_path, writes=["write -c -P 7 0 64k", "write -c -P 8 64k 64k", "write -P 9 1M 64k"])
    lay = Layout(path)
    entry = lay.l2_entry(1)
    assert entry & COMPRESSED
    lay.set_l2_entry(1, 0)  # the compressed data's host cluster is now referenced by nobody
    rc, figures = assert_same_as_qemu(path)
    assert rc == 3
    assert_repair_like_qemu(path, "leaks", content_from=path)


def test_compressed_refcount_dropped(tmp_path):
    path = build(tmp_path, writes=["write -c -P 7 0 64k", "write -c -P 8 64k 64k"])
    lay = Layout(path)
    host = (lay.l2_entry(0) & ((1 << 54) - 1)) >> lay.cluster_bits
    lay.set_refcount(host, 0)
    rc, figures = assert_same_as_qemu(path)
    assert rc == 2 and figures["compressed-clusters"] == 2
    assert_repair_like_qemu(path, "all", content_from=path)


@pytest.mark.parametrize("bits", [1, 64])
def test_refcount_width(tmp_path, bits):
    path = build(tmp_path, options={"refcount_bits": bits})
    lay = Layout(path)
    assert lay.bits == bits
    assert_same_as_qemu(path)
    first = lay.grow(1)
    lay.set_refcount(first, 1)
    rc, figures = assert_same_as_qemu(path)
    assert rc == 3 and figures["leaks"] == 1
    report = assert_repair_like_qemu(path, "leaks", content_from=path)
    assert report["repaired"] == {"leaks": 1, "corruptions": 0}
    lay.set_refcount(lay.data_cluster(1), 0)
    rc, figures = assert_same_as_qemu(path)
    assert rc == 2 and figures["leaks"] == 1
    assert_repair_like_qemu(path, "all", content_from=path)


def test_leak_repair_leaves_corruptions(tmp_path):
    path = build(tmp_path)
    lay = Layout(path)
    first = lay.grow(1)
    lay.set_refcount(first, 1)
    lay.set_l2_entry(9, lay.l2_entry(0))  # refcount 1, two references: a corruption, not a zero refcount
    rc, figures = assert_same_as_qemu(path)
    assert rc == 2 and figures["leaks"] == 1
    report = assert_repair_like_qemu(path, "leaks", content_from=path)
    assert report["repaired"] == {"leaks": 1, "corruptions": 0}
    assert report["exit-code"] == 2


def test_leak_repair_refuses_zero_refcount(tmp_path):
    path = build(tmp_path)
    lay = Layout(path)
    first = lay.grow(1)
    lay.set_refcount(first, 1)
    lay.set_refcount(lay.data_cluster(1), 0)
    theirs = copy(path, "qemu")
    proc = qemu_repair(theirs, "leaks")
    assert proc.returncode == 1 and "need to rebuild" in proc.stderr
    ours = copy(path, "ours")
    report = check_image(ours, repair="leaks")
    assert report["exit-code"] == 1
    with open(ours, "rb") as f, open(path, "rb") as g:
        assert f.read() == g.read()


def test_snapshot_with_wrong_refcount(tmp_path):
    path = build(tmp_path)
    run(["qemu-img", "snapshot", "-c", "snap1", path])
    qemu_io_script(path, ["write -P 4 64k 64k", "write -P 5 2M 64k"])
    lay = Layout(path)
    shared = lay.data_cluster(0)  # still shared with the snapshot
    assert lay.refcount(shared) == 2
    lay.set_refcount(shared, 1)
    rc, figures = assert_same_as_qemu(path)
    assert rc == 2
    report = assert_repair_like_qemu(path, "all", content_from=path)
    ours = path + ".ours-all"
    for one in (ours, path + ".qemu-all"):
        proc = run(["qemu-img", "snapshot", "-l", one])
        assert "snap1" in proc.stdout
    assert report["repaired"]["corruptions"] >= 1
    orig_snap = str(tmp_path / "snap-orig.raw")
    ours_snap = str(tmp_path / "snap-ours.raw")
    run(["qemu-img", "convert", "-l", "snapshot.name=snap1", "-O", "raw", path, orig_snap])
    run(["qemu-img", "convert", "-l", "snapshot.name=snap1", "-O", "raw", ours, ours_snap])
    assert qemu_compare(orig_snap, ours_snap, "raw", "raw").returncode == 0


def test_image_with_bitmaps(tmp_path):
    path = build(tmp_path)
    run(["qemu-img", "bitmap", "--add", path, "b0"])
    run(["qemu-img", "bitmap", "--add", "-g", "64k", path, "b1"])
    qemu_io_script(path, ["write -P 6 3M 64k"])
    assert_same_as_qemu(path)
    lay = Layout(path)
    first = lay.grow(1)
    lay.set_refcount(first, 1)
    rc, figures = assert_same_as_qemu(path)
    assert rc == 3
    assert_repair_like_qemu(path, "all", content_from=path)
    info = run(["qemu-img", "info", path + ".ours-all"]).stdout
    assert "b0" in info and "b1" in info


def test_raw_is_not_supported(tmp_path):
    path = str(tmp_path / "disk.img")
    with open(path, "wb") as f:
        f.truncate(1 << 20)
    proc = run(["qemu-img", "check", "-f", "raw", path], check=False)
    assert proc.returncode == 63
    with pytest.raises(CheckNotSupported) as exc:
        check_image(path, fmt="raw")
    assert "This image format does not support checks" in str(exc.value)


# --- clean images made by qemu-img ---------------------------------------------------------------

MATRIX = [
    ("compat-0.10-512", {"compat": "0.10", "cluster_size": "512"}, ["write -P 1 0 64k", "write -P 2 1M 4k"]),
    ("compat-1.1-64k", {"compat": "1.1"}, None),
    ("2M", {"cluster_size": "2M"}, ["write -P 1 0 64k", "write -P 2 3M 64k"]),
    ("compressed", {}, ["write -c -P 1 0 64k", "write -c -P 2 128k 64k", "write -P 3 1M 64k"]),
    ("extended-l2", {"extended_l2": "on", "cluster_size": "64k"}, ["write -P 1 0 4k", "write -P 2 100k 8k"]),
    ("512-fragmented", {"cluster_size": "512"}, ["write -P 1 2M 1k", "write -P 2 0 1k", "write -P 3 1M 4k"]),
]


@pytest.mark.parametrize("name,options,writes", MATRIX, ids=[m[0] for m in MATRIX])
def test_clean_matrix(tmp_path, name, options, writes):
    path = build(tmp_path, options=options, writes=writes)
    rc, figures = assert_same_as_qemu(path)
    assert rc == 0


def test_clean_with_snapshots(tmp_path):
    path = build(tmp_path)
    run(["qemu-img", "snapshot", "-c", "s1", path])
    qemu_io_script(path, ["write -P 9 0 32k", "write -P 8 3M 64k"])
    run(["qemu-img", "snapshot", "-c", "s2", path])
    qemu_io_script(path, ["discard 64k 64k", "write -P 7 2M 64k"])  # the snapshot table is not at the end
    rc, figures = assert_same_as_qemu(path)
    assert rc == 0


def test_clean_with_snapshot_table_at_the_end(tmp_path):
    path = build(tmp_path)
    run(["qemu-img", "snapshot", "-c", "s1", path])
    rc, figures = assert_same_as_qemu(path)
    assert rc == 0


def test_check_never_writes(tmp_path):
    path = build(tmp_path)
    lay = Layout(path)
    lay.set_refcount(lay.data_cluster(0), 0)
    with open(path, "rb") as f:
        before = f.read()
    check_image(path)
    check_image(path, force_share=True)
    with open(path, "rb") as f:
        assert f.read() == before


# --- crash safety: a repair interrupted at every write -------------------------------------------

class Crash(Exception):
    pass


def _count_writes(monkeypatch, limit):
    """Make the engine's pwrite helpers raise Crash after `limit` writes; returns the counter."""
    state = {"n": 0}
    real = host_file_mod.pwrite_all

    def pwrite_all(fd, offset, data):
        if limit is not None and state["n"] >= limit:
            raise Crash("interrupted after %d writes" % state["n"])
        state["n"] += 1
        real(fd, offset, data)

    # every write of an open image goes through its protocol node's pwrite_all
    monkeypatch.setattr(host_file_mod, "pwrite_all", pwrite_all)
    return state


def _damaged(tmp_path, kind):
    if kind == "leaks":
        path = build(tmp_path, name="leaks.qcow2")
        lay = Layout(path)
        first = lay.grow(3)
        for c in range(first, first + 3):
            lay.set_refcount(c, 1)
        lay.set_l2_entry(1, lay.l2_entry(1) & ~COPIED)
    elif kind == "corrupt":
        path = build(tmp_path, name="corrupt.qcow2")
        lay = Layout(path)
        first = lay.grow(1)
        lay.set_refcount(first, 1)
        lay.set_refcount(lay.data_cluster(1), 0)
        lay.set_l2_entry(2, lay.l2_entry(0))
    else:  # dirty lazy-refcount image
        path = build(tmp_path, name="dirty.qcow2", options={"lazy_refcounts": "on"}, writes=[])
        run(["qemu-io", "-f", "qcow2", "-c", "write -P 5 0 192k", "-c", "write -P 6 1M 64k",
             "-c", "abort", path], check=False)
        assert Layout(path).incompat & 1
    return path


@pytest.mark.parametrize("kind,mode", [("leaks", "leaks"), ("leaks", "all"), ("corrupt", "all"), ("dirty", "all")])
def test_interrupted_repair(tmp_path, monkeypatch, kind, mode):
    path = _damaged(tmp_path, kind)
    _rc, before, _lines, _proc = qemu_figures(path)
    pristine = copy(path, "pristine")
    with monkeypatch.context() as patch:
        state = _count_writes(patch, None)
        check_image(copy(path, "full"), repair=mode)
        total = state["n"]
    assert total > 0
    for limit in range(total + 1):
        victim = copy(path, "crash%d" % limit)
        with monkeypatch.context() as patch:
            _count_writes(patch, limit)
            try:
                check_image(victim, repair=mode)
            except Crash:
                assert limit < total
            else:
                assert limit == total
        rc, after, lines, proc = qemu_figures(victim)
        assert after["check-errors"] == 0, (limit, proc.stderr)
        assert after["corruptions"] <= before["corruptions"], (limit, total, before, after, proc.stderr)
        cmp_proc = qemu_compare(pristine, victim, "qcow2", "qcow2")
        if kind == "corrupt":
            # two guest clusters share one host cluster: qemu's repair keeps the shared content
            theirs = copy(path, "qemu")
            qemu_repair(theirs, mode)
            assert qemu_compare(theirs, victim, "qcow2", "qcow2").returncode == 0, (limit, cmp_proc.stdout)
        else:
            assert cmp_proc.returncode == 0, (limit, cmp_proc.stdout + cmp_proc.stderr)
        os.unlink(victim)
    # the whole repair, finished, leaves a clean image
    rc, after, lines, proc = qemu_figures(path + ".full")
    assert rc == (0 if mode == "all" else after["corruptions"] and 2 or 0), proc.stderr
