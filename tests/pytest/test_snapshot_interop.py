# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Internal snapshots, both directions against qemu-img.

One image goes through a sequence of snapshot operations, some done by us, some by qemu-img; a
twin image gets every step from qemu-img alone. After each step `qemu-img check` is clean on
ours, and the snapshot list and the guest content of the active image and of every snapshot
(`convert -l snapshot.name=X`) equal the twin's.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import shutil

import pytest

from helpers import assert_check_clean, qemu_img_create, qemu_raw_digest, run
from helpers import qemu_io as io_run

SIZE = 4 * 1024 * 1024

LAYOUTS = [
    ("v3-64k", {}),
    ("v3-4k-rb4", {"cluster_size": "4k", "refcount_bits": "4"}),
    ("v2-4k", {"cluster_size": "4k", "compat": "0.10"}),
    ("v3-512-rb64", {"cluster_size": "512", "refcount_bits": "64"}),
    ("v3-64k-el2", {"cluster_size": "64k", "extended_l2": "on"}),
    ("v3-4k-lazy", {"cluster_size": "4k", "lazy_refcounts": "on"}),
]

# (who, operation, snapshot) or ("io", qemu-io commands...)
STEPS = [
    ("io", "write -P 1 0 1M", "write -P 2 3M 64k"),
    ("ours", "create", "a"),
    ("io", "write -P 3 64k 64k", "write -z 3M 4k", "discard 512k 64k"),
    ("qemu", "create", "b"),
    ("io", "write -P 4 0 4k", "write -P 5 2M 128k"),
    ("ours", "create", "c"),
    ("ours", "apply", "a"),
    ("io", "write -P 6 1M 8k"),
    ("qemu", "apply", "c"),
    ("ours", "delete", "b"),
    ("io", "write -P 7 128k 4k"),
    ("qemu", "delete", "a"),
    ("ours", "create", "d"),
    ("ours", "apply", "3"),  # c, by id (qemu-img -a takes an id first, then a name)
    ("ours", "delete", "c"),
    ("qemu", "delete", "d"),
]


def _ours(op, path, arg):
    from qimg.ops import snapshot as S
    if op == "create":
        return S.create_snapshot(str(path), arg)
    if op == "apply":
        return S.apply_snapshot(str(path), arg)
    return S.delete_snapshot(str(path), name=arg)


def _qemu(op, path, arg):
    flag = {"create": "-c", "apply": "-a", "delete": "-d"}[op]
    run(["qemu-img", "snapshot", flag, arg, str(path)])


def _listing(path):
    info = json.loads(run(["qemu-img", "info", "--output=json", str(path)]).stdout)
    return info.get("snapshots", [])


def _undated(snaps):
    return [dict((k, v) for k, v in s.items() if k not in ("date-sec", "date-nsec")) for s in snaps]


def _contents(path, tmp):
    return (qemu_raw_digest(path, tmp),
            dict((s["name"], qemu_raw_digest(path, tmp, snapshot=s["name"])) for s in _listing(path)))


@pytest.mark.parametrize("options", [x[1] for x in LAYOUTS], ids=[x[0] for x in LAYOUTS])
def test_mixed_sequence_matches_qemu_img(qemu_img, qemu_io, tmp_path, options):
    from qimg.ops.snapshot import list_snapshots
    ours = tmp_path / "ours.qcow2"
    twin = tmp_path / "twin.qcow2"
    qemu_img_create(ours, "qcow2", SIZE, options)
    shutil.copyfile(str(ours), str(twin))
    for step in STEPS:
        if step[0] == "io":
            io_run(ours, *step[1:])
            io_run(twin, *step[1:])
            continue
        who, op, arg = step
        (_ours if who == "ours" else _qemu)(op, ours, arg)
        _qemu(op, twin, arg)
        assert_check_clean(ours)
        listing = _listing(ours)
        assert _undated(listing) == _undated(_listing(twin)), step
        assert list_snapshots(str(ours)) == listing, "our listing differs from qemu-img info"
        assert _contents(ours, tmp_path) == _contents(twin, tmp_path), step


def test_compressed_and_bitmaps(qemu_img, qemu_io, tmp_path):
    """Compressed clusters shared with snapshots; bitmaps: create/delete work, apply is refused as
    QEMU refuses it, and the bitmaps stay consistent (not in use)."""
    from qimg.ops import snapshot as S
    from qimg.ops.snapshot import SnapshotFailed
    ours = tmp_path / "ours.qcow2"
    twin = tmp_path / "twin.qcow2"
    qemu_img_create(ours, "qcow2", SIZE, {"cluster_size": "4k"})
    io_run(ours, "write -c -P 1 0 1M", "write -c -P 2 2M 64k")
    run(["qemu-img", "bitmap", "--add", str(ours), "bm"])
    shutil.copyfile(str(ours), str(twin))
    S.create_snapshot(str(ours), "x")
    _qemu("create", twin, "x")
    io_run(ours, "write -P 9 4k 4k")
    io_run(twin, "write -P 9 4k 4k")
    assert_check_clean(ours)
    assert _contents(ours, tmp_path) == _contents(twin, tmp_path)
    with pytest.raises(SnapshotFailed) as e:
        S.apply_snapshot(str(ours), "x")
    assert str(e.value) == "Could not apply snapshot 'x': Device has active dirty bitmaps"
    S.delete_snapshot(str(ours), name="x")
    _qemu("delete", twin, "x")
    assert_check_clean(ours)
    assert _contents(ours, tmp_path) == _contents(twin, tmp_path)
    info = json.loads(run(["qemu-img", "info", "--output=json", str(ours)]).stdout)
    assert info["format-specific"]["data"]["bitmaps"][0]["flags"] == ["auto"]


