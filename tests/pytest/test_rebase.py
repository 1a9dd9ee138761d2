# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`rebase`, safe and unsafe, against qemu-img 7.2 run on identical copies.

Each scenario builds the same chain in two directories, runs qemu-img rebase in one and bin/qimg
(through a symlink named qemu-img) in the other, and compares stdout, stderr, exit code, the
backing chain `qemu-img info --backing-chain` reports, the guest content (which a safe rebase
keeps) and `qemu-img check`.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import sys

import pytest

from conftest import ROOT, assert_same_as_qemu_img, run
from crashkill import kill_at_every_write, need_strace
from helpers import assert_check_clean, qemu_check, qemu_img_create, qemu_io, qemu_raw_digest

MiB = 1024 * 1024
SIZE = 4 * MiB


def _build(d, scenario):
    """Images in directory d for a scenario; returns the top's name."""
    d = str(d)

    def p(name):
        return os.path.join(d, name)
    opts = {"compat": "0.10"} if scenario == "v2" else ({"extended_l2": "on"} if scenario == "subcluster" else None)
    qemu_img_create(p("base0.qcow2"), "qcow2", SIZE)
    qemu_io(p("base0.qcow2"), "write -P 1 0 1M", "write -P 2 2M 512k")
    qemu_img_create(p("base1.qcow2"), "qcow2", SIZE, backing="base0.qcow2", backing_fmt="qcow2")
    qemu_io(p("base1.qcow2"), "write -P 3 512k 1M", "write -z 2M 64k", "write -P 4 3M 4k")
    qemu_img_create(p("top.qcow2"), "qcow2", SIZE, opts, backing="base1.qcow2", backing_fmt="qcow2")
    qemu_io(p("top.qcow2"), "write -P 5 0 64k", "write -P 6 1M 8k", "write -z 3M 4k", "write -P 7 3900k 1k")
    qemu_img_create(p("new.qcow2"), "qcow2", SIZE)
    qemu_io(p("new.qcow2"), "write -P 1 0 1M", "write -P 9 1536k 1M")
    qemu_img_create(p("small.raw"), "raw", 1536 * 1024)
    qemu_io(p("small.raw"), "write -P 1 0 1M", "write -P 3 1M 256k", fmt="raw")
    qemu_img_create(p("big.qcow2"), "qcow2", 2 * SIZE)
    qemu_io(p("big.qcow2"), "write -P 8 0 8M")
    return "top.qcow2"


def _chain(d, name):
    proc = run(["qemu-img", "info", "--output=json", "--backing-chain", name], cwd=str(d), check=False)
    if proc.returncode:   # a backing file that does not exist (unsafe rebase): the top alone
        proc = run(["qemu-img", "info", "--output=json", name], cwd=str(d))
        info = [json.loads(proc.stdout)]
    else:
        info = json.loads(proc.stdout)
    keys = ("format", "virtual-size", "backing-filename", "backing-filename-format")
    return [dict((k, i.get(k)) for k in keys) for i in info]


def _pair(tmp_path, scenario="v3"):
    a, b = tmp_path / "qemu", tmp_path / "ours"
    a.mkdir()
    b.mkdir()
    _build(a, scenario)
    _build(b, scenario)
    return a, b


def _same_run(qemu_img, runner, tmp_path, args, scenario="v3"):
    a, b = _pair(tmp_path, scenario)
    before = qemu_raw_digest(b / "top.qcow2", tmp_path)
    want = run([qemu_img, "rebase"] + list(args) + ["top.qcow2"], cwd=str(a), check=False)
    got = runner("rebase", *(list(args) + ["top.qcow2"]), cwd=str(b))
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    assert _chain(b, "top.qcow2") == _chain(a, "top.qcow2")
    _check_clean_alone(b / "top.qcow2")
    # the header we wrote is one our own reader takes, and with the backing name where qemu-img puts it
    ours_info = runner("info", "-U", "--output=json", "top.qcow2", cwd=str(b))
    assert ours_info.returncode == 0, ours_info.stderr
    if got.returncode == 0:
        with open(str(a / "top.qcow2"), "rb") as f:
            want_head = f.read(512)
        with open(str(b / "top.qcow2"), "rb") as f:
            got_head = f.read(512)
        assert got_head[:32] == want_head[:32]   # magic, version, backing name offset and size, size
    return a, b, before, got


def _check_clean_alone(path):
    """qemu-img check of the image without its backing file (which may not exist after -u)."""
    spec = json.dumps({"driver": "qcow2", "file": {"driver": "file", "filename": str(path)}, "backing": None})
    proc = run(["qemu-img", "check", "--output=json", "json:" + spec], check=False)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert not report.get("corruptions") and not report.get("leaks"), report


