# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The crypto core against the oracle: QEMU secret objects (messages as qemu-img's), sector
ciphers against per-sector `cryptography` calls, LUKS headers qemu-img writes (luks files and
qcow2 with encrypt.format=luks, every cipher mode and IV generator), legacy AES qcow2, and LUKS
files we create opened by qemu-io."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import struct

import pytest

pytest.importorskip("cryptography")

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes  # noqa: E402

from conftest import run  # noqa: E402
from crypto_helpers import (assert_io_ok, file_reader, file_writer, qcow2_host_offset, qcow2_layout,  # noqa: E402
                            qemu_io_enc, qemu_retry, region_reader, secret_obj)
from qimg.errors import QimgError  # noqa: E402
from qimg.crypto import luks  # noqa: E402
from qimg.crypto.aes_legacy import legacy_cipher  # noqa: E402
from qimg.crypto.ciphers import SectorCipher  # noqa: E402
from qimg.crypto.secrets import SecretStore, parse_object, SecretError  # noqa: E402

PW = "correct horse"


# --- secrets ----------------------------------------------------------------------------------

OBJECTS = [
    "secret,id=s0", "secret,id=s0,data=a,file=/x", "secret,id=s0,file=/nonexist",
    "secret,id=s0,data=@@,format=base64", "secret,id=s0,data=a,format=hex", "secret,data=a",
    "secret,id=s0,data=a,bogus=1", "foo,id=x", "secret,id=s0,data=a,keyid=k", "secret,id=0s,data=a",
    "secret,id=s0,data=a,,b", "secret,id=s0,data=a,id=s1", "secret", "id=s0", "", "secret,,x,id=s0,data=a",
    "secret,id=s0,data", "secret,id=s0,=a", "secret,id=s0,data.x=1", "secret,id=s0,data.a=x,data=y",
    "secret,id=0,bogus=1", "secret,id=s0,data=YWJj,format=base64", '{"qom-type":"secret","id":"s0","data":"a"}',
    '{"qom-type":"secret","id":"s0"}', "secret,id=s0,file=/tmp", "secret,id=s0,data=a,loaded=on",
    "secret,id=s0,data=a,format=RAW", "qom-type=secret,id=s0,data=a", "secret,id=a.b,data=x",
    "secret,id=a@b,data=x", "secret,id=s0,id.x=1,data=a", "secret,id=,data=a", "secret,id=s0,data=",
    "secret,id=s0,data=a,keyid=s0",
]


@pytest.mark.parametrize("text", OBJECTS)
def test_object_messages_match_qemu_img(qemu_img, text):
    proc = run([qemu_img, "info", "--object", text, "/nonexistent-crypto-test"], check=False)
    first = proc.stderr.splitlines()[0]
    try:
        SecretStore().add_object(text)
        ours = None
    except QimgError as e:
        ours = "qemu-img: " + e.message
        assert "\n" not in str(e)
    if "Could not open '/nonexistent-crypto-test'" in first:
        assert ours is None, ours
    else:
        assert ours == first


def test_object_values_and_escaping(tmp_path):
    store = SecretStore()
    store.add_object("secret,id=a,data=x,,y,,,,z")
    store.add_object("secret,id=b,data=YWJj,format=base64")
    f = tmp_path / "pw"
    f.write_bytes(b"from-file")
    store.add_object("secret,id=c,file=%s" % f)
    store.add_object('{"qom-type": "secret", "id": "d", "data": "json"}')
    assert store.lookup("a") == b"x,y,,z"
    assert store.lookup("b") == b"abc"
    assert store.lookup("c") == b"from-file"
    assert store.lookup_utf8("d") == "json"
    with pytest.raises(SecretError, match="No secret with id 'nope'"):
        store.lookup("nope")
    with pytest.raises(SecretError, match="duplicate property 'a'"):
        store.add_object("secret,id=a,data=again")
    kind, sid, props = parse_object("secret,id=q,data=hidden")
    assert (kind, sid, sorted(props)) == ("secret", "q", ["data"])
    assert parse_object("help").help and parse_object("secret,help").help_lines()[0] == "secret options:"


