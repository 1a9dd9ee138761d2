# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qcow2 external data files (`data_file`, `data_file_raw`), with qemu-img / qemu-io as the oracle.

- images qemu-img makes with a data file read bit-exact through the engine; info and map JSON
  equal qemu-img's; check figures equal qemu-img's;
- images we create (every preallocation mode, raw or not, extended L2) look to qemu-img like its
  own (info, file sizes), pass `qemu-img check` and read back through qemu-io;
- engine writes into a data-file image land in the data file (at guest offset == host offset) and
  qemu-io reads them back; with data_file_raw the data file is the guest content;
- convert in both directions;
- what QEMU refuses, we refuse with its message.

Relative data file names: QEMU 7.2 (Debian) opens them relative to the working directory, not to
the image's directory (unlike backing files); so do we.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import struct

import pytest

from conftest import assert_same_as_qemu_img, qimg, run
from helpers import (assert_check_clean, engine_digest, file_digest, qemu_check, qemu_img_create, qemu_info,
                     qemu_io, qemu_map, qemu_raw_digest, qimg_json, same_bytes, strip_map_filenames)

MiB = 1024 * 1024

WRITES = ("write -P 0x11 0 64k", "write -P 0x22 200k 100k", "write -z 1M 128k", "write -P 0x33 2M 64k",
          "discard 2M 64k", "write -P 0x44 3M 1536k", "write -P 0x55 4100k 1k")


def _oracle_image(tmp_path, name, size="8M", options=None, writes=WRITES, backing=None):
    """A qemu-img-made qcow2 with an external data file (absolute name), written by qemu-io."""
    img = tmp_path / (name + ".qcow2")
    opts = {"data_file": str(tmp_path / (name + ".data"))}
    opts.update(options or {})
    qemu_img_create(img, "qcow2", size, opts, backing=backing, backing_fmt="qcow2" if backing else None)
    if writes:
        qemu_io(img, *writes)
    return img


def _json_in(directory, *cmd):
    return json.loads(run(list(cmd), cwd=str(directory)).stdout)


def _ours_info(path, *extra):
    return qimg_json("info", "--output=json", *(list(extra) + [str(path)]))


READ_CASES = [
    ("plain", {}),
    ("raw", {"data_file_raw": "on"}),
    ("el2", {"extended_l2": "on"}),
    ("el2-raw", {"extended_l2": "on", "data_file_raw": "on"}),
    ("4k", {"cluster_size": "4k"}),
    ("metadata", {"preallocation": "metadata"}),
    ("full", {"preallocation": "full"}),
    ("lazy", {"lazy_refcounts": "on"}),
]


@pytest.mark.parametrize("name,options", READ_CASES, ids=[c[0] for c in READ_CASES])
def test_read_info_map_check_qemu_images(qemu_img, tmp_path, name, options):
    img = _oracle_image(tmp_path, name, options=options)
    assert engine_digest(img)[0] == qemu_raw_digest(img, tmp_path)
    want = qemu_info(img)
    got = _ours_info(img)
    assert got["format-specific"] == want["format-specific"]
    for key in ("virtual-size", "cluster-size", "format", "dirty-flag", "actual-size"):
        assert got.get(key) == want.get(key), key
    assert strip_map_filenames(qimg_json("map", "--output=json", str(img))) == strip_map_filenames(qemu_map(img))
    rc, want_check = qemu_check(img)
    got_check = qimg("check", "--output=json", str(img), check=False)
    assert got_check.returncode == rc == 0
    assert json.loads(got_check.stdout) == want_check


def test_read_with_backing(qemu_img, tmp_path):
    base = tmp_path / "base.qcow2"
    qemu_img_create(base, "qcow2", "4M")
    qemu_io(base, "write -P 0x77 0 4M")
    img = _oracle_image(tmp_path, "top", "4M", writes=["write -P 0x11 64k 64k", "write -z 1M 64k",
                                                       "write -P 0x22 100k 1k"], backing=str(base))
    assert engine_digest(img)[0] == qemu_raw_digest(img, tmp_path)
    assert strip_map_filenames(qimg_json("map", "--output=json", str(img))) == strip_map_filenames(qemu_map(img))


