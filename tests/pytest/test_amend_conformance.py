# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""resize and amend against qemu-img, point by point as qemu-iotests 061, 082, 112, 113 and 125
check them: preallocation of the grown range, data_file / data_file_raw amends, amend progress,
option help and refusals. Each case compares with qemu-img's own result on a copy."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import sys

import pytest

from conftest import ROOT, run
from crashkill import kill_at_every_write

from qimg.ops.amend import amend_image
from qimg.ops.resize import resize_image


def _host_size(path):
    st = os.stat(str(path))
    return st.st_blocks * 512, st.st_size


def _check_clean(qemu_img, path):
    proc = run([qemu_img, "check", "--output=json", str(path)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _same_content(qemu_img, a, b, fmt="qcow2"):
    return run([qemu_img, "compare", "-q", "-f", fmt, "-F", fmt, str(a), str(b)], check=False).returncode == 0


def _info(qemu_img, path, *extra):
    d = json.loads(run([qemu_img, "info", "--output=json"] + list(extra) + [str(path)]).stdout)
    for k in ("filename", "actual-size"):
        d.pop(k, None)
    return d


# ------------------------------------------------------------------ resize preallocation (125)
CREATION = 2 * 1024 * 1024 - 48 * 1024  # 48 KiB below 2 MiB: the old end inside a 64k cluster


@pytest.mark.parametrize("cluster", ["512", "64k"])
@pytest.mark.parametrize("create_mode", ["off", "metadata", "falloc", "full"])
@pytest.mark.parametrize("growth_mode", ["metadata", "falloc", "full"])
@pytest.mark.parametrize("growth", [16, 80])
def test_grow_preallocation_holds_like_qemu_img(qemu_img, tmp_path, cluster, create_mode, growth_mode, growth):
    """What iotest 125 checks: after a preallocated grow, writing the old and the new range
    neither lengthens the file nor (falloc/full) grows it on the host; the cluster the old end
    falls in is relocated into the preallocated run as QEMU does. Content and check as qemu-img."""
    ours, ref = tmp_path / "ours.qcow2", tmp_path / "ref.qcow2"
    run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "preallocation=%s,cluster_size=%s" % (create_mode, cluster),
         str(ours), str(CREATION)])
    run(["qemu-io", "-c", "write -P 0x5a 0 1000k", str(ours)])
    shutil.copy(str(ours), str(ref))
    run([qemu_img, "resize", "-q", "-f", "qcow2", "--preallocation=" + growth_mode, str(ref), "+%dK" % growth])
    resize_image(str(ours), CREATION + growth * 1024, fmt="qcow2", preallocation=growth_mode)
    _check_clean(qemu_img, ours)
    assert _same_content(qemu_img, ours, ref)
    host0, len0 = _host_size(ours)
    run(["qemu-io", "-c", "write -P 0x11 0 %d" % CREATION, str(ours)])
    host1, len1 = _host_size(ours)
    run(["qemu-io", "-c", "write -P 0x22 %d %dk" % (CREATION, growth), str(ours)])
    host2, len2 = _host_size(ours)
    if create_mode != "off":
        assert len1 <= len0
        if create_mode != "metadata":
            assert host1 <= host0
    assert len2 <= len1
    if growth_mode != "metadata":
        assert host2 <= host1
    _check_clean(qemu_img, ours)


def test_grow_full_copies_the_old_end_cluster_with_backing(qemu_img, tmp_path):
    """iotest 125's tail: unaligned sizes over a backing file, preallocation=full and metadata;
    the old end's cluster keeps the backing data before the old end, zeros after, 7 clusters."""
    base = tmp_path / "base.raw"
    run([qemu_img, "create", "-q", "-f", "raw", str(base), "128k"])
    run(["qemu-io", "-f", "raw", "-c", "write -q -P 1 0 128k", str(base)])
    for orig in ("31k", "33k"):
        for dst in (96 * 1024, 128 * 1024):
            for mode in ("metadata", "full"):
                ours, ref = tmp_path / "o.qcow2", tmp_path / "r.qcow2"
                for p in (ours, ref):
                    run([qemu_img, "create", "-q", "-f", "qcow2", "-F", "raw", "-b", str(base), "-o",
                         "cluster_size=64k", str(p), orig])
                run([qemu_img, "resize", "-q", "--preallocation=" + mode, str(ref), str(dst)])
                resize_image(str(ours), dst, preallocation=mode)
                _check_clean(qemu_img, ours)
                assert _same_content(qemu_img, ours, ref)
                assert os.path.getsize(str(ours)) == 7 * 65536


# ------------------------------------------------------------ data_file / data_file_raw (061)
def _pair(tmp_path):
    dirs = []
    for d in ("q", "o"):
        (tmp_path / d).mkdir()
        dirs.append(str(tmp_path / d))
    return dirs


