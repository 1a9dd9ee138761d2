# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`compare` and `measure` agree with qemu-img.

compare_images: the result maps to qemu-img compare's exit code and message (identical, content
mismatch at the same offset, strict size and block-status mismatches, the size-mismatch warning).
measure: the dict equals `qemu-img measure --output=json` for raw and qcow2 sources, --size
values and a range of target options.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import re
import shutil

import pytest

from helpers import MiB, qemu_compare, qemu_img_create, qemu_info, qemu_io, run
from test_convert import build_raw_sparse, build_random
from test_interop_read import (build_chain, build_cluster2M, build_convert_compressed, build_patterns_64k, build_refcount1,
                               build_snapshots, build_subclusters, build_v2, build_zero_discard)

pytestmark = pytest.mark.usefixtures("qemu_img", "qemu_io")  # skip, or fail under CI, without QEMU


def _compare(a, b, fmt_a=None, fmt_b=None, strict=False):
    from qimg.ops.compare import compare_images
    return compare_images(str(a), str(b), fmt_a, fmt_b, strict=strict)


def _qemu_result(proc, size_differs):
    """qemu-img compare's exit code and message as our result dict.

    qemu-img warns about differing sizes only once the common part is found equal; the
    size-mismatch key says whether the sizes differ whatever the content.
    """
    out = proc.stdout
    assert proc.returncode in (0, 1), "qemu-img compare failed: %s %s" % (out, proc.stderr)
    size_warning = size_differs
    if "Warning: Image size mismatch!" in out:
        assert size_differs
    if proc.returncode == 0:
        assert "Images are identical." in out
        return {"result": "identical", "offset": None, "size-mismatch": size_warning}
    m = re.search(r"Content mismatch at offset (\d+)!", out)
    if m:
        return {"result": "content-mismatch", "offset": int(m.group(1)), "size-mismatch": size_warning}
    if "Strict mode: Image size mismatch!" in out:
        return {"result": "size-mismatch", "offset": None, "size-mismatch": True}
    m = re.search(r"Strict mode: Offset (\d+) block status mismatch!", out)
    assert m, out
    return {"result": "block-status-mismatch", "offset": int(m.group(1)), "size-mismatch": False}


def assert_compare_agrees(a, b, fmt_a=None, fmt_b=None, strict=False):
    size_differs = qemu_info(a, fmt_a)["virtual-size"] != qemu_info(b, fmt_b)["virtual-size"]
    expected = _qemu_result(qemu_compare(a, b, fmt_a, fmt_b, strict), size_differs)
    ours = _compare(a, b, fmt_a, fmt_b, strict)
    assert ours == expected, "compare %s %s strict=%s" % (a, b, strict)
    return ours


def _to_raw(src, dest):
    run(["qemu-img", "convert", "-O", "raw", str(src), str(dest)])
    return dest


def _poke(path, offset, data, fmt):
    """Overwrite bytes at offset of an image's guest content through qemu-io."""
    if isinstance(data, int):
        qemu_io(path, "write -P %d %d 1" % (data, offset), fmt=fmt)
    else:
        qemu_io(path, data % offset, fmt=fmt)


# --- compare ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("builder", [build_patterns_64k, build_zero_discard, build_chain, build_snapshots, build_v2,
                                     build_subclusters, build_convert_compressed],
                         ids=["patterns", "zero-discard", "chain", "snapshots", "v2", "subclusters", "compressed"])
def test_compare_identical_qcow2_raw(tmp_path, builder):
    q = builder(tmp_path)
    r = _to_raw(q, tmp_path / "copy.raw")
    assert assert_compare_agrees(q, r)["result"] == "identical"
    assert assert_compare_agrees(r, q, fmt_a="raw", fmt_b="qcow2")["result"] == "identical"
    flat = tmp_path / "flat.qcow2"
    run(["qemu-img", "convert", "-O", "qcow2", str(q), str(flat)])
    assert assert_compare_agrees(q, flat)["result"] == "identical"


@pytest.fixture
def pair(tmp_path):
    """A 4 MiB qcow2 with data, zero clusters and holes, and its raw copy."""
    q = tmp_path / "a.qcow2"
    qemu_img_create(q, "qcow2", "4M", {"cluster_size": "64k"})
    qemu_io(q, "write -P 1 0 1M", "write -z 128k 64k", "write -P 2 1500k 10000", "write -P 3 3M 64k",
            "discard 3M 64k", "write -P 4 4032k 64k")
    return q, _to_raw(q, tmp_path / "a.raw")