SAFE = [
    ("-b", "base0.qcow2", "-F", "qcow2"),          # onto an image deeper in the chain
    ("-b", "new.qcow2", "-F", "qcow2"),            # onto an unrelated image
    ("-b", "small.raw", "-F", "raw"),              # a smaller new backing file
    ("-b", "big.qcow2", "-F", "qcow2"),            # a larger one
    ("-b", ""),                                     # detach: pull everything in
    ("-q", "-b", "new.qcow2", "-F", "qcow2"),
    ("-p", "-b", "", "-F", "qcow2"),
]


# every scenario for each rebase, and the progress output (-p) once, on the v3 image
SAFE_MATRIX = [(a, s) for a in SAFE for s in ("v3", "v2", "subcluster") if "-p" not in a or s == "v3"]


@pytest.mark.parametrize("args,scenario", SAFE_MATRIX, ids=lambda a: " ".join(a) if isinstance(a, tuple) else a)
def test_safe_rebase_like_qemu_img(qemu_img, as_qemu_img, tmp_path, args, scenario):
    a, b, before, got = _same_run(qemu_img, as_qemu_img, tmp_path, args, scenario)
    assert got.returncode == 0
    assert_check_clean(b / "top.qcow2")
    assert qemu_raw_digest(b / "top.qcow2", tmp_path) == before
    assert qemu_raw_digest(a / "top.qcow2", tmp_path) == before
    # what the image allocates itself was not touched: its own data reads the same without backing
    for off, pattern in ((0, 5), (1024 * 1024, 6)):
        out = run(["qemu-io", "-f", "qcow2", "-r", "-c", "read -P %d %d 4k" % (pattern, off), "top.qcow2"],
                  cwd=str(b)).stdout
        assert "Pattern verification failed" not in out


UNSAFE = [
    ("-u", "-b", "base0.qcow2", "-F", "qcow2"),
    ("-u", "-b", "missing.qcow2", "-F", "qcow2"),  # a moved backing file: the old one need not exist
    ("-u", "-b", "small.raw", "-F", "raw"),
    ("-u", "-b", ""),
    ("-u", "-b", "", "-F", "raw"),
    ("-u",),                                        # no -b with -u: detach
    ("-u", "-p", "-b", "new.qcow2", "-F", "qcow2"),
    ("-u", "-b", "x" * 1000, "-F", "qcow2"),
]


@pytest.mark.parametrize("args", UNSAFE, ids=lambda a: " ".join(a)[:40])
def test_unsafe_rebase_like_qemu_img(qemu_img, as_qemu_img, tmp_path, args):
    _a, b, _before, got = _same_run(qemu_img, as_qemu_img, tmp_path, args)
    assert got.returncode == 0
    # only the header changed: the image's own clusters are where they were
    assert (b / "top.qcow2").stat().st_size == (tmp_path / "qemu" / "top.qcow2").stat().st_size


def test_unsafe_with_old_backing_gone(qemu_img, as_qemu_img, tmp_path):
    a, b = _pair(tmp_path)
    for d in (a, b):
        os.rename(str(d / "base1.qcow2"), str(d / "moved.qcow2"))
    args = ["rebase", "-u", "-b", "moved.qcow2", "-F", "qcow2", "top.qcow2"]
    want = run([qemu_img] + args, cwd=str(a), check=False)
    got = as_qemu_img(*args, cwd=str(b))
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    assert got.returncode == 0
    assert _chain(b, "top.qcow2") == _chain(a, "top.qcow2")


FAILING = [
    ("-u", "-b", "base0.qcow2"),                   # backing format required
    ("-b", "new.qcow2"),
    ("-b", "nonexistent.qcow2", "-F", "qcow2"),
    ("-b", "nonexistent.qcow2"),
    ("-b", "small.raw", "-F", "qcow2"),
    ("-u", "-b", "base0.qcow2", "-F", "nosuchfmt"),
    ("-t", "bogus", "-u", "-b", ""),
    ("-T", "bogus", "-u", "-b", ""),
    ("-c", "-b", "new.qcow2", "-F", "qcow2"),      # 7.2 has no -c for rebase
    ("-b", "new.qcow2", "-F", "qcow2", "top.qcow2", "other"),
    (),
    ("-b",),
    ("-b", "top.qcow2", "-F", "qcow2"),            # a loop (the image is in use by ourselves)
    ("-u", "-b", "y" * 4096, "-F", "qcow2"),       # longer than qcow2's 1023 bytes
    ("-u", "-b", "y" * 1100),
]


