# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host-file create options: `nocow` (FS_NOCOW_FL, btrfs) and `extent_size_hint` (XFS extsize).

Each runs on a loop-mounted file system made by the fixture (root; CI runs as root and must run
them: the tests skip only when no loop device can be had outside CI), against real qemu-img:
`lsattr` of our image and of qemu-img's, `xfs_io -c extsize` for the hint, and the CLI's
messages (the warning when a file system refuses a hint that was asked for).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import shutil
import subprocess

import pytest

from conftest import assert_same_as_qemu_img, run
from helpers import qemu_compare


@contextlib.contextmanager
def _loop_mount(tmp_path_factory, fstype, size_mb, mkfs):
    """Make a sparse file, attach a loop device, mkfs and mount it; yield the mount point."""
    tool = mkfs[0]
    if shutil.which(tool) is None:
        if os.environ.get("CI") == "true":
            pytest.fail("%s is required (CI installs btrfs-progs and xfsprogs)" % tool)
        pytest.skip("%s not installed" % tool)
    base = tmp_path_factory.mktemp(fstype)
    backing = str(base / "fs.img")
    mnt = str(base / "mnt")
    os.mkdir(mnt)
    with open(backing, "wb") as f:
        f.truncate(size_mb << 20)
    proc = subprocess.run(["losetup", "-f", "--show", backing], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False)
    if proc.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("no loop device: %s" % proc.stderr.strip())
        pytest.skip("no loop device: %s" % proc.stderr.strip())
    dev = proc.stdout.strip()
    mounted = False
    try:
        run(mkfs + [dev])
        run(["mount", "-t", fstype, dev, mnt])
        mounted = True
        yield mnt
    finally:
        if mounted:
            subprocess.call(["umount", mnt])
        subprocess.call(["losetup", "-d", dev])


@pytest.fixture(scope="module")
def btrfs(tmp_path_factory):
    with _loop_mount(tmp_path_factory, "btrfs", 200, ["mkfs.btrfs", "-q", "-f"]) as mnt:
        yield mnt


@pytest.fixture(scope="module")
def xfs(tmp_path_factory):
    with _loop_mount(tmp_path_factory, "xfs", 320, ["mkfs.xfs", "-q", "-f"]) as mnt:
        yield mnt


def _attrs(path):
    """The attribute letters lsattr prints for path."""
    return run(["lsattr", "-d", path]).stdout.split()[0]


def _extsize(path):
    out = run(["xfs_io", "-c", "extsize", path]).stdout  # "[1048576] /path"
    return int(out.split("]")[0].strip("[ "))


# ------------------------------------------------------------------------------- nocow on btrfs
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
@pytest.mark.parametrize("nocow", ["on", "off", None])
def test_create_nocow_like_qemu_img(btrfs, qemu_img, as_qemu_img, fmt, nocow):
    opts = [] if nocow is None else ["-o", "nocow=%s" % nocow]
    ours, theirs = "ours-%s-%s.%s" % (nocow, fmt, fmt), "theirs-%s-%s.%s" % (nocow, fmt, fmt)
    run([qemu_img, "create", "-q", "-f", fmt] + opts + [theirs, "64M"], cwd=btrfs)
    got = as_qemu_img("create", "-f", fmt, *(opts + [ours, "64M"]), cwd=btrfs)
    assert got.returncode == 0, got.stderr
    want = run([qemu_img, "create", "-f", fmt] + opts + ["again." + fmt, "64M"], cwd=btrfs)
    assert got.stdout.replace(ours, "again." + fmt) == want.stdout
    a, b = _attrs(os.path.join(btrfs, ours)), _attrs(os.path.join(btrfs, theirs))
    assert a == b
    assert ("C" in a) == (nocow == "on")
    if fmt == "qcow2":
        run([qemu_img, "check", "-q", os.path.join(btrfs, ours)])


