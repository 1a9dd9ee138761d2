# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`convert` against the oracle: every image QEMU writes, converted by us, holds what QEMU reads.

A matrix of qemu-made sources (the interop read builders plus a few raw files) is converted by the
engine to raw, compared byte for byte with `qemu-img convert -O raw`, and to qcow2 with several
option sets, each of which must pass `qemu-img check` cleanly and `qemu-img compare` as identical
to the source. Then the options one at a time: -S, sparse sources, -B, -l, several sources, -n,
--target-is-zero and the progress callback.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from helpers import (MiB, assert_check_clean, file_digest, qemu_compare, qemu_img_create, qemu_info, qemu_io,
                     qemu_map, qemu_raw_digest, run)
from test_interop_read import CASES as READ_CASES
from test_interop_read import build_chain, build_snapshots
from qimg.formats.qcow2.compress import zstd_available


HAVE_ZSTD = zstd_available()

pytestmark = pytest.mark.usefixtures("qemu_img", "qemu_io")  # skip, or fail under CI, without QEMU


def _convert(*args, **kw):
    from qimg.ops.convert import convert
    return convert(*args, **kw)


# --- extra sources: raw files and an incompressible qcow2 --------------------------------------

def build_raw_sparse(d):
    """32 MiB raw: scattered data, a run of written zeros, holes, unaligned writes."""
    p = d / "a.raw"
    qemu_img_create(p, "raw", "32M")
    qemu_io(p, "write -P 1 0 64k", "write -P 2 1000000 3000", "write -P 0 4M 8M", "write -P 3 13M 1M",
            "write -P 4 20M 512", "write -P 5 32767k 1k", fmt="raw")
    return p


def build_raw_unaligned(d):
    p = d / "a.raw"
    with open(str(p), "wb") as f:
        f.truncate(1000001)
        f.seek(999000)
        f.write(b"\x77" * 1001)
        f.seek(4096)
        f.write(b"\x78" * 100)
    return p


def build_random(d):
    """A qcow2 with incompressible data (compressed output must fall back to plain clusters)."""
    raw = d / "r.raw"
    with open(str(raw), "wb") as f:
        f.truncate(4 * MiB)
        f.seek(MiB)
        f.write(os.urandom(2 * MiB))
        f.seek(3 * MiB + 4096)
        f.write(b"pattern" * 1000)
    p = d / "a.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(p)])
    os.unlink(str(raw))
    return p


SOURCES = list(READ_CASES) + [
    ("raw-sparse", build_raw_sparse),
    ("raw-unaligned", build_raw_unaligned),
    ("random-qcow2", build_random),
]
BUILDERS = dict(SOURCES)

_built = {}


@pytest.fixture
def source(request, tmp_path_factory):
    """(path, oracle raw digest) of a matrix source, built once per session."""
    name = request.param
    if name not in _built:
        d = tmp_path_factory.mktemp("src-" + name)
        path = BUILDERS[name](d)
        _built[name] = (str(path), qemu_raw_digest(path, d))
    return _built[name]


QCOW2_TARGETS = [
    ("default", {}, False),
    ("compressed", {}, True),
    ("compat-0.10", {"compat": "0.10"}, False),
    ("c4k-refcount1", {"cluster_size": "4k", "refcount_bits": "1"}, False),
    ("extended_l2", {"extended_l2": "on"}, False),
    ("zstd-compressed", {"compression_type": "zstd"}, True),
]


@pytest.mark.parametrize("source", [s[0] for s in SOURCES], indirect=True)
def test_convert_to_raw_matches_qemu(tmp_path, source):
    path, expected = source
    out = str(tmp_path / "out.raw")
    result = _convert([path], out, out_fmt="raw")
    assert result["virtual-size"] == qemu_info(path)["virtual-size"]
    assert file_digest(out) == expected, "raw output differs from qemu-img convert -O raw"
    assert sorted(os.listdir(str(tmp_path))) == ["out.raw"], "temporary file left behind"


