# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-img amend of LUKS keyslots (encrypt.state/new-secret/old-secret/keyslot/iter-time) on luks
files and LUKS qcow2 images: the same messages and results as qemu-img 7.2, keyslots usable by
either tool, and a kill at any write leaves every passphrase that was not being removed working."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import sys

import pytest

pytest.importorskip("cryptography")

from conftest import QIMG, run  # noqa: E402
from crashkill import kill_at_every_write  # noqa: E402
from crypto_helpers import assert_io_ok, file_reader, qemu_io_enc, qemu_retry, region_reader  # noqa: E402
from qimg.crypto import luks  # noqa: E402

PWS = {"s0": "astrochicken", "s1": "second", "s2": "third"}
OBJS = []
for _sid in sorted(PWS):
    OBJS += ["--object", "secret,id=%s,data=%s" % (_sid, PWS[_sid])]
S = "driver=qcow2,file.filename=e.qcow2,encrypt.key-secret=s0"
L = "driver=luks,file.filename=e.luks,key-secret=s0"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("amend")
    qemu_retry(["qemu-img", "create", "-q", "-f", "qcow2"] + OBJS +
               ["-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", "e.qcow2", "4M"], cwd=str(d))
    assert_io_ok(qemu_io_enc(S, PWS["s0"], "write -P 7 0 64k", cwd=str(d)))
    qemu_retry(["qemu-img", "create", "-q", "-f", "luks"] + OBJS + ["-o", "key-secret=s0,iter-time=10", "e.luks", "1M"],
               cwd=str(d))
    assert_io_ok(qemu_io_enc(L, PWS["s0"], "write -P 5 0 8k", cwd=str(d)))
    return d


def _both(qemu_img, as_qemu_img, d, steps):
    """Run each step (amend arguments) with qemu-img in d/a and with us in d/b: same outcome."""
    for args in steps:
        want = run([qemu_img, "amend"] + OBJS + list(args), check=False, cwd=str(d / "a"))
        got = as_qemu_img("amend", *(OBJS + list(args)), cwd=str(d / "b"))
        assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode), args


def _twin(images, tmp_path):
    for name in ("a", "b"):
        shutil.copytree(str(images), str(tmp_path / name))
    return tmp_path


def _slots(path, base=0):
    read = region_reader(path, base) if base else file_reader(path)
    h = luks.read_header(read)
    return h, read


def _fde_base(path):
    from crypto_helpers import qcow2_layout
    return qcow2_layout(path)[2][0]


def _opens(path, sid, base=0):
    h, read = _slots(path, base)
    return any(h.try_slot(i, PWS[sid].encode(), read) is not None for i in range(8))


QCOW2_STEPS = [
    ["--image-opts", S, "-o", "encrypt.state=active,encrypt.new-secret=s1,encrypt.iter-time=10"],
    ["--image-opts", S, "-o", "encrypt.state=active,encrypt.new-secret=s2,encrypt.iter-time=10,encrypt.keyslot=5"],
    ["--image-opts", S, "-o", "encrypt.state=active,encrypt.new-secret=s2,encrypt.keyslot=5"],
    ["--image-opts", S, "-o", "encrypt.state=inactive,encrypt.old-secret=s1"],
    ["--image-opts", S, "-o", "encrypt.state=inactive,encrypt.old-secret=s1"],
    ["--image-opts", S, "-o", "encrypt.state=inactive,encrypt.keyslot=1"],
    ["--image-opts", S, "-o", "encrypt.state=inactive,encrypt.keyslot=5,encrypt.old-secret=s0"],
    ["--image-opts", S, "-o", "encrypt.state=inactive,encrypt.keyslot=0"],
    ["--image-opts", S, "-o", "encrypt.state=inactive,encrypt.new-secret=s1"],
    ["--image-opts", S, "-o", "encrypt.state=active,encrypt.new-secret=s1,encrypt.keyslot=8"],
    ["--image-opts", S, "-o", "encrypt.state=active,encrypt.new-secret=s1,encrypt.old-secret=s0"],
    ["--image-opts", S, "-o", "encrypt.state=on"],
    ["--image-opts", S, "-o", "encrypt.new-secret=s1"],
    ["--image-opts", S, "-o", "encrypt.key-secret=s1"],
    ["--image-opts", S, "-o", "encrypt.state=inactive,encrypt.iter-time=5,encrypt.keyslot=0"],
    ["--image-opts", S, "-o", "encrypt.state=active,encrypt.new-secret=s9"],
    ["--image-opts", S, "-o", "lazy_refcounts=on,encrypt.state=active,encrypt.new-secret=s1,encrypt.iter-time=10"],
    ["-o", "encrypt.state=active,encrypt.new-secret=s1", "e.qcow2"],
]
LUKS_STEPS = [
    ["--image-opts", L, "-o", "state=active,new-secret=s1,iter-time=10"],
    ["--image-opts", L, "-o", "lazy_refcounts=on"],
    ["--image-opts", L, "-o", "key-secret=s1"],
    ["--image-opts", L, "-o", "state=inactive,keyslot=3"],
    ["--image-opts", L, "-o", "state=inactive,old-secret=s1"],
    ["--image-opts", L, "-o", "state=inactive,old-secret=s0"],
    ["--image-opts", L, "-o", "state=active,new-secret=s2,keyslot=0", "--force"],
    ["-f", "luks", "-o", "help"],
    ["-f", "luks", "-o", "state=inactive,keyslot=1", "e.luks"],
]