def _same_steps(qemu_img, as_qemu_img, tmp_path, create, steps, io=()):
    """Run create, then each amend (args after 'amend') with qemu-img in q/ and with us in o/;
    same stdout, stderr, exit code after every step, and the same info (and data) after."""
    q, o = _pair(tmp_path)
    for d in (q, o):
        run([qemu_img, "create", "-q", "-f", "qcow2", "-o", create, "t.qcow2", "64M"], cwd=d)
        for c in io:
            run(["qemu-io", "-c", c, "t.qcow2"], cwd=d)
    for args in steps:
        want = run([qemu_img, "amend"] + list(args), check=False, cwd=q)
        got = as_qemu_img("amend", *args, cwd=o)
        assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode), args
        assert (_info(qemu_img, os.path.join(o, "t.qcow2"))
                == _info(qemu_img, os.path.join(q, "t.qcow2"))), args
    return q, o


def test_amend_data_file_refused_without_one(qemu_img, as_qemu_img, tmp_path):
    _same_steps(qemu_img, as_qemu_img, tmp_path, "compat=1.1",
                [["-o", "data_file=foo", "t.qcow2"], ["-o", "data_file=", "t.qcow2"],
                 ["-o", "data_file_raw=on", "t.qcow2"], ["-o", "data_file_raw=off", "t.qcow2"]])


def test_amend_data_file_name_set_and_cleared(qemu_img, as_qemu_img, tmp_path):
    opts = "data-file.filename=t.qcow2.data,file.filename=t.qcow2"
    q, o = _same_steps(qemu_img, as_qemu_img, tmp_path, "compat=1.1,data_file=t.qcow2.data",
                       [["-o", "data_file=foo", "t.qcow2"],
                        ["-o", "data_file=", "--image-opts", opts],
                        ["-o", "data_file=t.qcow2.data", "--image-opts", opts],
                        ["-o", "data_file=other.data,lazy_refcounts=on", "--image-opts", opts]],
                       io=["write -P 0x5c 0 64k"])
    for d in (q, o):
        out = run(["qemu-io", "--image-opts", "-c", "read -P 0x5c 0 64k",
                   "data-file.filename=t.qcow2.data,file.filename=t.qcow2,driver=qcow2"], cwd=d).stdout
        assert "read 65536/65536" in out
    _check_clean(qemu_img, "json:{\"driver\": \"qcow2\", \"file\": {\"driver\": \"file\", \"filename\": \"%s\"}, "
                           "\"data-file\": {\"driver\": \"file\", \"filename\": \"%s\"}}"
                 % (os.path.join(o, "t.qcow2"), os.path.join(o, "t.qcow2.data")))


def test_amend_data_file_raw_cleared_not_set(qemu_img, as_qemu_img, tmp_path):
    _same_steps(qemu_img, as_qemu_img, tmp_path, "compat=1.1,data_file=t.qcow2.data,data_file_raw=on",
                [["-o", "data_file_raw=on", "t.qcow2"], ["-o", "data_file_raw=off", "t.qcow2"],
                 ["-o", "data_file_raw=on", "t.qcow2"]], io=["write -P 0x11 1M 64k"])


def test_amend_data_file_check_mode_and_result(qemu_img, tmp_path, monkeypatch):
    img = tmp_path / "t.qcow2"
    run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "data_file=t.qcow2.data,data_file_raw=on", "t.qcow2", "1M"],
        cwd=str(tmp_path))
    monkeypatch.chdir(str(tmp_path))  # the data file's name is relative to the working directory
    before = img.read_bytes()
    res = amend_image(str(img), {"data_file": "x.data", "data_file_raw": "off"}, check_mode=True)
    assert res["changed"] and res["before"]["data_file"] == "t.qcow2.data" and res["before"]["data_file_raw"]
    assert res["after"]["data_file"] == "x.data" and not res["after"]["data_file_raw"]
    assert img.read_bytes() == before
    res = amend_image(str(img), {"data_file_raw": "off"})
    assert res["changed"] and not res["after"]["data_file_raw"]
    assert not amend_image(str(img), {"data_file_raw": "off", "data_file": "t.qcow2.data"})["changed"]


@pytest.mark.parametrize("change", ["{'data_file': 'copy.data'}", "{'data_file_raw': 'off'}",
                                    "{'data_file': 'copy.data', 'data_file_raw': 'off', 'lazy_refcounts': 'on'}"])