@pytest.mark.parametrize("target", [t[0] for t in QCOW2_TARGETS])
@pytest.mark.parametrize("source", [s[0] for s in SOURCES], indirect=True)
def test_convert_to_qcow2_check_compare(tmp_path, source, target):
    options, compress = dict((t[0], t[1:]) for t in QCOW2_TARGETS)[target]
    if options.get("compression_type") == "zstd" and not HAVE_ZSTD:
        pytest.skip("neither zstandard nor pyzstd is importable")
    path = source[0]
    out = str(tmp_path / "out.qcow2")
    _convert([path], out, out_fmt="qcow2", options=dict(options), compress=compress)
    assert_check_clean(out)
    proc = qemu_compare(path, out, fmt_b="qcow2")
    assert proc.returncode == 0, "qemu-img compare: %s %s" % (proc.stdout, proc.stderr)
    info = qemu_info(out)
    spec = info["format-specific"]["data"]
    assert info["format"] == "qcow2"
    assert info["cluster-size"] == {"4k": 4096}.get(options.get("cluster_size"), 65536)
    assert spec["compat"] == options.get("compat", "1.1")
    assert spec["refcount-bits"] == int(options.get("refcount_bits", 16))
    if spec["compat"] == "1.1":
        assert spec["extended-l2"] == (options.get("extended_l2") == "on")
        assert spec["compression-type"] == options.get("compression_type", "zlib")
    assert "backing-filename" not in info
    assert sorted(os.listdir(str(tmp_path))) == ["out.qcow2"], "temporary file left behind"


def test_compressed_output_is_smaller(tmp_path):
    src = build_raw_sparse(tmp_path)
    plain, packed = str(tmp_path / "plain.qcow2"), str(tmp_path / "packed.qcow2")
    _convert([str(src)], plain, out_fmt="qcow2")
    _convert([str(src)], packed, out_fmt="qcow2", compress=True)
    assert os.path.getsize(packed) < os.path.getsize(plain) // 2
    assert qemu_compare(src, packed).returncode == 0


# --- -S: sparse detection ---------------------------------------------------------------------

def _map_data_bytes(path, fmt):
    return sum(e["length"] for e in qemu_map(path, fmt) if e["data"])


def test_sparse_size_zero_fully_allocates(tmp_path):
    src = str(build_raw_sparse(tmp_path))
    size = 32 * MiB
    out = str(tmp_path / "full.qcow2")
    _convert([src], out, out_fmt="qcow2", sparse_size=0)
    assert_check_clean(out)
    assert qemu_compare(src, out).returncode == 0
    entries = qemu_map(out, "qcow2")
    assert all(e["data"] and e["present"] and not e["zero"] for e in entries), entries
    assert sum(e["length"] for e in entries) == size
    raw_out = str(tmp_path / "full.raw")
    _convert([src], raw_out, out_fmt="raw", sparse_size=0)
    assert file_digest(raw_out) == file_digest(src)
    assert os.stat(raw_out).st_blocks * 512 >= size, "-S 0 raw output has holes"


def test_sparse_source_holes_and_zeros_not_written(tmp_path):
    src = str(build_raw_sparse(tmp_path))
    data = 64 * 1024 + 3000 + MiB + 512 + 1024  # bytes of non-zero data in the source
    out = str(tmp_path / "out.qcow2")
    _convert([src], out, out_fmt="qcow2")
    assert_check_clean(out)
    assert qemu_compare(src, out).returncode == 0
    assert os.path.getsize(out) < data + 1 * MiB, "qcow2 output stores zeros"
    assert _map_data_bytes(out, "qcow2") <= data + 5 * 65536
    raw_out = str(tmp_path / "out.raw")
    _convert([src], raw_out, out_fmt="raw")
    assert file_digest(raw_out) == file_digest(src)
    assert os.path.getsize(raw_out) == 32 * MiB
    assert os.stat(raw_out).st_blocks * 512 < data + 256 * 1024, "raw output stores zeros"