def test_info_human_and_missing_data_file(qemu_img, tmp_path, as_qemu_img):
    """info does not open the data file (qemu-img opens with BDRV_O_NO_IO): a missing one is fine."""
    run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "data_file=gone.data,data_file_raw=on", "a.qcow2", "1M"],
        cwd=str(tmp_path))
    os.unlink(str(tmp_path / "gone.data"))
    for args in (["info", "a.qcow2"], ["info", "--output=json", "a.qcow2"]):
        got = assert_same_as_qemu_img(qemu_img, as_qemu_img, args, str(tmp_path))
        assert "data" in got.stdout
    # check and map must open it, and fail as qemu-img fails
    assert_same_as_qemu_img(qemu_img, as_qemu_img, ["check", "a.qcow2"], str(tmp_path))
    assert_same_as_qemu_img(qemu_img, as_qemu_img, ["map", "a.qcow2"], str(tmp_path))


def test_map_human(qemu_img, tmp_path, as_qemu_img):
    _oracle_image(tmp_path, "m")
    assert_same_as_qemu_img(qemu_img, as_qemu_img, ["map", "m.qcow2"], str(tmp_path))


def test_relative_data_file_is_relative_to_cwd(qemu_img, tmp_path, as_qemu_img):
    sub = tmp_path / "sub"
    sub.mkdir()
    run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "data_file=d.data", "sub/a.qcow2", "1M"], cwd=str(tmp_path))
    run(["qemu-io", "-c", "write -P 0x5a 0 64k", "sub/a.qcow2"], cwd=str(tmp_path))
    assert (tmp_path / "d.data").exists() and not (sub / "d.data").exists()
    assert_same_as_qemu_img(qemu_img, as_qemu_img, ["map", "--output=json", "sub/a.qcow2"], str(tmp_path))
    # from another directory the name does not resolve, for qemu-img and for us
    assert_same_as_qemu_img(qemu_img, as_qemu_img, ["check", "a.qcow2"], str(sub))


# --- images we create ------------------------------------------------------------------------

CREATE_CASES = [
    ("off", {}),
    ("metadata", {"preallocation": "metadata"}),
    ("falloc", {"preallocation": "falloc"}),
    ("full", {"preallocation": "full"}),
    ("raw", {"data_file_raw": "on"}),
    ("raw-full", {"data_file_raw": "on", "preallocation": "full"}),
    ("el2", {"extended_l2": "on"}),
    ("el2-raw-4k", {"extended_l2": "on", "data_file_raw": "on", "cluster_size": "16k"}),
    ("512-rb1", {"cluster_size": "512", "refcount_bits": "1", "preallocation": "metadata"}),
]


@pytest.mark.parametrize("name,options", CREATE_CASES, ids=[c[0] for c in CREATE_CASES])
def test_create_like_qemu_img(qemu_img, tmp_path, as_qemu_img, name, options):
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    theirs.mkdir()
    ours.mkdir()
    o = ",".join(["data_file=img.data"] + ["%s=%s" % kv for kv in sorted(options.items())])
    args = ["create", "-f", "qcow2", "-o", o, "img.qcow2", "3M"]
    want = run([qemu_img] + args, cwd=str(theirs))
    got = as_qemu_img(*args, cwd=str(ours))
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    for f in ("img.qcow2", "img.data"):
        assert os.path.getsize(str(ours / f)) == os.path.getsize(str(theirs / f)), f
    assert not [n for n in os.listdir(str(ours)) if n not in ("img.qcow2", "img.data")]
    wi, gi = qemu_info(theirs / "img.qcow2"), qemu_info(ours / "img.qcow2")
    assert gi["format-specific"] == wi["format-specific"]
    assert (_json_in(ours, "qemu-img", "map", "--output=json", "img.qcow2")
            == _json_in(theirs, "qemu-img", "map", "--output=json", "img.qcow2"))
    run(["qemu-io", "-c", "write -P 0x61 0 100k", "-c", "write -z 1M 64k", "img.qcow2"], cwd=str(ours))
    run(["qemu-io", "-c", "read -P 0x61 0 100k", "-c", "read -P 0 100k 2M", "img.qcow2"], cwd=str(ours))
    assert run(["qemu-img", "check", "img.qcow2"], cwd=str(ours), check=False).returncode == 0
    if "data_file_raw" in options:
        with open(str(ours / "img.data"), "rb") as f:
            assert f.read(100 * 1024) == b"\x61" * (100 * 1024)


def test_create_replaces_existing_data_file(qemu_img, tmp_path):
    data = tmp_path / "x.data"
    data.write_bytes(b"\xff" * (5 * MiB))
    qimg("create", "-q", "-f", "qcow2", "-o", "data_file=%s,data_file_raw=on" % data, str(tmp_path / "x.qcow2"), "1M")
    assert os.path.getsize(str(data)) == MiB
    assert file_digest(data) == file_digest(_zero_file(tmp_path / "z", MiB))
    assert_check_clean(tmp_path / "x.qcow2")


