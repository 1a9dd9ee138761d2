# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bin/qimg convert, compare and measure against qemu-img 7.2: same stdout, stderr and exit code.

Outputs of convert are checked by the oracle (``qemu-img compare`` for content, ``qemu-img check``
for metadata); messages and progress text are compared byte for byte.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import sys

import pytest

from conftest import assert_same_as_qemu_img as same
from conftest import oracle_and_ours as both
from conftest import QIMG, oracle_in, run


@pytest.fixture(scope="module")
def images(tmp_path_factory, qemu_img, qemu_io):
    """Source images made by qemu-img/qemu-io; names are relative to the returned directory."""
    d = str(tmp_path_factory.mktemp("cimages"))
    q, io = oracle_in(d, qemu_img, qemu_io)

    q("create", "-q", "-f", "qcow2", "a.qcow2", "64M")
    io("qcow2", "a.qcow2", "write -P 1 0 1M", "write -P 2 5M 3M", "write -P 3 20M 64k", "write -z 30M 1M")
    q("snapshot", "-c", "s1", "a.qcow2")
    # write after the snapshot so the file does not end inside the snapshot table (see report)
    io("qcow2", "a.qcow2", "write -P 9 40M 64k")
    q("bitmap", "--add", "a.qcow2", "bm0")
    q("create", "-q", "-f", "qcow2", "b.qcow2", "64M")
    q("create", "-q", "-f", "qcow2", "base.qcow2", "64M")
    io("qcow2", "base.qcow2", "write -P 1 0 2M")
    q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")
    io("qcow2", "top.qcow2", "write -P 2 1M 2M")
    q("create", "-q", "-f", "raw", "r.raw", "10M")
    io("raw", "r.raw", "write -P 1 1M 64k", "write -P 4 3M 2M")
    q("convert", "a.qcow2", "a.raw")
    q("convert", "-O", "qcow2", "a.raw", "a2.qcow2")
    shutil.copy(os.path.join(d, "a.raw"), os.path.join(d, "a3.raw"))
    io("raw", "a3.raw", "write -P 7 6M 512")
    q("create", "-q", "-f", "raw", "big.raw", "80M")
    with open(os.path.join(d, "a.raw"), "rb") as src, open(os.path.join(d, "big.raw"), "r+b") as dst:
        shutil.copyfileobj(src, dst)
    shutil.copy(os.path.join(d, "big.raw"), os.path.join(d, "big2.raw"))
    io("raw", "big2.raw", "write -P 7 70M 4k")
    q("create", "-q", "-f", "raw", "small.raw", "1M")
    q("create", "-q", "-f", "qcow2", "empty.qcow2", "0")
    return d


def workdir(images, tmp_path, tool):
    """A fresh directory holding links to every source image."""
    d = tmp_path / tool
    d.mkdir()
    for name in os.listdir(images):
        os.symlink(os.path.join(images, name), str(d / name))
    return str(d)