@pytest.mark.parametrize("args", FAILING, ids=lambda a: " ".join(a)[:40] or "none")
def test_refusals_like_qemu_img(qemu_img, as_qemu_img, tmp_path, args):
    _build(tmp_path, "v3")
    before = (tmp_path / "top.qcow2").read_bytes()
    argv = ["rebase"] + list(args) + (["top.qcow2"] if args and args != ("-b",) else [])
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img, argv, str(tmp_path))
    assert got.returncode == 1
    if "new.qcow2" not in args:   # qemu-img copies data before it notices the missing -F
        assert (tmp_path / "top.qcow2").read_bytes() == before


def test_name_does_not_fit_in_small_cluster(qemu_img, as_qemu_img, tmp_path):
    qemu_img_create(tmp_path / "c512.qcow2", "qcow2", SIZE, {"cluster_size": 512})
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img, ["rebase", "-u", "-b", "z" * 600, "-F", "qcow2",
                                                          "c512.qcow2"], str(tmp_path))
    assert got.returncode == 1 and "No space left in the file header" in got.stderr


def test_raw_image_refused(qemu_img, as_qemu_img, tmp_path):
    _build(tmp_path, "v3")
    for args in (["rebase", "-u", "-b", "base0.qcow2", "-F", "qcow2", "small.raw"],
                 ["rebase", "-f", "raw", "-u", "-b", "", "small.raw"],
                 ["rebase", "-f", "raw", "-b", "", "small.raw"]):
        got = assert_same_as_qemu_img(qemu_img, as_qemu_img, args, str(tmp_path))
        assert got.returncode == 1


def test_loop_in_new_chain_refused(tmp_path):
    """A new backing file whose chain leads back to the image: refused before anything is written."""
    _build(tmp_path, "v3")
    qemu_img_create(tmp_path / "loop.qcow2", "qcow2", SIZE, backing="top.qcow2", backing_fmt="qcow2", unsafe=True)
    before = (tmp_path / "top.qcow2").read_bytes()
    sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
    from qimg.errors import QimgError
    from qimg.ops.rebase import rebase_image
    with pytest.raises(QimgError) as e:
        rebase_image(str(tmp_path / "top.qcow2"), "loop.qcow2", "qcow2")
    assert "loop" in str(e.value) or "lock" in str(e.value)
    assert (tmp_path / "top.qcow2").read_bytes() == before