@pytest.mark.parametrize("out_fmt", ["raw", "qcow2"])
def test_convert_nocow(btrfs, qemu_img, tmp_path, out_fmt):
    src = str(tmp_path / "src.qcow2")
    run([qemu_img, "create", "-q", "-f", "qcow2", src, "8M"])
    run(["qemu-io", "-f", "qcow2", "-c", "write -P 6 1M 1M", src])
    ours = os.path.join(btrfs, "conv-ours." + out_fmt)
    theirs = os.path.join(btrfs, "conv-theirs." + out_fmt)
    run([qemu_img, "convert", "-O", out_fmt, "-o", "nocow=on", src, theirs])
    from conftest import qimg
    qimg("convert", "-O", out_fmt, "-o", "nocow=on", src, ours)
    assert _attrs(ours) == _attrs(theirs)
    assert "C" in _attrs(ours)
    assert qemu_compare(src, ours, "qcow2", out_fmt).returncode == 0


def test_nocow_replacing_a_file(btrfs, qemu_img):
    """Over an existing (copy-on-write) file the new one still gets the flag: it is set on the
    fresh temporary file before any data and survives the rename."""
    path = os.path.join(btrfs, "replace.raw")
    with open(path, "wb") as f:
        f.write(b"x" * 4096)
    assert "C" not in _attrs(path)
    from conftest import qimg
    qimg("create", "-q", "-f", "raw", "-o", "nocow=on", path, "1M")
    assert "C" in _attrs(path)


def test_extent_size_hint_warning_on_btrfs(btrfs, qemu_img, as_qemu_img):
    """btrfs refuses FS_XFLAG_EXTSIZE: qemu-img warns only when the hint was asked for (not 0)."""
    for opts in ("extent_size_hint=2M", "extent_size_hint=0", "nocow=on", "nocow=on,extent_size_hint=64k"):
        for name in ("w.raw",):
            if os.path.exists(os.path.join(btrfs, name)):
                os.unlink(os.path.join(btrfs, name))
        got = assert_same_as_qemu_img(qemu_img, as_qemu_img, ["create", "-f", "raw", "-o", opts, "w.raw", "1M"],
                                      btrfs)
        assert ("warning: Failed to set extent size hint" in got.stderr) == (opts.endswith(("2M", "64k")))


# -------------------------------------------------------------------- extent_size_hint on XFS
@pytest.mark.parametrize("opts,want", [(None, 1 << 20), ("extent_size_hint=4M", 4 << 20),
                                       ("extent_size_hint=0", 0), ("extent_size_hint=256k", 256 << 10)])
@pytest.mark.parametrize("fmt", ["raw", "qcow2"])
def test_extent_size_hint_on_xfs(xfs, qemu_img, as_qemu_img, opts, want, fmt):
    o = [] if opts is None else ["-o", opts]
    name = "x-%s.%s" % (want, fmt)
    for n in (name, "q" + name):
        if os.path.exists(os.path.join(xfs, n)):
            os.unlink(os.path.join(xfs, n))
    got = as_qemu_img("create", "-f", fmt, *(o + [name, "16M"]), cwd=xfs)
    assert got.returncode == 0 and got.stderr == "", got.stderr
    run([qemu_img, "create", "-q", "-f", fmt] + o + ["q" + name, "16M"], cwd=xfs)
    assert _extsize(os.path.join(xfs, name)) == _extsize(os.path.join(xfs, "q" + name)) == want


def test_extent_size_hint_too_large(tmp_path, qemu_img, as_qemu_img):
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img,
                                  ["create", "-f", "raw", "-o", "extent_size_hint=5G", "big.raw", "1M"], str(tmp_path))
    assert "Extent size hint is too large" in got.stderr
    assert not os.path.exists(str(tmp_path / "big.raw"))


def test_extent_size_hint_on_ext4_is_silent(tmp_path, qemu_img, as_qemu_img):
    """ext4 accepts the ioctl and ignores the hint: no warning from either tool."""
    got = assert_same_as_qemu_img(qemu_img, as_qemu_img,
                                  ["create", "-f", "qcow2", "-o", "extent_size_hint=2M", "e.qcow2", "1M"],
                                  str(tmp_path))
    assert got.returncode == 0 and got.stderr == ""