def check_clean(qemu_img, path, fmt):
    proc = run([qemu_img, "check", "-f", fmt, path], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def content_same(qemu_img, a, b, fmt_b=None):
    cmd = [qemu_img, "compare", a, b]
    if fmt_b:
        cmd[2:2] = ["-F", fmt_b]
    proc = run(cmd, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


# ---------------------------------------------------------------------------------------------
# convert

CONVERT_CASES = [
    (["a.qcow2"], []),
    (["a.qcow2"], ["-O", "qcow2"]),
    (["a.qcow2"], ["-O", "qcow2", "-c"]),
    (["a.qcow2"], ["-O", "qcow2", "-o", "cluster_size=4k,lazy_refcounts=on"]),
    (["a.qcow2"], ["-O", "qcow2", "-o", "compat=0.10"]),
    (["a.qcow2"], ["-O", "qcow2", "-o", "extended_l2=on,cluster_size=128k", "-S", "0"]),
    (["a.qcow2"], ["-O", "qcow2", "-o", "refcount_bits=1,size=1M"]),
    (["a.qcow2"], ["-S", "64k", "-m", "4", "-W", "-r", "1G", "-t", "none", "-T", "writeback", "-U"]),
    (["a.qcow2"], ["-O", "qcow2", "-l", "s1"]),
    (["a.qcow2"], ["-O", "qcow2", "-l", "snapshot.name=s1"]),
    (["r.raw"], ["-O", "qcow2", "-C"]),
    (["top.qcow2"], ["-O", "qcow2"]),
    (["top.qcow2"], ["-O", "qcow2", "-B", "base.qcow2", "-F", "qcow2"]),
    (["r.raw", "a.qcow2", "empty.qcow2"], ["-O", "qcow2"]),
    (["empty.qcow2"], []),
]


@pytest.mark.parametrize("sources,extra", CONVERT_CASES)
def test_convert_quiet_matches(qemu_img, as_qemu_img, images, tmp_path, sources, extra):
    """-q runs: same (empty) output and code; the outputs hold the same content and check clean."""
    outs = {}
    for tool in ("qemu", "qimg"):
        d = workdir(images, tmp_path, tool)
        args = ["convert", "-q"] + extra + sources + ["out.img"]
        if tool == "qemu":
            proc = run([qemu_img] + args, check=False, cwd=d)
        else:
            proc = as_qemu_img(*args, cwd=d)
        outs[tool] = (proc.stdout, proc.stderr, proc.returncode, os.path.join(d, "out.img"))
    assert outs["qimg"][:3] == outs["qemu"][:3]
    assert outs["qimg"][2] == 0
    fmt = "qcow2" if "qcow2" in extra else "raw"
    ours = outs["qimg"][3]
    if fmt == "qcow2":
        check_clean(qemu_img, ours, fmt)
        info = json.loads(run([qemu_img, "info", "--output=json", ours]).stdout)
        theirs = json.loads(run([qemu_img, "info", "--output=json", outs["qemu"][3]]).stdout)
        assert info["virtual-size"] == theirs["virtual-size"]
        assert info.get("backing-filename") == theirs.get("backing-filename")
    content_same(qemu_img, outs["qemu"][3], ours)


def test_convert_target_exists(qemu_img, as_qemu_img, images, tmp_path):
    d = workdir(images, tmp_path, "n")
    run([qemu_img, "create", "-q", "-f", "qcow2", "t.qcow2", "80M"], cwd=d)
    got = as_qemu_img("convert", "-n", "-O", "qcow2", "a.qcow2", "t.qcow2", cwd=d)
    assert (got.stdout, got.stderr, got.returncode) == ("", "", 0)
    check_clean(qemu_img, os.path.join(d, "t.qcow2"), "qcow2")
    run([qemu_img, "create", "-q", "-f", "raw", "t.raw", "64M"], cwd=d)
    got = as_qemu_img("convert", "-n", "--target-is-zero", "a.qcow2", "t.raw", cwd=d)
    assert got.returncode == 0, got.stderr
    content_same(qemu_img, os.path.join(d, "a.qcow2"), os.path.join(d, "t.raw"))


CONVERT_ERRORS = [
    ["nofile", "o.img"],
    ["-O", "foo", "a.qcow2", "o.img"],
    ["-f", "foo", "a.qcow2", "o.img"],
    ["-S", "1000", "a.qcow2", "o.img"],
    ["-S", "abc", "a.qcow2", "o.img"],
    ["-S", "64M", "a.qcow2", "o.img"],
    ["-n", "a.qcow2", "none.raw"],
    ["-n", "a.qcow2", "small.raw"],
    ["--target-is-zero", "a.qcow2", "o.img"],
    ["-n", "--target-is-zero", "-O", "qcow2", "-B", "b.qcow2", "a.qcow2", "b2.qcow2"],
    ["-B", "a.qcow2", "a.qcow2", "o.img"],
    ["-F", "qcow2", "a.qcow2", "o.img"],
    ["-O", "qcow2", "-B", "b.qcow2", "a.qcow2", "o.img"],
    ["-O", "qcow2", "-o", "backing_file=b.qcow2", "a.qcow2", "o.img"],
    ["-O", "qcow2", "-B", "b.qcow2", "-F", "qcow2", "a.qcow2", "a.qcow2", "o.img"],
    ["-O", "qcow2", "-B", "nofile", "-F", "qcow2", "a.qcow2", "o.img"],
    ["-z", "a.qcow2", "o.img"],
    ["-s", "s1", "a.qcow2", "o.img"],
    ["--foo", "a.qcow2", "o.img"],
    ["-O"],
    ["a.qcow2"],
    [],
    ["-m", "0", "a.qcow2", "o.img"],
    ["-m", "1x", "a.qcow2", "o.img"],
    ["-r", "abc", "a.qcow2", "o.img"],
    ["-t", "foo", "a.qcow2", "o.img"],
    ["-T", "foo", "a.qcow2", "o.img"],
    ["-c", "a.qcow2", "o.img"],
    ["-C", "-c", "-O", "qcow2", "a.qcow2", "o.img"],
    ["-C", "-S", "4k", "a.qcow2", "o.img"],
    ["-C", "--salvage", "a.qcow2", "o.img"],
    ["-n", "-o", "cluster_size=4k", "a.qcow2", "small.raw"],
    ["--target-image-opts", "a.qcow2", "o.img"],
    ["--skip-broken-bitmaps", "a.qcow2", "o.img"],
    ["--bitmaps", "a.qcow2", "o.img"],
    ["-O", "raw", "-o", "cluster_size=4k", "a.qcow2", "o.img"],
    ["-O", "qcow2", "-o", "foo=bar", "a.qcow2", "o.img"],
    ["-O", "qcow2", "-o", "", "a.qcow2", "o.img"],
    ["-O", "qcow2", "-o", "cluster_size=3k", "a.qcow2", "o.img"],
    ["-O", "qcow2", "-o", "compat=0.10,lazy_refcounts=on", "a.qcow2", "o.img"],
    ["-c", "-O", "qcow2", "-o", "preallocation=full", "a.qcow2", "o.img"],
    ["-O", "qcow2", "a.qcow2", "nodir/o.img"],
    ["-l", "snapshot.foo=x", "a.qcow2", "o.img"],
    ["-l", "s1", "a.qcow2", "a.qcow2", "o.img"],
    ["-l", "nosnap", "a.qcow2", "o.img"],
    ["-p", "nofile", "o.img"],
    ["-p", "-O", "foo", "a.qcow2", "o.img"],
]


@pytest.mark.parametrize("args", CONVERT_ERRORS)
def test_convert_errors_match(qemu_img, as_qemu_img, images, tmp_path, args):
    run([qemu_img, "create", "-q", "-f", "qcow2", str(tmp_path / "b2.qcow2"), "64M"])
    d = workdir(images, tmp_path, "e")
    os.symlink(str(tmp_path / "b2.qcow2"), os.path.join(d, "b2.qcow2"))
    got = same(qemu_img, as_qemu_img, ["convert"] + args, d)
    assert "Traceback" not in got[1]


@pytest.mark.parametrize("args", [
    ["-o", "help"],
    ["-O", "qcow2", "-o", "help"],
    ["-o", "help", "a.qcow2", "o.img"],
    ["-O", "qcow2", "-o", "cluster_size=4k,?", "a.qcow2", "o.img"],
    ["-O", "foo", "-o", "help"],
])
def test_convert_option_help(qemu_img, as_qemu_img, images, args):
    same(qemu_img, as_qemu_img, ["convert"] + args, images)


@pytest.mark.parametrize("extra", [
    ["a.qcow2"],
    ["-O", "qcow2", "a.qcow2"],
    ["-O", "qcow2", "-c", "a.qcow2"],
    ["-O", "qcow2", "-c", "-o", "cluster_size=4k", "a.qcow2"],
    ["-S", "0", "a.qcow2"],
    ["-O", "qcow2", "-l", "s1", "a.qcow2"],
    ["-O", "qcow2", "r.raw", "a.qcow2"],
    ["r.raw"],
    ["top.qcow2"],
    ["empty.qcow2"],
])
def test_convert_progress_matches(qemu_img, as_qemu_img, images, tmp_path, extra):
    outs = []
    for tool in ("qemu", "qimg"):
        d = workdir(images, tmp_path, tool)
        args = ["convert", "-p"] + extra + ["out.img"]
        proc = run([qemu_img] + args, check=False, cwd=d) if tool == "qemu" else as_qemu_img(*args, cwd=d)
        outs.append((proc.stdout, proc.stderr, proc.returncode))
    assert outs[1] == outs[0]
    # run() reads text with universal newlines: qemu's "\r" updates arrive as lines
    assert outs[0][0].startswith("    (0.00/100%)\n") and outs[0][0].endswith("    (100.00/100%)\n")


def test_convert_progress_bytes(as_qemu_img, images, tmp_path):
    """The raw bytes: "\r" after each update, one "\n" at the end."""
    import subprocess
    d = workdir(images, tmp_path, "b")
    link = os.path.join(d, "qemu-img")
    os.symlink(QIMG, link)
    proc = subprocess.run([sys.executable, link, "convert", "-p", "r.raw", "out.img"], cwd=d, check=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout == b"    (0.00/100%)\r    (3.21/100%)\r    (100.00/100%)\r    (100.00/100%)\r\n"


def test_convert_progress_json(as_qemu_img, images, tmp_path):
    d = workdir(images, tmp_path, "j")
    proc = as_qemu_img("convert", "--progress=json", "-O", "qcow2", "r.raw", "a.qcow2", "out.img", cwd=d)
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    total = (10 + 64) << 20
    assert len(lines) >= 2
    assert all(set(e) == {"done", "total", "elapsed"} and e["total"] == total for e in lines)
    assert [e["done"] for e in lines] == sorted(e["done"] for e in lines)
    assert lines[-1]["done"] == total
    proc = as_qemu_img("convert", "--progress=json", "empty.qcow2", "out2.img", cwd=d)
    assert [json.loads(line)["done"] for line in proc.stdout.splitlines()] == [0]
    proc = as_qemu_img("convert", "-q", "--progress=json", "empty.qcow2", "out3.img", cwd=d)
    assert proc.stdout == ""
    proc = as_qemu_img("convert", "--progress=xml", "empty.qcow2", "out4.img", cwd=d)
    assert proc.returncode == 1 and proc.stderr.startswith("qemu-img: --progress must be used with")


def test_convert_interrupted_leaves_nothing(monkeypatch, capsys, images, tmp_path):
    from qimg import cli
    from qimg.ops import convert as ops_convert

    def stop(*progress):
        raise KeyboardInterrupt(progress)

    real = ops_convert.convert

    def interrupted(*args, **kw):
        kw["progress"] = stop
        return real(*args, **kw)
    monkeypatch.setattr(ops_convert, "convert", interrupted)
    dest = str(tmp_path / "out.img")
    assert cli.main(["qemu-img", "convert", "-O", "qcow2", os.path.join(images, "a.qcow2"), dest]) == 130
    assert capsys.readouterr().err == "qemu-img: interrupted\n"
    assert os.listdir(str(tmp_path)) == []


# ---------------------------------------------------------------------------------------------
# compare

@pytest.mark.parametrize("args", [
    ["a.qcow2", "a.raw"],
    ["a.qcow2", "a2.qcow2"],
    ["a.raw", "a3.raw"],
    ["a.raw", "big.raw"],
    ["big2.raw", "a.raw"],
    ["-s", "a.raw", "big.raw"],
    ["-s", "a.qcow2", "a.raw"],
    ["-s", "a.qcow2", "a2.qcow2"],
    ["-q", "a.raw", "a3.raw"],
    ["-q", "-s", "a.raw", "big.raw"],
    ["-f", "qcow2", "-F", "raw", "a.qcow2", "a.raw"],
    ["-U", "-T", "none", "top.qcow2", "top.qcow2"],
    ["b.qcow2", "empty.qcow2"],
    ["-p", "a.raw", "a3.raw"],
    ["-p", "a.qcow2", "a.raw"],
    ["-p", "a.raw", "big.raw"],
    ["-p", "big2.raw", "a.raw"],
    ["-p", "-s", "a.raw", "big.raw"],
    ["a.raw", "nofile"],
    ["nofile", "a.raw"],
    ["-f", "qcow2", "a.raw", "a.raw"],
    ["-T", "foo", "a.raw", "a.raw"],
    ["a.raw"],
    ["a.raw", "b", "c"],
    ["-z", "a.raw", "a.raw"],
])
def test_compare_matches(qemu_img, as_qemu_img, images, args):
    same(qemu_img, as_qemu_img, ["compare"] + args, images)


# ---------------------------------------------------------------------------------------------
# measure

@pytest.mark.parametrize("source", ["a.qcow2", "r.raw", "top.qcow2", "empty.qcow2", ["--size", "1G"],
                                    ["--size", "1.5M"], ["--size", "0"]])
@pytest.mark.parametrize("extra", [
    [], ["--output=json"], ["-O", "raw"], ["-O", "qcow2"], ["-O", "qcow2", "--output=json"],
    ["-O", "qcow2", "-o", "cluster_size=4k,refcount_bits=1"],
    ["-O", "qcow2", "-o", "extended_l2=on", "--output", "json"],
    ["-O", "qcow2", "-o", "cluster_size=2M,extended_l2=on,refcount_bits=64"],
    ["-O", "qcow2", "-o", "compat=0.10"],
    ["-O", "qcow2", "-o", "preallocation=metadata"],
])
def test_measure_matches(qemu_img, as_qemu_img, images, source, extra):
    same(qemu_img, as_qemu_img, ["measure"] + extra + (source if isinstance(source, list) else [source]), images)


@pytest.mark.parametrize("args", [
    ["-O", "qcow2", "-l", "s1", "a.qcow2"],
    ["-O", "qcow2", "-l", "snapshot.id=1", "--output=json", "a.qcow2"],
    ["-f", "raw", "-O", "qcow2", "a.qcow2"],
    ["-U", "a.qcow2"],
    [],
    ["--size", "1G", "a.qcow2"],
    ["--size", "abc"],
    ["--size", "-1"],
    ["--output=xml", "a.qcow2"],
    ["-O", "foo", "a.qcow2"],
    ["-o", "help"],
    ["-o", "help", "a.qcow2"],
    ["-o", "foo=bar", "a.qcow2"],
    ["-O", "qcow2", "-o", "foo=bar", "a.qcow2"],
    ["-O", "qcow2", "-o", "cluster_size=3k", "a.qcow2"],
    ["-O", "qcow2", "-o", "refcount_bits=3", "--size", "1M"],
    ["-l", "snapshot.foo=1", "a.qcow2"],
    ["-O", "qcow2", "-l", "nosnap", "a.qcow2"],
    ["-O", "qcow2", "-o", "preallocation=full", "--size", "1M"],
    ["-f", "raw", "--size", "1M"],
    ["nofile"],
    ["a.qcow2", "b"],
])
def test_measure_other_matches(qemu_img, as_qemu_img, images, args):
    same(qemu_img, as_qemu_img, ["measure"] + args, images)


@pytest.mark.parametrize("args", [["-z"], ["--foo"], ["-O"]])
def test_measure_getopt_messages(qemu_img, as_qemu_img, images, args):
    """measure uses glibc's own messages, then prints the help (exit 0); our help text differs."""
    want, got = both(qemu_img, as_qemu_img, ["measure"] + args, images)
    assert (got[1], got[2]) == (want[1], want[2])
    assert got[0].startswith("qemu-img version ")


def test_help_lists_new_commands(as_qemu_img):
    text = as_qemu_img("--help").stdout
    for cmd in ("compare", "convert", "measure"):
        assert "\n  %s [" % cmd in text
    assert "--progress=json" in text