# (offset, what to write there in the raw copy: a pattern byte or a qemu-io command with %d)
DIFFS = [
    (0, 9), (1, 9), (511, 9), (512, 9), (65535, 9), (65537, 9),
    (1000001, 9),                     # data area, unaligned
    (130 * 1024 + 7, 9),              # inside a zero cluster
    (2 * MiB + 12345, 9),             # inside a hole
    (3 * MiB + 100, 9),               # inside a discarded cluster
    (4 * MiB - 1, 9),                 # the last byte
    (1000, "write -P 7 %d 3000"),     # unaligned run crossing sectors
    (70000, "write -z %d 512"),       # zeros over data
    (1500 * 1024 + 9999, 0),          # the last data byte zeroed
]


@pytest.mark.parametrize("offset,change", DIFFS, ids=[str(d[0]) for d in DIFFS])
def test_compare_content_mismatch(tmp_path, pair, offset, change):
    q, r = pair
    _poke(r, offset, change, "raw")
    ours = assert_compare_agrees(q, r)
    assert ours["result"] == "content-mismatch"
    assert ours["offset"] == offset // 512 * 512
    assert assert_compare_agrees(r, q)["offset"] == ours["offset"]
    # the same difference made in the qcow2 instead of the raw file
    q2 = tmp_path / "b.qcow2"
    shutil.copyfile(str(q), str(q2))
    r2 = _to_raw(q, tmp_path / "b.raw")
    _poke(q2, offset, change, "qcow2")
    assert assert_compare_agrees(q2, r2)["offset"] == ours["offset"]
    assert assert_compare_agrees(q2, q)["offset"] == ours["offset"]


@pytest.fixture(scope="module")
def big_pair(tmp_path_factory):
    """A 44 MiB qcow2 (more chunks than compare's buffer pool holds) with data in every chunk,
    zero clusters and holes, and its raw copy."""
    d = tmp_path_factory.mktemp("big")
    q = d / "big.qcow2"
    qemu_img_create(q, "qcow2", "44M", {"cluster_size": "64k"})
    cmds = ["write -P %d %dk 700k" % (i + 1, i * 1024 * 4 + 300) for i in range(11)]
    qemu_io(q, "write -P 20 9M 3M", "write -z 10M 64k", *cmds)
    return q, _to_raw(q, d / "big.raw")


@pytest.mark.parametrize("offset", [8 * MiB, 8 * MiB + 1000, 10 * MiB + 5, 17 * MiB + 300 * 1024 + 1,
                                    33 * MiB + 12345, 44 * MiB - 1])