def test_refusals(qemu_img, tmp_path):
    from qimg.errors import QimgError
    from qimg.ops import snapshot as S
    img = tmp_path / "a.qcow2"
    qemu_img_create(img, "qcow2", SIZE, {"refcount_bits": "1"})
    io_run(img, "write 0 64k")
    before = img.read_bytes()
    twin = tmp_path / "twin.qcow2"
    twin.write_bytes(before)
    with pytest.raises(QimgError) as e:
        S.create_snapshot(str(img), "x")
    assert str(e.value) == "Could not create snapshot 'x': -22 (Invalid argument)"
    assert img.read_bytes()[:512] == before[:512]
    # the header is untouched; the snapshot's L1 copy leaks as qemu-img's own attempt leaks it (iotest 112)
    assert run(["qemu-img", "snapshot", "-c", "x", str(twin)], check=False).returncode == 1

    def check_report(path):
        out = json.loads(run(["qemu-img", "check", "--output=json", str(path)], check=False).stdout)
        out.pop("filename")
        return out
    assert check_report(img) == check_report(twin)
    assert check_report(img)["leaks"] == 1 and check_report(img)["check-errors"] == 0
    with pytest.raises(QimgError) as e:
        S.delete_snapshot(str(img), name="nope")
    assert str(e.value) == "Could not delete snapshot 'nope': snapshot not found"
    with pytest.raises(QimgError) as e:
        S.apply_snapshot(str(img), "nope")
    assert str(e.value) == "Could not apply snapshot 'nope': Failed to load snapshot: No such file or directory"
    raw = tmp_path / "r.raw"
    raw.write_bytes(bytes(4096))
    with pytest.raises(QimgError) as e:
        S.create_snapshot(str(raw), "x", fmt="raw")
    assert str(e.value) == "Could not create snapshot 'x': -95 (Operation not supported)"
    assert S.list_snapshots(str(raw), fmt="raw") == []


def test_ids_and_duplicates(qemu_img, tmp_path):
    """Ids as QEMU picks them (one more than the largest numeric id); duplicate names are allowed."""
    from qimg.ops import snapshot as S
    img = tmp_path / "a.qcow2"
    qemu_img_create(img, "qcow2", SIZE)
    S.create_snapshot(str(img), "x")
    run(["qemu-img", "snapshot", "-c", "x", str(img)])
    S.create_snapshot(str(img), "y")
    S.delete_snapshot(str(img), name="x")  # the first one called x: id 1
    assert [(s["id"], s["name"]) for s in _listing(img)] == [("2", "x"), ("3", "y")]
    assert S.create_snapshot(str(img), "z")["id"] == "4"
    S.apply_snapshot(str(img), "3")
    assert_check_clean(img)


@pytest.mark.parametrize("options", [{"cluster_size": "512", "refcount_bits": "64"}, {"cluster_size": "4k"}],
                         ids=["512-rb64", "4k"])
def test_bounded_shadow_memory(qemu_img, qemu_io, tmp_path, monkeypatch, options):
    """With room for only 8 changed refcount blocks in memory, the others wait in their new clusters."""
    from qimg.formats.qcow2 import snapshot_ops
    monkeypatch.setattr(snapshot_ops, "SHADOW_BYTES", 0)
    test_mixed_sequence_matches_qemu_img(qemu_img, qemu_io, tmp_path, options)


@pytest.mark.parametrize("compat", ["1.1", "0.10"])
def test_apply_restores_the_virtual_size(qemu_img, qemu_io, tmp_path, compat):
    """A snapshot taken before a resize: v3 goes back to its size (as QEMU truncates), v2 refuses as
    QEMU refuses ("Can't resize a v2 image which has snapshots")."""
    from qimg.errors import QimgError
    ours = tmp_path / "ours.qcow2"
    twin = tmp_path / "twin.qcow2"
    qemu_img_create(ours, "qcow2", SIZE, {"cluster_size": "4k", "compat": compat})
    io_run(ours, "write -P 1 0 1M")
    run(["qemu-img", "snapshot", "-c", "small", str(ours)])
    if compat == "0.10":
        shutil.copyfile(str(ours), str(twin))
        # qemu-img cannot resize a v2 image with snapshots either: shrink the header's size by hand
        with open(str(ours), "r+b") as f:
            f.seek(24)
            f.write((SIZE // 2).to_bytes(8, "big"))
        shutil.copyfile(str(ours), str(twin))
        want = run(["qemu-img", "snapshot", "-a", "small", str(twin)], check=False)
        assert want.returncode == 1
        with pytest.raises(QimgError) as e:
            _ours("apply", ours, "small")
        assert want.stderr == "".join("qemu-img: %s\n" % line for line in e.value.lines)
        return
    run(["qemu-img", "resize", str(ours), str(2 * SIZE)])
    io_run(ours, "write -P 2 %d 64k" % (SIZE + 4096), "write -P 3 0 4k")
    shutil.copyfile(str(ours), str(twin))
    _ours("apply", ours, "small")
    _qemu("apply", twin, "small")
    assert_check_clean(ours)
    info = json.loads(run(["qemu-img", "info", "--output=json", str(ours)]).stdout)
    assert info["virtual-size"] == SIZE
    assert _contents(ours, tmp_path) == _contents(twin, tmp_path)