def test_sparse_size_granularity(tmp_path):
    """A 64k zero block inside data becomes a hole with -S 64k and with the default -S 4k; 8k is kept with -S 64k."""
    src = tmp_path / "a.raw"
    qemu_img_create(src, "raw", "4M")
    qemu_io(src, "write -P 9 0 1M", "write -P 0 256k 64k", "write -P 0 640k 8k", fmt="raw")
    for sparse, zero_holes in ((4096, 64 * 1024 + 8 * 1024), (65536, 64 * 1024)):
        out = str(tmp_path / ("out-%d.raw" % sparse))
        _convert([str(src)], out, out_fmt="raw", sparse_size=sparse)
        assert file_digest(out) == file_digest(src)
        allocated = os.stat(out).st_blocks * 512
        assert MiB - zero_holes <= allocated <= MiB - zero_holes + 8192, "-S %d: %d bytes allocated" % (sparse, allocated)


# --- -B: only what differs from the backing file -----------------------------------------------

def test_backing_file_output(tmp_path):
    base = tmp_path / "base.qcow2"
    qemu_img_create(base, "qcow2", "8M")
    qemu_io(base, "write -P 1 0 6M")
    top = tmp_path / "top.qcow2"
    qemu_img_create(top, "qcow2", "8M", backing="base.qcow2", backing_fmt="qcow2")
    qemu_io(top, "write -P 2 1M 64k", "write -P 3 3000k 5k", "write -z 4M 128k", "write -P 4 7M 64k")
    flat = tmp_path / "flat.qcow2"
    run(["qemu-img", "convert", "-O", "qcow2", str(top), str(flat)])  # no backing file: all content

    out = str(tmp_path / "out.qcow2")
    _convert([str(flat)], out, out_fmt="qcow2", backing_file="base.qcow2", backing_fmt="qcow2")
    assert_check_clean(out)
    info = qemu_info(out)
    assert info["backing-filename"] == "base.qcow2"
    assert info["backing-filename-format"] == "qcow2"
    proc = qemu_compare(out, flat)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    full = str(tmp_path / "full.qcow2")
    _convert([str(flat)], full, out_fmt="qcow2")
    own = sum(e["length"] for e in qemu_map(out) if e["depth"] == 0 and e["present"])
    assert own <= 4 * 65536 + 2 * 65536, qemu_map(out)   # the changed clusters and the zeroed run
    assert own < _map_data_bytes(full, "qcow2") // 4

    # without -F, the backing format is probed
    out2 = str(tmp_path / "out2.qcow2")
    _convert([str(flat)], out2, out_fmt="qcow2", backing_file="base.qcow2")
    assert qemu_info(out2)["backing-filename-format"] == "qcow2"
    assert qemu_compare(out2, flat).returncode == 0
    assert_check_clean(out2)


def test_backing_file_raw_backing(tmp_path):
    """-B with a raw backing file shorter than the image."""
    base = tmp_path / "base.raw"
    qemu_img_create(base, "raw", "1000k")
    qemu_io(base, "write -P 5 0 1000k", fmt="raw")
    src = tmp_path / "src.raw"
    qemu_img_create(src, "raw", "2M")
    qemu_io(src, "write -P 5 0 1000k", "write -P 6 100k 1k", "write -z 500k 200k", "write -P 7 1500k 4k",
            fmt="raw")
    out = str(tmp_path / "out.qcow2")
    _convert([str(src)], out, out_fmt="qcow2", backing_file="base.raw", backing_fmt="raw")
    assert_check_clean(out)
    proc = qemu_compare(out, src, fmt_b="raw")
    assert proc.returncode == 0, proc.stdout + proc.stderr


# --- -l: internal snapshots --------------------------------------------------------------------

@pytest.mark.parametrize("spec,name", [("snapshot.name=one", "one"), ("snapshot.id=2", "two"), ("two", "two"),
                                       ("1", "one")])
