# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import stat
import subprocess

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_create import main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info

GiB = 1 << 30


def _mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def _qemu_img():
    return shutil.which("qemu-img")


def _qemu_check(path):
    """qemu-img check is clean (skipped when qemu-img is not installed)."""
    tool = _qemu_img()
    if tool is None:
        return
    proc = subprocess.run([tool, "check", path], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _qemu_info(path):
    tool = _qemu_img()
    if tool is None:
        pytest.skip("qemu-img not installed")
    out = subprocess.run([tool, "info", "-U", "--output=json", path], capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


# ---------------------------------------------------------------- state=present, ladder


def test_create_ladder(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    args = dict(path=path, size="1G")

    res = run.ok(main, args, check_mode=True, diff=True)
    assert res["changed"] is True
    assert not os.path.exists(path)
    assert res["diff"]["before"] == {"state": "absent"}
    assert res["diff"]["after"]["format"] == "qcow2"
    assert res["diff"]["after"]["virtual_size"] == GiB
    assert res["diff"]["after"]["cluster_size"] == 65536
    assert "virtual_size" not in res  # no facts for an image that does not exist yet

    res = run.ok(main, args, diff=True)
    assert res["changed"] is True
    assert os.path.isfile(path)
    assert res["path"] == path
    assert res["format"] == "qcow2"
    assert res["virtual_size"] == GiB
    assert res["cluster_size"] == 65536
    assert res["format_specific"]["type"] == "qcow2"
    assert res["format_specific"]["data"]["compat"] == "1.1"
    assert "virtual-size" not in res
    assert res["diff"]["before"] == {"state": "absent"}
    assert res["diff"]["after"]["virtual_size"] == GiB
    assert res["diff"]["after"]["state"] == "present"
    _qemu_check(path)

    res = run.ok(main, args, check_mode=True, diff=True)
    assert res["changed"] is False
    assert res["virtual_size"] == GiB
    assert res["diff"]["before"] == res["diff"]["after"]

    res = run.ok(main, args)
    assert res["changed"] is False
    assert res["virtual_size"] == GiB


def test_size_is_not_bytes_on_disk(tmp_path, run):
    """Ansible adds file facts (size = bytes on disk) to results with path; ours stay apart."""
    path = str(tmp_path / "disk.qcow2")
    res = run.ok(main, dict(path=path, size="1G"))
    assert res["virtual_size"] == GiB
    assert res.get("size", 0) < GiB


def test_create_raw(tmp_path, run):
    path = str(tmp_path / "disk.img")
    res = run.ok(main, dict(path=path, size="1M", format="raw"))
    assert res["changed"] is True
    assert res["format"] == "raw"
    assert res["virtual_size"] == 1 << 20
    assert os.path.getsize(path) == 1 << 20
    res = run.ok(main, dict(path=path, size=str(1 << 20), format="raw"))
    assert res["changed"] is False


def test_size_in_bytes_int(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    run.ok(main, dict(path=path, size=1048576))
    res = run.ok(main, dict(path=path, size="1M"))
    assert res["changed"] is False


def test_unaligned_size_rounds_like_qemu(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    res = run.ok(main, dict(path=path, size="1000"))
    assert res["virtual_size"] == 1024
    res = run.ok(main, dict(path=path, size="1000"))
    assert res["changed"] is False


def test_options_idempotent(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    options = dict(cluster_size="4k", lazy_refcounts=True, refcount_bits=16,
                   compression_type="zlib", extended_l2=False, preallocation="metadata")
    args = dict(path=path, size="64M", options=options)
    res = run.ok(main, args)
    assert res["changed"] is True
    assert res["cluster_size"] == 4096
    assert res["format_specific"]["data"]["lazy_refcounts"] is True
    _qemu_check(path)
    qinfo = _qemu_info(path)
    assert qinfo["cluster-size"] == 4096
    assert qinfo["format-specific"]["data"]["lazy-refcounts"] is True
    # preallocation cannot be read back: never a difference
    args["options"]["preallocation"] = "off"
    res = run.ok(main, args)
    assert res["changed"] is False
    # options left out are not compared
    res = run.ok(main, dict(path=path, size="64M"))
    assert res["changed"] is False


def test_compat_010(tmp_path, run):
    path = str(tmp_path / "old.qcow2")
    res = run.ok(main, dict(path=path, size="1M", options=dict(compat="0.10")), diff=True)
    assert res["changed"] is True
    assert res["format_specific"]["data"]["compat"] == "0.10"
    assert res["diff"]["after"]["compat"] == "0.10"
    # YAML reads 0.10 as the float 0.1; v2 is qemu's other name for it
    for compat in ("0.1", "v2", "0.10"):
        res = run.ok(main, dict(path=path, size="1M", options=dict(compat=compat)))
        assert res["changed"] is False, compat
    res = run.fail(main, dict(path=path, size="1M", options=dict(compat="1.1")))
    assert "compat 0.10 != 1.1" in res["msg"]
    res = run.fail(main, dict(path=path, size="1M", options=dict(compat="2.0")))
    assert "options.compat must be one of" in res["msg"]


# ---------------------------------------------------------------- differences and force


def test_difference_fails_without_force(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    run.ok(main, dict(path=path, size="1G"))
    before = open(path, "rb").read()
    args = dict(path=path, size="2G", options=dict(cluster_size="4096"))
    for check_mode in (True, False):
        res = run.fail(main, args, check_mode=check_mode)
        assert "virtual size 1073741824 != 2147483648" in res["msg"]
        assert "cluster_size 65536 != 4096" in res["msg"]
        assert "virtual size 1073741824 != 2147483648; cluster_size 65536 != 4096" in res["msg"]
        assert res["differences"] == ["virtual size 1073741824 != 2147483648",
                                      "cluster_size 65536 != 4096"]
        assert res.get("changed") is False
    assert open(path, "rb").read() == before


def test_force_recreates(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    run.ok(main, dict(path=path, size="1G"))
    args = dict(path=path, size="2G", options=dict(cluster_size="4096"), force=True)

    res = run.ok(main, args, check_mode=True, diff=True)
    assert res["changed"] is True
    assert res["differences"]
    assert res["diff"]["before"]["virtual_size"] == GiB
    assert res["diff"]["after"]["virtual_size"] == 2 * GiB
    assert res["diff"]["after"]["cluster_size"] == 4096
    assert image_info(path)["virtual-size"] == GiB

    res = run.ok(main, args, diff=True)
    assert res["changed"] is True
    assert res["virtual_size"] == 2 * GiB
    assert res["cluster_size"] == 4096
    assert res["diff"]["before"]["virtual_size"] == GiB
    assert res["diff"]["after"]["virtual_size"] == 2 * GiB
    _qemu_check(path)
    assert not [f for f in os.listdir(str(tmp_path)) if f != "disk.qcow2"], "temp file left"

    res = run.ok(main, args, check_mode=True)
    assert res["changed"] is False
    res = run.ok(main, args)
    assert res["changed"] is False


def test_format_difference(tmp_path, run):
    path = str(tmp_path / "disk.img")
    run.ok(main, dict(path=path, size="1M", format="raw"))
    res = run.fail(main, dict(path=path, size="1M", format="qcow2"))
    assert "format raw != qcow2" in res["msg"]
    res = run.ok(main, dict(path=path, size="1M", format="qcow2", force=True))
    assert res["changed"] is True
    assert res["format"] == "qcow2"


def test_foreign_file_is_never_clobbered(tmp_path, run):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"precious data\n")
    res = run.fail(main, dict(path=str(path), size="1M"))
    assert "format raw != qcow2" in res["msg"]
    assert path.read_bytes() == b"precious data\n"


def test_size_required(tmp_path, run):
    res = run.fail(main, dict(path=str(tmp_path / "x.qcow2")))
    assert "size is required" in res["msg"]


def test_invalid_size_is_engine_error(tmp_path, run):
    res = run.fail(main, dict(path=str(tmp_path / "x.qcow2"), size="12X"))
    assert "Invalid image size" in res["msg"]
    assert not os.path.exists(str(tmp_path / "x.qcow2"))


def test_raw_rejects_qcow2_options(tmp_path, run):
    res = run.fail(main, dict(path=str(tmp_path / "x.img"), size="1M", format="raw",
                              options=dict(cluster_size="4k")))
    assert "not supported by format raw: cluster_size" in res["msg"]
    res = run.fail(main, dict(path=str(tmp_path / "x.img"), size="1M", format="raw",
                              backing_file="base.img"))
    assert "backing file" in res["msg"]


def test_missing_directory_fails_cleanly(tmp_path, run):
    res = run.fail(main, dict(path=str(tmp_path / "nope" / "x.qcow2"), size="1M"))
    assert res["msg"]
    assert "Traceback" not in res["msg"]


# ---------------------------------------------------------------- backing files


def test_overlay(tmp_path, run):
    base = str(tmp_path / "base.qcow2")
    overlay = str(tmp_path / "overlay.qcow2")
    run.ok(main, dict(path=base, size="32M"))
    args = dict(path=overlay, backing_file="base.qcow2", backing_format="qcow2")

    res = run.ok(main, args, check_mode=True, diff=True)
    assert res["changed"] is True
    assert res["diff"]["after"]["backing_file"] == "base.qcow2"
    assert res["diff"]["after"]["virtual_size"] == 32 << 20

    res = run.ok(main, args)
    assert res["changed"] is True
    assert res["virtual_size"] == 32 << 20
    assert res["backing_filename"] == "base.qcow2"
    assert res["backing_filename_format"] == "qcow2"
    _qemu_check(overlay)
    assert _qemu_info(overlay)["backing-filename"] == "base.qcow2"

    assert run.ok(main, args, check_mode=True)["changed"] is False
    assert run.ok(main, args)["changed"] is False
    # size given and equal: still no change
    assert run.ok(main, dict(args, size="32M"))["changed"] is False
    # backing format left out: not compared
    assert run.ok(main, dict(path=overlay, backing_file="base.qcow2"))["changed"] is False

    res = run.fail(main, dict(args, backing_file="other.qcow2"))
    assert "backing file base.qcow2 != other.qcow2" in res["msg"]
    res = run.fail(main, dict(path=overlay, size="32M"))
    assert "backing file base.qcow2 != none" in res["msg"]
    res = run.fail(main, dict(args, backing_format="raw"))
    assert "backing format qcow2 != raw" in res["msg"]


# ---------------------------------------------------------------- file attributes


def test_mode(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    res = run.ok(main, dict(path=path, size="1M", mode="0600"))
    assert res["changed"] is True
    assert _mode(path) == 0o600

    assert run.ok(main, dict(path=path, size="1M", mode="0600"))["changed"] is False

    res = run.ok(main, dict(path=path, size="1M", mode="0640"), check_mode=True, diff=True)
    assert res["changed"] is True
    assert _mode(path) == 0o600
    assert res["diff"]["before"]["mode"] == "0600"
    assert res["diff"]["after"]["mode"] == "0640"

    res = run.ok(main, dict(path=path, size="1M", mode="0640"))
    assert res["changed"] is True
    assert _mode(path) == 0o640
    assert run.ok(main, dict(path=path, size="1M", mode="0640"))["changed"] is False


def test_forced_recreate_keeps_mode(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    run.ok(main, dict(path=path, size="1M", mode="0600"))
    run.ok(main, dict(path=path, size="2M", force=True))
    assert _mode(path) == 0o600


def test_mode_applied_on_forced_recreate(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    run.ok(main, dict(path=path, size="1M", mode="0600"))
    res = run.ok(main, dict(path=path, size="2M", mode="0640", force=True))
    assert res["changed"] is True
    assert _mode(path) == 0o640


# ---------------------------------------------------------------- state=absent


def test_absent_ladder(tmp_path, run):
    path = str(tmp_path / "disk.qcow2")
    run.ok(main, dict(path=path, size="1M"))
    args = dict(path=path, state="absent")

    res = run.ok(main, args, check_mode=True, diff=True)
    assert res["changed"] is True
    assert os.path.exists(path)
    assert res["diff"]["before"]["virtual_size"] == 1 << 20
    assert res["diff"]["after"] == {"state": "absent"}

    res = run.ok(main, args, diff=True)
    assert res["changed"] is True
    assert not os.path.exists(path)

    res = run.ok(main, args, check_mode=True)
    assert res["changed"] is False
    res = run.ok(main, args)
    assert res["changed"] is False


def test_absent_non_image_file(tmp_path, run):
    path = tmp_path / "junk"
    path.write_bytes(b"x")
    res = run.ok(main, dict(path=str(path), state="absent"))
    assert res["changed"] is True
    assert not path.exists()


def test_absent_refuses_directory(tmp_path, run):
    res = run.fail(main, dict(path=str(tmp_path), state="absent"))
    assert "is a directory" in res["msg"]
    assert tmp_path.is_dir()


def test_new_image_mode_follows_umask(tmp_path, run):
    """Like qemu-img (and open(2)), a new image gets 0666 & ~umask, not a temp file's 0600."""
    path = str(tmp_path / "disk.qcow2")
    old = os.umask(0o022)
    try:
        run.ok(main, dict(path=path, size="1M"))
    finally:
        os.umask(old)
    assert _mode(path) == 0o644


def test_in_use_is_compared_but_never_replaced(in_use, run):
    path = in_use
    before = open(path, "rb").read()
    # idempotence check works while the image is in use
    assert run.ok(main, dict(path=path, size="1M"))["changed"] is False
    for check_mode in (True, False):
        res = run.fail(main, dict(path=path, size="2M", force=True), check_mode=check_mode)
        assert "refusing to re-create" in res["msg"]
        assert "lock" in res["msg"]
        res = run.fail(main, dict(path=path, state="absent"), check_mode=check_mode)
        assert "refusing to remove" in res["msg"]
    assert open(path, "rb").read() == before
