# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""CLI, create and header behaviour that QEMU's iotests check, against the qemu-img oracle.

Each block names the iotest it comes from (tests/qemu-iotests/NNN in QEMU 7.2).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import struct

import pytest

from conftest import assert_same_as_qemu_img as same
from conftest import oracle_in, qimg, run

FEATURE_TABLE = 0x6803F857


def _set_features(path, incompat=None, autoclear=None):
    with open(path, "r+b") as f:
        if incompat is not None:
            f.seek(72)
            f.write(struct.pack(">Q", incompat))
        if autoclear is not None:
            f.seek(88)
            f.write(struct.pack(">Q", autoclear))


def _set_feature_table(path, data):
    """Replace the header extensions of a fresh qemu-img qcow2 (only its feature table) by one table."""
    with open(path, "r+b") as f:
        f.seek(112)
        if data is None:
            f.write(bytes(8))
        else:
            f.write(struct.pack(">II", FEATURE_TABLE, len(data)) + data + bytes(-len(data) % 8) + bytes(8))


def _entry(kind, bit, name, pad=True):
    raw = bytes([kind, bit]) + name.encode()
    return raw + bytes(48 - len(raw)) if pad else raw


# ---------------------------------------------------------------------------------------------
# 036: unknown incompatible features are named from the image's feature table, in its order;
# an unknown autoclear bit is cleared by the first read-write open

@pytest.mark.parametrize("bits, table", [
    ([63], None),
    ([63], _entry(0, 63, "Test feature", pad=False)),           # a short, unpadded entry
    ([61, 62, 63], None),
    ([61, 62, 63], _entry(0, 63, "Test feature", pad=False)),
    ([61, 62, 63], _entry(0, 61, "Test feature", pad=False)),
    ([61, 62, 63], _entry(0, 61, "test1") + _entry(0, 62, "test2")),
    ([61, 62, 63], _entry(0, 61, "test1") + _entry(0, 62, "test2") + _entry(0, 63, "test3")),
    ([61, 62, 63], _entry(1, 61, "test1") + _entry(0, 62, "test2") + _entry(2, 63, "test3")
     + _entry(0, 60, "test4")),
    ([62, 63], _entry(0, 63, "b") + bytes(48) + _entry(0, 62, "after an empty entry")),
])
def test_036_unsupported_feature_names(qemu_img, as_qemu_img, tmp_path, bits, table):
    img = str(tmp_path / "t.qcow2")
    run([qemu_img, "create", "-q", "-f", "qcow2", img, "64M"])
    _set_features(img, incompat=sum(1 << b for b in bits))
    _set_feature_table(img, table)
    got = same(qemu_img, as_qemu_img, ["info", "t.qcow2"], str(tmp_path))
    assert "Unsupported qcow2 feature(s)" in got.stderr


@pytest.mark.parametrize("command", [["check", "-r", "all", "t.qcow2"], ["check", "-r", "leaks", "t.qcow2"]])
def test_036_unknown_autoclear_bit_cleared(qemu_img, as_qemu_img, tmp_path, command):
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    theirs.mkdir()
    run([qemu_img, "create", "-q", "-f", "qcow2", str(theirs / "t.qcow2"), "64M"])
    _set_features(str(theirs / "t.qcow2"), autoclear=1 << 63)
    shutil.copytree(str(theirs), str(ours))
    want = run([qemu_img] + command, cwd=str(theirs), check=False)
    got = as_qemu_img(*command, cwd=str(ours))
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    with open(str(ours / "t.qcow2"), "rb") as f, open(str(theirs / "t.qcow2"), "rb") as g:
        assert f.read(512) == g.read(512)
        f.seek(88)
        assert struct.unpack(">Q", f.read(8))[0] == 0


# ---------------------------------------------------------------------------------------------
# 049: the "Formatting" line lists options in qcow2_create_opts' order (encryption first); an
# empty backing file name is refused