def test_keyid_encrypted_secret():
    key = os.urandom(32)
    iv = os.urandom(16)
    plain = b"s3cret-passphrase"
    pad = 16 - len(plain) % 16
    enc = Cipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
    ct = enc.update(plain + bytes([pad]) * pad) + enc.finalize()
    import base64
    store = SecretStore()
    store.add_object("secret,id=master,data=%s,format=base64" % base64.b64encode(key).decode())
    store.add_object("secret,id=pw,data=%s,format=base64,keyid=master,iv=%s"
                     % (base64.b64encode(ct).decode(), base64.b64encode(iv).decode()))
    assert store.lookup("pw") == plain


def test_secret_never_shown():
    store = SecretStore()
    spec = store.add_object("secret,id=s0,data=TOPSECRET")
    assert "TOPSECRET" not in repr(store) + str(store) + repr(spec)
    for bad in ("secret,id=s0,data=TOPSECRET,bogus=1", "secret,id=s0,data=TOPSECRET,format=zz",
                "secret,id=0,data=TOPSECRET", "secret,id=s0,data=TOPSECRET,file=/x",
                "secret,id=s0,data=TOPSECRET@,format=base64"):
        with pytest.raises(QimgError) as e:
            SecretStore().add_object(bad)
        assert "TOPSECRET" not in str(e.value)


# --- sector ciphers ---------------------------------------------------------------------------

