# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bin/qimg dd against qemu-img 7.2 dd: the same messages and exit codes, outputs with the same
guest content (raw outputs byte for byte, qcow2 ones by qemu-img compare, of the same virtual size,
and clean for qemu-img check)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

import pytest

from conftest import assert_same_as_qemu_img as same
from conftest import oracle_and_ours as both
from conftest import oracle_in, run
from helpers import assert_check_clean, qemu_compare

SOURCES = ("a.qcow2", "top.qcow2", "c.qcow2", "odd.raw")


@pytest.fixture(scope="module")
def images(tmp_path_factory, qemu_img, qemu_io):
    d = str(tmp_path_factory.mktemp("ddimages"))
    q, io = oracle_in(d, qemu_img, qemu_io)
    q("create", "-q", "-f", "qcow2", "a.qcow2", "3M")
    io("qcow2", "a.qcow2", "write -P 1 0 700k", "write -P 2 1000k 3k", "write -z 1200k 200k",
       "write -P 3 2047k 5k", "write -P 4 3071k 1k")
    q("create", "-q", "-f", "qcow2", "base.qcow2", "2M")
    io("qcow2", "base.qcow2", "write -P 5 0 2M")
    q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2", "3M")
    io("qcow2", "top.qcow2", "write -P 6 512k 64k", "write -z 1M 64k")
    q("convert", "-c", "-O", "qcow2", "a.qcow2", "c.qcow2")
    with open(os.path.join(d, "odd.raw"), "wb") as f:    # a size that is no multiple of 512
        f.write(os.urandom(100 * 1024 + 77))
    return d


def workdirs(images, tmp_path):
    """Two directories with the images (as links): one for qemu-img's output, one for ours."""
    out = []
    for name in ("theirs", "ours"):
        d = tmp_path / name
        d.mkdir()
        for f in os.listdir(images):
            os.symlink(os.path.join(images, f), str(d / f))
        out.append(str(d))
    return out


def run_both(qemu_img, runner, args, images, tmp_path):
    d_q, d_o = workdirs(images, tmp_path)
    want = run([qemu_img] + args, check=False, cwd=d_q)
    got = runner(*args, cwd=d_o)
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode), args
    return d_q, d_o, got


def virtual_size(path, fmt):
    return json.loads(run(["qemu-img", "info", "--output=json", "-f", fmt, path]).stdout)["virtual-size"]


def assert_same_output(d_q, d_o, name="out", fmt="raw"):
    theirs, ours = os.path.join(d_q, name), os.path.join(d_o, name)
    assert virtual_size(ours, fmt) == virtual_size(theirs, fmt)
    if fmt == "raw":
        with open(theirs, "rb") as a, open(ours, "rb") as b:
            assert a.read() == b.read()
    else:
        assert_check_clean(ours, fmt)
        res = qemu_compare(theirs, ours, fmt, fmt, strict=False)
        assert res.returncode == 0, res.stdout + res.stderr


OPS = [
    [],
    ["bs=5", "count=3000"],
    ["bs=5", "skip=100001", "count=110000"],
    ["bs=1999"],
    ["bs=1k", "count=100"],
    ["bs=64K", "skip=3"],
    ["bs=1M", "count=2"],
    ["bs=1.5k", "skip=7", "count=1000"],
    ["skip=1", "count=2"],                   # 7.2: count counts from the start of the input
    ["bs=4096", "skip=30", "count=300"],
    ["count=0"],
    ["bs=3", "count=1"],
    ["skip=1K"],
    ["bs=0x10k"],                            # with qemu's hex-suffix warning
    ["count=9223372036854775807"],           # count * bs overflows: the whole input
]
CASES = ([("a.qcow2", ops, fmt) for ops in OPS for fmt in ("raw", "qcow2")]
         + [(src, ops, fmt) for src in SOURCES[1:] for ops in (OPS[0], OPS[1], OPS[5], OPS[7], OPS[8])
            for fmt in ("raw", "qcow2")])