@pytest.mark.parametrize("args", [
    ["-f", "qcow2", "-o", "encryption=off", "t.qcow2", "64M"],
    ["-f", "qcow2", "-o", "lazy_refcounts=on,encryption=off,cluster_size=4k", "t.qcow2", "64M"],
    ["-f", "qcow2", "-o", "encryption=off,compat=0.10", "t.qcow2", "1M"],
    ["-f", "qcow2", "-b", "", "t.qcow2", "1M"],
    ["-f", "qcow2", "-b", "", "-F", "qcow2", "t.qcow2", "1M"],
    ["-f", "qcow2", "-o", "backing_file=", "t.qcow2", "1M"],
    ["-q", "-f", "qcow2", "-b", "", "t.qcow2", "1M"],
])
def test_049_create_option_order_and_empty_backing(qemu_img, as_qemu_img, tmp_path, args):
    theirs, ours = tmp_path / "theirs", tmp_path / "ours"
    theirs.mkdir()
    ours.mkdir()
    want = run([qemu_img, "create"] + args, cwd=str(theirs), check=False)
    got = as_qemu_img("create", *args, cwd=str(ours))
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    assert os.path.exists(str(ours / "t.qcow2")) == os.path.exists(str(theirs / "t.qcow2"))
    if want.returncode == 0:
        run([qemu_img, "check", str(ours / "t.qcow2")])


# ---------------------------------------------------------------------------------------------
# 054: a header size beyond what an L1 index can address is "Image is too big", checked before
# "L1 table is too small" (qcow2_do_open()'s order)

@pytest.mark.parametrize("size", [1024 ** 6, 1 << 62, (1 << 31) * (1 << 29) + 1])
@pytest.mark.parametrize("command", [["check"], ["info"], ["map", "--output=json"]])
def test_054_image_too_big(qemu_img, as_qemu_img, tmp_path, size, command):
    img = str(tmp_path / "t.qcow2")
    run([qemu_img, "create", "-q", "-f", "qcow2", img, "4G"])
    with open(img, "r+b") as f:
        f.seek(24)
        f.write(struct.pack(">Q", size))
    got = same(qemu_img, as_qemu_img, command + ["t.qcow2"], str(tmp_path))
    assert got.returncode != 0


def test_054_create_too_large(qemu_img, as_qemu_img, tmp_path):
    same(qemu_img, as_qemu_img, ["create", "-f", "qcow2", "t.qcow2", "%dT" % (1024 * 1024)], str(tmp_path))


# ---------------------------------------------------------------------------------------------
# 111: without -F, create opens the backing file first: a missing one is reported (with qemu's
# hint) before the missing backing format

@pytest.mark.parametrize("args", [
    ["-f", "qcow2", "-b", "t.qcow2.inexistent", "t.qcow2"],
    ["-f", "qcow2", "-b", "t.qcow2.inexistent", "t.qcow2", "1M"],
    ["-f", "qcow2", "-u", "-b", "t.qcow2.inexistent", "t.qcow2", "1M"],
    ["-f", "qcow2", "-b", "base.qcow2", "t.qcow2"],
    ["-f", "qcow2", "-b", "base.raw", "t.qcow2", "1M"],
    ["-f", "qcow2", "-b", "top.qcow2", "t.qcow2"],        # the backing's own backing is missing
    ["-f", "qcow2", "-b", "top.qcow2", "-F", "qcow2", "t.qcow2"],
])
def test_111_missing_backing_reported_first(qemu_img, as_qemu_img, tmp_path, args):
    q, _io = oracle_in(str(tmp_path), qemu_img)
    q("create", "-q", "-f", "qcow2", "base.qcow2", "1M")
    q("create", "-q", "-f", "raw", "base.raw", "1M")
    q("create", "-q", "-f", "qcow2", "-u", "-b", "gone.qcow2", "-F", "qcow2", "top.qcow2", "1M")
    got = same(qemu_img, as_qemu_img, ["create"] + args, str(tmp_path))
    assert got.returncode == 1
    assert not os.path.exists(str(tmp_path / "t.qcow2"))


# ---------------------------------------------------------------------------------------------
# 122: a compressed target is written cluster by cluster; all-zero clusters stay unallocated
# whatever -S says (the map shows the target's cluster granularity)