def test_check_mode_counts_exactly(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
    from qimg.ops.rebase import rebase_image
    _build(tmp_path, "v3")
    top = str(tmp_path / "top.qcow2")
    before = (tmp_path / "top.qcow2").read_bytes()
    predicted = rebase_image(top, "new.qcow2", "qcow2", check_mode=True)
    assert (tmp_path / "top.qcow2").read_bytes() == before
    assert predicted["changed"] and predicted["copied-bytes"] > 0
    done = rebase_image(top, "new.qcow2", "qcow2")
    assert done["copied-bytes"] == predicted["copied-bytes"]
    assert done["old-backing-file"] == "base1.qcow2" and done["backing-file"] == "new.qcow2"
    again = rebase_image(top, "new.qcow2", "qcow2", check_mode=True)
    assert not again["changed"] and again["copied-bytes"] == 0
    assert_check_clean(top)


KILL_SCRIPT = r"""
import sys
sys.path.insert(0, sys.argv[1])
from qimg.ops.rebase import rebase_image
path, backing, bfmt, unsafe = sys.argv[2:6]
rebase_image(path, backing, bfmt or None, unsafe=unsafe == "1")
"""


@pytest.mark.parametrize("target", [("new.qcow2", "qcow2", "0"), ("", "", "0"), ("base0.qcow2", "qcow2", "0"),
                                    ("base0.qcow2", "qcow2", "1")],
                         ids=["safe-new", "safe-detach", "safe-prefix", "unsafe"])
def test_kill_at_every_write(tmp_path, target):
    """A kill before any write leaves a clean image whose guest view is the original one."""
    need_strace()
    src = tmp_path / "src"
    src.mkdir()
    _build(src, "v3")
    work = tmp_path / "work"
    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    original = qemu_raw_digest(src / "top.qcow2", tmp_path)
    unsafe = target[2] == "1"
    if unsafe:
        # unsafe: the guest view is the one through whichever backing the header names
        shutil.copytree(str(src), str(tmp_path / "expect"))
        run(["qemu-img", "rebase", "-u", "-b", target[0], "-F", target[1], "top.qcow2"], cwd=str(tmp_path / "expect"))
        allowed = (original, qemu_raw_digest(tmp_path / "expect" / "top.qcow2", tmp_path))
    else:
        allowed = (original,)

    def prepare():
        if work.exists():
            shutil.rmtree(str(work))
        shutil.copytree(str(src), str(work))

    def verify(k):
        rc, report = qemu_check(work / "top.qcow2")
        if rc not in (0, 3) or report.get("corruptions", 0):
            return "check: rc=%d %s" % (rc, report)
        if qemu_raw_digest(work / "top.qcow2", tmp_path) not in allowed:
            return "guest view changed"
        return None

    argv = [sys.executable, str(script), os.path.join(ROOT, "plugins", "module_utils"),
            str(work / "top.qcow2")] + list(target)
    trials, failures = kill_at_every_write(prepare, argv, [work / "top.qcow2"], verify)
    assert trials >= 1
    assert not failures, failures[:5]


def test_prefix_with_shorter_old_backing(as_qemu_img, tmp_path):
    """Onto an image deeper in the chain when the old backing file is shorter than the image: past
    its end the old chain reads zeros, which must be written (qemu-img 7.2 leaves the new
    backing's data visible there; iotest 024 of later QEMU checks this)."""
    d = str(tmp_path)
    qemu_img_create(tmp_path / "new", "qcow2", 320 * 1024)
    qemu_io(tmp_path / "new", "write -P 0xa 0 320k")
    qemu_img_create(tmp_path / "old", "qcow2", 256 * 1024, backing="new", backing_fmt="qcow2")
    qemu_io(tmp_path / "old", "write -P 0xb 0 64k")
    qemu_img_create(tmp_path / "top", "qcow2", 320 * 1024, backing="old", backing_fmt="qcow2")
    before = qemu_raw_digest(tmp_path / "top", tmp_path)
    got = as_qemu_img("rebase", "-b", "new", "-F", "qcow2", "top", cwd=d)
    assert got.returncode == 0, got.stderr
    assert qemu_raw_digest(tmp_path / "top", tmp_path) == before
    assert_check_clean(tmp_path / "top")


def test_header_bytes_without_backing_name_clear_its_offset(tmp_path):
    """header_cluster_bytes() of a header whose backing name was emptied writes offset and size 0."""
    import copy
    import struct
    from qimg.formats.qcow2 import header as hdr
    from qimg.image import open_image
    base, top = str(tmp_path / "b.qcow2"), str(tmp_path / "t.qcow2")
    qemu_img_create(base, "qcow2", MiB)
    qemu_img_create(top, "qcow2", MiB, backing="b.qcow2", backing_fmt="qcow2")
    with open_image(top, "qcow2", open_backing=False) as dev:
        h = copy.copy(dev.header)
        assert h.backing_file_offset
        h.backing_file = h.backing_format = None
        raw = hdr.header_cluster_bytes(h, dev.cluster_size)
    assert struct.unpack(">QI", raw[8:20]) == (0, 0)
    assert (h.backing_file_offset, h.backing_file_size) == (0, 0)


def test_duplicate_backing_format_extension_last_wins(tmp_path):
    """QEMU reads every backing format extension and keeps the last (iotest 114 relies on it)."""
    import struct
    from qimg.ops.info import image_info
    base, top = str(tmp_path / "b.qcow2"), str(tmp_path / "t.qcow2")
    qemu_img_create(base, "qcow2", MiB)
    qemu_img_create(top, "qcow2", MiB, backing="b.qcow2", backing_fmt="raw")
    with open(top, "r+b") as f:
        raw = bytearray(f.read(65536))
        name_off, name_len = struct.unpack(">QI", raw[8:20])
        hl = struct.unpack(">I", raw[100:104])[0]
        exts, off = [], hl
        while True:
            t, n = struct.unpack(">II", raw[off:off + 8])
            if t == 0:
                break
            exts.append(bytes(raw[off:off + 8 + ((n + 7) & ~7)]))
            off += 8 + ((n + 7) & ~7)
        exts.append(struct.pack(">II", 0xE2792ACA, 5) + b"qcow2\0\0\0")
        name = bytes(raw[name_off:name_off + name_len])
        area = b"".join(exts) + bytes(8)
        raw[hl:hl + len(area)] = area
        raw[hl + len(area):hl + len(area) + name_len] = name
        raw[8:16] = struct.pack(">Q", hl + len(area))
        f.seek(0)
        f.write(raw)
    assert run(["qemu-img", "info", "--output=json", top]).returncode == 0
    assert image_info(top)["backing-filename-format"] == "qcow2"
    assert json.loads(run(["qemu-img", "info", "--output=json", top]).stdout)["backing-filename-format"] == "qcow2"