def test_snapshot_convert(tmp_path, spec, name):
    src = build_snapshots(tmp_path)
    expected = qemu_raw_digest(src, tmp_path, snapshot=name)
    out = str(tmp_path / "out.raw")
    _convert([str(src)], out, out_fmt="raw", snapshot=spec)
    assert file_digest(out) == expected
    oracle = str(tmp_path / "oracle.raw")
    run(["qemu-img", "convert", "-l", "snapshot.name=%s" % name, "-O", "raw", str(src), oracle])
    outq = str(tmp_path / "out.qcow2")
    _convert([str(src)], outq, out_fmt="qcow2", snapshot=spec)
    assert_check_clean(outq)
    assert qemu_compare(oracle, outq, fmt_a="raw").returncode == 0
    assert qemu_info(outq).get("snapshots") is None


def test_snapshot_missing(tmp_path):
    from qimg.errors import QimgError
    src = build_snapshots(tmp_path)
    out = tmp_path / "out.raw"
    with pytest.raises(QimgError) as err:
        _convert([str(src)], str(out), snapshot="snapshot.name=nope")
    assert "\n" not in str(err.value)
    assert not out.exists()
    assert sorted(os.listdir(str(tmp_path))) == ["a.qcow2"]


# --- several sources ---------------------------------------------------------------------------

def test_concatenated_sources(tmp_path):
    a = tmp_path / "a.qcow2"
    qemu_img_create(a, "qcow2", "1000k", {"cluster_size": "4k"})
    qemu_io(a, "write -P 1 0 4k", "write -P 2 990k 10k")
    b = tmp_path / "b.raw"
    qemu_img_create(b, "raw", "500k")
    qemu_io(b, "write -P 3 1k 1k", "write -P 4 499k 1k", fmt="raw")
    d = tmp_path / "chain"
    d.mkdir()
    c = build_chain(d)
    sources = [str(a), str(b), str(c)]
    oracle = str(tmp_path / "oracle.raw")
    run(["qemu-img", "convert", "-O", "raw"] + sources + [oracle])
    out = str(tmp_path / "out.raw")
    result = _convert(sources, out, out_fmt="raw")
    assert result["virtual-size"] == os.path.getsize(oracle)
    assert file_digest(out) == file_digest(oracle)
    outq = str(tmp_path / "out.qcow2")
    _convert(sources, outq, out_fmt="qcow2", options={"cluster_size": "64k"})
    assert_check_clean(outq)
    assert qemu_compare(oracle, outq, fmt_a="raw").returncode == 0
    assert qemu_info(outq)["virtual-size"] == os.path.getsize(oracle)


# --- -n and --target-is-zero ---------------------------------------------------------------------

def _garbage_qcow2(path, size):
    qemu_img_create(path, "qcow2", size)
    qemu_io(path, "write -P 170 0 %d" % size)


def test_existing_qcow2_target(tmp_path):
    src = build_raw_sparse(tmp_path)
    target = tmp_path / "t.qcow2"
    _garbage_qcow2(target, 32 * MiB)
    _convert([str(src)], str(target), out_fmt="qcow2", target_exists=True)
    assert_check_clean(target)
    proc = qemu_compare(src, target)
    assert proc.returncode == 0, proc.stdout
    assert sorted(os.listdir(str(tmp_path))) == ["a.raw", "t.qcow2"]


def test_existing_raw_target(tmp_path):
    src = build_snapshots(tmp_path)  # 1 MiB qcow2 with zero clusters and holes
    target = tmp_path / "t.raw"
    target.write_bytes(b"\xaa" * MiB)
    _convert([str(src)], str(target), out_fmt="raw", target_exists=True)
    assert file_digest(target) == qemu_raw_digest(src, tmp_path)