@pytest.mark.parametrize("sparse", ["4k", "8k", "0", "512"])
@pytest.mark.parametrize("cluster", ["1k", "64k"])
def test_122_compressed_sparse_granularity(qemu_img, qemu_io, tmp_path, sparse, cluster):
    d = str(tmp_path)
    q, io = oracle_in(d, qemu_img, qemu_io)
    q("create", "-q", "-f", "qcow2", "-o", "cluster_size=1k", "src.qcow2", "64M")
    io("qcow2", "src.qcow2", "write -P 0 0 64k", "write 0 1k", "write 8k 1k", "write 17k 1k",
       "write -P 0 65k 1k", "write -P 7 130k 3k")
    args = ["convert", "-O", "qcow2", "-c", "-o", "cluster_size=" + cluster, "-S", sparse, "src.qcow2"]
    run([qemu_img] + args + ["theirs.qcow2"], cwd=d)
    qimg(*(args + ["ours.qcow2"]), cwd=d)
    maps = [run([qemu_img, "map", "--output=json", name], cwd=d).stdout for name in ("theirs.qcow2", "ours.qcow2")]
    assert maps[0] == maps[1]
    run([qemu_img, "compare", "src.qcow2", "ours.qcow2"], cwd=d)
    run([qemu_img, "check", "ours.qcow2"], cwd=d)


# ---------------------------------------------------------------------------------------------
# 126: "file:" names the local file protocol on the command line; colons in file names

def _both(qemu_img, as_qemu_img, tmp_path, setup, commands):
    """Run the same command sequence with qemu-img and with ours, each in its own directory."""
    outs = []
    for name, runner in (("theirs", lambda *a, **kw: run([qemu_img] + list(a), check=False, **kw)),
                         ("ours", as_qemu_img)):
        d = tmp_path / name
        d.mkdir()
        setup(str(d))
        res = []
        for cmd in commands:
            proc = runner(*cmd, cwd=str(d))
            # (a new image's allocated size is not the point here: qemu-img's create allocates more)
            stdout = "".join(line for line in proc.stdout.replace(str(d), "DIR").splitlines(True)
                             if "disk size:" not in line and '"actual-size"' not in line)
            res.append((stdout, proc.stderr.replace(str(d), "DIR"), proc.returncode))
        res.append(sorted(os.listdir(str(d))))
        outs.append(res)
    assert outs[0] == outs[1]
    return outs[1]


@pytest.mark.parametrize("commands", [
    [["create", "-f", "qcow2", "file:a:b.qcow2", "1M"], ["info", "a:b.qcow2"]],
    [["create", "-f", "qcow2", "./a:b.qcow2", "1M"], ["info", "file:a:b.qcow2"], ["check", "file:a:b.qcow2"]],
    [["create", "-f", "qcow2", "file:dir/x:y.qcow2", "1M"], ["info", "--output=json", "file:dir/x:y.qcow2"]],
    [["create", "-f", "qcow2", "base.qcow2", "1M"],
     ["create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "file:image:top.qcow2"],
     ["info", "file:image:top.qcow2"], ["map", "file:image:top.qcow2"],
     ["convert", "-O", "raw", "file:image:top.qcow2", "file:out:1.raw"],
     ["compare", "file:image:top.qcow2", "file:out:1.raw"],
     ["measure", "-O", "qcow2", "file:image:top.qcow2"]],
    [["info", "file:missing:x.qcow2"]],
    [["info", "a:b.qcow2"]],
    [["create", "-f", "qcow2", "a:b.qcow2", "1M"]],
    [["create", "-f", "qcow2", "./a:b.qcow2", "1M"], ["convert", "-O", "raw", "./a:b.qcow2", "c:d.raw"],
     ["convert", "-O", "raw", "a:b.qcow2", "x.raw"], ["map", "a:b.qcow2"], ["check", "a:b.qcow2"]],
])
def test_126_file_protocol_prefix(qemu_img, as_qemu_img, tmp_path, commands):
    res = _both(qemu_img, as_qemu_img, tmp_path, lambda d: os.mkdir(os.path.join(d, "dir")), commands)
    assert not any(name.startswith("file:") for name in res[-1])


# ---------------------------------------------------------------------------------------------
# 214: size-typed -o values are read like qemu's parse_option_size() (qemu_strtosz: hex,
# fractions, suffixes, ERANGE)

@pytest.mark.parametrize("option", [
    "cluster_size=0x10000", "cluster_size=64k", "cluster_size=1.5k", "cluster_size=0X200",
    "cluster_size=99999999999999999999", "cluster_size=-1", "cluster_size=", "cluster_size=4k5",
    "cluster_size= 4k", "cluster_size=2M", "cluster_size=1e3", "size=0x100000",
    "size=16E",
])
def test_214_size_options(qemu_img, as_qemu_img, tmp_path, option):
    res = _both(qemu_img, as_qemu_img, tmp_path, lambda d: None,
                [["create", "-f", "qcow2", "-o", option, "t.qcow2"] + ([] if option.startswith("size") else ["1M"]),
                 ["measure", "-O", "qcow2", "-o", option, "--size", "1M"]])
    if res[0][2] == 0:
        run([qemu_img, "check", str(tmp_path / "ours" / "t.qcow2")])


def test_214_convert_hex_cluster_size(qemu_img, qemu_io, tmp_path):
    d = str(tmp_path)
    q, io = oracle_in(d, qemu_img, qemu_io)
    q("create", "-q", "-f", "raw", "src.raw", "2M")
    io("raw", "src.raw", "write -P 0xbb 0 229376")
    for name, tool in (("theirs.qcow2", [qemu_img]), ("ours.qcow2", None)):
        args = ["convert", "-c", "-O", "qcow2", "-o", "cluster_size=0x10000", "src.raw", name]
        if tool:
            run(tool + args, cwd=d)
        else:
            qimg(*args, cwd=d)
    maps = [run([qemu_img, "map", "--output=json", n], cwd=d).stdout for n in ("theirs.qcow2", "ours.qcow2")]
    assert maps[0] == maps[1]
    assert '"compressed-clusters": 4' in run([qemu_img, "check", "--output=json", "ours.qcow2"], cwd=d).stdout


# ---------------------------------------------------------------------------------------------
# 287: the compression type is validated (against its incompatible bit) before anything else
# qemu checks; zstd comes from compression.zstd / backports.zstd first, then zstandard / pyzstd

@pytest.mark.parametrize("ctype, incompat, poke", [
    ("zstd", 0, None), ("zlib", 1 << 3, None), ("zlib", 0, 5), ("zlib", 1 << 3 | 1 << 60, None),
    ("zstd", 1 << 60, None), ("zlib", 1 << 60, 7),
])
def test_287_compression_type_checked(qemu_img, as_qemu_img, tmp_path, ctype, incompat, poke):
    img = str(tmp_path / "t.qcow2")
    run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "compression_type=" + ctype, img, "1M"])
    _set_features(img, incompat=incompat)
    if poke is not None:
        with open(img, "r+b") as f:
            f.seek(104)
            f.write(bytes([poke]))
    same(qemu_img, as_qemu_img, ["info", "t.qcow2"], str(tmp_path))


