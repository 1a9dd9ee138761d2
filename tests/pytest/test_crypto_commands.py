# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Every command on encrypted images, side by side with qemu-img: --object secrets, --image-opts
with encrypt.key-secret, and qemu-img's messages and exit codes when the secret is missing, unknown
or wrong. In-place commands run on two copies; the results must then be the same image."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil

import pytest

pytest.importorskip("cryptography")

from conftest import assert_same_as_qemu_img, run  # noqa: E402
from crypto_helpers import assert_io_ok, qemu_io_enc, qemu_retry, secret_obj  # noqa: E402

PW = "astrochicken"
OBJ = secret_obj(PW)
BAD = secret_obj("platypus")
S = "driver=qcow2,file.filename=e.qcow2,encrypt.key-secret=s0"
L = "driver=luks,file.filename=e.luks,key-secret=s0"
R = "driver=qcow2,file.filename=r.qcow2,encrypt.key-secret=s0"
T = "driver=qcow2,file.filename=t.qcow2,encrypt.key-secret=s0,backing.encrypt.key-secret=s0"


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """e.qcow2 (qcow2-LUKS, data at 0 and 1M), e.luks (a luks file), b.qcow2 <- t.qcow2 (both
    encrypted with s0), plain.raw (e.qcow2's content) and other.raw (the same, one byte changed)."""
    d = tmp_path_factory.mktemp("enc")
    opts = "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10"
    qemu_retry(["qemu-img", "create", "-q", "-f", "qcow2", "--object", OBJ, "-o", opts, "e.qcow2", "4M"], cwd=str(d))
    assert_io_ok(qemu_io_enc(S, PW, "write -P 7 0 64k", "write -P 9 1M 3000", cwd=str(d)))
    qemu_retry(["qemu-img", "create", "-q", "-f", "luks", "--object", OBJ, "-o", "key-secret=s0,iter-time=10",
                "e.luks", "2M"], cwd=str(d))
    assert_io_ok(qemu_io_enc(L, PW, "write -P 5 4096 8k", cwd=str(d)))
    qemu_retry(["qemu-img", "create", "-q", "-f", "qcow2", "--object", OBJ, "-o", opts, "b.qcow2", "4M"], cwd=str(d))
    assert_io_ok(qemu_io_enc(S.replace("e.qcow2", "b.qcow2"), PW, "write -P 1 0 256k", cwd=str(d)))
    qemu_retry(["qemu-img", "create", "-q", "-f", "qcow2", "--object", OBJ, "-b", "b.qcow2", "-F", "qcow2",
                "-o", opts, "t.qcow2"], cwd=str(d))
    assert_io_ok(qemu_io_enc(T, PW, "write -P 2 64k 64k", cwd=str(d)))
    run(["qemu-img", "convert", "--object", OBJ, "--image-opts", S, "-O", "raw", "plain.raw"], cwd=str(d))
    qemu_retry(["qemu-img", "create", "-q", "-f", "qcow2", "--object", OBJ, "-b", "plain.raw", "-F", "raw",
                "-o", opts, "r.qcow2"], cwd=str(d))
    assert_io_ok(qemu_io_enc(R, PW, "write -P 4 128k 64k", cwd=str(d)))
    shutil.copy(str(d / "plain.raw"), str(d / "other.raw"))
    with open(str(d / "other.raw"), "r+b") as f:
        f.seek(3 * (1 << 20))
        f.write(b"\x01")
    return d


def _twin(images, tmp_path):
    """Two copies of the image set (qemu-img works in a/, we in b/)."""
    out = []
    for name in ("a", "b"):
        d = tmp_path / name
        shutil.copytree(str(images), str(d))
        out.append(d)
    return out