def test_amend_data_file_kill_at_every_write(qemu_img, tmp_path, change):
    golden, img = tmp_path / "golden.qcow2", tmp_path / "img.qcow2"
    run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "data_file=img.qcow2.data,data_file_raw=on", "golden.qcow2",
         "4M"], cwd=str(tmp_path))
    run(["qemu-io", "--image-opts", "-c", "write -P 0x42 0 1M",
         "driver=qcow2,file.filename=%s,data-file.filename=%s" % (golden, str(img) + ".data")])
    shutil.copy(str(img) + ".data", str(tmp_path / "copy.data"))
    data = (tmp_path / "copy.data").read_bytes()
    script = ("import sys; sys.path.insert(0, %r)\nfrom qimg.ops.amend import amend_image\n"
              "amend_image(sys.argv[1], %s)\n" % (os.path.join(ROOT, "plugins", "module_utils"), change))

    def prepare():
        shutil.copy(str(golden), str(img))

    def verify(k):
        proc = run([qemu_img, "check", "--output=json", str(img)], check=False, cwd=str(tmp_path))
        if proc.returncode != 0:
            return "check exit %d: %s%s" % (proc.returncode, proc.stdout[-400:], proc.stderr[-400:])
        info = _info(qemu_img, img)["format-specific"]["data"]
        if info.get("data-file") not in ("img.qcow2.data", "copy.data"):
            return "data file %r" % info.get("data-file")
        got = run(["qemu-io", "-c", "read -P 0x42 0 1M", str(img)], check=False, cwd=str(tmp_path))
        if "read 1048576/1048576" not in got.stdout:
            return "content: %s" % got.stdout[-200:]
        return None

    argv = [sys.executable, "-c", script, str(img)]
    prepare()
    run(argv, cwd=str(tmp_path))
    assert verify(0) is None
    trials, failures = kill_at_every_write(prepare, argv, [img], verify, cwd=str(tmp_path))
    assert trials > 0
    assert not failures, failures[:5]
    assert (tmp_path / "copy.data").read_bytes() == data


# ------------------------------------------------------------------------ amend -p (061, 112)
PROGRESS_CASES = [
    # (create options, writes, amend options)
    ("refcount_bits=1,cluster_size=512", ["write 0 %d" % (58 * 512)], "refcount_bits=64"),  # four walks (112)
    ("cluster_size=4k", ["write 0 3M", "write 20M 1M"], "refcount_bits=1"),
    ("refcount_bits=64,cluster_size=512", ["write 0 3M"], "refcount_bits=2"),
    ("compat=0.10", ["write 0 3M"], "compat=1.1,refcount_bits=8"),
    ("compat=1.1", ["write -z 0 1M", "write -z 2G 64k", "write 1M 1M"], "compat=0.10"),
    ("compat=1.1,cluster_size=4k", ["write -z 0 1M", "write 8M 1M"], "compat=0.10,refcount_bits=16"),
]


@pytest.mark.parametrize("create,writes,change", PROGRESS_CASES)
def test_amend_progress_like_qemu_img(qemu_img, as_qemu_img, tmp_path, create, writes, change):
    q, o = _pair(tmp_path)
    for d in (q, o):
        run([qemu_img, "create", "-q", "-f", "qcow2", "-o", create, "t.qcow2", "4G"], cwd=d)
        for c in writes:
            run(["qemu-io", "-c", c, "t.qcow2"], cwd=d)
    want = run([qemu_img, "amend", "-p", "-o", change, "t.qcow2"], check=False, cwd=q)
    got = as_qemu_img("amend", "-p", "-o", change, "t.qcow2", cwd=o)
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    assert want.stdout.count("/100%") > 4  # intermediate steps, not only 0 and 100
    _check_clean(qemu_img, os.path.join(o, "t.qcow2"))


# ------------------------------------------------------ drivers without image creation (082, 113)
@pytest.mark.parametrize("args", [
    ["create", "-f", "bochs", "nbd://example.com", "64M"], ["create", "-f", "bochs", "-o", "help"],
    ["create", "-f", "cloop", "x.img", "1M"], ["create", "-f", "vvfat", "-o", "size=1M", "x.img"],
    ["create", "-f", "nosuch", "x.img", "1M"], ["convert", "-O", "bochs", "-o", "help"],
    ["convert", "-O", "dmg", "-o", "help"], ["convert", "-f", "bochs", "-O", "bochs", "src.bochs", "nbd://example.com"],
    ["convert", "-f", "bochs", "-O", "cloop", "src.bochs", "out.img"],
    ["convert", "-O", "null-co", "src.qcow2", "out.img"], ["measure", "-O", "bochs", "--size", "1M"],
    ["measure", "-O", "throttle", "src.qcow2"], ["amend", "-f", "bochs", "-o", "help"],
    ["amend", "-f", "raw", "-o", "size=2M", "src.img"],
], ids=" ".join)
def test_no_create_drivers_like_qemu_img(qemu_img, as_qemu_img, tmp_path, args):
    import struct
    # an empty bochs image (what iotest 113's sample holds): 4 KiB, one unallocated extent
    bochs = (b"Bochs Virtual HD Image".ljust(32, b"\0") + b"Redolog".ljust(16, b"\0") + b"Growing".ljust(16, b"\0")
             + struct.pack("<IIIIIIQ", 0x00020000, 512, 1, 512, 4096, 0, 4096)).ljust(512, b"\0") + b"\xff" * 4
    for d in _pair(tmp_path):
        run([qemu_img, "create", "-q", "-f", "raw", "src.img", "1M"], cwd=d)
        run([qemu_img, "create", "-q", "-f", "qcow2", "src.qcow2", "1M"], cwd=d)
        with open(os.path.join(d, "src.bochs"), "wb") as f:
            f.write(bochs)
    want = run([qemu_img] + args, check=False, cwd=str(tmp_path / "q"))
    got = as_qemu_img(*args, cwd=str(tmp_path / "o"))
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    assert sorted(os.listdir(str(tmp_path / "o"))) == sorted(os.listdir(str(tmp_path / "q")))