def test_compare_mismatch_in_later_chunks(tmp_path, big_pair, offset):
    q, r = big_pair
    r2 = tmp_path / "r2.raw"
    shutil.copyfile(str(r), str(r2))
    _poke(r2, offset, 9, "raw")
    ours = assert_compare_agrees(q, r2)
    assert ours == {"result": "content-mismatch", "offset": offset // 512 * 512, "size-mismatch": False}
    assert assert_compare_agrees(r2, q, "raw", "qcow2")["offset"] == ours["offset"]
    assert assert_compare_agrees(q, r)["result"] == "identical"


def test_compare_first_of_several(pair):
    q, r = pair
    qemu_io(r, "write -P 9 3M 1", "write -P 9 2M 1", "write -P 9 700000 1", fmt="raw")
    assert assert_compare_agrees(q, r)["offset"] == 700000 // 512 * 512


@pytest.fixture
def sizes(tmp_path):
    """A 2 MiB qcow2 and a 3 MiB one with the same first 2 MiB and a tail that reads as zeros."""
    small = tmp_path / "small.qcow2"
    qemu_img_create(small, "qcow2", "2M")
    qemu_io(small, "write -P 1 0 100k", "write -P 2 2044k 4k")
    big = tmp_path / "big.qcow2"
    qemu_img_create(big, "qcow2", "3M")
    qemu_io(big, "write -P 1 0 100k", "write -P 2 2044k 4k",
            "write -P 0 2M 64k",          # written zeros (data)
            "write -z 2500k 64k")         # zero clusters
    return small, big


def test_compare_size_zero_tail(tmp_path, sizes):
    small, big = sizes
    ours = assert_compare_agrees(small, big)
    assert ours == {"result": "identical", "offset": None, "size-mismatch": True}
    assert assert_compare_agrees(big, small)["result"] == "identical"
    raw = _to_raw(small, tmp_path / "small.raw")
    assert assert_compare_agrees(raw, big)["result"] == "identical"
    assert assert_compare_agrees(big, raw)["result"] == "identical"


@pytest.mark.parametrize("offset", [2 * MiB, 2 * MiB + 12345, 2 * MiB + 65536, 3 * MiB - 1])
def test_compare_size_nonzero_tail(tmp_path, sizes, offset):
    small, big = sizes
    qemu_io(big, "write -P 5 %d 1" % offset)
    ours = assert_compare_agrees(small, big)
    assert ours == {"result": "content-mismatch", "offset": offset // 512 * 512, "size-mismatch": True}
    assert assert_compare_agrees(big, small)["offset"] == ours["offset"]
    raw = _to_raw(big, tmp_path / "big.raw")
    assert assert_compare_agrees(small, raw)["offset"] == ours["offset"]


def test_compare_size_mismatch_before_tail(sizes):
    """A difference inside the common part is found before the tail is looked at."""
    small, big = sizes
    qemu_io(big, "write -P 5 2900k 1", "write -P 6 50k 1")
    assert assert_compare_agrees(small, big)["offset"] == 50 * 1024


def test_compare_strict_size(sizes):
    small, big = sizes
    ours = assert_compare_agrees(small, big, strict=True)
    assert ours["result"] == "size-mismatch"
    assert assert_compare_agrees(big, small, strict=True)["result"] == "size-mismatch"


def test_compare_strict_block_status(tmp_path, pair):
    q, r = pair
    copy = tmp_path / "copy.qcow2"
    shutil.copyfile(str(q), str(copy))
    assert assert_compare_agrees(q, copy, strict=True)["result"] == "identical"
    # written zeros (data) over a hole: same content, different status
    qemu_io(copy, "write -P 0 2M 64k")
    assert assert_compare_agrees(q, copy)["result"] == "identical"
    ours = assert_compare_agrees(q, copy, strict=True)
    assert ours["result"] == "block-status-mismatch"
    assert ours["offset"] == 2 * MiB
    # a zero cluster where the other image has none
    copy2 = tmp_path / "copy2.qcow2"
    shutil.copyfile(str(q), str(copy2))
    qemu_io(copy2, "write -z 3200k 64k")
    assert assert_compare_agrees(q, copy2, strict=True)["result"] == "block-status-mismatch"
    # qcow2 against raw, and a content difference found first under strict
    assert assert_compare_agrees(q, r, strict=True)["result"] == "block-status-mismatch"
    copy3 = tmp_path / "copy3.qcow2"
    shutil.copyfile(str(q), str(copy3))
    qemu_io(copy3, "write -P 8 100 1")
    assert assert_compare_agrees(q, copy3, strict=True)["result"] == "content-mismatch"


def test_compare_missing_file(tmp_path, pair):
    from qimg.errors import QimgError
    q = pair[0]
    assert qemu_compare(q, tmp_path / "nope").returncode == 2
    with pytest.raises(QimgError) as err:
        _compare(q, tmp_path / "nope")
    assert "nope" in str(err.value)


# --- measure ---------------------------------------------------------------------------------------

def qemu_measure(filename=None, size=None, out_fmt="raw", options=None, snapshot=None):
    cmd = ["qemu-img", "measure", "--output=json", "-O", out_fmt]
    if options:
        cmd += ["-o", ",".join("%s=%s" % kv for kv in options.items())]
    if snapshot:
        cmd += ["-l", snapshot]
    cmd += ["--size", str(size)] if size is not None else [str(filename)]
    proc = run(cmd, check=False)
    if proc.returncode != 0:
        return "error: " + proc.stderr.strip()
    return json.loads(proc.stdout)


def our_measure(filename=None, size=None, out_fmt="raw", options=None, snapshot=None):
    """measure()'s dict, or "error: ..." when it raises QimgError (so it compares with qemu_measure)."""
    from qimg.errors import QimgError
    from qimg.ops.measure import measure
    try:
        return measure(filename=None if filename is None else str(filename), size=size, out_fmt=out_fmt,
                       options=dict(options or {}), snapshot=snapshot)
    except QimgError as e:
        assert "\n" not in str(e)
        return "error: qemu-img: %s" % e


TARGETS = [
    ("raw", "raw", {}),
    ("qcow2", "qcow2", {}),
    ("c512", "qcow2", {"cluster_size": "512"}),
    ("c4k", "qcow2", {"cluster_size": "4k"}),
    ("c64k", "qcow2", {"cluster_size": "64k"}),
    ("c2M", "qcow2", {"cluster_size": "2M"}),
    ("refcount1", "qcow2", {"refcount_bits": "1"}),
    ("c4k-refcount64", "qcow2", {"cluster_size": "4k", "refcount_bits": "64"}),
    ("extended_l2", "qcow2", {"extended_l2": "on"}),
    ("c2M-extended_l2", "qcow2", {"cluster_size": "2M", "extended_l2": "on"}),
    ("compat-0.10", "qcow2", {"compat": "0.10"}),
]


def build_raw_full(d):
    p = d / "full.raw"
    p.write_bytes(os.urandom(3 * MiB + 512))
    return p


def build_bitmaps(d):
    p = d / "bm.qcow2"
    qemu_img_create(p, "qcow2", "16M")
    qemu_io(p, "write -P 1 0 3M", "write -P 2 10M 64k")
    run(["qemu-img", "bitmap", "--add", str(p), "b0"])
    run(["qemu-img", "bitmap", "--add", "-g", "512k", str(p), "a-much-longer-bitmap-name-for-the-directory"])
    run(["qemu-img", "bitmap", "--add", "-g", "512", str(p), "fine"])
    run(["qemu-img", "bitmap", "--add", "--disable", str(p), "off"])
    return p


MEASURE_SOURCES = [
    ("raw-sparse", build_raw_sparse),
    ("raw-full", build_raw_full),
    ("patterns", build_patterns_64k),
    ("zero-discard", build_zero_discard),
    ("compressed", build_convert_compressed),
    ("random", build_random),
    ("chain", build_chain),
    ("subclusters-backing", build_subclusters),
    ("cluster-2M", build_cluster2M),
    ("compat-0.10", build_v2),
    ("refcount-1", build_refcount1),
    ("bitmaps", build_bitmaps),
    ("snapshots", build_snapshots),
]

_measure_built = {}


@pytest.fixture
def msource(request, tmp_path_factory):
    name = request.param
    if name not in _measure_built:
        _measure_built[name] = str(dict(MEASURE_SOURCES)[name](tmp_path_factory.mktemp("measure-" + name)))
    return _measure_built[name]


@pytest.mark.parametrize("target", [t[0] for t in TARGETS])
@pytest.mark.parametrize("msource", [s[0] for s in MEASURE_SOURCES], indirect=True)
def test_measure_file(msource, target):
    out_fmt, options = dict((t[0], t[1:]) for t in TARGETS)[target]
    assert our_measure(msource, out_fmt=out_fmt, options=options) == qemu_measure(msource, out_fmt=out_fmt,
                                                                                  options=options)


SIZES = ["0", "1", "512", "65536", "1000001", "64M", "1G", "1T", "10G"]


@pytest.mark.parametrize("target", [t[0] for t in TARGETS])
@pytest.mark.parametrize("size", SIZES)
def test_measure_size(size, target):
    out_fmt, options = dict((t[0], t[1:]) for t in TARGETS)[target]
    assert our_measure(size=size, out_fmt=out_fmt, options=options) == qemu_measure(size=size, out_fmt=out_fmt,
                                                                                    options=options)


@pytest.mark.parametrize("target", ["raw", "qcow2", "c4k", "compat-0.10"])
@pytest.mark.parametrize("snapshot", ["snapshot.name=one", "snapshot.name=two", "snapshot.id=1"])
def test_measure_snapshot(tmp_path, snapshot, target):
    src = build_snapshots(tmp_path)
    out_fmt, options = dict((t[0], t[1:]) for t in TARGETS)[target]
    assert (our_measure(src, out_fmt=out_fmt, options=options, snapshot=snapshot)
            == qemu_measure(src, out_fmt=out_fmt, options=options, snapshot=snapshot))


def test_measure_bitmaps_counted(tmp_path):
    """The bitmaps key is there for a qcow2 source and a v3 target, and not for compat 0.10."""
    src = build_bitmaps(tmp_path)
    ours = our_measure(src, out_fmt="qcow2")
    assert ours["bitmaps"] > 0
    assert "bitmaps" not in our_measure(src, out_fmt="qcow2", options={"compat": "0.10"})


def test_measure_errors(tmp_path):
    assert our_measure().startswith("error: ")
    assert our_measure(tmp_path / "nope.qcow2").startswith("error: ")
    assert our_measure(size="1G", out_fmt="qcow2", options={"refcount_bits": "3"}).startswith("error: ")
