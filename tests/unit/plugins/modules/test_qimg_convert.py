# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import stat
import subprocess

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_convert import main
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.compare import compare_images
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info

MiB = 1 << 20


def _qemu_img():
    return shutil.which("qemu-img")


def _qemu_check(path):
    """qemu-img check is clean (skipped when qemu-img is not installed)."""
    tool = _qemu_img()
    if tool is None:
        return
    proc = subprocess.run([tool, "check", path], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _qemu_compare(path1, path2):
    tool = _qemu_img()
    if tool is None:
        return
    proc = subprocess.run([tool, "compare", "-U", path1, path2], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _write_raw(path, size, chunks):
    """A raw image of size bytes with data at the given {offset: bytes}."""
    with open(path, "wb") as f:
        f.truncate(size)
        for offset, data in chunks.items():
            f.seek(offset)
            f.write(data)


def _read(path):
    with open(path, "rb") as f:
        return f.read()


def _listing(directory):
    return sorted(os.listdir(directory))


@pytest.fixture
def src(tmp_path):
    path = str(tmp_path / "src.img")
    _write_raw(path, 4 * MiB, {0: b"boot" * 128, 3 * MiB + 4096: b"\xaa" * 65536})
    return path


# ---------------------------------------------------------------- the ladder


def test_convert_ladder(tmp_path, src, run):
    dest = str(tmp_path / "dest.qcow2")
    args = dict(src=src, dest=dest)

    res = run.ok(main, args, check_mode=True, diff=True)
    assert res["changed"] is True
    assert not os.path.exists(dest)
    assert res["dest"] == dest
    assert res["measure"]["required"] > 0
    assert res["measure"]["fully_allocated"] >= 4 * MiB
    assert res["diff"]["before"] == {"state": "absent"}
    assert res["diff"]["after"]["format"] == "qcow2"
    assert res["diff"]["after"]["virtual_size"] == 4 * MiB
    assert res["diff"]["after"]["cluster_size"] == 65536
    assert res["diff"]["after"]["compat"] == "1.1"
    assert "virtual_size" not in res
    assert _listing(str(tmp_path)) == ["src.img"]

    res = run.ok(main, args, diff=True)
    assert res["changed"] is True
    assert res["format"] == "qcow2"
    assert res["virtual_size"] == 4 * MiB
    assert res["format_specific"]["data"]["compat"] == "1.1"
    assert res["measure"]["required"] > 0
    assert res["diff"]["before"] == {"state": "absent"}
    assert res["diff"]["after"]["virtual_size"] == 4 * MiB
    assert compare_images(src, dest)["result"] == "identical"
    _qemu_check(dest)
    _qemu_compare(src, dest)
    data = _read(dest)

    res = run.ok(main, args, check_mode=True, diff=True)
    assert res["changed"] is False
    assert "measure" not in res
    assert res["diff"]["before"] == res["diff"]["after"]
    assert res["virtual_size"] == 4 * MiB

    res = run.ok(main, args)
    assert res["changed"] is False
    assert _read(dest) == data
    assert _listing(str(tmp_path)) == ["dest.qcow2", "src.img"]


def test_measure_matches_qimg_measure(tmp_path, src, run):
    from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.measure import measure

    res = run.ok(main, dict(src=src, dest=str(tmp_path / "d.qcow2"), options=dict(cluster_size="4k")),
                 check_mode=True)
    want = measure(filename=src, out_fmt="qcow2", options={"cluster_size": "4096"})
    assert res["measure"] == {"required": want["required"], "fully_allocated": want["fully-allocated"]}


def test_raw_to_qcow2_to_raw_round_trip(tmp_path, src, run):
    mid = str(tmp_path / "mid.qcow2")
    back = str(tmp_path / "back.img")
    run.ok(main, dict(src=src, dest=mid, src_format="raw"))
    res = run.ok(main, dict(src=mid, dest=back, format="raw"))
    assert res["changed"] is True
    assert res["format"] == "raw"
    assert _read(back) == _read(src)
    res = run.ok(main, dict(src=mid, dest=back, format="raw"))
    assert res["changed"] is False


def test_raw_dest_holding_qcow2_bytes_is_idempotent(tmp_path, run):
    """A qcow2 file copied as raw gives a raw dest that probes as qcow2: still unchanged."""
    qcow = str(tmp_path / "a.qcow2")
    create_image(qcow, "qcow2", size="1M")
    dest = str(tmp_path / "copy.img")
    args = dict(src=qcow, src_format="raw", dest=dest, format="raw")
    assert run.ok(main, args)["changed"] is True
    res = run.ok(main, args)
    assert res["changed"] is False
    assert res["format"] == "raw"


# ---------------------------------------------------------------- differences and force


def test_content_difference_fails_without_force(tmp_path, src, run):
    dest = str(tmp_path / "dest.qcow2")
    run.ok(main, dict(src=src, dest=dest))
    with open(src, "r+b") as f:
        f.seek(2 * MiB + 1000)
        f.write(b"changed")
    before = _read(dest)
    for check_mode in (True, False):
        res = run.fail(main, dict(src=src, dest=dest), check_mode=check_mode)
        assert "force is false" in res["msg"]
        assert "content differs from the source at offset %d" % (2 * MiB + 512) in res["msg"]
        assert res["differences"] == ["content differs from the source at offset %d" % (2 * MiB + 512)]
        assert res.get("changed") is False
    assert _read(dest) == before


def test_format_and_options_differences_listed(tmp_path, src, run):
    dest = str(tmp_path / "dest.qcow2")
    run.ok(main, dict(src=src, dest=dest))
    options = dict(cluster_size="4k", compat="0.10", lazy_refcounts=False)
    res = run.fail(main, dict(src=src, dest=dest, options=options))
    assert res["differences"] == ["cluster_size 65536 != 4096", "compat 1.1 != 0.10"]
    assert "cluster_size 65536 != 4096; compat 1.1 != 0.10" in res["msg"]
    res = run.fail(main, dict(src=src, dest=dest, format="raw"))
    assert res["differences"] == ["format qcow2 != raw"]
    res = run.fail(main, dict(src=src, dest=dest, backing_file="base.qcow2"))
    assert "backing file none != base.qcow2" in res["differences"]


def test_size_difference(tmp_path, src, run):
    dest = str(tmp_path / "dest.qcow2")
    create_image(dest, "qcow2", size="8M")
    res = run.fail(main, dict(src=src, dest=dest))
    assert res["differences"] == ["virtual size 8388608 != 4194304",
                                  "content differs from the source at offset 0"]


def test_force_replaces(tmp_path, src, run):
    dest = str(tmp_path / "dest.qcow2")
    run.ok(main, dict(src=src, dest=dest))
    os.chmod(dest, 0o600)
    args = dict(src=src, dest=dest, options=dict(cluster_size="4k"), force=True)

    res = run.ok(main, args, check_mode=True, diff=True)
    assert res["changed"] is True
    assert res["differences"] == ["cluster_size 65536 != 4096"]
    assert res["diff"]["before"]["cluster_size"] == 65536
    assert res["diff"]["after"]["cluster_size"] == 4096
    assert res["measure"]["required"] > 0
    assert image_info(dest)["cluster-size"] == 65536

    res = run.ok(main, args, diff=True)
    assert res["changed"] is True
    assert res["cluster_size"] == 4096
    assert res["diff"]["after"]["cluster_size"] == 4096
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    assert compare_images(src, dest)["result"] == "identical"
    _qemu_check(dest)

    res = run.ok(main, args, check_mode=True)
    assert res["changed"] is False
    res = run.ok(main, args)
    assert res["changed"] is False
    assert _listing(str(tmp_path)) == ["dest.qcow2", "src.img"]


def test_force_replaces_non_image(tmp_path, src, run):
    dest = str(tmp_path / "dest.img")
    with open(dest, "wb") as f:
        f.write(b"not a disk")
    res = run.fail(main, dict(src=src, dest=dest, format="raw"))
    assert "virtual size 512 != 4194304" in res["msg"]
    res = run.ok(main, dict(src=src, dest=dest, format="raw", force=True))
    assert res["changed"] is True
    assert _read(dest) == _read(src)


# ---------------------------------------------------------------- options


def test_compress_is_smaller(tmp_path, run):
    src = str(tmp_path / "text.img")
    _write_raw(src, 2 * MiB, {0: (b"compressible text " * 100000)[:2 * MiB]})
    plain = str(tmp_path / "plain.qcow2")
    packed = str(tmp_path / "packed.qcow2")
    run.ok(main, dict(src=src, dest=plain))
    res = run.ok(main, dict(src=src, dest=packed, compress=True, compression_type="zlib"))
    assert res["changed"] is True
    assert os.path.getsize(packed) < os.path.getsize(plain) // 4
    assert compare_images(src, packed)["result"] == "identical"
    _qemu_check(packed)
    # compression is not read back: the uncompressed copy satisfies compress=true
    res = run.ok(main, dict(src=src, dest=plain, compress=True))
    assert res["changed"] is False


def test_sparse_size_zero_allocates_everything(tmp_path, src, run):
    dest = str(tmp_path / "full.img")
    res = run.ok(main, dict(src=src, dest=dest, format="raw", sparse_size=0))
    assert res["changed"] is True
    assert os.stat(dest).st_blocks * 512 >= 4 * MiB
    res = run.fail(main, dict(src=src, dest=str(tmp_path / "x.img"), sparse_size="1000"))
    assert "multiple of 512" in res["msg"]


def test_concatenation(tmp_path, src, run):
    second = str(tmp_path / "second.img")
    _write_raw(second, MiB, {4096: b"second"})
    dest = str(tmp_path / "both.qcow2")
    args = dict(src=[src, second], dest=dest)
    res = run.ok(main, args, check_mode=True)
    assert res["changed"] is True
    assert res["measure"]["required"] > 0
    res = run.ok(main, args)
    assert res["virtual_size"] == 5 * MiB
    assert _read_guest(dest, 4 * MiB + 4096, 6) == b"second"
    res = run.ok(main, args)
    assert res["changed"] is False
    assert sorted(os.listdir(str(tmp_path))) == ["both.qcow2", "second.img", "src.img"]
    res = run.fail(main, dict(src=[second, src], dest=dest))
    assert "content differs from the source at offset 0" in res["msg"]


def _read_guest(path, offset, length):
    from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import open_image

    with open_image(path) as dev:
        return dev.read(offset, length)


def test_snapshot(tmp_path, run):
    tool = _qemu_img()
    if tool is None or shutil.which("qemu-io") is None:
        pytest.skip("qemu-img/qemu-io not installed")
    src = str(tmp_path / "snap.qcow2")
    subprocess.run([tool, "create", "-q", "-f", "qcow2", src, "4M"], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0xaa 0 64k", src], check=True, capture_output=True)
    subprocess.run([tool, "snapshot", "-c", "before", src], check=True)
    subprocess.run(["qemu-io", "-c", "write -P 0xbb 0 64k", src], check=True, capture_output=True)
    dest = str(tmp_path / "before.img")
    for snapshot in ("before", "1", "snapshot.name=before"):
        args = dict(src=src, dest=dest, format="raw", snapshot=snapshot)
        res = run.ok(main, args, check_mode=True)
        if os.path.exists(dest):
            assert res["changed"] is False, snapshot
        else:
            assert res["changed"] is True
            assert res["measure"] == {"required": 4 * MiB, "fully_allocated": 4 * MiB}
        res = run.ok(main, args)
        assert res["changed"] is (snapshot == "before")
        assert _read(dest)[:65536] == b"\xaa" * 65536
        assert _listing(str(tmp_path)) == ["before.img", "snap.qcow2"]
    res = run.fail(main, dict(src=src, dest=dest, format="raw"))
    assert "content differs from the source at offset 0" in res["msg"]
    res = run.fail(main, dict(src=src, dest=dest, format="raw", snapshot="nope"))
    assert "snapshot" in res["msg"]


def test_backing_file(tmp_path, src, run):
    base = str(tmp_path / "base.qcow2")
    run.ok(main, dict(src=src, dest=base))
    with open(src, "r+b") as f:
        f.seek(MiB)
        f.write(b"new data")
    overlay = str(tmp_path / "overlay.qcow2")
    args = dict(src=src, dest=overlay, backing_file="base.qcow2")
    res = run.ok(main, args, check_mode=True, diff=True)
    assert res["diff"]["after"]["backing_file"] == "base.qcow2"
    assert res["diff"]["after"]["backing_format"] == "qcow2"
    res = run.ok(main, args, diff=True)
    assert res["changed"] is True
    assert res["backing_filename"] == "base.qcow2"
    assert res["diff"]["after"]["backing_format"] == "qcow2"
    assert compare_images(src, overlay)["result"] == "identical"
    assert os.path.getsize(overlay) < os.path.getsize(base)
    res = run.ok(main, dict(args, backing_format="qcow2"))
    assert res["changed"] is False


def test_file_attributes(tmp_path, src, run):
    dest = str(tmp_path / "dest.qcow2")
    res = run.ok(main, dict(src=src, dest=dest, mode="0600"))
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    res = run.ok(main, dict(src=src, dest=dest, mode="0640"), check_mode=True, diff=True)
    assert res["changed"] is True
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o600
    res = run.ok(main, dict(src=src, dest=dest, mode="0640"))
    assert res["changed"] is True
    assert stat.S_IMODE(os.stat(dest).st_mode) == 0o640
    res = run.ok(main, dict(src=src, dest=dest, mode="0640"))
    assert res["changed"] is False


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("args, message", [
    (dict(format="raw", compress=True), "compress is not supported by format raw"),
    (dict(format="raw", options=dict(cluster_size="4k")), "not supported by format raw: cluster_size"),
    (dict(format="raw", backing_file="b.qcow2"), "format raw does not support a backing file"),
    (dict(backing_format="qcow2"), "backing_format needs backing_file"),
    (dict(options=dict(compat="2")), "options.compat must be one of"),
    (dict(options=dict(preallocation="full")), "preallocation=full is not supported when converting to qcow2"),
    (dict(compression_type="zstd", options=dict(compression_type="zlib")), "differ"),
    (dict(sparse_size="lots"), "lots"),
])
def test_invalid_requests(tmp_path, src, run, args, message):
    res = run.fail(main, dict(dict(src=src, dest=str(tmp_path / "d.qcow2")), **args))
    assert message in res["msg"]
    assert not os.path.exists(str(tmp_path / "d.qcow2"))


def test_missing_source(tmp_path, run):
    res = run.fail(main, dict(src=str(tmp_path / "missing.img"), dest=str(tmp_path / "d.qcow2")))
    assert "missing.img" in res["msg"]
    assert _listing(str(tmp_path)) == []


def test_src_is_dest(tmp_path, src, run):
    res = run.fail(main, dict(src=src, dest=src, format="raw", force=True))
    assert "are the same file" in res["msg"]


def test_bad_src_type(tmp_path, run):
    res = run.fail(main, dict(src=[], dest=str(tmp_path / "d.qcow2")))
    assert "at least one image" in res["msg"]
    res = run.fail(main, dict(src=[{"a": 1}], dest=str(tmp_path / "d.qcow2")))
    assert "a path or a list of paths" in res["msg"]


def test_dest_directory(tmp_path, src, run):
    res = run.fail(main, dict(src=src, dest=str(tmp_path)))
    assert "is a directory" in res["msg"]


def test_raw_preallocation_full(tmp_path, src, run):
    dest = str(tmp_path / "full.img")
    res = run.ok(main, dict(src=src, dest=dest, format="raw", options=dict(preallocation="full")))
    assert res["changed"] is True
    assert os.stat(dest).st_blocks * 512 >= 4 * MiB
    # preallocation is not read back
    res = run.ok(main, dict(src=src, dest=dest, format="raw"))
    assert res["changed"] is False


# ---------------------------------------------------------------- images in use


def test_source_in_use_needs_force_share(in_use, tmp_path, run):
    dest = str(tmp_path / "copy.qcow2")
    res = run.fail(main, dict(src=in_use, dest=dest))
    assert "lock" in res["msg"]
    assert not os.path.exists(dest)
    res = run.ok(main, dict(src=in_use, dest=dest, force_share=True))
    assert res["changed"] is True
    res = run.ok(main, dict(src=in_use, dest=dest, force_share=True))
    assert res["changed"] is False
    res = run.fail(main, dict(src=in_use, dest=dest))
    assert "lock" in res["msg"]


def test_dest_in_use_is_compared_but_never_replaced(in_use, tmp_path, run):
    src = str(tmp_path / "zero.img")
    _write_raw(src, MiB, {})
    before = _read(in_use)
    assert run.ok(main, dict(src=src, dest=in_use))["changed"] is False
    for check_mode in (True, False):
        res = run.fail(main, dict(src=src, dest=in_use, options=dict(cluster_size="4k"), force=True),
                       check_mode=check_mode)
        assert "refusing to replace" in res["msg"]
        assert "lock" in res["msg"]
    assert _read(in_use) == before