def _raw_digest_in(directory, name):
    run(["qemu-img", "convert", "-O", "raw", name, "oracle.raw"], cwd=str(directory))
    try:
        return file_digest(directory / "oracle.raw")
    finally:
        os.unlink(str(directory / "oracle.raw"))


def _zero_file(path, size):
    with open(str(path), "wb") as f:
        f.truncate(size)
    return path


def test_engine_create_api(tmp_path):
    from qimg.errors import ImageExists
    from qimg.ops.create import create_image
    (tmp_path / "taken.data").write_bytes(b"keep")
    with pytest.raises(ImageExists, match="taken.data': File exists"):
        create_image(str(tmp_path / "n.qcow2"), "qcow2", size=MiB, options={"data_file": str(tmp_path / "taken.data")},
                     overwrite=False)
    assert (tmp_path / "taken.data").read_bytes() == b"keep" and not (tmp_path / "n.qcow2").exists()
    create_image(str(tmp_path / "e.qcow2"), "qcow2", size=MiB,
                 options={"data_file": str(tmp_path / "e.data"), "data_file_raw": True})
    info = qemu_info(tmp_path / "e.qcow2")["format-specific"]["data"]
    assert info["data-file"] == str(tmp_path / "e.data") and info["data-file-raw"] is True
    assert_check_clean(tmp_path / "e.qcow2")


# --- writes through the engine -----------------------------------------------------------------

@pytest.mark.parametrize("options", [{}, {"data_file_raw": "on"}, {"extended_l2": "on"},
                                     {"extended_l2": "on", "data_file_raw": "on"}],
                         ids=["plain", "raw", "el2", "el2-raw"])
def test_engine_writes(qemu_img, tmp_path, options):
    from qimg.image import open_image
    img = _oracle_image(tmp_path, "w", "4M", options=options, writes=["write -P 0x11 0 1M"])
    with open_image(str(img), read_only=False) as dev:
        dev.write(0, b"\xaa" * 4096)                  # in place, cluster at host offset 0
        dev.write(1536 * 1024, b"\xbb" * 70000)       # new clusters, partial
        dev.write_zeroes(64 * 1024, 128 * 1024)       # whole clusters
        dev.write_zeroes(200 * 1024, 1000)            # partial
        dev.discard(512 * 1024, 128 * 1024)
        dev.write(3 * MiB + 100, b"\xcc" * 300)
    qemu_io(img, "read -P 0xaa 0 4k", "read -P 0x11 4k 60k", "read -P 0 64k 128k", "read -P 0x11 192k 8k",
            "read -P 0 200k 1000", "read -P 0 512k 128k", "read -P 0xbb 1536k 70000", "read -P 0 3M 100",
            "read -P 0xcc 3145828 300", "read -P 0 3146128 100k")
    rc, report = qemu_check(img)
    assert rc == 0, report
    assert engine_digest(img)[0] == qemu_raw_digest(img, tmp_path)
    m = qemu_map(img)
    assert all(e["offset"] == e["start"] for e in m if "offset" in e)
    if options.get("data_file_raw"):
        assert file_digest(tmp_path / "w.data") == qemu_raw_digest(img, tmp_path)


def test_engine_write_with_backing(qemu_img, tmp_path):
    from qimg.image import open_image
    base = tmp_path / "b.qcow2"
    qemu_img_create(base, "qcow2", "1M")
    qemu_io(base, "write -P 0x77 0 1M")
    img = _oracle_image(tmp_path, "o", "1M", writes=None, backing=str(base))
    with open_image(str(img), read_only=False) as dev:
        dev.write(70000, b"\x01" * 1000)
    qemu_io(img, "read -P 0x77 0 70000", "read -P 1 70000 1000", "read -P 0x77 71000 953576")
    assert_check_clean(img)


# --- convert ---------------------------------------------------------------------------------

def test_convert_from_data_file_source(qemu_img, tmp_path):
    img = _oracle_image(tmp_path, "src")
    for fmt in ("raw", "qcow2"):
        out = tmp_path / ("out." + fmt)
        qimg("convert", "-O", fmt, str(img), str(out))
        assert qemu_raw_digest(out, tmp_path, fmt=fmt) == qemu_raw_digest(img, tmp_path)


@pytest.mark.parametrize("options", ["data_file=t.data", "data_file=t.data,data_file_raw=on",
                                     "data_file=t.data,extended_l2=on,cluster_size=16k",
                                     "data_file=t.data,extended_l2=on", "data_file=t.data,extended_l2=on,data_file_raw=on"])
