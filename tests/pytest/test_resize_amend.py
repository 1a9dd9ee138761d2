# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""resize and amend: qemu-img parity of the CLI, interop against qemu-img's own results,
kill-at-every-write crash safety, and a property test against a bytearray model."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import shutil
import sys

import pytest

from conftest import ROOT, run
from crashkill import kill_at_every_write

from qimg.image import open_image
from qimg.ops.amend import amend_image
from qimg.ops.resize import ShrinkRefused, resize_image

MiB = 1 << 20


def _mk(qemu_img, path, fmt, size, opts=None, writes=(), snap=None, after=()):
    cmd = [qemu_img, "create", "-q", "-f", fmt]
    if opts:
        cmd += ["-o", opts]
    run(cmd + [str(path), str(size)])
    _io(fmt, path, writes)
    if snap:
        run([qemu_img, "snapshot", "-c", snap, str(path)])
        _io(fmt, path, after)


def _io(fmt, path, cmds):
    if cmds:
        cmd = ["qemu-io", "-f", fmt]
        for c in cmds:
            cmd += ["-c", c]
        run(cmd + [str(path)])


def _check_clean(qemu_img, path):
    proc = run([qemu_img, "check", "--output=json", str(path)], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def _info(qemu_img, path):
    d = json.loads(run([qemu_img, "info", "--output=json", str(path)]).stdout)
    for k in ("filename", "actual-size"):
        d.pop(k, None)
    return d


def _same_content(qemu_img, fmt, a, b):
    return run([qemu_img, "compare", "-q", "-f", fmt, "-F", fmt, str(a), str(b)], check=False).returncode == 0


def _snapshot_digest(qemu_img, path, snap, tmp):
    """The snapshot's guest content at its own size: applied to a copy (`convert -l` would read it
    through the image's current size)."""
    copy, out = str(tmp) + ".snap.qcow2", str(tmp) + ".snap.raw"
    shutil.copy(str(path), copy)
    run([qemu_img, "snapshot", "-a", snap, copy])
    run([qemu_img, "convert", "-O", "raw", copy, out])
    with open(out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    os.unlink(out)
    os.unlink(copy)
    return digest


WRITES = ["write -P 0xab 0 1M", "write -z 1M 64k", "write -P 0x11 3M 4k"]


# ------------------------------------------------------------------------------------- interop
RESIZE_CASES = [
    ("qcow2", "", "8M", {}),
    ("qcow2", "cluster_size=512", "64M", {}),                    # L1 table and refcount table grow
    ("qcow2", "", "1M", {"shrink": True}),
    ("qcow2", "cluster_size=4096", "1536", {"shrink": True}),   # unaligned shrink
    ("qcow2", "", "5000192", {"preallocation": "metadata"}),    # unaligned grow
    ("qcow2", "cluster_size=512", "5000192", {"preallocation": "full"}),
    ("qcow2", "", "9M", {"preallocation": "falloc"}),
    ("qcow2", "cluster_size=16384,extended_l2=on", "5000192", {"preallocation": "falloc"}),
    ("qcow2", "compat=0.10", "64M", {}),
    ("raw", "", "5000001", {}),
    ("raw", "", "3001", {"shrink": True}),
    ("raw", "", "5000001", {"preallocation": "full"}),
    ("raw", "", "5000001", {"preallocation": "falloc"}),
]


# with an internal snapshot too, where the image can have one (qcow2 v3 in these cases)
RESIZE_MATRIX = [c + (False,) for c in RESIZE_CASES] + [
    c + (True,) for c in RESIZE_CASES if c[0] == "qcow2" and "compat=0.10" not in c[1]]


@pytest.mark.parametrize("fmt,opts,size,kw,snap", RESIZE_MATRIX)
def test_resize_like_qemu_img(qemu_img, tmp_path, fmt, opts, size, kw, snap):
    a, b = tmp_path / ("a." + fmt), tmp_path / ("b." + fmt)
    _mk(qemu_img, a, fmt, "4M", opts, WRITES, "s1" if snap else None, ["write -P 0x22 3M 64k"])
    shutil.copy(str(a), str(b))
    cmd = [qemu_img, "resize", "-q", "-f", fmt]
    if kw.get("shrink"):
        cmd.append("--shrink")
    if kw.get("preallocation"):
        cmd.append("--preallocation=" + kw["preallocation"])
    run(cmd + [str(a), size])
    res = resize_image(str(b), int(size[:-1]) << {"M": 20, "G": 30}[size[-1]] if size[-1] in "MG" else int(size),
                       fmt=fmt, **kw)
    assert res["changed"]
    if fmt == "qcow2":
        _check_clean(qemu_img, b)
    assert _info(qemu_img, a) == _info(qemu_img, b)
    assert _same_content(qemu_img, fmt, a, b)
    if snap:
        assert _snapshot_digest(qemu_img, a, "s1", tmp_path / "x") == _snapshot_digest(qemu_img, b, "s1", tmp_path / "y")


def test_resize_refusals(qemu_img, tmp_path):
    a = tmp_path / "a.qcow2"
    _mk(qemu_img, a, "qcow2", "1M", "compat=0.10", WRITES[:1], "s1")
    before = a.read_bytes()
    with pytest.raises(ShrinkRefused):
        resize_image(str(a), 512 * 1024)
    with pytest.raises(Exception, match="Can't resize a v2 image which has snapshots"):
        resize_image(str(a), 2 * MiB)
    with pytest.raises(Exception, match="New image size must be positive"):
        resize_image(str(a), 1 << 63)
    with pytest.raises(Exception, match="Preallocation can only be used for growing images"):
        resize_image(str(a), MiB, preallocation="full")
    assert a.read_bytes() == before
    assert resize_image(str(a), MiB) == {"old-size": MiB, "new-size": MiB, "changed": False}


def test_resize_with_longer_backing_reads_zeros(qemu_img, tmp_path):
    base, top, ref = tmp_path / "base.raw", tmp_path / "top.qcow2", tmp_path / "ref.qcow2"
    _mk(qemu_img, base, "raw", "4M", None, ["write -P 0x55 0 4M"])
    run([qemu_img, "create", "-q", "-f", "qcow2", "-b", "base.raw", "-F", "raw", str(top), "1M"])
    shutil.copy(str(top), str(ref))
    run([qemu_img, "resize", "-q", str(ref), "4M"])
    resize_image(str(top), 4 * MiB)
    _check_clean(qemu_img, top)
    assert _same_content(qemu_img, "qcow2", ref, top)


AMEND_CASES = [
    ("compat=1.1", "compat=0.10"),
    ("compat=0.10", "compat=1.1"),
    ("compat=1.1", "refcount_bits=64"),
    ("refcount_bits=64", "refcount_bits=1"),
    ("compat=1.1,cluster_size=512", "refcount_bits=8"),
    ("compat=1.1", "refcount_bits=2"),
    ("compat=1.1", "lazy_refcounts=on"),
    ("lazy_refcounts=on", "lazy_refcounts=off"),
    ("compat=0.10", "compat=1.1,refcount_bits=4,lazy_refcounts=on"),
    ("compat=1.1", "size=1M"),
    ("compat=1.1", "size=64M"),
]


def _opts(text):
    return dict(item.split("=", 1) for item in text.split(","))


# with an internal snapshot too, except the changes QEMU refuses then (refcount 2 does not fit
# in 1 bit; a size change): test_amend_refusals covers those
AMEND_MATRIX = [c + (False,) for c in AMEND_CASES] + [
    c + (True,) for c in AMEND_CASES if "refcount_bits=1" not in c[1] and "size=" not in c[1]]


@pytest.mark.parametrize("create,change,snap", AMEND_MATRIX)
def test_amend_like_qemu_img(qemu_img, tmp_path, create, change, snap):
    a, b, orig = tmp_path / "a.qcow2", tmp_path / "b.qcow2", tmp_path / "orig.qcow2"
    _mk(qemu_img, a, "qcow2", "4M", create, WRITES + ["write -z -u 2M 64k"], "s1" if snap else None,
        ["write -z 0 64k", "write -P 0x22 3M 64k"])
    shutil.copy(str(a), str(b))
    shutil.copy(str(a), str(orig))
    run([qemu_img, "amend", "-o", change, str(a)])
    res = amend_image(str(b), _opts(change))
    assert res["changed"]
    _check_clean(qemu_img, b)
    assert _info(qemu_img, a) == _info(qemu_img, b)
    assert _same_content(qemu_img, "qcow2", a, b)
    if snap:
        # qemu-img 7.2's downgrade zeroes preallocated zero clusters in place even when a snapshot
        # still uses them as data: the snapshot must keep its content, ours does
        assert (_snapshot_digest(qemu_img, orig, "s1", tmp_path / "x")
                == _snapshot_digest(qemu_img, b, "s1", tmp_path / "y"))
    again = amend_image(str(b), _opts(change))
    assert not again["changed"]


def test_amend_refusals(qemu_img, tmp_path):
    a = tmp_path / "a.qcow2"
    _mk(qemu_img, a, "qcow2", "1M", "extended_l2=on", WRITES[:1])
    before = a.read_bytes()
    with pytest.raises(Exception, match="Cannot downgrade an image with incompatible features 0x10 set"):
        amend_image(str(a), {"compat": "0.10"})
    with pytest.raises(Exception, match="Invalid parameter 'cluster_size'") as e:
        amend_image(str(a), {"cluster_size": "4k"})
    assert e.value.hint == ["This option is only supported for image creation"]
    with pytest.raises(Exception, match="Cannot amend the backing file"):
        amend_image(str(a), {"backing_file": "x"})
    assert a.read_bytes() == before


@pytest.mark.parametrize("change", ["refcount_bits=1", "size=1M", "size=64M"])
def test_amend_refused_with_snapshot_like_qemu_img(qemu_img, as_qemu_img, tmp_path, change):
    """The amends QEMU refuses on an image with an internal snapshot (a shared cluster's refcount 2
    does not fit in one bit; the size of an image with snapshots): same output and exit code as
    qemu-img, and our copy is left byte for byte as it was."""
    a, b = tmp_path / "a.qcow2", tmp_path / "b.qcow2"
    _mk(qemu_img, a, "qcow2", "4M", None, WRITES, "s1", ["write -P 0x22 3M 64k"])
    shutil.copy(str(a), str(b))
    before = b.read_bytes()
    theirs = run([qemu_img, "amend", "-o", change, str(a)], check=False)
    ours = as_qemu_img("amend", "-o", change, str(b))
    assert (ours.returncode, ours.stdout, ours.stderr.replace(str(b), str(a))) == (
        theirs.returncode, theirs.stdout, theirs.stderr)
    if theirs.returncode:
        assert b.read_bytes() == before


# ------------------------------------------------------------------------------------------ CLI
def _cli_cases():
    q = "FILE.qcow2"
    cases = [["resize", q, s] for s in ("2M", "512k", "-2M", "0", "9E", "100P", "1x", "+1M", "+0", "1000001")]
    cases += [["resize", "--shrink", q, "512k"], ["resize", "--preallocation=metadata", "--shrink", q, "256k"],
              ["resize", "--preallocation=foo", q, "4M"], ["resize", q], ["resize", "-q", q, "3M"],
              ["resize", "--preallocation=full", q, "3M"], ["resize", "a", "b", "c"],
              ["resize", "FILE.raw", "1000001"], ["resize", "--shrink", "FILE.raw", "1001"],
              ["resize", "--preallocation=metadata", "FILE.raw", "4M"], ["resize", "-f", "raw", "FILE.raw", "4M"]]
    for o in ("compat=0.10", "compat=1.1", "compat=2", "cluster_size=4k", "preallocation=full", "refcount_bits=3",
              "refcount_bits=128", "lazy_refcounts=on", "lazy_refcounts=foo", "backing_file=x", "size=2M",
              "size=512k", "data_file=x", "data_file_raw=on", "encrypt.state=active", "foo=bar", "extended_l2=on",
              "refcount_bits=8,compat=0.10", "compat=0.10,lazy_refcounts=on", "help", "refcount_bits=abc"):
        cases.append(["amend", "-o", o, q])
    cases += [["amend", q], ["amend", "-f", "qcow2", "-o", "help"], ["amend", "-f", "raw", "-o", "help"],
              ["amend", "-f", "bochs", "-o", "help"], ["amend", "-f", "foo", "-o", "help"],
              ["amend", "-p", "-o", "compat=0.10", q], ["amend", "-o", "compat=0.10", "-t", "foo", q],
              ["amend", "-o", "compat=0.10"], ["amend", "-o", "compat=0.10", "FILE.raw"]]
    return cases


@pytest.mark.parametrize("args", _cli_cases(), ids=" ".join)
def test_cli_same_as_qemu_img(qemu_img, as_qemu_img, tmp_path, args):
    for d in ("q", "o"):
        (tmp_path / d).mkdir()
        run([qemu_img, "create", "-q", "-f", "qcow2", str(tmp_path / d / "FILE.qcow2"), "1M"])
        run([qemu_img, "create", "-q", "-f", "raw", str(tmp_path / d / "FILE.raw"), "1M"])
    want = run([qemu_img] + args, check=False, cwd=str(tmp_path / "q"))
    got = as_qemu_img(*args, cwd=str(tmp_path / "o"))
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode)
    for name in ("FILE.qcow2", "FILE.raw"):
        fmt = name.split(".")[1]
        assert _info(qemu_img, tmp_path / "q" / name) == _info(qemu_img, tmp_path / "o" / name)
        assert _same_content(qemu_img, fmt, tmp_path / "q" / name, tmp_path / "o" / name)


def test_cli_syntax_listed(as_qemu_img, tmp_path):
    out = as_qemu_img("--help", cwd=str(tmp_path)).stdout
    assert "resize [--object objectdef]" in out and "amend [--object objectdef]" in out


# --------------------------------------------------------------------------------- crash safety
CRASH_CASES = [
    # (create opts, writes, snapshot, call)
    ("cluster_size=512", WRITES[:1], False, "resize_image(P, 8 << 20)"),                   # L1 moves
    ("cluster_size=4096", WRITES, False, "resize_image(P, 12 << 20, preallocation='metadata')"),
    ("cluster_size=4096", WRITES, True, "resize_image(P, 1 << 20, shrink=True)"),
    ("cluster_size=4096", WRITES, False, "resize_image(P, 1536, shrink=True)"),
    ("cluster_size=4096", WRITES + ["write -z -u 2M 64k"], True, "amend_image(P, {'compat': '0.10'})"),
    ("compat=0.10,cluster_size=4096", WRITES[:1], True, "amend_image(P, {'compat': '1.1'})"),
    ("cluster_size=4096", WRITES, True, "amend_image(P, {'refcount_bits': '64'})"),
    ("cluster_size=4096", WRITES, False, "amend_image(P, {'refcount_bits': '1'})"),
    ("cluster_size=4096", WRITES, False, "amend_image(P, {'lazy_refcounts': 'on'})"),
]


@pytest.mark.parametrize("opts,writes,snap,call", CRASH_CASES, ids=[c[3] for c in CRASH_CASES])
def test_kill_at_every_write(qemu_img, tmp_path, opts, writes, snap, call):
    golden, img = tmp_path / "golden.qcow2", tmp_path / "img.qcow2"
    _mk(qemu_img, golden, "qcow2", "4M", opts, writes, "s1" if snap else None, ["write -P 0x33 1M 128k"])
    old_raw, new_raw = tmp_path / "old.raw", tmp_path / "new.raw"
    run([qemu_img, "convert", "-O", "raw", str(golden), str(old_raw)])
    shutil.copy(str(golden), str(img))
    script = ("import sys; sys.path.insert(0, %r)\nfrom qimg.ops.resize import resize_image\n"
              "from qimg.ops.amend import amend_image\nP = sys.argv[1]\n%s\n"
              % (os.path.join(ROOT, "plugins", "module_utils"), call))
    run([sys.executable, "-c", script, str(img)])
    run([qemu_img, "convert", "-O", "raw", str(img), str(new_raw)])
    snap_digest = _snapshot_digest(qemu_img, golden, "s1", tmp_path / "g") if snap else None

    def prepare():
        shutil.copy(str(golden), str(img))

    def verify(k):
        proc = run([qemu_img, "check", "--output=json", str(img)], check=False)
        if proc.returncode not in (0, 3):
            return "check exit %d: %s%s" % (proc.returncode, proc.stdout[-400:], proc.stderr[-400:])
        if json.loads(proc.stdout).get("corruptions"):
            return "corruptions: %s" % proc.stdout
        got = tmp_path / "got.raw"
        run([qemu_img, "convert", "-O", "raw", str(img), str(got)])
        data = got.read_bytes()
        if data != old_raw.read_bytes() and data != new_raw.read_bytes():
            return "content is neither the old nor the new one (size %d)" % len(data)
        if snap and _snapshot_digest(qemu_img, img, "s1", tmp_path / "s") != snap_digest:
            return "snapshot content changed"
        return None

    argv = [sys.executable, "-c", script, str(img)]
    trials, failures = kill_at_every_write(prepare, argv, [img], verify)
    assert trials > 0
    assert not failures, failures[:5]


# ------------------------------------------------------------------------------------- property
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

_write = st.tuples(st.integers(0, 63), st.integers(1, 8), st.integers(1, 255))
_AMENDS = [{"compat": "0.10"}, {"compat": "1.1"}, {"refcount_bits": "1"}, {"refcount_bits": "64"},
           {"lazy_refcounts": "on"}, {"refcount_bits": "8", "compat": "1.1"}]
_change = st.one_of(st.tuples(st.just("resize"), st.integers(1, 128)),
                    st.tuples(st.just("amend"), st.sampled_from(_AMENDS)))


@hypothesis.settings(max_examples=25, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(compat=st.sampled_from(["0.10", "1.1"]), before=st.lists(_write, max_size=6),
                  change=_change, after=st.lists(_write, max_size=6))
def test_property_writes_change_writes(qemu_img, tmp_path_factory, compat, before, change, after):
    tmp = tmp_path_factory.mktemp("prop")
    path = str(tmp / "p.qcow2")
    unit = 16 * 1024  # 4 KiB clusters: units of 4 clusters
    run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096,compat=" + compat, path, str(64 * unit)])
    model = bytearray(64 * unit)

    def apply(writes):
        with open_image(path, "qcow2", read_only=False) as dev:
            for start, n, byte in writes:
                start = min(start, len(model) // unit - 1)
                n = min(n, len(model) // unit - start)
                if n <= 0:
                    continue
                dev.write(start * unit + 100, bytes([byte]) * (n * unit - 200))
                model[start * unit + 100:start * unit + n * unit - 100] = bytes([byte]) * (n * unit - 200)

    apply(before)
    if change[0] == "resize":
        new = change[1] * unit
        resize_image(path, new, shrink=True)
        del model[new:]
        model.extend(bytes(new - len(model)))
    else:
        try:
            amend_image(path, change[1])
        except Exception as e:  # refusals leave the image as it was
            assert "compat" in str(e) or "refcount" in str(e)
    apply(after)
    _check_clean(qemu_img, path)
    with open_image(path, "qcow2") as dev:
        assert dev.size == len(model)
        assert dev.read(0, dev.size) == bytes(model)