def _reference(alg, mode, key, ivgen, ivhash, sector, data, enc):
    """One cryptography cipher object per sector, as QEMU's crypto/block.c loop does it."""
    out = []
    keylen = len(key) // 2 if mode == "xts" else len(key)
    for i in range(len(data) // 512):
        s = sector + i
        if ivgen == "plain":
            iv = struct.pack("<I", s & 0xffffffff) + bytes(12)
        elif ivgen == "plain64":
            iv = struct.pack("<Q", s) + bytes(8)
        else:
            salt = hashlib.new(ivhash, key).digest()
            iv = Cipher(algorithms.AES(salt[:32]), modes.ECB()).encryptor().update(struct.pack("<Q", s) + bytes(8))
        m = {"xts": lambda: modes.XTS(iv), "cbc": lambda: modes.CBC(iv), "ctr": lambda: modes.CTR(iv),
             "ecb": modes.ECB}[mode]()
        if mode == "xts":
            # cryptography's XTS wants 256/512-bit keys; AES-192-XTS is checked elsewhere
            assert keylen in (16, 32)
        c = Cipher(algorithms.AES(key), m)
        ctx = c.encryptor() if enc else c.decryptor()
        out.append(ctx.update(data[i * 512:(i + 1) * 512]))
    return b"".join(out)


CASES = [(a, m, g) for a in ("aes-128", "aes-256") for m in ("xts", "cbc", "ctr", "ecb")
         for g in ("plain", "plain64", "essiv") if not (m == "xts" and g == "essiv")]


@pytest.mark.parametrize("alg,mode,ivgen", CASES)
def test_sector_cipher_matches_per_sector_calls(alg, mode, ivgen):
    keylen = {"aes-128": 16, "aes-256": 32}[alg] * (2 if mode == "xts" else 1)
    key = os.urandom(keylen)
    ivhash = "sha256" if ivgen == "essiv" else None
    sc = SectorCipher(alg, mode, key, ivgen, ivhash, "aes-256" if ivgen == "essiv" else None)
    data = os.urandom(37 * 512)
    for sector in (0, 7, (1 << 32) - 5, (1 << 40) + 3):
        ct = sc.encrypt(sector, data)
        assert ct == _reference(alg, mode, key, ivgen, ivhash, sector, data, True)
        assert sc.decrypt(sector, ct) == data
        assert _reference(alg, mode, key, ivgen, ivhash, sector, ct, False) == data


def test_sector_cipher_repr_hides_key():
    key = b"K" * 64
    assert "KKKK" not in repr(SectorCipher("aes-256", "xts", key))


def test_legacy_aes_key():
    sc = legacy_cipher("astrochicken")
    key = b"astrochicken" + bytes(4)
    data = os.urandom(4 * 512)
    assert sc.encrypt(3, data) == _reference("aes-128", "cbc", key, "plain64", None, 3, data, True)
    # only the first 16 bytes of a long passphrase count
    assert legacy_cipher("0123456789abcdefXYZ").encrypt(0, data) == legacy_cipher("0123456789abcdef").encrypt(0, data)


def test_af_split_merge_roundtrip():
    key = os.urandom(64)
    for h in ("sha1", "sha256", "sha512"):
        split = luks.af_split(h, key, luks.STRIPES)
        assert len(split) == 64 * luks.STRIPES
        assert luks.af_merge(h, split, 64, luks.STRIPES) == key


# --- LUKS files qemu-img wrote ----------------------------------------------------------------

def _make_luks(tmp_path, name="q.luks", size="4M", opts=""):
    path = tmp_path / name
    o = "key-secret=s0,iter-time=10" + ("," + opts if opts else "")
    qemu_retry(["qemu-img", "create", "-q", "-f", "luks", "--object", secret_obj(PW), "-o", o, str(path), size])
    return path


def _luks_spec(path):
    return "driver=luks,file.filename=%s,key-secret=s0" % path


LUKS_OPTS = ["", "cipher-alg=aes-128,hash-alg=sha1", "cipher-alg=aes-192", "cipher-mode=cbc,ivgen-alg=essiv",
             "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256",
             "cipher-mode=ctr,ivgen-alg=plain",
             "cipher-mode=ecb,hash-alg=sha512", "cipher-alg=cast5-128,cipher-mode=cbc"]


@pytest.mark.parametrize("opts", LUKS_OPTS)
def test_read_luks_file_from_qemu(qemu_img, tmp_path, opts):
    path = _make_luks(tmp_path, opts=opts)
    assert_io_ok(qemu_io_enc(_luks_spec(path), PW, "write -P 7 0 64k", "write -P 9 1M 4k"))
    size = os.path.getsize(str(path))
    read = file_reader(path)
    h = luks.read_header(read, size)
    info = run([qemu_img, "info", "--output=json", str(path)]).stdout
    import json
    want = json.loads(info)["format-specific"]["data"]
    assert h.info() == want
    assert list(h.info()) == list(want)  # qemu-img's key order
    with pytest.raises(luks.InvalidPassword, match="^Invalid password, cannot unlock any keyslot$"):
        h.unlock("wrong", read)
    key = h.unlock(PW, read)
    sc = h.payload_cipher(key)
    base = h.payload_offset
    # the luks format's IV is the sector number inside the payload (the guest offset)
    assert sc.decrypt(0, read(base, 65536)) == b"\x07" * 65536
    assert sc.decrypt((1 << 20) // 512, read(base + (1 << 20), 4096)) == b"\x09" * 4096


def test_luks_header_layout_matches_qemu(tmp_path, qemu_img):
    """A header we create has QEMU's layout (key offsets, payload offset, strings), and qemu-io opens it."""
    theirs = luks.read_header(file_reader(_make_luks(tmp_path, "theirs.luks")))
    path = tmp_path / "ours.luks"
    path.write_bytes(b"")
    size = 4 << 20

    def reserve(length):
        with open(str(path), "r+b") as f:
            f.truncate(length + size)
    h, key = luks.create(PW, file_writer(path), iter_time=10, reserve=reserve)
    mine = luks.read_header(file_reader(path), os.path.getsize(str(path)))
    for attr in ("cipher_name", "cipher_mode_spec", "hash_spec", "payload_offset_sector", "master_key_len"):
        assert getattr(mine, attr) == getattr(theirs, attr), attr
    assert [s.key_offset_sector for s in mine.slots] == [s.key_offset_sector for s in theirs.slots]
    assert mine.active_slots() == [0] and mine.slots[0].iterations >= luks.MIN_SLOT_ITERS
    # data we encrypt, qemu-io reads; data qemu-io writes, we decrypt
    sc = h.payload_cipher(key)
    file_writer(path)(h.payload_offset + 8192, sc.encrypt(16, b"\x5a" * 8192))
    assert_io_ok(qemu_io_enc(_luks_spec(path), PW, "read -P 0x5a 8k 8k", "write -P 3 1M 64k"))
    assert sc.decrypt(2048, file_reader(path)(h.payload_offset + (1 << 20), 65536)) == b"\x03" * 65536
    proc = qemu_io_enc(_luks_spec(path), "nope", "read 0 512")
    assert "Invalid password, cannot unlock any keyslot" in proc.stderr
    info = run([qemu_img, "info", str(path)]).stdout
    assert "encrypted: yes" in info and "cipher alg: aes-256" in info


@pytest.mark.parametrize("opts", [dict(cipher_alg="aes-128", cipher_mode="cbc", ivgen_alg="essiv"),
                                  dict(cipher_mode="ctr", ivgen_alg="plain", hash_alg="sha1"),
                                  dict(cipher_alg="aes-192"), dict(cipher_mode="ecb", hash_alg="sha512")])
def test_luks_we_create_with_options_opens_in_qemu(tmp_path, opts):
    path = tmp_path / "o.luks"
    path.write_bytes(b"")
    h, key = luks.create(PW, file_writer(path), iter_time=10,
                         reserve=lambda n: open(str(path), "r+b").truncate(n + (1 << 20)), **opts)
    file_writer(path)(h.payload_offset, h.payload_cipher(key).encrypt(0, b"\x11" * 4096))
    assert_io_ok(qemu_io_enc(_luks_spec(path), PW, "read -P 0x11 0 4k"))


def test_keyslots_amend_interop(tmp_path, qemu_img):
    path = _make_luks(tmp_path)
    read, write = file_reader(path), file_writer(path)
    h = luks.read_header(read)
    slot = luks.add_keyslot(h, read, write, PW, "second", iter_time=10)
    assert slot == 1
    assert_io_ok(qemu_io_enc(_luks_spec(path), "second", "read 0 4k"))
    # qemu-img amend adds slot 2; we unlock with it
    qemu_retry([qemu_img, "amend", "--object", secret_obj(PW), "--object", "secret,id=s1,data=third",
                "--image-opts", _luks_spec(path), "-o", "state=active,new-secret=s1,iter-time=10"])
    h = luks.read_header(read)
    assert h.active_slots() == [0, 1, 2]
    assert h.try_slot(2, b"third", read) is not None
    with pytest.raises(luks.LuksError, match="Refusing to overwrite active keyslot 0"):
        luks.add_keyslot(h, read, write, PW, "x", keyslot=0, iter_time=10)
    assert luks.erase_keyslots(h, read, write, old_password="second") == [1]
    assert "Invalid password" in qemu_io_enc(_luks_spec(path), "second", "read 0 512").stderr
    assert_io_ok(qemu_io_enc(_luks_spec(path), "third", "read 0 4k"))
    luks.erase_keyslots(h, read, write, keyslot=2)
    with pytest.raises(luks.LuksError, match="Attempt to erase the only active keyslot 0"):
        luks.erase_keyslots(h, read, write, keyslot=0)
    with pytest.raises(luks.LuksError, match="All the active keyslots match"):
        luks.erase_keyslots(h, read, write, old_password=PW)
    with pytest.raises(luks.InvalidPassword):
        luks.add_keyslot(h, read, write, "wrong", "x", iter_time=10)
    info = run([qemu_img, "info", "--output=json", str(path)]).stdout
    import json
    assert json.loads(info)["format-specific"]["data"] == luks.read_header(read).info()


def test_iteration_count_benchmark_is_reliable():
    rate = luks.benchmark_pbkdf2("sha256", 64, 64, budget=0.02)
    assert rate > 1000
    h, dummy = luks.create(PW, lambda o, d: None, iter_time=50)
    assert h.master_key_iterations >= luks.MIN_MASTER_ITERS
    assert h.slots[0].iterations >= luks.MIN_SLOT_ITERS


# --- qcow2 images qemu-img encrypted ----------------------------------------------------------

def _make_qcow2(tmp_path, opts, name="e.qcow2", size="4M"):
    path = tmp_path / name
    qemu_retry(["qemu-img", "create", "-q", "-f", "qcow2", "--object", secret_obj(PW), "-o", opts, str(path), size])
    return path


def _qcow2_spec(path):
    return "driver=qcow2,file.filename=%s,encrypt.key-secret=s0" % path


QCOW2_LUKS = ["", "encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv", "encrypt.cipher-mode=ctr",
              "encrypt.cipher-mode=ecb",
              "encrypt.ivgen-alg=plain,encrypt.cipher-alg=aes-128,encrypt.hash-alg=sha1"]


@pytest.mark.parametrize("opts", QCOW2_LUKS)
def test_read_qcow2_luks_from_qemu(tmp_path, opts):
    o = "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10" + ("," + opts if opts else "")
    path = _make_qcow2(tmp_path, o)
    assert_io_ok(qemu_io_enc(_qcow2_spec(path), PW, "write -P 7 0 64k", "write -P 9 1M 4k"))
    crypt_method, cs, fde, dummy = qcow2_layout(path)
    assert crypt_method == 2 and fde is not None
    read = region_reader(path, fde[0])
    h = luks.read_header(read, fde[1])
    with pytest.raises(luks.InvalidPassword):
        h.unlock("wrong", read)
    sc = h.payload_cipher(h.unlock(PW, read))
    for guest, length, byte in ((0, 65536, 7), (1 << 20, 4096, 9)):
        host = qcow2_host_offset(path, guest)
        assert host is not None and host != guest
        raw = file_reader(path)(host, length)
        # qcow2-LUKS uses the *host* sector number as the IV (crypt_physical_offset)
        assert sc.decrypt(host // 512, raw) == bytes([byte]) * length
        if h.cipher_mode != "ecb":
            assert sc.decrypt(guest // 512, raw) != bytes([byte]) * length


@pytest.mark.parametrize("opts", ["encryption=on,encrypt.key-secret=s0", "encrypt.format=aes,encrypt.key-secret=s0"])
def test_read_qcow2_legacy_aes_from_qemu(tmp_path, opts):
    path = _make_qcow2(tmp_path, opts)
    assert_io_ok(qemu_io_enc(_qcow2_spec(path), PW, "write -P 7 0 64k", "write -P 9 1M 4k"))
    crypt_method, dummy, fde, dummy2 = qcow2_layout(path)
    assert crypt_method == 1 and fde is None
    sc = legacy_cipher(PW)
    for guest, length, byte in ((0, 65536, 7), (1 << 20, 4096, 9)):
        host = qcow2_host_offset(path, guest)
        assert host != guest
        raw = file_reader(path)(host, length)
        # legacy AES uses the *guest* sector number
        assert sc.decrypt(guest // 512, raw) == bytes([byte]) * length
        assert legacy_cipher("wrong").decrypt(guest // 512, raw) != bytes([byte]) * length


def test_qcow2_luks_header_matches_our_layout(tmp_path):
    """QEMU's qcow2-LUKS header area (FDE extension length) is the LUKS payload offset, as ours."""
    path = _make_qcow2(tmp_path, "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10")
    dummy, cs, fde, dummy2 = qcow2_layout(path)
    h = luks.read_header(region_reader(path, fde[0]))
    mine, dummy = luks.create(PW, lambda o, d: None, iter_time=1)
    assert fde[1] == h.payload_offset == mine.payload_offset
    assert fde[0] % cs == 0


def test_create_option_errors_as_qemu():
    with pytest.raises(QimgError, match="^No AES cipher with key size 20 available$"):
        luks.create(PW, lambda o, d: None, cipher_alg="aes-128", cipher_mode="cbc", ivgen_alg="essiv",
                    ivgen_hash_alg="sha1", iter_time=1)
    with pytest.raises(QimgError, match="^Parameter 'cipher-alg' does not accept value 'sm4'$"):
        luks.check_create_options(cipher_alg="sm4")
    with pytest.raises(QimgError, match="not supported for LUKS"):
        luks.check_create_options(cipher_alg="aes-192", cipher_mode="cbc")