# (id, args): commands that do not change the image
READ_ONLY = [
    ("check", ["check", "--object", OBJ, "--image-opts", S]),
    ("check-json", ["check", "--output=json", "--object", OBJ, "--image-opts", S]),
    ("check-luks", ["check", "--object", OBJ, "--image-opts", L]),
    ("map", ["map", "--output=json", "--object", OBJ, "--image-opts", S]),
    ("map-luks", ["map", "--object", OBJ, "--image-opts", L]),
    ("compare-same", ["compare", "--object", OBJ, "--image-opts", S, S]),
    ("compare-raw", ["compare", "--object", OBJ, "--image-opts", S, "driver=raw,file.filename=plain.raw"]),
    ("compare-differ", ["compare", "--object", OBJ, "--image-opts", S, "driver=raw,file.filename=other.raw"]),
    ("measure", ["measure", "--object", OBJ, "-O", "qcow2", "--image-opts", S]),
    ("measure-luks", ["measure", "--object", OBJ, "-O", "raw", "--image-opts", L]),
    ("snapshot-list", ["snapshot", "--object", OBJ, "--image-opts", "-l", S]),
    ("info", ["info", "--object", OBJ, "--image-opts", S]),
    ("info-nokey", ["info", "--output=json", "e.qcow2"]),
    ("info-chain", ["info", "--backing-chain", "t.qcow2"]),
    ("info-luks", ["info", "--output=json", "e.luks"]),
    ("chain-map", ["map", "--object", OBJ, "--output=json", "--image-opts",
                   T]),
]

# the same commands, and the in-place ones, without the secret, with an unknown one, a wrong one
NO_KEY = ["check e.qcow2", "map e.qcow2", "compare e.qcow2 plain.raw", "measure -O raw e.qcow2",
          "snapshot -l e.qcow2", "snapshot -c s e.qcow2", "resize e.qcow2 8M", "amend -o lazy_refcounts=on e.qcow2",
          "rebase -u -b plain.raw -F raw e.qcow2", "commit t.qcow2", "convert -O raw e.qcow2 out.raw",
          "check e.luks", "resize -f luks e.luks 4M", "convert -O raw e.luks out.raw", "map t.qcow2"]
WITH_SPEC = ["check --image-opts %s" % S, "map --image-opts %s" % S, "resize --image-opts %s 8M" % S,
             "amend --image-opts -o lazy_refcounts=on %s" % S, "snapshot --image-opts -c s %s" % S,
             "commit --image-opts %s" % T, "rebase -u -b '' --image-opts %s" % S,
             "measure -O raw --image-opts %s" % S, "convert --image-opts -O raw %s out.raw" % S,
             "check --image-opts %s" % L, "compare --image-opts %s %s" % (S, S)]


def _compare_outcome(qemu_img, runner, args, a, b):
    want = run([qemu_img] + list(args), check=False, cwd=str(a))
    got = runner(*args, cwd=str(b))
    assert (got.stdout, got.stderr, got.returncode) == (want.stdout, want.stderr, want.returncode), \
        "%s\nqemu-img: %r\nqimg:     %r" % (args, want, got)
    return got


@pytest.mark.parametrize("args", [c[1] for c in READ_ONLY], ids=[c[0] for c in READ_ONLY])
def test_read_only_commands_match_qemu_img(qemu_img, as_qemu_img, images, args):
    assert_same_as_qemu_img(qemu_img, as_qemu_img, args, str(images))


@pytest.mark.parametrize("cmd", NO_KEY)
def test_missing_key_message(qemu_img, as_qemu_img, images, tmp_path, cmd):
    a, b = _twin(images, tmp_path)
    _compare_outcome(qemu_img, as_qemu_img, cmd.split(), a, b)


@pytest.mark.parametrize("cmd", WITH_SPEC)
@pytest.mark.parametrize("obj", [None, BAD, "secret,id=s1,data=x"], ids=["no-object", "wrong", "other-id"])
def test_unknown_or_wrong_secret_message(qemu_img, as_qemu_img, images, tmp_path, cmd, obj):
    a, b = _twin(images, tmp_path)
    import shlex
    args = shlex.split(cmd)
    if obj is not None:
        args[1:1] = ["--object", obj]
    got = _compare_outcome(qemu_img, as_qemu_img, args, a, b)
    assert got.returncode != 0
    assert PW not in got.stderr + got.stdout


