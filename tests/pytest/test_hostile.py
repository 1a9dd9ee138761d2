# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile images are normal input: every crafted bad image ends in a clean error or a sane result.

Bad qcow2 images are made by patching bytes of a valid one at the header offsets of QEMU's
docs/interop/qcow2.txt. For each, `bin/qimg info`, `bin/qimg info --output=json`, `bin/qimg map`
and an engine read (open_image + read in chunks, plus ops.info/ops.map) run in subprocesses under
a timeout. The CLI must exit 1 with a single stderr line starting with "qimg:" (and no traceback),
or succeed with a sane result; the engine must raise only QimgError subclasses; nothing may hang.

Expectations per case:
  raw         the file is not qcow2 (bad magic, empty, 3 bytes): everything succeeds as raw
  open-error  the header itself is unusable: info, map and read all fail cleanly
  read-error  info may work (qemu-img's does) but reading the data or the chain must fail cleanly
  data-error  metadata may be readable (info, map) but the guest data must not be returned
  any         a clean error or a sane success are both fine
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import struct
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from helpers import qemu_img_create, qimg_cmd, run
from helpers import qemu_io as qio  # the name qemu_io is the conftest fixture

TIMEOUT = 20
PLUGINS = os.path.join(ROOT, "plugins", "module_utils")

# qcow2 header field offsets (docs/interop/qcow2.txt)
H_MAGIC, H_VERSION, H_BACKING_OFFSET, H_BACKING_SIZE, H_CLUSTER_BITS, H_SIZE = 0, 4, 8, 16, 20, 24
H_CRYPT, H_L1_SIZE, H_L1_OFFSET, H_RT_OFFSET, H_RT_CLUSTERS = 32, 36, 40, 48, 56
H_NB_SNAPSHOTS, H_SNAPSHOTS_OFFSET, H_INCOMPAT, H_HEADER_LENGTH = 60, 64, 72, 100
OFFSET_MASK = 0x00FFFFFFFFFFFE00
COPIED = 1 << 63

# --- mutations of a valid 1 MiB qcow2 (64k clusters, 128k of data) ---------------------------------


def _u32(off, value):
    def mutate(b):
        struct.pack_into(">I", b, off, value)
    return mutate


def _u64(off, value):
    def mutate(b):
        struct.pack_into(">Q", b, off, value)
    return mutate


def _rel64(off, delta):
    def mutate(b):
        struct.pack_into(">Q", b, off, struct.unpack_from(">Q", b, off)[0] + delta)
    return mutate


def _l1(b):
    return struct.unpack_from(">Q", b, H_L1_OFFSET)[0]


def _l2(b):
    return struct.unpack_from(">Q", b, _l1(b))[0] & OFFSET_MASK


def _or_l1(bits):
    def mutate(b):
        off = _l1(b)
        struct.pack_into(">Q", b, off, struct.unpack_from(">Q", b, off)[0] | bits)
    return mutate


def _or_l2(bits):
    def mutate(b):
        off = _l2(b)
        struct.pack_into(">Q", b, off, struct.unpack_from(">Q", b, off)[0] | bits)
    return mutate


def _set_l1(value):
    def mutate(b):
        struct.pack_into(">Q", b, _l1(b), value)
    return mutate


def _set_l2(value):
    def mutate(b):
        struct.pack_into(">Q", b, _l2(b), value)
    return mutate


def _set_rt0(value):
    def mutate(b):
        struct.pack_into(">Q", b, struct.unpack_from(">Q", b, H_RT_OFFSET)[0], value)
    return mutate


def _both(*mutations):
    def mutate(b):
        for m in mutations:
            m(b)
    return mutate


def _backing_name(offset, size, name=b"base.qcow2"):
    def mutate(b):
        b[offset:offset + len(name)] = name
        struct.pack_into(">Q", b, H_BACKING_OFFSET, offset)
        struct.pack_into(">I", b, H_BACKING_SIZE, size)
    return mutate


def _truncate(at):
    def mutate(b):
        del b[at(b) if callable(at) else at:]
    return mutate


MUTATIONS = [
    # (id, mutation, expectation)
    ("bad-magic", lambda b: b.__setitem__(slice(0, 4), b"XFI\xfb"), "raw"),
    ("version-1", _u32(H_VERSION, 1), "any"),  # QEMU probes it as qcow (v1), not qcow2
    ("version-4", _u32(H_VERSION, 4), "open-error"),
    ("cluster-bits-8", _u32(H_CLUSTER_BITS, 8), "open-error"),
    ("cluster-bits-22", _u32(H_CLUSTER_BITS, 22), "open-error"),
    ("cluster-bits-63", _u32(H_CLUSTER_BITS, 63), "open-error"),
    ("size-2^63", _u64(H_SIZE, 1 << 63), "open-error"),
    ("size-2^64-512", _u64(H_SIZE, (1 << 64) - 512), "open-error"),
    ("l1-size-2^31", _u32(H_L1_SIZE, 1 << 31), "open-error"),
    ("l1-size-max", _u32(H_L1_SIZE, 0xFFFFFFFF), "open-error"),
    ("l1-size-0", _u32(H_L1_SIZE, 0), "open-error"),
    ("l1-too-small-for-size", _u64(H_SIZE, 1 << 40), "open-error"),
    ("l1-offset-unaligned", _rel64(H_L1_OFFSET, 512), "open-error"),
    ("l1-offset-past-eof", _u64(H_L1_OFFSET, 1 << 40), "any"),  # QEMU reads zeros past EOF
    ("l1-offset-zero", _u64(H_L1_OFFSET, 0), "any"),
    ("rt-offset-unaligned", _rel64(H_RT_OFFSET, 512), "any"),
    ("rt-offset-past-eof", _u64(H_RT_OFFSET, 1 << 40), "any"),
    ("rt-clusters-huge", _u32(H_RT_CLUSTERS, 1 << 30), "any"),
    ("rt-clusters-max", _u32(H_RT_CLUSTERS, 0xFFFFFFFF), "any"),
    ("rt-block-past-eof", _set_rt0(1 << 40), "any"),
    ("l1-reserved-bits-low", _or_l1(0x2), "any"),
    ("l1-reserved-bits-high", _or_l1(1 << 60), "any"),
    ("l1-entry-unaligned", _set_l1(COPIED | 0x40000 + 512), "any"),
    ("l2-reserved-bits", _or_l2(0x2), "any"),
    ("l2-offset-past-eof", _set_l1(COPIED | (1 << 40)), "any"),
    ("l2-entry-past-eof", _set_l2(COPIED | (1 << 40)), "any"),
    ("l2-entry-unaligned", _set_l2(COPIED | (0x50000 + 512)), "any"),
    ("l2-entry-into-header", _set_l2(COPIED | 0), "any"),
    ("l2-compressed-huge", _set_l2((1 << 62) | (0xFF << 54) | 0x50000), "any"),
    ("unknown-incompat-bit", _u64(H_INCOMPAT, 1 << 40), "open-error"),
    ("incompat-all-bits", _u64(H_INCOMPAT, (1 << 64) - 1), "open-error"),
    ("crypt-method-1", _u32(H_CRYPT, 1), "data-error"),
    ("crypt-method-99", _u32(H_CRYPT, 99), "open-error"),
    ("backing-crosses-cluster", _backing_name(65536 - 4, 10), "open-error"),
    ("backing-offset-past-eof", _backing_name(1 << 40, 10, b""), "open-error"),
    ("backing-size-1024", _backing_name(200, 1024), "open-error"),
    ("backing-size-huge", _backing_name(200, 0xFFFFFFFF), "open-error"),
    ("header-length-96", _u32(H_HEADER_LENGTH, 96), "open-error"),
    ("header-length-past-cluster", _u32(H_HEADER_LENGTH, 65536 + 8), "open-error"),
    ("nb-snapshots-huge", _both(_u32(H_NB_SNAPSHOTS, 1 << 31), _u64(H_SNAPSHOTS_OFFSET, 0x50000)), "open-error"),
    ("snapshots-offset-unaligned", _both(_u32(H_NB_SNAPSHOTS, 1), _u64(H_SNAPSHOTS_OFFSET, 0x50000 + 100)), "open-error"),
    ("snapshots-offset-past-eof", _both(_u32(H_NB_SNAPSHOTS, 1), _u64(H_SNAPSHOTS_OFFSET, 1 << 40)), "any"),
    ("truncated-0", _truncate(0), "raw"),
    ("truncated-3", _truncate(3), "raw"),
    ("truncated-50", _truncate(50), "any"),  # shorter than a header: QEMU probes raw
    ("truncated-100", _truncate(100), "any"),
    ("truncated-mid-l1", _truncate(lambda b: _l1(b) + 4), "any"),
    ("truncated-mid-data", _truncate(0x50000 + 1000), "any"),
]


def _base_image(d):
    p = os.path.join(str(d), "good.qcow2")
    qemu_img_create(p, "qcow2", "1M", {"cluster_size": "64k"})
    qio(p, "write -P 1 0 128k")
    with open(p, "rb") as f:
        data = bytearray(f.read())
    # the offsets the mutations assume
    assert struct.unpack_from(">I", data, H_CLUSTER_BITS)[0] == 16
    assert _l2(data) == 0x40000 and struct.unpack_from(">Q", data, 0x40000)[0] & OFFSET_MASK == 0x50000
    return data


# --- running the CLI and the engine under a timeout ---------------------------------------------

ENGINE_SCRIPT = textwrap.dedent("""
    import json, sys, traceback
    sys.path.insert(0, sys.argv[1])
    limit = int(sys.argv[3])
    if limit:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from qimg.errors import QimgError
    path = sys.argv[2]
    result = {}

    def step(name, fn):
        try:
            result[name] = {"ok": True, "value": fn()}
        except QimgError as e:
            result[name] = {"ok": False, "error": type(e).__name__, "message": str(e)}

    def read_all():
        from qimg.image import open_image
        CH = 4 << 20
        with open_image(path) as dev:
            size = dev.size
            if size <= (64 << 20):
                spans = [(o, min(CH, size - o)) for o in range(0, size, CH)]
            else:  # a huge but accepted image: head, a few probes, tail
                spans = [(0, 16 << 20)] + [(size // k // 512 * 512, 65536) for k in (2, 3, 7)]
                spans.append((size - (1 << 20), 1 << 20))
            for off, n in spans:
                data = dev.read(off, n)
                if len(data) != n:
                    raise AssertionError("short read at %d: %d of %d" % (off, len(data), n))
            return {"size": size, "format": dev.format_name}

    def info():
        from qimg.ops.info import image_info
        return image_info(path)

    def map_():
        from qimg.ops.map import image_map
        return len(image_map(path))

    try:
        step("read", read_all)
        step("info", info)
        step("map", map_)
    except BaseException:
        traceback.print_exc()
        sys.exit(3)
    print(json.dumps(result, default=str))
""")


def _limit_as(limit):
    def preexec():
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return preexec


def run_engine(path, mem_limit=0):
    try:
        proc = subprocess.run([sys.executable, "-c", ENGINE_SCRIPT, PLUGINS, str(path), str(mem_limit)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise AssertionError("engine hung (> %d s) on %s" % (TIMEOUT, path))
    assert proc.returncode == 0, "engine raised a non-QimgError:\n%s" % proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_cli(*args, **kw):
    mem_limit = kw.get("mem_limit", 0)
    try:
        proc = subprocess.run(qimg_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=TIMEOUT, check=False,
                              preexec_fn=_limit_as(mem_limit) if mem_limit else None)
    except subprocess.TimeoutExpired:
        raise AssertionError("bin/qimg %s hung (> %d s)" % (" ".join(map(str, args)), TIMEOUT))
    assert "Traceback" not in proc.stderr, "bin/qimg %s: traceback:\n%s" % (args, proc.stderr[-3000:])
    if proc.returncode != 0:
        lines = proc.stderr.splitlines()
        assert proc.returncode == 1, "bin/qimg %s: exit %d: %s" % (args, proc.returncode, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("qimg:"), \
            "bin/qimg %s: stderr must be one 'qimg: ...' line, got %r" % (args, proc.stderr)
    return proc


def _sane_info(info, expect_format=None):
    assert isinstance(info, dict)
    assert isinstance(info.get("virtual-size"), int) and 0 <= info["virtual-size"] < (1 << 63)
    assert info.get("format") in ("raw", "qcow2")
    if expect_format:
        assert info["format"] == expect_format


def check_image(path, expectation, names):
    """Run the four probes on path and assert the expectation; names: files an error may name."""
    info_h = run_cli("info", path)
    info_j = run_cli("info", "--output=json", path)
    map_h = run_cli("map", path)
    eng = run_engine(path)

    def named(message):
        return any(n in message for n in names)

    # qemu-img's human map refuses compressed clusters with this fixed sentence (no file name)
    compressed_map = "File contains external, encrypted or compressed clusters."
    for proc in (info_h, info_j, map_h):
        if proc.returncode:
            assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
            assert named(proc.stderr) or (proc is map_h and compressed_map in proc.stderr), \
                "error does not name the file: %r" % proc.stderr
    for key in ("read", "info", "map"):
        if not eng[key]["ok"]:
            assert "\n" not in eng[key]["message"] and named(eng[key]["message"]), eng[key]
    if info_j.returncode == 0:
        _sane_info(json.loads(info_j.stdout), "raw" if expectation == "raw" else None)
    if eng["info"]["ok"]:
        _sane_info(eng["info"]["value"], "raw" if expectation == "raw" else None)
    if eng["read"]["ok"]:
        assert 0 <= eng["read"]["value"]["size"] < (1 << 63)

    if expectation == "raw":
        for proc in (info_h, info_j, map_h):
            assert proc.returncode == 0, proc.stderr
        assert eng["read"]["ok"] and eng["read"]["value"]["format"] == "raw", eng["read"]
        # as qemu-img, a raw image's virtual size is its length rounded up to a 512-byte sector
        assert eng["read"]["value"]["size"] == -(-os.path.getsize(path) // 512) * 512
    elif expectation == "open-error":
        for proc in (info_h, info_j, map_h):
            assert proc.returncode == 1, "expected an error, got success:\n%s" % proc.stdout[:2000]
        for key in ("read", "info", "map"):
            assert not eng[key]["ok"], "engine %s accepted a broken header: %r" % (key, eng[key])
    elif expectation == "data-error":
        assert not eng["read"]["ok"], "engine returned data it cannot decode: %r" % eng["read"]
    elif expectation == "read-error":
        assert map_h.returncode == 1, "expected map to fail, got:\n%s" % map_h.stdout[:2000]
        for key in ("read", "map"):
            assert not eng[key]["ok"], "engine %s succeeded: %r" % (key, eng[key])
    return eng


@pytest.mark.parametrize("mutation,expectation", [m[1:] for m in MUTATIONS], ids=[m[0] for m in MUTATIONS])
def test_crafted_header(qemu_img, qemu_io, tmp_path, mutation, expectation):
    data = _base_image(tmp_path)
    mutation(data)
    path = str(tmp_path / "bad.qcow2")
    with open(path, "wb") as f:
        f.write(data)
    check_image(path, expectation, ["bad.qcow2"])


def test_empty_file_probes_as_raw(tmp_path):
    path = str(tmp_path / "empty.img")
    open(path, "wb").close()
    eng = check_image(path, "raw", ["empty.img"])
    assert eng["read"]["value"]["size"] == 0


def test_huge_l1_size_under_memory_limit(qemu_img, qemu_io, tmp_path):
    """An L1 table of 2^31 entries (16 GiB) must be refused before anything is allocated."""
    data = _base_image(tmp_path)
    struct.pack_into(">I", data, H_L1_SIZE, 1 << 31)
    struct.pack_into(">Q", data, H_SIZE, (1 << 31) * (1 << 29))  # consistent with the L1 size
    path = str(tmp_path / "bigl1.qcow2")
    with open(path, "wb") as f:
        f.write(data)
    limit = 512 * 1024 * 1024
    eng = run_engine(path, mem_limit=limit)
    assert not eng["read"]["ok"] and not eng["map"]["ok"], eng
    for args in (("info", path), ("map", "--output=json", path)):
        proc = run_cli(*args, mem_limit=limit)
        assert proc.returncode == 1 and "MemoryError" not in proc.stderr, proc.stderr


# --- backing chains: loops, depth, unsafe names -------------------------------------------------

def test_backing_self_loop(qemu_img, tmp_path):
    p = tmp_path / "self.qcow2"
    qemu_img_create(p, "qcow2", "1M", backing="self.qcow2", backing_fmt="qcow2", unsafe=True)
    eng = check_image(str(p), "read-error", ["self.qcow2"])
    assert eng["read"]["error"] in ("UnsafeImage", "ImageCorrupt"), eng["read"]


def test_backing_loop_two(qemu_img, tmp_path):
    qemu_img_create(tmp_path / "a.qcow2", "qcow2", "1M", backing="b.qcow2", backing_fmt="qcow2", unsafe=True)
    qemu_img_create(tmp_path / "b.qcow2", "qcow2", "1M", backing="a.qcow2", backing_fmt="qcow2", unsafe=True)
    eng = check_image(str(tmp_path / "a.qcow2"), "read-error", ["a.qcow2", "b.qcow2"])
    assert eng["read"]["error"] in ("UnsafeImage", "ImageCorrupt"), eng["read"]


def test_backing_chain_too_deep(qemu_img, tmp_path):
    depth = 70
    qemu_img_create(tmp_path / "l0.qcow2", "qcow2", "1M")
    for i in range(1, depth + 1):
        qemu_img_create(tmp_path / ("l%d.qcow2" % i), "qcow2", "1M", backing="l%d.qcow2" % (i - 1),
                        backing_fmt="qcow2", unsafe=True)
    names = ["l%d.qcow2" % i for i in range(depth + 1)]
    check_image(str(tmp_path / ("l%d.qcow2" % depth)), "read-error", names)


def test_backing_chain_at_limit_works(qemu_img, qemu_io, tmp_path):
    """The depth limit must not refuse ordinary chains: 10 levels read fine."""
    qemu_img_create(tmp_path / "l0.qcow2", "qcow2", "1M")
    qio(tmp_path / "l0.qcow2", "write -P 9 0 4k")
    for i in range(1, 11):
        qemu_img_create(tmp_path / ("l%d.qcow2" % i), "qcow2", "1M", backing="l%d.qcow2" % (i - 1),
                        backing_fmt="qcow2", unsafe=True)
    eng = check_image(str(tmp_path / "l10.qcow2"), "any", ["l10.qcow2"])
    assert eng["read"]["ok"] and eng["map"]["ok"], eng


@pytest.mark.parametrize("name", [
    'json:{"file.driver": "file", "file.filename": "/etc/hostname"}',
    "nbd://host/x",
    "nbd+unix:///x?socket=/tmp/nonexistent.sock",
], ids=["json", "nbd", "nbd-unix"])
def test_unsafe_backing_names_refused(qemu_img, tmp_path, name):
    p = tmp_path / "top.qcow2"
    qemu_img_create(p, "qcow2", "1M", backing=name, backing_fmt="raw", unsafe=True)
    eng = check_image(str(p), "read-error", ["top.qcow2", name.split(":")[0]])
    assert eng["read"]["error"] == "UnsafeImage", eng["read"]


def _bitmap_table_offset(path, value):
    """Point the first bitmap's table (the first field of its directory entry) at value."""
    with open(str(path), "r+b") as f:
        head = f.read(65536)
        pos = struct.unpack(">I", head[100:104])[0]  # header extensions follow the v3 header
        while True:
            kind, length = struct.unpack(">II", head[pos:pos + 8])
            assert kind != 0, "no bitmaps extension"
            if kind == 0x23852875:
                directory = struct.unpack(">Q", head[pos + 24:pos + 32])[0]
                break
            pos += 8 + (length + 7) // 8 * 8
        f.seek(directory)
        f.write(struct.pack(">Q", value))


@pytest.mark.parametrize("value", [0x8000000000020000, 0xFFFFFFFFFFFF0000, 0x7FFFFFFFFFFF0000, 0x7FFFFFFFBFFF0000,
                                   0x100000020000],
                         ids=["bit63", "all-ones", "int64-end", "request-limit", "past-eof"])
def test_bitmap_table_offset_out_of_range(qemu_img, tmp_path, value):
    """A bitmap table beyond any file offset fails the open with QEMU's message; one merely past
    the end of the file is checked with qemu-img's figures. Never an OverflowError."""
    path = tmp_path / "bm.qcow2"
    qemu_img_create(path, "qcow2", "16M")
    run(["qemu-img", "bitmap", "--add", str(path), "b0"])
    _bitmap_table_offset(path, value)
    for command in (["info"], ["check"], ["map", "--output=json"]):
        theirs = subprocess.run(["qemu-img"] + command + [str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True, check=False)
        ours = subprocess.run(qimg_cmd(*(command + [str(path)])), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=TIMEOUT, check=False)
        assert ours.returncode == theirs.returncode, (command, ours.stderr, theirs.stderr)
        assert ours.stderr.replace("qimg:", "qemu-img:") == theirs.stderr, command
        if command == ["check"]:
            assert ours.stdout == theirs.stdout
    run_engine(path)