def test_convert_to_data_file_target(qemu_img, tmp_path, options):
    src = tmp_path / "s.qcow2"
    qemu_img_create(src, "qcow2", "5M")
    qemu_io(src, "write -P 0x12 0 300k", "write -P 0x34 2M 1M", "write -P 0x56 5056k 64k")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    args = ["convert", "-O", "qcow2", "-o", options, str(src), "t.qcow2"]
    run([qemu_img] + args, cwd=str(theirs))
    qimg(*args, cwd=str(ours))
    assert _raw_digest_in(ours, "t.qcow2") == qemu_raw_digest(src, tmp_path)
    assert qemu_info(ours / "t.qcow2")["format-specific"] == qemu_info(theirs / "t.qcow2")["format-specific"]
    assert (_json_in(ours, "qemu-img", "map", "--output=json", "t.qcow2")
            == _json_in(theirs, "qemu-img", "map", "--output=json", "t.qcow2"))
    assert os.path.getsize(str(ours / "t.data")) == os.path.getsize(str(theirs / "t.data"))
    assert run(["qemu-img", "check", "t.qcow2"], cwd=str(ours), check=False).returncode == 0
    assert sorted(os.listdir(str(ours))) == ["t.data", "t.qcow2"]
    if "data_file_raw=on" in options:
        assert file_digest(ours / "t.data") == qemu_raw_digest(src, tmp_path)


# --- refusals --------------------------------------------------------------------------------

REFUSED_CREATES = [
    "data_file_raw=on",
    "data_file=x.data,compat=0.10",
    "data_file=x.data,data_file_raw=on,backing_file=base.qcow2,backing_fmt=qcow2",
]


@pytest.mark.parametrize("options", REFUSED_CREATES)
def test_create_refusals(qemu_img, tmp_path, as_qemu_img, options):
    qemu_img_create(tmp_path / "base.qcow2", "qcow2", "1M")
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img, ["create", "-f", "qcow2", "-o", options, "x.qcow2", "1M"],
                                  str(tmp_path))
    assert got.returncode == 1
    assert not (tmp_path / "x.data").exists() and not (tmp_path / "x.qcow2").exists()


@pytest.mark.parametrize("options", REFUSED_CREATES[:2] + ["data_file=x.data,data_file_raw=on"])
def test_convert_refusals(qemu_img, tmp_path, as_qemu_img, options):
    qemu_img_create(tmp_path / "s.qcow2", "qcow2", "1M")
    args = ["convert", "-O", "qcow2", "-o", options, "s.qcow2", "x.qcow2"]
    if "backing" not in options and options.endswith("data_file_raw=on") and "data_file=" in options:
        args[1:1] = ["-B", "s.qcow2", "-F", "qcow2"]
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img, args, str(tmp_path))
    assert got.returncode == 1 and "error while converting qcow2" in got.stderr
    assert not (tmp_path / "x.qcow2").exists()


def test_data_file_is_the_image(qemu_img, tmp_path, as_qemu_img):
    """QEMU's two write locks on the one file collide; (its extra line about the file it fails to
    delete afterwards is left out)."""
    from conftest import oracle_and_ours
    qemu_img_create(tmp_path / "s.qcow2", "qcow2", "1M")
    for args in (["create", "-f", "qcow2", "-o", "data_file=x.qcow2", "x.qcow2", "1M"],
                 ["convert", "-O", "qcow2", "-o", "data_file=y.qcow2", "s.qcow2", "y.qcow2"]):
        want, got = oracle_and_ours(qemu_img, as_qemu_img, args, str(tmp_path))
        assert (got.stdout, got.returncode) == (want.stdout, want.returncode) == (want.stdout, 1)
        assert want.stderr.endswith(got.stderr) and "lock" in got.stderr
        assert not (tmp_path / args[-2 if args[0] == "create" else -1]).exists()


def test_create_raw_format_refuses_data_file(qemu_img, tmp_path, as_qemu_img):
    assert_same_as_qemu_img(qemu_img, as_qemu_img, ["create", "-f", "raw", "-o", "data_file=x.data", "x.raw", "1M"],
                            str(tmp_path))


def test_convert_compressed_refused(qemu_img, tmp_path, as_qemu_img):
    qemu_img_create(tmp_path / "s.qcow2", "qcow2", "1M")
    qemu_io(tmp_path / "s.qcow2", "write -P 1 0 64k")
    got = as_qemu_img("convert", "-c", "-O", "qcow2", "-o", "data_file=y.data", "s.qcow2", "y.qcow2",
                      cwd=str(tmp_path))
    assert got.returncode == 1
    assert got.stderr == "qemu-img: error while writing at byte 0: Operation not supported\n"
    assert not (tmp_path / "y.qcow2").exists() and not (tmp_path / "y.data").exists()


