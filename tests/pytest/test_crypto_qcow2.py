# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Encrypted qcow2 through the engine: images qemu-img encrypted read bit-exact, images we create
and write read by qemu-io and clean in `qemu-img check`, info as qemu-img shows it."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import random

import pytest

pytest.importorskip("cryptography")

from conftest import run  # noqa: E402
from crypto_helpers import assert_io_ok, qemu_io_enc, qemu_retry, secret_obj  # noqa: E402
from qimg.errors import QimgError  # noqa: E402
from qimg.image import open_image  # noqa: E402
from qimg.ops.create import create_image, resolved_options  # noqa: E402
from qimg.ops.info import device_info  # noqa: E402
from qimg.crypto.secrets import SecretStore  # noqa: E402

PW = "astrochicken"
MiB = 1 << 20


@pytest.fixture
def store():
    s = SecretStore()
    s.add_object(secret_obj(PW))
    s.add_object("secret,id=bad,data=platypus")
    return s


def _spec(path):
    return "driver=qcow2,file.filename=%s,encrypt.key-secret=s0" % path


def _qemu_info(path):
    return json.loads(run(["qemu-img", "info", "--output=json", str(path)]).stdout)


KINDS = [{"encryption": "on", "encrypt.key-secret": "s0"},
         {"encrypt.format": "aes", "encrypt.key-secret": "s0"},
         {"encrypt.format": "luks", "encrypt.key-secret": "s0", "encrypt.iter-time": "10"},
         {"encrypt.format": "luks", "encrypt.key-secret": "s0", "encrypt.iter-time": "10",
          "encrypt.cipher-mode": "cbc", "encrypt.ivgen-alg": "essiv", "cluster_size": "4096"}]


@pytest.mark.parametrize("opts", KINDS, ids=["aes-alias", "aes", "luks", "luks-cbc-essiv-4k"])
def test_create_write_qemu_reads(tmp_path, store, opts):
    path = str(tmp_path / "t.qcow2")
    create_image(path, "qcow2", "8M", dict(opts), secrets=store)
    assert _qemu_info(path)["encrypted"] is True
    rng = random.Random(7)
    model = bytearray(8 * MiB)
    with open_image(path, read_only=False, secrets=store, key_secret="s0") as dev:
        for dummy in range(25):
            off = rng.randrange(0, 8 * MiB - 70000)
            n = rng.randrange(1, 70000)
            if rng.random() < 0.2:
                dev.write_zeroes(off, n)
                model[off:off + n] = bytes(n)
            else:
                data = bytes([rng.randrange(1, 256)]) * n
                dev.write(off, data)
                model[off:off + n] = data
        dev.flush()
    with open_image(path, secrets=store, key_secret="s0") as dev:
        assert dev.read(0, 8 * MiB) == bytes(model)
    raw = tmp_path / "plain.raw"
    run(["qemu-img", "convert", "--object", secret_obj(PW), "--image-opts", _spec(path), "-O", "raw", str(raw)])
    assert raw.read_bytes() == bytes(model)
    run(["qemu-img", "check", "--object", secret_obj(PW), "--image-opts", _spec(path)])


@pytest.mark.parametrize("opts", ["encryption=on,encrypt.key-secret=s0",
                                  "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
                                  "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10,"
                                  "encrypt.cipher-mode=ctr,encrypt.cipher-alg=aes-128"])
def test_qemu_images_read_bit_exact(tmp_path, store, opts):
    path = str(tmp_path / "q.qcow2")
    qemu_retry(["qemu-img", "create", "-q", "-f", "qcow2", "--object", secret_obj(PW), "-o", opts, path, "4M"])
    assert_io_ok(qemu_io_enc(_spec(path), PW, "write -P 7 0 64k", "write -P 9 1000 3000", "write -P 5 3M 70k"))
    raw = tmp_path / "plain.raw"
    run(["qemu-img", "convert", "--object", secret_obj(PW), "--image-opts", _spec(path), "-O", "raw", str(raw)])
    with open_image(path, secrets=store, key_secret="s0") as dev:
        assert dev.read(0, 4 * MiB) == raw.read_bytes()
        # and a write of ours, read back by qemu-io
    with open_image(path, read_only=False, secrets=store, key_secret="s0") as dev:
        dev.write(777, b"\x2a" * 5000)
    assert_io_ok(qemu_io_enc(_spec(path), PW, "read -P 0x2a 777 5000", "read -P 5 3M 70k"))
    info = _qemu_info(path)
    with open_image(path) as dev:   # info needs no key, as qemu-img's
        ours = device_info(dev)
    assert ours["encrypted"] is True
    assert ours["format-specific"] == info["format-specific"]