def _zstd_backends():
    out = []
    for name in ("compression.zstd", "backports.zstd", "zstandard", "pyzstd"):
        try:
            out.append(__import__(name, globals(), None, ["ZstdDecompressor"], 0))
        except ImportError:
            continue
    return out


def test_287_zstd_backend_order():
    from qimg.formats.qcow2 import compress
    found = _zstd_backends()
    compress._ZSTD[:] = []
    try:
        assert compress._zstd_module() is (found[0] if found else None)
    finally:
        compress._ZSTD[:] = []


@pytest.mark.parametrize("backend", [m.__name__ for m in _zstd_backends()] or ["none"])
def test_287_zstd_each_backend(qemu_img, qemu_io, tmp_path, monkeypatch, backend):
    if backend == "none":
        pytest.skip("no zstd module importable")
    from qimg.formats.qcow2 import compress
    from qimg.ops.convert import convert
    mod = [m for m in _zstd_backends() if m.__name__ == backend][0]
    monkeypatch.setattr(compress, "_ZSTD", [mod])
    d = str(tmp_path)
    q, io = oracle_in(d, qemu_img, qemu_io)
    q("create", "-q", "-f", "raw", "src.raw", "4M")
    io("raw", "src.raw", "write -P 0x5a 0 1M", "write -P 0 1M 64k", "write -P 0x17 2M 300k")
    q("convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", "src.raw", "theirs.qcow2")
    convert([os.path.join(d, "theirs.qcow2")], os.path.join(d, "read.raw"), out_fmt="raw")    # decompress
    run([qemu_img, "compare", "src.raw", "read.raw"], cwd=d)
    convert([os.path.join(d, "src.raw")], os.path.join(d, "ours.qcow2"), out_fmt="qcow2", compress=True,
            options={"compression_type": "zstd"})
    run([qemu_img, "compare", "src.raw", "ours.qcow2"], cwd=d)
    assert '"compressed-clusters": 0' not in run([qemu_img, "check", "--output=json", "ours.qcow2"], cwd=d).stdout