def _patch_header(path, incompat_set=0, incompat_clear=0, autoclear_set=0):
    with open(str(path), "r+b") as f:
        f.seek(72)
        incompat, compat, autoclear = struct.unpack(">QQQ", f.read(24))
        f.seek(72)
        f.write(struct.pack(">QQQ", (incompat | incompat_set) & ~incompat_clear, compat, autoclear | autoclear_set))


def _drop_data_file_ext(path):
    with open(str(path), "r+b") as f:
        buf = bytearray(f.read(4096))
        off = struct.unpack(">I", buf[100:104])[0]
        while True:
            typ, ln = struct.unpack(">II", buf[off:off + 8])
            if typ == 0:
                raise AssertionError("no data file extension")
            if typ == 0x44415441:
                struct.pack_into(">I", buf, off, 0x12345678)  # an unknown extension now
                break
            off += 8 + ((ln + 7) & ~7)
        f.seek(0)
        f.write(bytes(buf))


def test_open_refusals(qemu_img, tmp_path, as_qemu_img):
    # the data file bit without a name
    img = _oracle_image(tmp_path, "n", "1M", writes=["write -P 1 0 64k"])
    _drop_data_file_ext(img)
    for args in (["check", "n.qcow2"], ["map", "n.qcow2"], ["convert", "-O", "raw", "n.qcow2", "n.raw"]):
        got = assert_same_as_qemu_img(qemu_img, as_qemu_img, args, str(tmp_path))
        assert "'data-file' is required for this image" in got.stderr
    # the raw bit without the data file bit
    plain = tmp_path / "p.qcow2"
    qemu_img_create(plain, "qcow2", "1M")
    _patch_header(plain, autoclear_set=2)
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img, ["check", "p.qcow2"], str(tmp_path))
    assert "data-file-raw requires a data file" in got.stderr


def _l2_entry_offset(path, guest_cluster):
    with open(str(path), "rb") as f:
        h = f.read(512)
        l1 = struct.unpack(">Q", h[40:48])[0]
        f.seek(l1)
        l2 = struct.unpack(">Q", f.read(8))[0] & ((1 << 56) - 512)
    return l2 + 8 * guest_cluster


def _set_l2_entry(path, guest_cluster, value):
    off = _l2_entry_offset(path, guest_cluster)
    with open(str(path), "r+b") as f:
        f.seek(off)
        f.write(struct.pack(">Q", value))


def test_compressed_cluster_in_data_file_image(qemu_img, tmp_path):
    """A compressed entry is corruption with a data file: reading it fails, check counts it as qemu-img does."""
    from qimg.errors import ImageCorrupt
    from qimg.image import open_image
    img = _oracle_image(tmp_path, "c", "1M", writes=["write -P 1 0 128k"])
    _set_l2_entry(img, 1, (1 << 62) | 0x10000)
    rc, want = qemu_check(img)
    got = qimg("check", "--output=json", str(img), check=False)
    assert (got.returncode, json.loads(got.stdout)) == (rc, want) == (2, want)
    assert "ERROR compressed cluster 1 with data file, entry=0x4000000000010000" in got.stderr
    with open_image(str(img)) as dev:
        assert dev.read(0, 65536) == b"\1" * 65536
        with pytest.raises(ImageCorrupt, match="Compressed cluster entry found in image with external data file"):
            dev.read(65536, 65536)


def test_host_offset_must_match_guest_offset(qemu_img, tmp_path):
    from qimg.errors import ImageCorrupt
    from qimg.image import open_image
    img = _oracle_image(tmp_path, "h", "1M", writes=["write -P 1 0 128k"])
    _set_l2_entry(img, 1, (1 << 63) | 0x20000)
    with open_image(str(img)) as dev:
        with pytest.raises(ImageCorrupt, match="External data file host cluster offset 0x20000 does not match "
                                               "guest cluster offset: 0x10000"):
            dev.read(65536, 512)


def test_data_file_node_and_snapshots(qemu_img, tmp_path):
    """The driver exposes its data file node; without a data file it is the image's own file."""
    from qimg.image import open_image
    img = _oracle_image(tmp_path, "s", "1M", writes=["write -P 9 0 64k"])
    with open_image(str(img)) as dev:
        assert dev.has_data_file and dev.data_file.filename == str(tmp_path / "s.data")
        assert dev.info_fields().get("snapshots") is None
    plain = tmp_path / "plain.qcow2"
    qemu_img_create(plain, "qcow2", "1M")
    with open_image(str(plain)) as dev:
        assert not dev.has_data_file


