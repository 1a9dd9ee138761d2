# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Persistent dirty bitmaps against qemu-img: `bitmap` actions, guest writes into bitmaps,
`convert --bitmaps`, `info`, `measure` and `resize` with bitmaps.

The bitmap contents are compared through QEMU itself (qemu-nbd exports a bitmap, and qemu-img
map with x-dirty-bitmap shows its dirty ranges), and through an independent reader of the
on-disk structures below.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import itertools
import json
import os
import shutil
import struct

import pytest

from conftest import qimg, run
from helpers import assert_check_clean, qemu_img_create, qemu_io

MiB = 1024 * 1024
_SOCKETS = itertools.count()


@pytest.fixture(scope="module")
def qemu_nbd():
    path = shutil.which("qemu-nbd")
    if path is None:
        pytest.skip("qemu-nbd not installed")
    return path


# --------------------------------------------------------------------------- independent reader
def raw_bitmaps(path):
    """{name: (flags, granularity, [(start, end) dirty guest byte ranges])} read from the file
    without the engine (docs/interop/qcow2.txt), or {} without a consistent extension."""
    with open(str(path), "rb") as f:
        head = f.read(1 << 21)
        cluster_bits = struct.unpack(">I", head[20:24])[0]
        cs = 1 << cluster_bits
        size = struct.unpack(">Q", head[24:32])[0]
        autoclear = struct.unpack(">Q", head[88:96])[0]
        pos = struct.unpack(">I", head[100:104])[0]
        ext = None
        while True:
            kind, length = struct.unpack(">II", head[pos:pos + 8])
            if kind == 0:
                break
            if kind == 0x23852875:
                ext = struct.unpack(">IIQQ", head[pos + 8:pos + 32])
            pos += 8 + (length + 7) // 8 * 8
        if ext is None or not autoclear & 1:
            return {}
        nb, _res, dsize, doff = ext
        f.seek(doff)
        directory = f.read(dsize)
        out = {}
        p = 0
        for _ in range(nb):
            toff, tsize, flags, _typ, gbits, nsize, extra = struct.unpack(">QIIBBHI", directory[p:p + 24])
            name = directory[p + 24 + extra:p + 24 + extra + nsize].decode()
            p = (p + 24 + extra + nsize + 7) & ~7
            f.seek(toff)
            table = struct.unpack(">%dQ" % tsize, f.read(8 * tsize))
            bits = -(-size // (1 << gbits))
            ranges = []
            if not flags & 1:
                for i, e in enumerate(table):
                    off = e & 0x00FFFFFFFFFFFE00
                    if off:
                        f.seek(off)
                        data = f.read(cs)
                    elif e & 1:
                        data = b"\xff" * cs
                    else:
                        continue
                    value = int.from_bytes(data, "little")
                    for j in range(min(cs * 8, bits - i * cs * 8)):
                        if value >> j & 1:
                            start = (i * cs * 8 + j) << gbits
                            end = min(size, start + (1 << gbits))
                            if ranges and ranges[-1][1] == start:
                                ranges[-1] = (ranges[-1][0], end)
                            else:
                                ranges.append((start, end))
            out[name] = (flags, 1 << gbits, ranges)
        return out


def qemu_dirty(qemu_nbd, path, name, tmp):
    """The dirty ranges of bitmap name as QEMU sees them: qemu-nbd exports it, qemu-img map reads it."""
    # a fresh socket name each time: a server that is still exiting removes its own socket file
    sock = os.path.join(str(tmp), "nbd-%d-%d.sock" % (os.getpid(), next(_SOCKETS)))
    run([qemu_nbd, "-r", "-f", "qcow2", "-B", name, "-k", sock, "--fork", str(path)])
    proc = run(["qemu-img", "map", "--output=json", "--image-opts",
                "driver=nbd,server.type=unix,server.path=%s,x-dirty-bitmap=qemu:dirty-bitmap:%s" % (sock, name)])
    out = []
    for e in json.loads(proc.stdout):
        if not e["data"]:
            if out and out[-1][1] == e["start"]:
                out[-1] = (out[-1][0], e["start"] + e["length"])
            else:
                out.append((e["start"], e["start"] + e["length"]))
    return out


def info_bitmaps(path):
    info = json.loads(run(["qemu-img", "info", "--output=json", "-U", str(path)]).stdout)
    return info.get("format-specific", {}).get("data", {}).get("bitmaps")


def twins(tmp_path, size="10M", options=None):
    a, b = tmp_path / "q.qcow2", tmp_path / "o.qcow2"
    qemu_img_create(a, "qcow2", size, options)
    qemu_img_create(b, "qcow2", size, options)
    return a, b


def both(a, b, *args):
    """qemu-img on a, bin/qimg on b with the same arguments ("IMG" stands for the image)."""
    want = run(["qemu-img"] + [str(a) if x == "IMG" else x for x in args], check=False)
    got = qimg(*[str(b) if x == "IMG" else x for x in args], check=False)
    return want, got


def same_outcome(want, got, a, b):
    norm = (lambda text, p: text.replace(str(p), "IMG").replace("qimg:", "qemu-img:"))
    assert (got.returncode, norm(got.stderr, b), got.stdout) == (want.returncode, norm(want.stderr, a), want.stdout)


# --------------------------------------------------------------------------- the bitmap command
SEQUENCE = [
    ["--add", "IMG", "b0"],
    ["--add", "IMG", "b0"],                         # exists
    ["--add", "-g", "1000", "IMG", "x"],
    ["--add", "-g", "256", "IMG", "x"],
    ["--add", "-g", "4G", "IMG", "x"],
    ["--add", "IMG", ""],
    ["--remove", "IMG", "nope"],
    ["--clear", "IMG", "nope"],
    ["--enable", "IMG", "nope"],
    ["--merge", "nope", "IMG", "b0"],
    ["--add", "-g", "512", "IMG", "x", "--merge", "zz"],   # the add stays
    ["-g", "512", "--remove", "IMG", "x"],
    ["-F", "raw", "--add", "IMG", "y"],
    ["--add", "IMG"],
    ["IMG", "y"],
    ["--add", "--merge", "b0", "IMG", "b0"],
    ["--enable", "--enable", "IMG", "b0"],
    ["--disable", "IMG", "b0"],
    ["--add", "--disable", "-g", "128k", "IMG", "b5"],
    ["--merge", "b0", "IMG", "b5"],
    ["--clear", "IMG", "b5"],
    ["--remove", "--add", "IMG", "b0"],
    ["--add", "-g", "2G", "IMG", "big"],
    ["--add", "--granularity=4k", "IMG", "b4k"],
    ["--remove", "IMG", "x"],
    ["--add", "-g", "0", "IMG", "dflt"],
]


def test_bitmap_command_as_qemu_img(tmp_path):
    a, b = twins(tmp_path, "10M", {"cluster_size": "16k"})
    for args in SEQUENCE:
        want, got = both(a, b, "bitmap", *args)
        same_outcome(want, got, a, b)
        assert info_bitmaps(a) == info_bitmaps(b), args
    assert_check_clean(b)
    assert raw_bitmaps(a).keys() == raw_bitmaps(b).keys()


def test_bitmap_refusals_non_qcow2(tmp_path):
    raw = tmp_path / "r.raw"
    qemu_img_create(raw, "raw", "1M")
    v2 = tmp_path / "v2.qcow2"
    qemu_img_create(v2, "qcow2", "1M", {"compat": "0.10"})
    for path, args, text in [(raw, ["--add", "-f", "raw"], "Can't store persistent bitmaps to "),
                             (raw, ["--remove", "-f", "raw"], "Dirty bitmap 'b' not found"),
                             (v2, ["--add"], "Cannot store dirty bitmaps in qcow2 v2 files")]:
        got = qimg("bitmap", *(args + [str(path), "b"]), check=False)
        want = run(["qemu-img", "bitmap"] + args + [str(path), "b"], check=False)
        assert got.returncode == want.returncode == 1
        assert text in got.stderr and text in want.stderr


def test_image_opts_and_source_file(tmp_path, qemu_nbd):
    """The iotest's steps: merge from another image (-b/-F), remove through --image-opts."""
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    qemu_img_create(base, "qcow2", "10M")
    run(["qemu-img", "bitmap", "--add", str(base), "b0"])
    qemu_io(base, "write 3M 1M")
    qemu_img_create(top, "qcow2", "10M")
    qimg("bitmap", "--add", "--disable", "-f", "qcow2", str(top), "b0")
    qimg("bitmap", "--add", "--merge", "b0", "-b", str(base), "-F", "qcow2", "-f", "qcow2", str(top), "tmp")
    qimg("bitmap", "--merge", "tmp", "-f", "qcow2", str(top), "b0")
    qimg("bitmap", "--remove", "--image-opts", "driver=qcow2,file.driver=file,file.filename=%s" % top, "tmp")
    assert [x["name"] for x in info_bitmaps(top)] == ["b0"]
    assert qemu_dirty(qemu_nbd, top, "b0", tmp_path) == [(3 * MiB, 4 * MiB)]
    assert_check_clean(top)


# --------------------------------------------------------------------------- guest writes
WRITES = ["write 100k 3k", "write -z 5M 1M", "discard 8M 64k", "write 9M 1536k", "write -z 130k 1k",
          "write 0 512"]


def _n(text):
    """qemu-io's sizes: 100k, 5M or plain bytes."""
    if text[-1] in "kM":
        return int(text[:-1]) * (1024 if text[-1] == "k" else MiB)
    return int(text)


def _engine_writes(path, commands):
    """qemu-io's write/write -z/discard commands through the engine."""
    from qimg.image import open_image
    n = _n
    with open_image(str(path), read_only=False) as dev:
        for c in commands:
            parts = c.split()
            if parts[0] == "discard":
                dev.discard(n(parts[1]), n(parts[2]))
            elif parts[1] == "-z":
                dev.write_zeroes(n(parts[2]), n(parts[3]))
            else:
                dev.write(n(parts[1]), b"\x5a" * n(parts[2]))


@pytest.mark.parametrize("options", [{"cluster_size": "64k"}, {"cluster_size": "4k"},
                                     {"cluster_size": "128k", "extended_l2": "on"}, {"cluster_size": "2M"}],
                         ids=["64k", "4k", "el2", "2M"])
def test_guest_writes_go_into_bitmaps(tmp_path, qemu_nbd, options):
    """Our writes set the bits QEMU's would, in enabled bitmaps only; in-use stays only on the
    bitmaps that were inconsistent already; qemu-img check is clean."""
    a, b = twins(tmp_path, "12M", options)
    for p in (a, b):
        run(["qemu-img", "bitmap", "--add", str(p), "b0"])
        run(["qemu-img", "bitmap", "--add", "-g", "1M", "--disable", str(p), "off"])
        run(["qemu-img", "bitmap", "--add", "-g", "512", str(p), "fine"])
        qemu_io(p, "write 64k 4k")
    qemu_io(a, *WRITES)
    _engine_writes(b, WRITES)
    assert info_bitmaps(a) == info_bitmaps(b)
    assert_check_clean(b)
    for name in ("b0", "off", "fine"):
        assert qemu_dirty(qemu_nbd, b, name, tmp_path) == qemu_dirty(qemu_nbd, a, name, tmp_path), name
        assert raw_bitmaps(b)[name][2] == raw_bitmaps(a)[name][2]


def test_writes_leave_inconsistent_bitmaps_alone(tmp_path):
    a, b = twins(tmp_path, "4M")
    for p in (a, b):
        run(["qemu-img", "bitmap", "--add", str(p), "old"])
        run(["qemu-io", "-c", "abort", str(p)], check=False)
        run(["qemu-img", "bitmap", "--add", str(p), "new"])
    qemu_io(a, "write 1M 64k")
    _engine_writes(b, ["write 1M 64k"])
    assert info_bitmaps(a) == info_bitmaps(b)
    assert [x["flags"] for x in info_bitmaps(b)] == [["in-use", "auto"], ["auto"]]
    assert_check_clean(b)
    assert raw_bitmaps(b)["new"][2] == [(1 * MiB, 1 * MiB + 65536)]


def test_commit_and_rebase_write_into_bitmaps(tmp_path, qemu_nbd):
    """Commands that write guest data (commit into a base, rebase of a top) keep the bitmaps
    of the image they write as QEMU does."""
    for tool in ("qemu-img", "ours"):
        d = tmp_path / tool
        d.mkdir()
        base, top = d / "base.qcow2", d / "top.qcow2"
        qemu_img_create(base, "qcow2", "8M")
        qemu_io(base, "write -P 1 0 2M")
        run(["qemu-img", "bitmap", "--add", str(base), "bb"])
        qemu_img_create(top, "qcow2", "8M", backing=str(base), backing_fmt="qcow2")
        qemu_io(top, "write -P 2 1M 1M", "write -P 3 5M 64k")
        cmd = ["commit", "-f", "qcow2", str(top)]
        if tool == "qemu-img":
            run(["qemu-img"] + cmd)
        else:
            qimg(*cmd)
    a, b = tmp_path / "qemu-img" / "base.qcow2", tmp_path / "ours" / "base.qcow2"
    assert info_bitmaps(a) == info_bitmaps(b)
    assert qemu_dirty(qemu_nbd, b, "bb", tmp_path) == qemu_dirty(qemu_nbd, a, "bb", tmp_path)
    assert_check_clean(b)


# --------------------------------------------------------------------------- qemu-img reads ours
def test_qemu_img_merges_and_copies_our_bitmaps(tmp_path, qemu_nbd):
    p = tmp_path / "ours.qcow2"
    qemu_img_create(p, "qcow2", "16M")
    qimg("bitmap", "--add", "-g", "128k", str(p), "a")
    _engine_writes(p, ["write 1M 100k", "write 7M 1M"])
    qimg("bitmap", "--add", "--disable", str(p), "b")
    _engine_writes(p, ["write 12M 64k"])
    qimg("bitmap", "--enable", str(p), "b")
    run(["qemu-img", "bitmap", "--merge", "a", str(p), "b"])
    assert qemu_dirty(qemu_nbd, p, "b", tmp_path) == [(1 * MiB, 1 * MiB + 128 * 1024), (7 * MiB, 8 * MiB),
                                                      (12 * MiB, 12 * MiB + 128 * 1024)]
    out = tmp_path / "copy.qcow2"
    run(["qemu-img", "convert", "--bitmaps", "-O", "qcow2", str(p), str(out)])
    assert info_bitmaps(out) == info_bitmaps(p)
    for name in ("a", "b"):
        assert qemu_dirty(qemu_nbd, out, name, tmp_path) == qemu_dirty(qemu_nbd, p, name, tmp_path)
    run(["qemu-img", "check", str(p)])


def test_we_merge_bitmaps_qemu_wrote(tmp_path, qemu_nbd):
    a, b = twins(tmp_path, "16M", {"cluster_size": "32k"})
    src = tmp_path / "src.qcow2"
    qemu_img_create(src, "qcow2", "16M")
    run(["qemu-img", "bitmap", "--add", "-g", "4k", str(src), "s"])
    qemu_io(src, "write 5k 3k", "write 2M 1M", "write 15M 512")
    for p in (a, b):
        run(["qemu-img", "bitmap", "--add", "-g", "64k", str(p), "d"])
        qemu_io(p, "write 3M 64k")
    want, got = both(a, b, "bitmap", "--merge", "s", "-b", str(src), "-F", "qcow2", "IMG", "d")
    same_outcome(want, got, a, b)
    want, got = both(a, b, "bitmap", "--add", "-g", "512", "--merge", "s", "-b", str(src), "IMG", "fine")
    same_outcome(want, got, a, b)
    for name in ("d", "fine"):
        assert qemu_dirty(qemu_nbd, b, name, tmp_path) == qemu_dirty(qemu_nbd, a, name, tmp_path)
    assert_check_clean(b)


def test_merge_size_mismatch(tmp_path):
    a, b = twins(tmp_path, "16M")
    src = tmp_path / "small.qcow2"
    qemu_img_create(src, "qcow2", "8M")
    run(["qemu-img", "bitmap", "--add", str(src), "s"])
    for p in (a, b):
        run(["qemu-img", "bitmap", "--add", str(p), "d"])
    want, got = both(a, b, "bitmap", "--merge", "s", "-b", str(src), "IMG", "d")
    same_outcome(want, got, a, b)


# --------------------------------------------------------------------------- convert --bitmaps
def _orig(path, base=None):
    """The iotest's image: active and inactive bitmaps with bits set."""
    qemu_img_create(path, "qcow2", "10M")
    qemu_io(path, "write 0 1M")
    run(["qemu-img", "bitmap", "--add", "-g", "512k", str(path), "b1"])
    run(["qemu-img", "bitmap", "--add", "--disable", str(path), "b2"])
    qemu_io(path, "write 3M 1M")
    run(["qemu-img", "bitmap", "--clear", str(path), "b1"])
    qemu_io(path, "write 1M 1M")
    run(["qemu-img", "bitmap", "--disable", str(path), "b1"])
    run(["qemu-img", "bitmap", "--enable", str(path), "b2"])
    qemu_io(path, "write 2M 1M")


@pytest.mark.parametrize("options", [None, "cluster_size=4k", "cluster_size=1M"])
def test_convert_bitmaps_as_qemu_img(tmp_path, qemu_nbd, options):
    src = tmp_path / "orig.qcow2"
    _orig(src)
    a, b = tmp_path / "q.qcow2", tmp_path / "o.qcow2"
    extra = ["-o", options] if options else []
    run(["qemu-img", "convert", "--bitmaps", "-O", "qcow2"] + extra + [str(src), str(a)])
    qimg("convert", "--bitmaps", "-O", "qcow2", *(extra + [str(src), str(b)]))
    assert info_bitmaps(a) == info_bitmaps(b)
    for name in ("b1", "b2"):
        assert qemu_dirty(qemu_nbd, b, name, tmp_path) == qemu_dirty(qemu_nbd, a, name, tmp_path)
    assert_check_clean(b)


def test_convert_bitmaps_into_existing_target(tmp_path, qemu_nbd):
    src = tmp_path / "orig.qcow2"
    _orig(src)
    a, b = twins(tmp_path, "10M")
    for p in (a, b):
        run(["qemu-img", "bitmap", "--add", str(p), "mine"])
    run(["qemu-img", "convert", "-n", "--bitmaps", "-O", "qcow2", str(src), str(a)])
    qimg("convert", "-n", "--bitmaps", "-O", "qcow2", str(src), str(b))
    assert info_bitmaps(a) == info_bitmaps(b)
    for name in ("mine", "b1", "b2"):
        assert qemu_dirty(qemu_nbd, b, name, tmp_path) == qemu_dirty(qemu_nbd, a, name, tmp_path)
    assert_check_clean(b)


def test_convert_bitmaps_refusals_and_skips(tmp_path):
    src = tmp_path / "orig.qcow2"
    _orig(src)
    run(["qemu-io", "-c", "abort", str(src)], check=False)
    run(["qemu-img", "bitmap", "--add", str(src), "b4"])
    cases = [["-O", "raw"], ["-O", "qcow2"], ["-O", "qcow2", "--skip-broken-bitmaps"],
             ["-O", "qcow2", "-o", "compat=0.10", "--skip-broken-bitmaps"]]
    for extra in cases:
        a, b = tmp_path / "q.out", tmp_path / "o.out"
        for p in (a, b):
            if p.exists():
                p.unlink()
        want = run(["qemu-img", "convert", "--bitmaps"] + extra + [str(src), str(a)], check=False)
        got = qimg("convert", "--bitmaps", *(extra + [str(src), str(b)]), check=False)
        assert got.returncode == want.returncode, extra
        assert got.stderr.replace("qimg:", "qemu-img:").replace(str(b), "OUT") == \
            want.stderr.replace(str(a), "OUT"), extra
        if want.returncode == 0:
            assert info_bitmaps(a) == info_bitmaps(b)
            assert_check_clean(b)


# --------------------------------------------------------------------------- info, measure
def test_info_and_measure_show_bitmaps(tmp_path):
    p = tmp_path / "m.qcow2"
    qemu_img_create(p, "qcow2", "2G")
    qimg("bitmap", "--add", "-g", "512", str(p), "b1")
    qimg("bitmap", "--add", "--disable", "-g", "2M", str(p), "b2")
    for out in ("human", "json"):
        want = run(["qemu-img", "info", "--output=" + out, str(p)]).stdout
        got = qimg("info", "--output=" + out, str(p)).stdout
        assert got == want
    for extra in ([], ["-o", "cluster_size=2M"], ["--output=json"]):
        want = run(["qemu-img", "measure", "-O", "qcow2"] + extra + [str(p)]).stdout
        got = qimg("measure", "-O", "qcow2", *(extra + [str(p)])).stdout
        assert got == want


# --------------------------------------------------------------------------- resize
@pytest.mark.parametrize("new_size", ["8912896", "9437184", "20M", "9M"])
def test_resize_with_bitmaps_as_qemu_img(tmp_path, qemu_nbd, new_size):
    a, b = twins(tmp_path, "10M")
    for p in (a, b):
        run(["qemu-img", "bitmap", "--add", str(p), "b0"])
        run(["qemu-img", "bitmap", "--add", "-g", "1M", "--disable", str(p), "b1"])
        qemu_io(p, "write 9M 1M")
        run(["qemu-img", "bitmap", "--enable", str(p), "b1"])
        qemu_io(p, "write 8M 64k", "write 8704k 4k")
    want, got = both(a, b, "resize", "--shrink", "IMG", new_size)
    same_outcome(want, got, a, b)
    assert info_bitmaps(a) == info_bitmaps(b)
    for name in ("b0", "b1"):
        assert qemu_dirty(qemu_nbd, b, name, tmp_path) == qemu_dirty(qemu_nbd, a, name, tmp_path)
    assert_check_clean(b)
    qemu_io(b, "write 8M 64k")   # QEMU keeps tracking in the resized bitmaps
    assert_check_clean(b)


def test_resize_refused_with_inconsistent_bitmap(tmp_path):
    a, b = twins(tmp_path, "10M")
    for p in (a, b):
        run(["qemu-img", "bitmap", "--add", str(p), "b0"])
        run(["qemu-io", "-c", "abort", str(p)], check=False)
    want, got = both(a, b, "resize", "IMG", "20M")
    same_outcome(want, got, a, b)
    assert json.loads(run(["qemu-img", "info", "--output=json", str(b)]).stdout)["virtual-size"] == 10 * MiB


def test_hostile_bitmap_table_entry(tmp_path):
    """A table entry with reserved bits is refused with QEMU's message when the bitmap is used."""
    p = tmp_path / "h.qcow2"
    qemu_img_create(p, "qcow2", "10M")
    run(["qemu-img", "bitmap", "--add", str(p), "b0"])
    qemu_io(p, "write 0 64k")
    with open(str(p), "r+b") as f:
        head = f.read(65536)
        pos = struct.unpack(">I", head[100:104])[0]
        while struct.unpack(">I", head[pos:pos + 4])[0] != 0x23852875:
            pos += 8 + (struct.unpack(">I", head[pos + 4:pos + 8])[0] + 7) // 8 * 8
        doff = struct.unpack(">Q", head[pos + 24:pos + 32])[0]
        f.seek(doff)
        toff = struct.unpack(">Q", f.read(8))[0]
        f.seek(toff)
        f.write(struct.pack(">Q", 0x2))
    got = qimg("bitmap", "--clear", str(p), "b0", check=False)
    assert got.returncode == 1
    assert "Could not read bitmap_table table from image for bitmap 'b0'" in got.stderr
    assert "Traceback" not in got.stderr