@pytest.mark.parametrize("source, ops, out_fmt", CASES)
def test_dd_matches(qemu_img, as_qemu_img, images, tmp_path, source, ops, out_fmt):
    args = ["dd", "-O", out_fmt] + ops + ["if=%s" % source, "of=out"]
    if source.endswith(".raw"):
        args[1:1] = ["-f", "raw"]
    d_q, d_o, got = run_both(qemu_img, as_qemu_img, args, images, tmp_path)
    assert got.returncode == 0, got.stderr
    assert_same_output(d_q, d_o, fmt=out_fmt)


@pytest.mark.parametrize("ops", [
    ["skip=7000"],                           # past the end: message, empty output, exit 0
    ["skip=6144"],                           # exactly at the end: no message
    ["skip=9223372036854775807", "bs=2"],    # skip * bs overflows
    ["bs=1M", "skip=3"],
    ["bs=1M", "skip=2", "count=1"],          # count * bs before skip * bs
])
def test_dd_skip_past_end(qemu_img, as_qemu_img, images, tmp_path, ops):
    d_q, d_o, got = run_both(qemu_img, as_qemu_img, ["dd"] + ops + ["if=a.qcow2", "of=out"], images, tmp_path)
    assert got.returncode == 0
    assert os.path.getsize(os.path.join(d_o, "out")) == 0
    assert_same_output(d_q, d_o)


def test_dd_replaces_existing_output(qemu_img, as_qemu_img, images, tmp_path):
    d_q, d_o = workdirs(images, tmp_path)
    for d in (d_q, d_o):
        with open(os.path.join(d, "out"), "wb") as f:
            f.write(b"x" * (5 << 20))
    args = ["dd", "bs=64k", "count=3", "if=a.qcow2", "of=out"]
    assert run([qemu_img] + args, cwd=d_q).returncode == 0
    assert as_qemu_img(*args, cwd=d_o).returncode == 0
    assert_same_output(d_q, d_o)


@pytest.mark.parametrize("args", [
    ["bs=0", "if=a.qcow2", "of=o"],
    ["bs=2G", "if=a.qcow2", "of=o"],
    ["bs=1x", "if=a.qcow2", "of=o"],
    ["bs=", "if=a.qcow2", "of=o"],
    ["count=-1", "if=a.qcow2", "of=o"],
    ["count=1z", "if=a.qcow2", "of=o"],
    ["skip=1z", "if=a.qcow2", "of=o"],
    ["skip=99999999999999999999", "if=a.qcow2", "of=o"],
    ["foo=1", "if=a.qcow2", "of=o"],
    ["foo", "if=a.qcow2", "of=o"],
    ["=x", "if=a.qcow2", "of=o"],
    ["if=a.qcow2"],
    ["of=o"],
    [],
    ["if=nonexist", "of=o"],
    ["-O", "foo", "if=nonexist", "of=o"],
    ["-O", "foo", "if=a.qcow2", "of=o"],
    ["-O", "luks", "if=a.qcow2", "of=o"],
    ["if=a.qcow2", "of=foo:o"],
    ["if=a.qcow2", "of=null-co://"],
    ['of=json:{"file":{"driver":"file","filename":"x"}}', "if=a.qcow2"],
    ["if=a.qcow2", "of=/nonexistent-dir/o"],
    ["if=a.qcow2", "of="],
    ["if=a.qcow2", "of=."],
    ["if=a.qcow2", "of=a.qcow2"],            # the input's lock refuses the output
    ["-f", "raw", "-f", "qcow2", "if=odd.raw", "of=o"],
    ["-x", "if=a.qcow2", "of=o"],
    ["-f"],
    ["--image-opts", "-f", "qcow2", "if=a.qcow2", "of=o"],
])
def test_dd_errors_match(qemu_img, as_qemu_img, images, tmp_path, args):
    d_q, d_o = workdirs(images, tmp_path)
    want, got = both(qemu_img, as_qemu_img, ["dd"] + args, d_o)
    assert got == want
    assert "Traceback" not in got.stderr
    assert not os.path.exists(os.path.join(d_o, "o")) or args == ["-O", "foo", "if=a.qcow2", "of=o"]