# --- property: random writes, zero writes and discards against a model -------------------------

PROPERTY_PARAMS = [
    ("c4k", 4096, False, False, False),
    ("c64k-raw", 65536, False, True, False),
    ("c64k-el2", 65536, True, False, False),
    ("c64k-el2-raw", 65536, True, True, False),
    ("c512-backing", 512, False, False, True),
]


@pytest.mark.parametrize("pid,cluster,el2,raw,backing", PROPERTY_PARAMS, ids=[p[0] for p in PROPERTY_PARAMS])
def test_random_ops_match_model(qemu_img, tmp_path, pid, cluster, el2, raw, backing):
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from test_property import SETTINGS, SIZES, _apply_model, operation
    from qimg.image import open_image
    size = SIZES[cluster]
    backing_content = bytes(size)
    if backing:
        base = tmp_path / "base.qcow2"
        qemu_img_create(base, "qcow2", size)
        qemu_io(base, "write -P 0x5b 0 %d" % (size // 2))
        backing_content = b"\x5b" * (size // 2) + bytes(size - size // 2)
    counter = [0]

    @settings(SETTINGS, max_examples=25)
    @given(st.lists(operation(size, cluster), min_size=1, max_size=12))
    def check(ops):
        counter[0] += 1
        img, data = tmp_path / ("i%d.qcow2" % counter[0]), tmp_path / ("i%d.data" % counter[0])
        opts = {"data_file": str(data), "cluster_size": cluster}
        if el2:
            opts["extended_l2"] = "on"
        if raw:
            opts["data_file_raw"] = "on"
        qemu_img_create(img, "qcow2", size, opts, backing=str(base) if backing else None,
                        backing_fmt="qcow2" if backing else None)
        model = bytearray(backing_content)
        try:
            with open_image(str(img), read_only=False) as dev:
                for kind, off, length, seed in ops:
                    payload = _apply_model(model, backing_content, kind, off, length, seed, cluster, "1.1", backing)
                    if kind == "write":
                        dev.write(off, payload)
                    elif kind == "zero":
                        dev.write_zeroes(off, length)
                    else:
                        dev.discard(off, length)
            with open_image(str(img)) as dev:
                same_bytes(dev.read(0, size), model, "read-back (ops %r)" % (ops,))
            assert_check_clean(img)
            assert qemu_raw_digest(img, tmp_path) == _digest_bytes(model)
            if raw:
                with open(str(data), "rb") as f:
                    content = f.read()
                assert content[:size] == bytes(model) and not content[size:].strip(b"\0"), "raw data file"
        finally:
            for p in (img, data):
                if p.exists():
                    p.unlink()
    check()


def _digest_bytes(b):
    import hashlib
    return hashlib.sha256(bytes(b)).hexdigest()


def test_data_file_node_given(qemu_img, tmp_path):
    """An opened node for the data file (the `data-file` option of json:/--image-opts specs) replaces
    the name in the header; on an image without a data file it is refused with QEMU's message."""
    from qimg.errors import InvalidArgument
    from qimg.image import open_format
    from qimg.protocols.file import HostFile
    img = _oracle_image(tmp_path, "g", "1M", writes=["write -P 0x3c 0 64k"])
    os.rename(str(tmp_path / "g.data"), str(tmp_path / "elsewhere.data"))
    node, data = HostFile(str(img)), HostFile(str(tmp_path / "elsewhere.data"))
    dev = open_format(str(img), node, "qcow2", data_file=data)
    try:
        assert dev.data_file is data and dev.read(0, 65536) == b"\x3c" * 65536
    finally:
        dev.close()
        data.close()  # a node given by the caller stays the caller's to close
    plain = tmp_path / "plain.qcow2"
    qemu_img_create(plain, "qcow2", "1M")
    node, data = HostFile(str(plain)), HostFile(str(tmp_path / "elsewhere.data"))
    try:
        with pytest.raises(InvalidArgument, match="'data-file' can only be set for images with an external data file"):
            open_format(str(plain), node, "qcow2", data_file=data)
    finally:
        node.close()
        data.close()


def test_repair_keeps_data_file_clusters(qemu_img, tmp_path):
    """check -r all on a data-file image with a leak: the fix touches the qcow2 file only."""
    img = _oracle_image(tmp_path, "r", "2M", writes=["write -P 0x42 0 1M", "write -P 1 1M 64k"])
    # raise the refcount of the header cluster: a leak qemu-img repairs
    with open(str(img), "rb") as f:
        rt = struct.unpack(">Q", f.read(56)[48:56])[0]
        f.seek(rt)
        rb = struct.unpack(">Q", f.read(8))[0]
    with open(str(img), "r+b") as f:
        f.seek(rb)
        f.write(struct.pack(">H", 2))
    before = file_digest(tmp_path / "r.data")
    got = qimg("check", "-r", "all", str(img), check=False)
    assert got.returncode == 0, got.stdout + got.stderr
    assert "Repairing cluster 0 refcount=2 reference=1" in got.stderr
    assert_check_clean(img)
    assert file_digest(tmp_path / "r.data") == before
    qemu_io(img, "read -P 0x42 0 1M", "read -P 1 1M 64k")


@pytest.mark.parametrize("kind", ["missing", "directory", "fifo", "chardev", "nul", "json"])
def test_hostile_data_file_names(qemu_img, tmp_path, kind):
    """Whatever the header names as data file, opening fails with one clean line (never a hang on a
    FIFO, never json: parsed), and info still works without touching it."""
    from qimg.errors import QimgError
    from qimg.image import open_image
    from qimg.ops.info import image_info
    target = tmp_path / "d.data"
    img = _oracle_image(tmp_path, "x", "1M", writes=None)
    os.rename(str(tmp_path / "x.data"), str(target))
    name = str(target)
    if kind == "directory":
        target.unlink()
        target.mkdir()
    elif kind == "fifo":
        target.unlink()
        os.mkfifo(str(target))
    elif kind == "chardev":
        target.unlink()
        target.symlink_to("/dev/null")
    elif kind in ("nul", "json"):
        name = (str(tmp_path) + "/d\0ata") if kind == "nul" else 'json:{"driver":"null-co"}'
    with open(str(img), "r+b") as f:  # point the extension at `name`
        buf = bytearray(f.read(65536))
        old = str(tmp_path / "x.data").encode()
        i = buf.index(old)
        new = name.encode()
        assert len(new) <= len(old)
        struct.pack_into(">I", buf, i - 4, len(new))
        buf[i:i + len(old)] = new + bytes(len(old) - len(new))
        f.seek(0)
        f.write(bytes(buf))
    if kind == "missing":
        target.unlink()
    with pytest.raises(QimgError) as err:
        open_image(str(img)).close()
    assert str(err.value).startswith("Could not open '%s': " % img) and "\n" not in str(err.value)
    assert image_info(str(img))["format-specific"]["data"]["data-file-raw"] is False


def test_opened_without_data_file(qemu_img, tmp_path):
    """open_data_file=False (info's way): facts work, guest I/O fails with a clean error."""
    from qimg.errors import QimgError
    from qimg.image import open_image
    img = _oracle_image(tmp_path, "u", "1M", writes=["write -P 7 0 64k"])
    with open_image(str(img), open_data_file=False) as dev:
        assert dev.format_specific()["data"]["data-file"] == str(tmp_path / "u.data")
        with pytest.raises(QimgError, match="the external data file is not open"):
            dev.read(0, 512)


# --- crash safety: a kill before any write leaves a consistent image ---------------------------

CRASH_WRITER = r"""
import sys
sys.path.insert(0, sys.argv[2])
from qimg.image import open_image
with open_image(sys.argv[1], read_only=False) as dev:
    dev.write(0, b"\x01" * 4096)                 # in place, at host offset 0
    dev.write(200 * 1024, b"\x02" * 70000)       # new clusters, partial ones
    dev.write_zeroes(512 * 1024, 128 * 1024)     # whole clusters
    dev.discard(1024 * 1024, 128 * 1024)
    dev.write(1536 * 1024, b"\x03" * 300)
"""


@pytest.mark.parametrize("options", [{}, {"data_file_raw": "on"}], ids=["plain", "raw"])
def test_kill_at_every_write(qemu_img, tmp_path, options):
    """SIGKILL before each write the engine makes to the image and its data file: qemu-img check
    finds no corruption (leaks at worst) and every touched cluster holds its old or its new content."""
    import shutil
    import sys
    from crashkill import kill_at_every_write
    from conftest import ROOT
    img = _oracle_image(tmp_path, "k", "2M", options=options,
                        writes=["write -P 0x61 0 640k", "write -P 0x62 1M 256k", "write -P 0x63 1536k 64k"])
    data = tmp_path / "k.data"
    shutil.copyfile(str(img), str(tmp_path / "t.qcow2"))
    shutil.copyfile(str(data), str(tmp_path / "t.data"))
    script = tmp_path / "w.py"
    script.write_text(CRASH_WRITER)
    old = _raw_bytes(img, tmp_path)
    argv = [sys.executable, str(script), str(img), os.path.join(ROOT, "plugins", "module_utils")]

    def prepare():
        shutil.copyfile(str(tmp_path / "t.qcow2"), str(img))
        shutil.copyfile(str(tmp_path / "t.data"), str(data))

    run(argv)
    new = _raw_bytes(img, tmp_path)
    cs = 65536

    def verify(k):
        rc, report = qemu_check(img)
        if rc not in (0, 3) or report.get("corruptions"):
            return "check after kill %d: rc=%d %s" % (k, rc, report)
        got = _raw_bytes(img, tmp_path)
        for c in range(0, len(new), cs):
            if got[c:c + cs] not in (old[c:c + cs], new[c:c + cs]):
                return "after kill %d: cluster at %#x is neither old nor new" % (k, c)
        return None

    trials, failures = kill_at_every_write(prepare, argv, [img, data], verify, cwd=str(tmp_path))
    assert trials > 3 and failures == [], failures


def _raw_bytes(img, tmp_path):
    out = tmp_path / "dump.raw"
    run(["qemu-img", "convert", "-U", "-O", "raw", str(img), str(out)])
    try:
        return out.read_bytes()
    finally:
        out.unlink()


def test_compare_and_measure(qemu_img, tmp_path, as_qemu_img):
    img = _oracle_image(tmp_path, "cm", "6M")
    run([qemu_img, "convert", "-O", "raw", str(img), str(tmp_path / "cm.raw")])
    for args in (["compare", "cm.qcow2", "cm.raw"], ["compare", "-s", "cm.raw", "cm.qcow2"],
                 ["measure", "-O", "qcow2", "-o", "data_file=m.data", "cm.qcow2"],
                 ["measure", "-O", "qcow2", "-o", "data_file=m.data,data_file_raw=on", "--size", "1G"],
                 ["measure", "--output=json", "-O", "raw", "cm.qcow2"]):
        assert_same_as_qemu_img(qemu_img, as_qemu_img, args, str(tmp_path))
    assert not (tmp_path / "m.data").exists()


def test_convert_into_existing_data_file_image(qemu_img, tmp_path):
    """convert -n writes through the driver into an image qemu-img made with a (raw) data file."""
    src = tmp_path / "s.raw"
    with open(str(src), "wb") as f:
        f.write(b"\x21" * 100000 + bytes(200000) + b"\x22" * 300 + bytes(1048576 - 300300))
    for raw in ("off", "on"):
        img = _oracle_image(tmp_path, "n" + raw, "1M", options={"data_file_raw": raw},
                            writes=["write -P 0x99 0 1M"])
        qimg("convert", "-n", "-f", "raw", "-O", "qcow2", str(src), str(img))
        assert qemu_raw_digest(img, tmp_path) == file_digest(src)
        assert_check_clean(img)
        if raw == "on":
            assert file_digest(tmp_path / ("n%s.data" % raw)) == file_digest(src)


@pytest.mark.parametrize("options", ["extended_l2=on,cluster_size=16k", "extended_l2=on",
                                     "extended_l2=on,data_file=t.data,cluster_size=32k"])
def test_convert_extended_l2_subclusters(qemu_img, tmp_path, options):
    """Extended-L2 convert targets (with a data file or not) allocate just the subclusters the data
    touches, as qemu-img does: the same map."""
    src = tmp_path / "s.qcow2"
    qemu_img_create(src, "qcow2", "5M")
    qemu_io(src, "write -P 0x12 0 300k", "write -P 1 1M 1000", "write -P 2 1100k 5k", "write -P 3 2M 64k",
            "write -P 4 3000k 3", "write -z 3M 512k", "write -P 5 3300k 70k")
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    ours.mkdir()
    theirs.mkdir()
    args = ["convert", "-O", "qcow2", "-o", options, str(src), "t.qcow2"]
    run([qemu_img] + args, cwd=str(theirs))
    qimg(*args, cwd=str(ours))

    def host_free(entries):
        return [dict((k, v) for k, v in e.items() if k != "offset" or "data_file" in options) for e in entries]
    assert (host_free(_json_in(ours, "qemu-img", "map", "--output=json", "t.qcow2"))
            == host_free(_json_in(theirs, "qemu-img", "map", "--output=json", "t.qcow2")))
    assert _raw_digest_in(ours, "t.qcow2") == qemu_raw_digest(src, tmp_path)
    assert run(["qemu-img", "check", "t.qcow2"], cwd=str(ours), check=False).returncode == 0
