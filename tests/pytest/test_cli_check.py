# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bin/qimg check (and check -r) against qemu-img 7.2: same stdout, stderr and exit code.

Both tools run on the same images (clean ones made by qemu-img/qemu-io, and ones damaged on
purpose with test_check's helpers); repairs run on two fresh copies of the image, one per tool,
under the same file name, and the repaired copies are compared afterwards with qemu-img check.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil

import pytest

from conftest import assert_same_as_qemu_img as assert_same
from conftest import oracle_in, run
from test_check import COMPRESSED, COPIED, Layout

from qimg import cli

CLEAN = ["plain.qcow2", "empty.qcow2", "zero.qcow2", "v2-512.qcow2", "2M.qcow2", "comp.qcow2", "ext.qcow2",
         "frag.qcow2", "rc1.qcow2", "rc64.qcow2", "snaps.qcow2", "bitmaps.qcow2", "top.qcow2", "lazy.qcow2"]
DAMAGED = ["leak.qcow2", "leak1.qcow2", "rc0-data.qcow2", "rc0-l1.qcow2", "raised.qcow2", "copied.qcow2",
           "shared.qcow2", "dirty.qcow2", "corrupt-bit.qcow2", "dirty-bit.qcow2", "leak-and-shared.qcow2",
           "comp-rc0.qcow2", "comp-leak.qcow2", "rc1-leak.qcow2"]
OTHER = ["r.raw", "missing.qcow2", "nobacking.qcow2"]


def _damage(d, name, how):
    """Copy plain.qcow2 to name and apply how(Layout)."""
    path = os.path.join(d, name)
    shutil.copyfile(os.path.join(d, "plain.qcow2"), path)
    how(Layout(path))


def _leak(count):
    def how(lay):
        first = lay.grow(count)
        for c in range(first, first + count):
            lay.set_refcount(c, 1)
    return how


def _leak_and_shared(lay):
    _leak(1)(lay)
    lay.set_l2_entry(9, lay.l2_entry(0))


@pytest.fixture(scope="module")
def images(tmp_path_factory, qemu_img, qemu_io):
    """Images made by qemu-img/qemu-io, some damaged; names are relative to the returned directory."""
    d = str(tmp_path_factory.mktemp("chkimages"))
    q, io = oracle_in(d, qemu_img, qemu_io)

    def make(name, options, size, *writes):
        q("create", "-q", "-f", "qcow2", "-o", options, name, size)
        if writes:
            io("qcow2", name, *writes)

    make("plain.qcow2", "cluster_size=64k", "4M", "write -P 1 0 64k", "write -P 2 64k 64k", "write -P 3 1M 128k")
    make("empty.qcow2", "cluster_size=64k", "64M")
    make("zero.qcow2", "cluster_size=64k", "0")
    make("v2-512.qcow2", "compat=0.10,cluster_size=512", "4M", "write -P 1 0 64k", "write -P 2 1M 4k")
    make("2M.qcow2", "cluster_size=2M", "8M", "write -P 1 0 64k", "write -P 2 3M 64k")
    make("comp.qcow2", "cluster_size=64k", "4M", "write -c -P 1 0 64k", "write -c -P 2 128k 64k", "write -P 3 1M 64k")
    make("ext.qcow2", "extended_l2=on,cluster_size=64k", "4M", "write -P 1 0 4k", "write -P 2 100k 8k")
    make("frag.qcow2", "cluster_size=512", "4M", "write -P 1 2M 1k", "write -P 2 0 1k", "write -P 3 1M 4k")
    make("rc1.qcow2", "refcount_bits=1,cluster_size=64k", "4M", "write -P 1 0 64k", "write -P 3 1M 128k")
    make("rc64.qcow2", "refcount_bits=64,cluster_size=64k", "4M", "write -P 1 0 64k", "write -P 3 1M 128k")
    make("snaps.qcow2", "cluster_size=64k", "4M", "write -P 1 0 64k", "write -P 3 1M 128k")
    q("snapshot", "-c", "s1", "snaps.qcow2")
    io("qcow2", "snaps.qcow2", "write -P 9 0 32k", "write -P 8 3M 64k")
    q("snapshot", "-c", "s2", "snaps.qcow2")
    io("qcow2", "snaps.qcow2", "discard 64k 64k", "write -P 7 2M 64k")
    make("bitmaps.qcow2", "cluster_size=64k", "4M", "write -P 1 0 64k")
    q("bitmap", "--add", "bitmaps.qcow2", "b0")
    q("bitmap", "--add", "-g", "128k", "bitmaps.qcow2", "b1")
    io("qcow2", "bitmaps.qcow2", "write -P 6 3M 64k")
    make("base.qcow2", "cluster_size=64k", "4M", "write -P 1 0 1M")
    q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "top.qcow2")
    io("qcow2", "top.qcow2", "write -P 2 512k 1M")
    make("lazy.qcow2", "lazy_refcounts=on,cluster_size=4k", "1G", "write -P 5 0 64k")
    q("create", "-q", "-f", "raw", "r.raw", "1M")
    q("create", "-q", "-f", "qcow2", "-b", "gone.qcow2", "-F", "qcow2", "-u", "nobacking.qcow2", "4M")

    # damaged on purpose
    _damage(d, "leak.qcow2", _leak(2))
    _damage(d, "leak1.qcow2", _leak(1))
    _damage(d, "rc0-data.qcow2", lambda lay: lay.set_refcount(lay.data_cluster(1), 0))
    _damage(d, "rc0-l1.qcow2", lambda lay: lay.set_refcount(lay.l1_offset // lay.cs, 0))
    _damage(d, "raised.qcow2", lambda lay: lay.set_refcount(lay.data_cluster(0), 2))
    _damage(d, "copied.qcow2", lambda lay: lay.set_l2_entry(1, lay.l2_entry(1) & ~COPIED))
    _damage(d, "shared.qcow2", lambda lay: lay.set_l2_entry(7, lay.l2_entry(0)))
    _damage(d, "corrupt-bit.qcow2", lambda lay: lay.set_incompat(2))
    _damage(d, "dirty-bit.qcow2", lambda lay: lay.set_incompat(1))
    _damage(d, "leak-and-shared.qcow2", _leak_and_shared)
    shutil.copyfile(os.path.join(d, "rc1.qcow2"), os.path.join(d, "rc1-leak.qcow2"))
    _leak(1)(Layout(os.path.join(d, "rc1-leak.qcow2")))
    make("comp-rc0.qcow2", "cluster_size=64k", "4M", "write -c -P 7 0 64k", "write -c -P 8 64k 64k")
    lay = Layout(os.path.join(d, "comp-rc0.qcow2"))
    lay.set_refcount((lay.l2_entry(0) & ((1 << 54) - 1)) >> lay.cluster_bits, 0)
    make("comp-leak.qcow2", "cluster_size=64k", "4M", "write -c -P 7 0 64k", "write -c -P 8 64k 64k",
         "write -P 9 1M 64k")
    lay = Layout(os.path.join(d, "comp-leak.qcow2"))
    assert lay.l2_entry(1) & COMPRESSED
    lay.set_l2_entry(1, 0)
    q("create", "-q", "-f", "qcow2", "-o", "lazy_refcounts=on,cluster_size=64k", "dirty.qcow2", "4M")
    proc = run([qemu_io, "-f", "qcow2", "-c", "write -P 5 0 256k", "-c", "write -P 6 2M 64k", "-c", "abort",
                "dirty.qcow2"], check=False, cwd=d)
    assert proc.returncode != 0 and Layout(os.path.join(d, "dirty.qcow2")).incompat & 1
    return d


def _read(path):
    with open(path, "rb") as f:
        return f.read()


# ---------------------------------------------------------------------------------------------
# check (read-only)

EXTRAS = [[], ["--output=json"], ["-q"], ["-q", "--output=json"], ["-U", "--output", "human", "-f", "qcow2"]]


@pytest.mark.parametrize("extra", EXTRAS, ids=["human", "json", "quiet", "quiet-json", "opts"])
@pytest.mark.parametrize("name", CLEAN + DAMAGED + OTHER)
def test_check_matches(qemu_img, as_qemu_img, images, name, extra):
    if name == "r.raw" and "-f" in extra:
        extra = [e if e != "qcow2" else "raw" for e in extra]
    path = os.path.join(images, name)
    before = _read(path) if os.path.exists(path) else None
    assert_same(qemu_img, as_qemu_img, ["check"] + extra + [name], images)
    if before is not None:
        assert _read(path) == before, "check wrote to the image"


# ---------------------------------------------------------------------------------------------
# check -r on fresh copies, one per tool

def _copies(images, tmp_path, name):
    dirs = []
    for tool in ("qemu", "qimg"):
        d = tmp_path / tool
        d.mkdir()
        for other in ("base.qcow2",):
            os.symlink(os.path.join(images, other), str(d / other))
        src = os.path.join(images, name)
        if os.path.exists(src):
            shutil.copyfile(src, str(d / name))
        dirs.append(str(d))
    return dirs


# every damaged image, repaired by both tools: same output, same state afterwards
REPAIR_IMAGES = DAMAGED + ["plain.qcow2", "snaps.qcow2", "top.qcow2", "r.raw", "missing.qcow2"]


def _repair_cases():
    cases = []
    for name in REPAIR_IMAGES:
        for mode in ("leaks", "all"):
            for output in ("human", "json", "quiet"):
                cases.append(pytest.param(name, mode, output, id="%s-%s-%s" % (name, mode, output)))
    return cases


OUTPUT_ARGS = {"human": [], "json": ["--output=json"], "quiet": ["-q"]}


@pytest.mark.parametrize("name,mode,output", _repair_cases())
def test_repair_matches(qemu_img, as_qemu_img, images, tmp_path, name, mode, output):
    qdir, odir = _copies(images, tmp_path, name)
    args = ["check", "-r", mode] + OUTPUT_ARGS[output] + [name]
    want = run([qemu_img] + args, check=False, cwd=qdir)
    got = as_qemu_img(*args, cwd=odir)
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode), args
    if os.path.exists(os.path.join(qdir, name)):
        # the repaired images: qemu-img check finds the same on both
        after = [run([qemu_img, "check", "--output=json", name], check=False, cwd=d) for d in (qdir, odir)]
        assert (after[1].stdout, after[1].stderr, after[1].returncode) == (
            after[0].stdout, after[0].stderr, after[0].returncode)


@pytest.mark.parametrize("mode", ["leaks", "all"])
@pytest.mark.parametrize("name", DAMAGED + ["plain.qcow2"])
def test_repair_output_from_qemu_figures(qemu_img, images, tmp_path, name, mode):
    """The CLI's formatting alone: qemu's own -r figures (from its JSON) give qemu's human and JSON stdout."""
    outs = {}
    for output in ("human", "json"):
        d = tmp_path / output
        d.mkdir()
        shutil.copyfile(os.path.join(images, name), str(d / name))
        outs[output] = run([qemu_img, "check", "-r", mode] + OUTPUT_ARGS[output] + [name], check=False, cwd=str(d))
    if not outs["json"].stdout:
        assert outs["json"].returncode == 1 and not outs["human"].stdout   # Check failed: no figures
        return
    res = json.loads(outs["json"].stdout)
    if res.get("leaks-fixed") or res.get("corruptions-fixed"):
        res["repaired"] = {"leaks": res.get("leaks-fixed", 0), "corruptions": res.get("corruptions-fixed", 0)}
    assert cli.format_check(res, "json") == outs["json"].stdout
    assert cli.format_check(res, "human") == outs["human"].stdout


# ---------------------------------------------------------------------------------------------
# options and usage errors

@pytest.mark.parametrize("args", [
    ["check"],
    ["check", "plain.qcow2", "leak.qcow2"],
    ["check", "-r", "foo", "plain.qcow2"],
    ["check", "-r"],
    ["check", "--repair=sometimes", "--bogus", "plain.qcow2"],
    ["check", "--bogus", "-r", "foo", "plain.qcow2"],
    ["check", "-x", "plain.qcow2"],
    ["check", "--output=xml", "plain.qcow2"],
    ["check", "--output=xml"],
    ["check", "-T", "bogus", "plain.qcow2"],
    ["check", "-T", "none", "--output", "json", "plain.qcow2"],
    ["check", "--output=xml", "-T", "bogus", "plain.qcow2"],
    ["check", "-T", "bogus", "missing.qcow2"],
    ["check", "-f", "raw", "plain.qcow2"],
    ["check", "--format", "qcow2", "r.raw"],
    ["check", "--force-share", "--out=json", "leak.qcow2"],
    ["check", "-qU", "leak.qcow2"],
    ["check", "plain.qcow2", "--output=json"],
    ["check", "--", "plain.qcow2"],
])
def test_check_options_match(qemu_img, as_qemu_img, images, args):
    assert_same(qemu_img, as_qemu_img, args, images)


def test_help_lists_check(qemu_img, as_qemu_img):
    text = as_qemu_img("--help").stdout
    theirs = run([qemu_img, "--help"]).stdout
    line = [ln for ln in theirs.splitlines() if ln.startswith("  check [")]
    assert line and "\n%s\n" % line[0] in text
    block = theirs[theirs.index("Parameters to check subcommand:"):]
    block = block[:block.index("\n\n") + 2]
    assert block in text
    assert as_qemu_img("check", "-h").stdout == text