def test_keys_and_messages(tmp_path, store):
    path = str(tmp_path / "k.qcow2")
    create_image(path, "qcow2", "1M", {"encrypt.format": "luks", "encrypt.key-secret": "s0",
                                       "encrypt.iter-time": "10"}, secrets=store)
    with open_image(path) as dev:
        with pytest.raises(QimgError, match="Parameter 'encrypt.key-secret' is required for cipher"):
            dev.read(0, 512)
    with pytest.raises(QimgError, match="^Could not open '.*': Invalid password, cannot unlock any keyslot$"):
        open_image(path, secrets=store, key_secret="bad")
    with pytest.raises(QimgError, match="No secret with id 'nope'"):
        open_image(path, secrets=store, key_secret="nope")


@pytest.mark.parametrize("opts,message", [
    ({"encryption": "on"}, "^Parameter 'encrypt.key-secret' is required for cipher$"),
    ({"encryption": "on", "encrypt.format": "aes", "encrypt.key-secret": "s0"},
     "^'encrypt.format' and its alias 'encryption' can't be used at the same time$"),
    ({"encryption": "on", "encrypt.key-secret": "s1"}, "^No secret with id 's1'$"),
    ({"encrypt.key-secret": "s0"}, "^Parameter 'encrypt.format' is missing$"),
    ({"encrypt.format": "foo", "encrypt.key-secret": "s0"}, "^Parameter 'format' does not accept value 'foo'$"),
    ({"encryption": "on", "encrypt.key-secret": "s0", "encrypt.cipher-alg": "aes-128"},
     "^Parameter 'encrypt.cipher-alg' is unexpected$"),
])
def test_create_errors_as_qemu(tmp_path, store, opts, message):
    """The same option sets make qemu-img fail with these messages (checked in the doc test below)."""
    with pytest.raises(QimgError, match=message):
        create_image(str(tmp_path / "e.qcow2"), "qcow2", "1M", opts, secrets=store)
    assert not (tmp_path / "e.qcow2").exists()


def test_create_errors_match_qemu_img(tmp_path):
    for opts, want in [("encryption=on", "Parameter 'encrypt.key-secret' is required for cipher"),
                       ("encrypt.key-secret=s0", "Parameter 'encrypt.format' is missing"),
                       ("encryption=on,encrypt.key-secret=s0,encrypt.cipher-alg=aes-128",
                        "Parameter 'encrypt.cipher-alg' is unexpected")]:
        proc = run(["qemu-img", "create", "-q", "-f", "qcow2", "--object", secret_obj(PW), "-o", opts,
                    str(tmp_path / "x.qcow2"), "1M"], check=False)
        assert proc.stderr.strip().endswith(want)


def test_formatting_line_order(tmp_path):
    opts = {"lazy_refcounts": "on", "encrypt.iter-time": "10", "encrypt.hash-alg": "sha1",
            "encrypt.ivgen-hash-alg": "sha256", "encrypt.ivgen-alg": "essiv", "encrypt.cipher-mode": "cbc",
            "encrypt.cipher-alg": "aes-128", "encrypt.key-secret": "s0", "encrypt.format": "luks"}
    line = " ".join("%s=%s" % kv for kv in resolved_options("qcow2", "16M", opts))
    proc = qemu_retry(["qemu-img", "create", "-f", "qcow2", "--object", secret_obj(PW), "-o",
                       ",".join("%s=%s" % kv for kv in opts.items()), str(tmp_path / "f.qcow2"), "16M"])
    assert proc.stdout.strip().endswith("fmt=qcow2 " + line)


