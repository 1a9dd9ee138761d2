# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every image QEMU writes, we read bit-exact, and our info/map facts equal qemu-img's.

Each case builds an image with qemu-img/qemu-io. The guest content read through the engine must
hash like `qemu-img convert -O raw` output, and `bin/qimg info --output=json` and
`bin/qimg map --output=json` must parse to exactly what qemu-img prints for the same file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from helpers import (TiB, engine_digest, qemu_img_create, qemu_info, qemu_io, qemu_map, qemu_raw_digest,
                     qimg_json, run, same_bytes)

ODD_CHUNK = 777777  # not a multiple of any cluster or sector size: reads straddle clusters

# --- builders: each makes the image in directory d and returns the top file's path ----------------


def _patterns(path, cluster):
    c = cluster
    qemu_io(path,
            "write -P 1 0 %d" % c,                     # one whole cluster
            "write -P 2 %d 512" % (c + 512),           # partial cluster
            "write -P 3 %d %d" % (3 * c - 1024, 2048),  # crosses a cluster boundary
            "write -P 4 %d 1536" % (6 * c + 3584),     # unaligned to 4k, crosses nothing
            "write -P 5 %d %d" % (9 * c, 3 * c),       # a run of clusters
            "write -P 6 %d 512" % (10 * c))            # overwrite inside the run


def build_patterns_64k(d):
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "2M", {"cluster_size": "64k"})
    _patterns(p, 65536)
    return p


def build_zero_discard(d):
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "2M", {"cluster_size": "64k"})
    qemu_io(p, "write -P 7 0 1M",
            "write -z 64k 64k",            # zero flag, cluster kept
            "write -z -u 192k 128k",       # zero flag, cluster freed
            "write -z 400k 8k",            # partial-cluster zero write: data rewritten
            "discard 512k 128k",           # whole clusters discarded
            "discard 700k 10k",            # partial: ignored
            "write -z 1536k 64k")          # zero write on an unallocated cluster
    return p


def build_convert_compressed(d):
    src = d / "src.qcow2"
    qemu_img_create(src, "qcow2", "3M", {"cluster_size": "64k"})
    qemu_io(src, "write -P 17 0 200k", "write -P 0 256k 64k", "write -P 18 1M 1M", "write -P 19 2900k 5k")
    p = d / "a.qcow2"
    run(["qemu-img", "convert", "-c", "-O", "qcow2", str(src), str(p)])
    return p


def build_io_compressed(d):
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "1M", {"cluster_size": "4k"})
    qemu_io(p, "write -c -P 33 0 4k", "write -c -P 34 8k 4k", "write -P 35 12k 4k",
            "write -c -P 36 64k 4k", "write -P 37 66k 512")  # rewrite part of a compressed cluster
    return p


def build_subclusters(d):
    base = d / "base.qcow2"
    qemu_img_create(base, "qcow2", "2M", {"cluster_size": "64k"})
    qemu_io(base, "write -P 40 0 2M")
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "2M", {"cluster_size": "64k", "extended_l2": "on"}, backing="base.qcow2",
                    backing_fmt="qcow2")
    qemu_io(p, "write -P 41 0 2k",           # one subcluster (64k / 32 = 2k)
            "write -P 42 5k 3k",             # straddles two subclusters
            "write -z 64k 2k",               # zero subcluster over backing data
            "write -z 68k 6k",
            "write -P 43 128k 64k",          # whole cluster
            "write -z 132k 2k",              # zero one subcluster of an allocated cluster
            "discard 256k 64k",
            "write -P 44 1M 1k")
    return p


def build_subclusters_nobacking(d):
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "1M", {"cluster_size": "32k", "extended_l2": "on"})
    qemu_io(p, "write -P 45 1k 1k", "write -z 32k 1k", "write -P 46 40k 2k", "write -z -u 64k 32k",
            "write -P 47 100k 300")
    return p


def build_snapshots(d):
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "1M", {"cluster_size": "64k"})
    qemu_io(p, "write -P 50 0 512k")
    run(["qemu-img", "snapshot", "-c", "one", str(p)])
    qemu_io(p, "write -P 51 64k 64k", "write -z 256k 64k", "discard 384k 64k")
    run(["qemu-img", "snapshot", "-c", "two", str(p)])
    qemu_io(p, "write -P 52 100k 8k", "write -P 53 768k 64k")
    return p


def build_chain(d):
    """qcow2 over qcow2 over a shorter raw file."""
    raw = d / "base.raw"
    qemu_img_create(raw, "raw", "1000k")
    qemu_io(raw, "write -P 60 0 1000k", fmt="raw")
    mid = d / "mid.qcow2"
    qemu_img_create(mid, "qcow2", "1536k", {"cluster_size": "4k"}, backing="base.raw", backing_fmt="raw")
    qemu_io(mid, "write -P 61 4k 8k", "write -z 64k 4k", "write -P 62 1200k 8k")
    top = d / "top.qcow2"
    qemu_img_create(top, "qcow2", "2M", {"cluster_size": "64k"}, backing="mid.qcow2", backing_fmt="qcow2")
    qemu_io(top, "write -P 63 0 1k", "write -P 64 996k 8k", "write -z 1600k 64k")
    return top


def build_v2(d):
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "1M", {"compat": "0.10", "cluster_size": "4k"})
    qemu_io(p, "write -P 70 0 64k", "write -z 8k 8k", "discard 32k 8k", "write -P 71 100k 100")
    return p