def _same_image(a, b, name, spec=S):
    """The two copies hold the same guest data and metadata (and ours checks clean)."""
    sa = spec.replace("e.qcow2", str(a / name))
    sb = spec.replace("e.qcow2", str(b / name))
    run(["qemu-img", "compare", "--object", OBJ, "--image-opts", sa, sb])
    run(["qemu-img", "check", "--object", OBJ, "--image-opts", sb])

    def facts(d):
        info = json.loads(run(["qemu-img", "info", "--output=json", str(d / name)]).stdout)
        for key in ("filename", "actual-size", "snapshots"):
            info.pop(key, None)
        return info
    assert facts(a) == facts(b)


EDITS = [
    ("resize-grow", ["resize", "--object", OBJ, "--image-opts", S, "8M"], "e.qcow2"),
    ("resize-shrink", ["resize", "--object", OBJ, "--image-opts", "--shrink", S, "2M"], "e.qcow2"),
    ("amend-lazy", ["amend", "--object", OBJ, "--image-opts", "-o", "lazy_refcounts=on", S], "e.qcow2"),
    ("amend-compat", ["amend", "--object", OBJ, "--image-opts", "-o", "compat=0.10", S], "e.qcow2"),
    ("snapshot-create", ["snapshot", "--object", OBJ, "--image-opts", "-c", "snap", S], "e.qcow2"),
    ("rebase-unsafe", ["rebase", "--object", OBJ, "-u", "-b", "", "--image-opts", R], "r.qcow2"),
    ("commit", ["commit", "--object", OBJ, "--image-opts", T], "b.qcow2"),
]


@pytest.mark.parametrize("args,name", [(c[1], c[2]) for c in EDITS], ids=[c[0] for c in EDITS])
def test_in_place_commands_match_qemu_img(qemu_img, as_qemu_img, images, tmp_path, args, name):
    a, b = _twin(images, tmp_path)
    _compare_outcome(qemu_img, as_qemu_img, args, a, b)
    _same_image(a, b, name)


def test_safe_rebase(qemu_img, as_qemu_img, images, tmp_path):
    """qemu-img 7.2 resolves -b against the json: name of an --image-opts image: only an absolute
    new backing name works there."""
    a, b = _twin(images, tmp_path)
    for tool, d in ((lambda *args, **kw: run([qemu_img] + list(args), **kw), a), (as_qemu_img, b)):
        proc = tool("rebase", "--object", OBJ, "-b", str(d / "other.raw"), "-F", "raw", "--image-opts", R,
                    cwd=str(d), check=False)
        assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    run(["qemu-img", "compare", "--object", OBJ, "--image-opts", R.replace("r.qcow2", str(a / "r.qcow2")),
         R.replace("r.qcow2", str(b / "r.qcow2"))])
    run(["qemu-img", "compare", "--object", OBJ, "--image-opts", R.replace("r.qcow2", str(b / "r.qcow2")),
         R.replace("r.qcow2", str(images / "r.qcow2"))])
    run(["qemu-img", "check", "--object", OBJ, "--image-opts", R.replace("r.qcow2", str(b / "r.qcow2"))])


def test_snapshot_cycle_and_luks_resize(qemu_img, as_qemu_img, images, tmp_path):
    a, b = _twin(images, tmp_path)
    for args in (["snapshot", "--object", OBJ, "--image-opts", "-c", "one", S],
                 ["snapshot", "--object", OBJ, "--image-opts", "-a", "one", S],
                 ["snapshot", "--object", OBJ, "--image-opts", "-d", "one", S],
                 ["resize", "--object", OBJ, "--image-opts", L, "3M"]):
        _compare_outcome(qemu_img, as_qemu_img, args, a, b)
    _same_image(a, b, "e.qcow2")
    run(["qemu-img", "compare", "--object", OBJ, "--image-opts", L.replace("e.luks", str(a / "e.luks")),
         L.replace("e.luks", str(b / "e.luks"))])