@pytest.mark.parametrize("steps,name", [(QCOW2_STEPS, "e.qcow2"), (LUKS_STEPS, "e.luks")], ids=["qcow2", "luks"])
def test_amend_sequence_matches_qemu_img(qemu_img, as_qemu_img, images, tmp_path, steps, name):
    d = _twin(images, tmp_path)
    _both(qemu_img, as_qemu_img, d, steps)
    a, b = str(d / "a" / name), str(d / "b" / name)
    base = _fde_base(a) if name.endswith("qcow2") else 0
    ha, hb = _slots(a, base)[0], _slots(b, _fde_base(b) if base else 0)[0]
    assert [s.enabled for s in ha.slots] == [s.enabled for s in hb.slots]
    for sid in PWS:
        assert _opens(a, sid, base) == _opens(b, sid, _fde_base(b) if base else 0), sid
    # qemu reads our image with every passphrase it has
    spec = (S if base else L).replace(name, b)
    working = [sid for sid in sorted(PWS) if _opens(b, sid, _fde_base(b) if base else 0)]
    assert working
    for sid in working:
        assert_io_ok(qemu_io_enc(spec, PWS[sid], "read -P %d 0 4k" % (7 if base else 5)))
    if base:
        run(["qemu-img", "check"] + OBJS + ["--image-opts", spec.replace("key-secret=s0", "key-secret=" + working[0])])


def test_keyslots_usable_by_either_tool(qemu_img, as_qemu_img, images, tmp_path):
    d = tmp_path
    shutil.copy(str(images / "e.qcow2"), str(d / "e.qcow2"))
    as_qemu_img("amend", *(OBJS + ["--image-opts", S, "-o", "encrypt.state=active,encrypt.new-secret=s1,"
                                   "encrypt.iter-time=10"]), cwd=str(d), check=True)
    # qemu unlocks with our slot and adds one of its own, we unlock with that
    qemu_retry([qemu_img, "amend"] + OBJS + ["--image-opts", S.replace("s0", "s1"), "-o",
                                             "encrypt.state=active,encrypt.new-secret=s2,encrypt.iter-time=10"],
               cwd=str(d))
    got = as_qemu_img("convert", *(OBJS + ["--image-opts", S.replace("s0", "s2"), "-O", "raw", "o.raw"]), cwd=str(d))
    assert got.returncode == 0, got.stderr
    assert (d / "o.raw").read_bytes()[:65536] == b"\x07" * 65536
    as_qemu_img("amend", *(OBJS + ["--image-opts", S.replace("s0", "s2"), "-o",
                                   "encrypt.state=inactive,encrypt.old-secret=s0"]), cwd=str(d), check=True)
    assert "Invalid password" in qemu_io_enc(S.replace("e.qcow2", str(d / "e.qcow2")), PWS["s0"], "read 0 1").stderr


CRASH_CASES = [
    # (id, file, amend -o, the passphrases that must keep working at every kill, step)
    ("add", "e.luks", "state=active,new-secret=s2,iter-time=10", ("s0", "s1"), 1),
    ("erase-by-secret", "e.luks", "state=inactive,old-secret=s1", ("s0",), 4),
    ("erase-slot", "e.luks", "state=inactive,keyslot=0", ("s1",), 4),
    ("replace-slot", "e.luks", "state=active,new-secret=s2,keyslot=1,iter-time=10", ("s0",), 1),
    ("qcow2-add", "e.qcow2", "encrypt.state=active,encrypt.new-secret=s2,encrypt.iter-time=10", ("s0", "s1"), 1),
    ("qcow2-erase", "e.qcow2", "encrypt.state=inactive,encrypt.old-secret=s0", ("s1",), 4),
]


@pytest.mark.parametrize("name,opts,keep,step", [c[1:] for c in CRASH_CASES], ids=[c[0] for c in CRASH_CASES])
def test_kill_at_every_write_keeps_passphrases(images, tmp_path, name, opts, keep, step):
    seed = tmp_path / ("seed-" + name)
    shutil.copy(str(images / name), str(seed))
    spec = S if name.endswith("qcow2") else L
    prefix = "encrypt." if name.endswith("qcow2") else ""
    run([sys.executable, QIMG, "amend"] + OBJS + ["--image-opts", spec.replace(name, str(seed)), "-o",
                                                  "%sstate=active,%snew-secret=s1,%siter-time=10"
                                                  % (prefix, prefix, prefix)])
    target = tmp_path / name
    extra = ["--force"] if "keyslot=1" in opts else []
    argv = [sys.executable, QIMG, "amend"] + OBJS + extra + ["--image-opts", spec.replace(name, str(target)),
                                                             "-o", opts]
    base = _fde_base(str(seed)) if name.endswith("qcow2") else 0

    def prepare():
        shutil.copy(str(seed), str(target))

    def verify(k):
        try:
            for sid in keep:
                if not _opens(str(target), sid, base):
                    return "after kill %d: %s no longer opens the image" % (k, sid)
        except luks.LuksError as e:
            return "after kill %d: %s" % (k, e)
        if k == 0 and "new-secret=s2" in opts and not _opens(str(target), "s2", base):
            return "s2 was not added"
        return None
    trials, failures = kill_at_every_write(prepare, argv, [target], verify, cwd=str(tmp_path), step=step)
    assert trials >= 1
    assert failures == []
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith(".crashkill")]