def test_existing_target_larger(tmp_path):
    """qemu-img convert -n leaves the target's tail beyond the source untouched."""
    src = build_snapshots(tmp_path)
    target = tmp_path / "t.raw"
    target.write_bytes(b"\xaa" * (2 * MiB))
    _convert([str(src)], str(target), out_fmt="raw", target_exists=True)
    data = target.read_bytes()
    assert len(data) == 2 * MiB
    assert data[MiB:] == b"\xaa" * MiB
    oracle = tmp_path / "o.raw"
    run(["qemu-img", "convert", "-O", "raw", str(src), str(oracle)])
    assert data[:MiB] == oracle.read_bytes()


def test_existing_target_too_small(tmp_path):
    from qimg.errors import QimgError
    src = build_snapshots(tmp_path)
    target = tmp_path / "t.qcow2"
    qemu_img_create(target, "qcow2", "512k")
    before = file_digest(target)
    with pytest.raises(QimgError):
        _convert([str(src)], str(target), out_fmt="qcow2", target_exists=True)
    assert file_digest(target) == before


def test_target_is_zero(tmp_path):
    src = build_raw_sparse(tmp_path)
    target = tmp_path / "t.qcow2"
    qemu_img_create(target, "qcow2", "32M")
    _convert([str(src)], str(target), out_fmt="qcow2", target_exists=True, target_is_zero=True)
    assert_check_clean(target)
    assert qemu_compare(src, target).returncode == 0
    zero_clusters = [e for e in qemu_map(target) if e["present"] and e["zero"]]
    assert not zero_clusters, "--target-is-zero wrote zeros: %s" % zero_clusters
    raw_target = tmp_path / "t.raw"
    qemu_img_create(raw_target, "raw", "32M")
    _convert([str(src)], str(raw_target), out_fmt="raw", target_exists=True, target_is_zero=True)
    assert file_digest(raw_target) == file_digest(src)
    assert os.stat(str(raw_target)).st_blocks * 512 < 2 * MiB


# --- progress and argument errors --------------------------------------------------------------

def test_progress_callback(tmp_path):
    src = build_raw_sparse(tmp_path)
    calls = []
    _convert([str(src)], str(tmp_path / "out.qcow2"), out_fmt="qcow2",
             progress=lambda done, total, elapsed: calls.append((done, total, elapsed)))
    assert len(calls) >= 4, calls
    dones = [c[0] for c in calls]
    assert all(a < b for a, b in zip(dones, dones[1:])), dones
    assert dones[-1] == 32 * MiB
    assert set(c[1] for c in calls) == {32 * MiB}
    elapsed = [c[2] for c in calls]
    assert all(0 <= a <= b for a, b in zip(elapsed, elapsed[1:]))


@pytest.mark.parametrize("kw", [
    {"out_fmt": "raw", "compress": True},
    {"out_fmt": "raw", "backing_file": "x.qcow2"},
    {"out_fmt": "qcow2", "sparse_size": 1000},
    {"out_fmt": "qcow2", "sparse_size": -512},
    {"out_fmt": "qcow2", "options": {"cluster_size": "3k"}},
    {"out_fmt": "nosuchformat"},
], ids=["compress-raw", "backing-raw", "sparse-unaligned", "sparse-negative", "bad-cluster", "bad-format"])
def test_bad_arguments(tmp_path, kw):
    from qimg.errors import QimgError
    src = tmp_path / "a.raw"
    qemu_img_create(src, "raw", "1M")
    out = tmp_path / "out"
    with pytest.raises(QimgError) as err:
        _convert([str(src)], str(out), **kw)
    assert "\n" not in str(err.value)
    assert sorted(os.listdir(str(tmp_path))) == ["a.raw"]


def test_missing_source(tmp_path):
    from qimg.errors import QimgError
    with pytest.raises(QimgError) as err:
        _convert([str(tmp_path / "nope.qcow2")], str(tmp_path / "out.raw"))
    assert "nope.qcow2" in str(err.value)
    assert os.listdir(str(tmp_path)) == []
