# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The luks format through the engine and bin/qimg, against qemu-img and qemu-io."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import random

import pytest

pytest.importorskip("cryptography")

from conftest import qimg, run  # noqa: E402
from crypto_helpers import assert_io_ok, qemu_io_enc, qemu_retry, secret_obj  # noqa: E402
from qimg.errors import QimgError  # noqa: E402
from qimg.image import open_image  # noqa: E402
from qimg.ops.create import create_image  # noqa: E402
from qimg.crypto.secrets import SecretStore  # noqa: E402

PW = "pa,ss word"
MiB = 1 << 20


@pytest.fixture
def store():
    s = SecretStore()
    s.add_object(secret_obj(PW))
    return s


def _spec(path):
    return "driver=luks,file.filename=%s,key-secret=s0" % path


@pytest.mark.parametrize("opts", [{}, {"cipher-alg": "aes-128", "cipher-mode": "cbc", "ivgen-alg": "essiv"},
                                  {"cipher-mode": "ctr", "hash-alg": "sha512"}])
def test_create_write_interop(tmp_path, store, opts):
    path = str(tmp_path / "v.luks")
    o = {"key-secret": "s0", "iter-time": "10"}
    o.update(opts)
    create_image(path, "luks", "4M", o, secrets=store)
    rng = random.Random(3)
    model = bytearray(4 * MiB)
    with open_image(path, read_only=False, secrets=store, key_secret="s0") as dev:
        assert dev.size == 4 * MiB and dev.format_name == "luks"
        dev.write_zeroes(0, 4 * MiB)
        for dummy in range(20):
            off = rng.randrange(0, 4 * MiB - 100000)
            n = rng.randrange(1, 100000)
            data = bytes([rng.randrange(256)]) * n
            dev.write(off, data)
            model[off:off + n] = data
    raw = tmp_path / "out.raw"
    run(["qemu-img", "convert", "--object", secret_obj(PW), "--image-opts", _spec(path), "-O", "raw", str(raw)])
    assert raw.read_bytes() == bytes(model)
    assert_io_ok(qemu_io_enc(_spec(path), PW, "write -P 0x66 12345 77777"))
    model[12345:12345 + 77777] = b"\x66" * 77777
    with open_image(path, secrets=store, key_secret="s0") as dev:
        assert dev.read(0, 4 * MiB) == bytes(model)


def test_info_matches_qemu_img(tmp_path, store):
    ours = str(tmp_path / "ours.luks")
    create_image(ours, "luks", "1M", {"key-secret": "s0", "iter-time": "10", "cipher-mode": "cbc",
                                      "ivgen-alg": "essiv"}, secrets=store)
    theirs = str(tmp_path / "theirs.luks")
    qemu_retry(["qemu-img", "create", "-q", "-f", "luks", "--object", secret_obj(PW), "-o",
                "key-secret=s0,iter-time=10", theirs, "1M"])
    for path in (ours, theirs):
        for out in ("human", "json"):
            want = run(["qemu-img", "info", "--output=" + out, path]).stdout
            got = qimg("info", "--output=" + out, path).stdout
            assert got == want


def test_formatting_line_and_errors(tmp_path):
    obj = secret_obj(PW)
    for args in (["-o", "key-secret=s0,iter-time=10,cipher-mode=cbc"], ["-o", "iter-time=10"],
                 ["-o", "key-secret=nope"]):
        a = tmp_path / "a.luks"
        b = tmp_path / "b.luks"
        want = qemu_retry(["qemu-img", "create", "-f", "luks", "--object", obj] + args + [str(a), "1M"]) \
            if "key-secret=s0" in args[1] else run(["qemu-img", "create", "-f", "luks", "--object", obj] + args +
                                                   [str(a), "1M"], check=False)
        got = qimg("create", "-f", "luks", "--object", obj, *(args + [str(b), "1M"]), check=False)
        assert got.stdout.replace("b.luks", "a.luks") == want.stdout
        assert got.stderr.replace("b.luks", "a.luks").replace("qimg:", "qemu-img:") == want.stderr
        assert got.returncode == want.returncode


def test_wrong_or_missing_key(tmp_path, store):
    path = str(tmp_path / "k.luks")
    create_image(path, "luks", "1M", {"key-secret": "s0", "iter-time": "10"}, secrets=store)
    store.add("bad", b"nope")
    with pytest.raises(QimgError, match="Invalid password, cannot unlock any keyslot"):
        open_image(path, secrets=store, key_secret="bad")
    with open_image(path) as dev:     # no key: facts only
        with pytest.raises(QimgError, match="Parameter 'key-secret' is required for cipher"):
            dev.read(0, 512)


def test_hostile_luks_file(tmp_path):
    path = tmp_path / "h.luks"
    path.write_bytes(b"LUKS\xba\xbe\x00\x01" + b"\xff" * 600)
    with pytest.raises(QimgError) as e:
        open_image(str(path), fmt="luks")
    assert "\n" not in str(e.value)
    path.write_bytes(b"LUKS\xba\xbe\x00\x01")
    with pytest.raises(QimgError, match="truncated"):
        open_image(str(path))


def test_keyslot_amend_on_luks_file(tmp_path, store):
    from qimg.crypto import luks
    path = str(tmp_path / "a.luks")
    create_image(path, "luks", "1M", {"key-secret": "s0", "iter-time": "10"}, secrets=store)
    with open_image(path, read_only=False, secrets=store, key_secret="s0") as dev:
        dev.write(0, b"\x21" * 4096)
        read, write = dev.keyslot_io()
        assert luks.add_keyslot(dev.header, read, write, PW, "second", keyslot=5, iter_time=10) == 5
    assert_io_ok(qemu_io_enc(_spec(path), "second", "read -P 0x21 0 4k"))
    info = json.loads(run(["qemu-img", "info", "--output=json", path]).stdout)
    assert [s["active"] for s in info["format-specific"]["data"]["slots"]] == [True] + [False] * 4 + [True] + [False] * 2