def test_convert_source_bit_exact(as_qemu_img, images, tmp_path):
    for spec, name in ((S, "e.qcow2"), (L, "e.luks")):
        out = tmp_path / ("out-" + name + ".raw")
        as_qemu_img("convert", "--object", OBJ, "--image-opts", spec, "-O", "raw", str(out), cwd=str(images),
                    check=True)
        want = tmp_path / ("want-" + name + ".raw")
        run(["qemu-img", "convert", "--object", OBJ, "--image-opts", spec, "-O", "raw", str(want)], cwd=str(images))
        assert out.read_bytes() == want.read_bytes()
    # a chain with encrypted members
    out = tmp_path / "chain.raw"
    as_qemu_img("convert", "--object", OBJ, "--image-opts", T, "-O", "raw", str(out),
                cwd=str(images), check=True)
    run(["qemu-img", "compare", "--object", OBJ, "--image-opts", T,
         "driver=raw,file.filename=%s" % out], cwd=str(images))
    assert os.path.getsize(str(out)) == 4 << 20


TARGETS = [
    ("qcow2-luks", ["-O", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=s1,encrypt.iter-time=10"],
     "driver=qcow2,file.filename=%s,encrypt.key-secret=s1"),
    ("qcow2-luks-cbc-essiv", ["-O", "qcow2", "-o", "encrypt.format=luks,encrypt.key-secret=s1,encrypt.iter-time=10,"
                              "encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.cipher-alg=aes-128"],
     "driver=qcow2,file.filename=%s,encrypt.key-secret=s1"),
    ("qcow2-aes", ["-O", "qcow2", "-o", "encryption=on,encrypt.key-secret=s1"],
     "driver=qcow2,file.filename=%s,encrypt.key-secret=s1"),
    ("luks", ["-O", "luks", "-o", "key-secret=s1,iter-time=10"], "driver=luks,file.filename=%s,key-secret=s1"),
]


@pytest.mark.parametrize("args,spec", [t[1:] for t in TARGETS], ids=[t[0] for t in TARGETS])
def test_convert_into_encrypted_target(as_qemu_img, images, tmp_path, args, spec):
    """From an encrypted source (key s0) into an encrypted target (key s1): qemu-img reads it
    bit-exact, and checks it clean."""
    out = str(tmp_path / "out.img")
    got = as_qemu_img("convert", "--object", OBJ, "--object", "secret,id=s1,data=other", "--image-opts", S,
                      *(args + [out]), cwd=str(images))
    assert got.returncode == 0 and got.stderr == "", got.stderr
    target = spec % out
    objs = ["--object", "secret,id=s1,data=other"]
    run(["qemu-img", "compare"] + objs + ["--image-opts", target, "driver=raw,file.filename=plain.raw"],
        cwd=str(images))
    if "qcow2" in args:
        run(["qemu-img", "check"] + objs + ["--image-opts", target])
    assert json.loads(run(["qemu-img", "info", "--output=json", out]).stdout)["encrypted"] is True
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith(".")]


CONVERT_ERRORS = [
    "convert --object %s -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s9 plain.raw o.qcow2" % OBJ,
    "convert --object %s -O qcow2 -o encrypt.format=luks plain.raw o.qcow2" % OBJ,
    "convert --object %s -c -O qcow2 -o encrypt.format=luks,encrypt.key-secret=s0 plain.raw o.qcow2" % OBJ,
    "convert -O luks plain.raw o.luks",
    "convert -O qcow2 -o encryption=on,encrypt.key-secret=s0 plain.raw o.qcow2",
    "convert -O qcow2 -o encrypt.format=aes,encrypt.key-secret=s0,encrypt.cipher-alg=aes-128 plain.raw o.qcow2",
]


@pytest.mark.parametrize("cmd", CONVERT_ERRORS)
def test_convert_target_errors_match_qemu_img(qemu_img, as_qemu_img, images, tmp_path, cmd):
    a, b = _twin(images, tmp_path)
    got = _compare_outcome(qemu_img, as_qemu_img, cmd.split(), a, b)
    assert got.returncode == 1
    assert not os.path.exists(str(b / "o.qcow2")) and not os.path.exists(str(b / "o.luks"))