# ------------------------------------------------- too many references for the refcount width (112)
def test_check_overflow_then_amend_like_qemu_img(qemu_img, as_qemu_img, tmp_path):
    """A cluster referenced twice with refcount_bits=1: check reports QEMU's overflow (and cannot
    repair it); amend to 2 bits, then check -r all repairs it. Same output at every step."""
    dirs = _pair(tmp_path)
    for d in dirs:
        run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "refcount_bits=1", "t.qcow2", "64M"], cwd=d)
        run(["qemu-io", "-c", "write 0 64k", "t.qcow2"], cwd=d)
        with open(os.path.join(d, "t.qcow2"), "r+b") as f:
            f.seek(0x40008)
            f.write(b"\x80\x00\x00\x00\x00\x05\x00\x00")  # the second L2 entry names the first's cluster
    for args in (["check", "t.qcow2"], ["check", "-r", "all", "t.qcow2"], ["check", "--output=json", "t.qcow2"],
                 ["amend", "-o", "refcount_bits=2", "t.qcow2"], ["check", "-r", "all", "t.qcow2"],
                 ["check", "t.qcow2"]):
        want = run([qemu_img] + args, check=False, cwd=dirs[0])
        got = as_qemu_img(*args, cwd=dirs[1])
        assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode), args


# --------------------------------------------------------- upgrade of a v2 snapshot table (261)
def test_upgrade_writes_qemus_snapshot_extra_data(qemu_img, tmp_path):
    """compat=1.1 of a v2 image with snapshots: every entry gets the 24 bytes of extra data QEMU
    knows (vm state size, disk size, icount -1), as qemu-img amend writes them."""
    from qimg.image import open_image
    ours, ref = tmp_path / "o.qcow2", tmp_path / "r.qcow2"
    run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "compat=0.10", str(ours), "64M"])
    run(["qemu-io", "-c", "write -P 1 0 64k", str(ours)])
    for name in ("sn0", "sn1"):
        run([qemu_img, "snapshot", "-c", name, str(ours)])
    _shorten_extra_data(ours, [0, 8])  # as iotest 261 does: entries of older writers
    shutil.copy(str(ours), str(ref))
    run([qemu_img, "amend", "-o", "compat=1.1", str(ref)])
    amend_image(str(ours), {"compat": "1.1"})
    _check_clean(qemu_img, ours)
    tables = []
    for p in (ours, ref):
        with open_image(str(p), "qcow2") as dev:
            tables.append([(s.name, bytes(s.extra)) for s in dev.snapshots])
    assert tables[0] == tables[1]
    assert [len(extra) for _n, extra in tables[0]] == [24, 24]
    assert all(extra[16:] == b"\xff" * 8 for _n, extra in tables[0])


def _shorten_extra_data(path, sizes):
    """Rewrite a v2 image's snapshot table in place with entry i's extra data cut to sizes[i]."""
    import struct
    with open(str(path), "r+b") as f:
        head = f.read(72)
        nb, off = struct.unpack(">IQ", head[60:72])
        f.seek(off)
        raw = f.read(1 << 16)
        pos, out = 0, b""
        for i in range(nb):
            fields = list(struct.unpack(">QIHHIIQII", raw[pos:pos + 40]))
            id_len, name_len, extra_len = fields[2], fields[3], fields[8]
            extra = raw[pos + 40:pos + 40 + extra_len][:sizes[i]]
            rest = raw[pos + 40 + extra_len:pos + 40 + extra_len + id_len + name_len]
            fields[8] = len(extra)
            entry = struct.pack(">QIHHIIQII", *fields) + extra + rest
            out += entry + bytes(-len(entry) % 8)
            pos += (40 + extra_len + id_len + name_len + 7) & ~7
        f.seek(off)
        f.write(out + bytes(pos - len(out)))