def build_v2_backing(d):
    base = d / "base.qcow2"
    qemu_img_create(base, "qcow2", "1M", {"compat": "0.10"})
    qemu_io(base, "write -P 72 0 1M")
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "1M", {"compat": "0.10", "cluster_size": "4k"}, backing="base.qcow2",
                    backing_fmt="qcow2")
    qemu_io(p, "write -P 73 0 64k", "write -z 8k 8k", "discard 32k 8k", "write -P 74 100k 100")
    return p


def build_refcount1(d):
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "4M", {"cluster_size": "4k", "refcount_bits": "1"})
    _patterns(p, 4096)
    return p


def build_refcount64(d):
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "4M", {"cluster_size": "512", "refcount_bits": "64"})
    _patterns(p, 512)
    qemu_io(p, "write -P 80 1M 300k")
    return p


def build_cluster512(d):
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "2M", {"cluster_size": "512"})
    _patterns(p, 512)
    qemu_io(p, "write -z 1M 10k", "discard 4k 2k")
    return p


def build_cluster2M(d):
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "16M", {"cluster_size": "2M"})
    qemu_io(p, "write -P 90 1M 4k", "write -P 91 6M 3M", "write -z 10M 2M", "write -P 92 15M 1")
    return p


def build_unaligned_size(d):
    p = d / "a.qcow2"
    qemu_img_create(p, "qcow2", "1000001", {"cluster_size": "64k"})
    qemu_io(p, "write -P 95 960k 17408")  # up to the (sector-rounded) end
    return p


CASES = [
    ("patterns-64k", build_patterns_64k),
    ("zero-discard", build_zero_discard),
    ("convert-compressed", build_convert_compressed),
    ("io-compressed", build_io_compressed),
    ("subclusters-backing", build_subclusters),
    ("subclusters", build_subclusters_nobacking),
    ("snapshots", build_snapshots),
    ("chain-qcow2-qcow2-raw", build_chain),
    ("compat-0.10", build_v2),
    ("compat-0.10-backing", build_v2_backing),
    ("refcount-1", build_refcount1),
    ("refcount-64", build_refcount64),
    ("cluster-512", build_cluster512),
    ("cluster-2M", build_cluster2M),
    ("unaligned-size", build_unaligned_size),
]


@pytest.mark.parametrize("builder", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_read_matches_qemu(qemu_img, qemu_io, tmp_path, builder):
    path = builder(tmp_path)
    expected = qemu_raw_digest(path, tmp_path)
    digest, size = engine_digest(path)
    assert size == qemu_info(path)["virtual-size"]
    assert digest == expected, "engine read differs from qemu-img convert"
    digest = engine_digest(path, chunk=ODD_CHUNK)[0]
    assert digest == expected, "engine read in unaligned chunks differs from qemu-img convert"


@pytest.mark.parametrize("builder", [c[1] for c in CASES], ids=[c[0] for c in CASES])
def test_info_map_match_qemu(qemu_img, qemu_io, tmp_path, builder):
    path = str(builder(tmp_path))
    assert qimg_json("info", "--output=json", path) == qemu_info(path)
    assert qimg_json("map", "--output=json", path) == qemu_map(path)


def test_info_backing_chain_matches_qemu(qemu_img, qemu_io, tmp_path):
    path = str(build_chain(tmp_path))
    assert qimg_json("info", "--output=json", "--backing-chain", path) == qemu_info(path, extra=["--backing-chain"])


# --- a 1 TiB sparse image: compare the written regions, a few holes, info and map ----------------

WRITES_1T = [  # (pattern, offset, length)
    (101, 0, 4096),
    (102, 300 * 1024 ** 3 + 12345 * 512, 70000),
    (103, 700 * 1024 ** 3 - 4096, 8192),  # crosses an L2-table boundary (512 MiB with 64k clusters)
    (104, TiB - 65536, 65536),  # last cluster
]
HOLES_1T = [(4096, 65536 - 4096), (512 * 1024 ** 2, 65536), (300 * 1024 ** 3, 12345 * 512), (900 * 1024 ** 3, 1 << 20)]


@pytest.fixture(scope="module")
def image_1t(tmp_path_factory):
    import shutil
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        pytest.skip("qemu-img/qemu-io not installed")  # the qemu_img fixture fails under CI
    d = tmp_path_factory.mktemp("onetib")
    p = d / "big.qcow2"
    qemu_img_create(p, "qcow2", "1T")
    qemu_io(p, *["write -P %d %d %d" % w for w in WRITES_1T])
    return str(p)


def test_1tib_sparse_read(qemu_img, qemu_io, image_1t):
    from qimg.image import open_image
    with open_image(image_1t) as dev:
        assert dev.size == TiB
        for pattern, off, length in WRITES_1T:
            same_bytes(dev.read(off, length), bytes([pattern]) * length, "written region at %d" % off)
        for off, length in HOLES_1T:
            same_bytes(dev.read(off, length), bytes(length), "hole at %d" % off)
        # a read that straddles data and a hole
        pattern, off, length = WRITES_1T[1]
        same_bytes(dev.read(off - 100, length + 200), bytes(100) + bytes([pattern]) * length + bytes(100))


def test_1tib_sparse_info_map(qemu_img, qemu_io, image_1t):
    assert qimg_json("info", "--output=json", image_1t) == qemu_info(image_1t)
    assert qimg_json("map", "--output=json", image_1t) == qemu_map(image_1t)