def test_backing_chain_of_encrypted_images(tmp_path, store):
    """iotest 158's shape: an encrypted overlay over an encrypted base, written partly."""
    base = str(tmp_path / "base.qcow2")
    top = str(tmp_path / "top.qcow2")
    create_image(base, "qcow2", "4M", {"encryption": "on", "encrypt.key-secret": "s0"}, secrets=store)
    with open_image(base, read_only=False, secrets=store, key_secret="s0") as dev:
        dev.write(0, b"\x0a" * (4 * MiB))
    create_image(top, "qcow2", "4M", {"encryption": "on", "encrypt.key-secret": "s0"}, backing_file=base,
                 backing_fmt="qcow2", unsafe=True, secrets=store)
    with open_image(top, read_only=False, secrets=store, key_secret="s0") as dev:
        dev.write(0, b"\x0e" * 1024)
    with open_image(top, secrets=store, key_secret="s0") as dev:
        assert dev.read(0, 65536) == b"\x0e" * 1024 + b"\x0a" * 64512
    spec = ("driver=qcow2,file.filename=%s,backing.driver=qcow2,backing.file.filename=%s,"
            "backing.encrypt.key-secret=s0,encrypt.key-secret=s0" % (top, base))
    assert_io_ok(qemu_io_enc(spec, PW, "read -P 0xe 0 1024", "read -P 0xa 1024 64512"))


def test_check_counts_the_luks_header(tmp_path, store):
    """The LUKS header clusters are referenced (not leaks), as qemu-img check counts them."""
    from conftest import qimg
    theirs = str(tmp_path / "theirs.qcow2")
    qemu_retry(["qemu-img", "create", "-q", "-f", "qcow2", "--object", secret_obj(PW), "-o",
                "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", theirs, "4M"])
    assert_io_ok(qemu_io_enc(_spec(theirs), PW, "write -P 7 0 192k"))
    ours = str(tmp_path / "ours.qcow2")
    create_image(ours, "qcow2", "4M", {"encrypt.format": "luks", "encrypt.key-secret": "s0",
                                       "encrypt.iter-time": "10"}, secrets=store)
    with open_image(ours, read_only=False, secrets=store, key_secret="s0") as dev:
        dev.write(65536, b"\x01" * 200000)
    for path in (theirs, ours):
        want = json.loads(run(["qemu-img", "check", "--output=json", "--object", secret_obj(PW), "--image-opts",
                               _spec(path)]).stdout)
        got = json.loads(qimg("check", "--output=json", "--object", secret_obj(PW), "--image-opts",
                              _spec(path)).stdout)
        want.pop("filename")
        got.pop("filename")
        assert got == want


def test_keyslot_amend_on_qcow2(tmp_path, store):
    """Add and erase LUKS passphrases of a qcow2 image (the future amend), checked by qemu-io."""
    from qimg.crypto import luks
    path = str(tmp_path / "a.qcow2")
    create_image(path, "qcow2", "1M", {"encrypt.format": "luks", "encrypt.key-secret": "s0",
                                       "encrypt.iter-time": "10"}, secrets=store)
    with open_image(path, read_only=False, secrets=store, key_secret="s0") as dev:
        dev.write(0, b"\x21" * 4096)
        read, write = dev.crypto.keyslot_io(dev.file)
        assert luks.add_keyslot(dev.crypto.header, read, write, PW, "second", iter_time=10) == 1
    assert_io_ok(qemu_io_enc(_spec(path), "second", "read -P 0x21 0 4k"))
    with open_image(path, read_only=False, secrets=store, key_secret="s0") as dev:
        read, write = dev.crypto.keyslot_io(dev.file)
        assert luks.erase_keyslots(dev.crypto.header, read, write, old_password=PW) == [0]
    assert "Invalid password" in qemu_io_enc(_spec(path), PW, "read 0 512").stderr
    assert_io_ok(qemu_io_enc(_spec(path), "second", "read -P 0x21 0 4k"))
    run(["qemu-img", "check", "--object", secret_obj("second"), "--image-opts", _spec(path)])


def test_map_has_no_host_offsets(tmp_path):
    """qemu-img map (with the key) shows no offsets for encrypted data; ours matches."""
    from conftest import qimg
    path = str(tmp_path / "m.qcow2")
    qemu_retry(["qemu-img", "create", "-q", "-f", "qcow2", "--object", secret_obj(PW), "-o",
                "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", path, "4M"])
    assert_io_ok(qemu_io_enc(_spec(path), PW, "write -P 7 0 64k", "write -z 1M 64k", "write -P 1 3M 4k"))
    want = run(["qemu-img", "map", "--output=json", "--object", secret_obj(PW), "--image-opts", _spec(path)]).stdout
    assert qimg("map", "--output=json", "--object", secret_obj(PW), "--image-opts", _spec(path)).stdout == want