def test_dd_file_prefix_and_image_opts(qemu_img, as_qemu_img, images, tmp_path):
    d_q, d_o, got = run_both(qemu_img, as_qemu_img, ["dd", "bs=4k", "if=a.qcow2", "of=file:out"],
                             images, tmp_path)
    assert_same_output(d_q, d_o)
    os.unlink(os.path.join(d_o, "out"))
    os.unlink(os.path.join(d_q, "out"))
    (tmp_path / "io").mkdir()
    spec = "driver=qcow2,file.filename=top.qcow2"
    d_q2, d_o2, got = run_both(qemu_img, as_qemu_img, ["dd", "--image-opts", "-O", "qcow2", "skip=3",
                                                       "if=%s" % spec, "of=out"], images, tmp_path / "io")
    assert_same_output(d_q2, d_o2, fmt="qcow2")


def test_dd_force_share(qemu_img, images, tmp_path, qemu_io):
    """-U reads an image another process holds for writing; without it the lock refuses."""
    import subprocess
    import sys
    from conftest import QIMG
    img = str(tmp_path / "busy.qcow2")
    run([qemu_img, "create", "-q", "-f", "qcow2", img, "1M"])
    holder = subprocess.Popen([qemu_io, "-f", "qcow2", img], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE)
    try:
        holder.stdin.write(b"write -P 7 0 64k\n")
        holder.stdin.flush()
        holder.stdout.readline()
        refused = run([sys.executable, QIMG, "dd", "if=" + img, "of=" + str(tmp_path / "o1")], check=False)
        assert refused.returncode == 1 and "lock" in refused.stderr
        ok = run([sys.executable, QIMG, "dd", "-U", "if=" + img, "of=" + str(tmp_path / "o2")], check=False)
        assert ok.returncode == 0, ok.stderr
    finally:
        holder.communicate(b"quit\n")
    assert os.path.getsize(str(tmp_path / "o2")) == 1 << 20


def test_dd_help_and_syntax(as_qemu_img):
    out = as_qemu_img("--help").stdout
    assert "  dd [--image-opts] [-U] [-f fmt] [-O output_fmt] [bs=block_size] [count=blocks] [skip=blocks] " \
           "if=input of=output\n" in out
    assert "  'skip=N' skip N bs-sized blocks at the start of input\n" in out


def test_dd_read_error_keeps_old_output(qemu_img, as_qemu_img, images, tmp_path):
    """A read error of the input: qemu-img's message and exit code; an existing output is untouched
    (qemu-img leaves it truncated and half written)."""
    d_q, d_o = workdirs(images, tmp_path)
    for d in (d_q, d_o):
        with open(os.path.join(d, "bd.conf"), "w") as f:
            f.write('[inject-error]\nevent = "read_aio"\nerrno = "5"\n')
    with open(os.path.join(d_o, "out"), "wb") as f:
        f.write(b"old content")
    args = ["dd", "-f", "qcow2", "if=blkdebug:bd.conf:a.qcow2", "of=out"]
    want = run([qemu_img] + args, check=False, cwd=d_q)
    got = as_qemu_img(*args, cwd=d_o)
    assert (got.returncode, got.stderr) == (want.returncode, want.stderr) == (
        1, "qemu-img: error while reading from input image file: Input/output error\n")
    with open(os.path.join(d_o, "out"), "rb") as f:
        assert f.read() == b"old content"
    assert sorted(os.listdir(d_o)) == sorted(os.listdir(images) + ["bd.conf", "out"])


def test_dd_encrypted_input(qemu_img, tmp_path):
    from crypto_helpers import qemu_retry, secret_obj
    path = str(tmp_path / "enc.qcow2")
    obj = secret_obj("dd-pw")
    qemu_retry([qemu_img, "create", "-q", "-f", "qcow2", "--object", obj, "-o",
                "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", path, "1M"])
    spec = "driver=qcow2,file.filename=%s,encrypt.key-secret=s0" % path
    run(["qemu-io", "--object", obj, "--image-opts", spec, "-c", "write -P 3 1000 70000"])
    d_q, d_o = str(tmp_path / "q"), str(tmp_path / "o")
    os.mkdir(d_q)
    os.mkdir(d_o)
    args = ["dd", "--object", obj, "--image-opts", "bs=1000", "skip=1", "count=100", "if=" + spec, "of=out"]
    run([qemu_img] + args, cwd=d_q)
    from conftest import qimg
    qimg(*args, cwd=d_o)
    assert_same_output(d_q, d_o)
