# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Hostile LUKS headers: every corruption ends in one clean QimgError line, quickly, with bounded
memory (no traceback, no multi-minute PBKDF2, no reads outside the container)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import random
import struct
import time

import pytest

pytest.importorskip("cryptography")

from qimg.errors import QimgError  # noqa: E402
from qimg.crypto import luks  # noqa: E402

PW = "pw"
HDR = luks._HDR.size  # where the key slots begin


@pytest.fixture(scope="module")
def volume():
    """(bytes of a small valid LUKS container, its header) made by our create()."""
    buf = bytearray()

    def write(offset, data):
        end = offset + len(data)
        if end > len(buf):
            buf.extend(bytes(end - len(buf)))
        buf[offset:end] = data

    def reserve(n):
        write(0, bytes(n))
    h, dummy = luks.create(PW, write, iter_time=1, reserve=reserve)
    return bytes(buf), h


def _reader(buf):
    def read(offset, length):
        return bytes(buf[offset:offset + length])
    return read


def _open(buf, password=PW):
    h = luks.read_header(_reader(buf), len(buf))
    return h.unlock(password, _reader(buf))


def _patch(buf, offset, fmt, *values):
    b = bytearray(buf)
    struct.pack_into(fmt, b, offset, *values)
    return bytes(b)


def _slot(i, field):
    base = HDR + 48 * i
    return {"active": base, "iterations": base + 4, "key_offset": base + 40, "stripes": base + 44}[field]


def test_valid_volume_opens(volume):
    buf, h = volume
    assert len(_open(buf)) == h.master_key_len
    with pytest.raises(luks.InvalidPassword):
        _open(buf, "nope")


CASES = [
    ("truncated-0", lambda b: b[:0], "Volume is not in LUKS format"),
    ("truncated-100", lambda b: b[:100], "LUKS header is truncated"),
    ("truncated-591", lambda b: b[:591], "LUKS header is truncated"),
    ("magic", lambda b: b"XUKS" + b[4:], "Volume is not in LUKS format"),
    ("version", lambda b: _patch(b, 6, ">H", 2), "LUKS version 2 is not supported"),
    ("cipher-name-nul", lambda b: b[:8] + b"a" * 32 + b[40:], "cipher name is not NUL terminated"),
    ("cipher-mode-nul", lambda b: b[:40] + b"x" * 32 + b[72:], "cipher mode is not NUL terminated"),
    ("hash-nul", lambda b: b[:72] + b"s" * 32 + b[104:], "hash spec is not NUL terminated"),
    ("payload-overlap", lambda b: _patch(b, 104, ">I", 3), "LUKS payload is overlapping with the header"),
    ("mk-iters-zero", lambda b: _patch(b, 164, ">I", 0), "LUKS key iteration count is zero"),
    ("mk-iters-huge", lambda b: _patch(b, 164, ">I", 0xffffffff), "too large"),
    ("mk-len-zero", lambda b: _patch(b, 108, ">I", 0), "master key length 0"),
    ("mk-len-huge", lambda b: _patch(b, 108, ">I", 0x7fffffff), "master key length"),
    ("mk-len-odd-xts", lambda b: _patch(b, 108, ">I", 33), "with key size"),
    ("stripes", lambda b: _patch(b, _slot(3, "stripes"), ">I", 0xffffffff), "Keyslot 3 is corrupted (stripes"),
    ("active-garbage", lambda b: _patch(b, _slot(1, "active"), ">I", 7), "Keyslot 1 state (active/disable)"),
    ("slot-iters-zero", lambda b: _patch(b, _slot(0, "iterations"), ">I", 0), "Keyslot 0 iteration count is zero"),
    ("slot-iters-huge", lambda b: _patch(b, _slot(0, "iterations"), ">I", 0xfffffff0), "too large"),
    ("slot-in-header", lambda b: _patch(b, _slot(2, "key_offset"), ">I", 1), "Keyslot 2 is overlapping with the LUKS"),
    ("slot-in-payload", lambda b: _patch(b, _slot(7, "key_offset"), ">I", 0xfffffff0),
     "Keyslot 7 is overlapping with the encrypted payload"),
    ("slots-overlap", lambda b: _patch(b, _slot(1, "key_offset"), ">I", 8 + 10), "Keyslots 0 and 1 are overlapping"),
    ("material-outside", lambda b: b[:4096 + 1000], "key material lies outside the image"),
    ("mode-no-dash", lambda b: b[:40] + b"xts".ljust(32, b"\0") + b[72:], "Unexpected cipher mode string format"),
    ("mode-unknown", lambda b: b[:40] + b"gcm-plain64".ljust(32, b"\0") + b[72:], "Cipher mode 'gcm' not supported"),
    ("ivgen-unknown", lambda b: b[:40] + b"xts-benbi".ljust(32, b"\0") + b[72:], "IV generator 'benbi' not supported"),
    ("essiv-no-hash", lambda b: b[:40] + b"xts-essiv".ljust(32, b"\0") + b[72:], "Missing IV generator hash"),
    ("ivhash-unknown", lambda b: b[:40] + b"xts-essiv:md4".ljust(32, b"\0") + b[72:],
     "Hash algorithm 'md4' not supported"),
    ("cipher-unknown", lambda b: b[:8] + b"rot13".ljust(32, b"\0") + b[40:], "Algorithm 'rot13' with key size 32"),
    ("hash-unknown", lambda b: b[:72] + b"crc32".ljust(32, b"\0") + b[104:], "Hash algorithm 'crc32' not supported"),
]


@pytest.mark.parametrize("name,mutate,message", CASES, ids=[c[0] for c in CASES])
def test_hostile_header(volume, name, mutate, message):
    bad = mutate(volume[0])
    start = time.monotonic()
    with pytest.raises(QimgError) as e:
        _open(bad)
    assert message in str(e.value)
    assert "\n" not in str(e.value)
    assert time.monotonic() - start < 5


def test_unavailable_cipher_is_a_clean_error(volume):
    # serpent is a valid LUKS cipher QEMU knows, but `cryptography` does not provide it
    bad = volume[0][:8] + b"serpent".ljust(32, b"\0") + volume[0][40:]
    with pytest.raises(QimgError, match="serpent-256.*cryptography"):
        _open(bad)


def test_fuzz_headers(volume):
    """Random byte flips in the header and key material: a key, an InvalidPassword or another
    QimgError, each within a bounded time."""
    buf = volume[0]
    rng = random.Random(1234)
    outcomes = set()
    for dummy in range(300):
        b = bytearray(buf)
        for dummy2 in range(rng.randint(1, 6)):
            pos = rng.randrange(0, 592) if rng.random() < 0.8 else rng.randrange(592, 8192)
            b[pos] = rng.randrange(256)
        start = time.monotonic()
        try:
            h = luks.read_header(_reader(b), len(b))
            if all(s.iterations <= 100000 for s in h.slots) and h.master_key_iterations <= 100000:
                h.unlock(PW, _reader(b))
            outcomes.add("ok")
        except QimgError as e:
            assert "\n" not in str(e)
            outcomes.add(type(e).__name__)
        assert time.monotonic() - start < 10
    assert "LuksError" in outcomes


# --- hostile encrypted qcow2 headers ----------------------------------------------------------

@pytest.fixture(scope="module")
def luks_qcow2(tmp_path_factory):
    from crypto_helpers import qemu_retry, secret_obj
    path = tmp_path_factory.mktemp("hq") / "l.qcow2"
    qemu_retry(["qemu-img", "create", "-q", "-f", "qcow2", "--object", secret_obj(PW), "-o",
                "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", str(path), "1M"])
    return path.read_bytes()


def _ext_pos(buf):
    hlen = struct.unpack_from(">I", buf, 100)[0]
    pos = hlen
    while True:
        etype, elen = struct.unpack_from(">II", buf, pos)
        if etype == 0x0537be77:
            return pos
        pos += 8 + (elen + 7) // 8 * 8


QCOW2_CASES = [
    ("method-2-no-ext", lambda b: _patch(b, _ext_pos(b), ">I", 0x12345678), "Missing CRYPTO header"),
    ("method-1-with-ext", lambda b: _patch(b, 32, ">I", 1), "only expected with LUKS encryption method"),
    ("ext-size", lambda b: _patch(b, _ext_pos(b) + 4, ">I", 8), "CRYPTO header extension size 8"),
    ("ext-unaligned", lambda b: _patch(b, _ext_pos(b) + 8, ">Q", 65536 * 4 + 512), "not a multiple of cluster"),
    ("ext-beyond-file", lambda b: _patch(b, _ext_pos(b) + 8, ">Q", 1 << 40), "outside the image"),
    ("ext-short", lambda b: _patch(b, _ext_pos(b) + 16, ">Q", 300),
     "Request for data outside of extension header"),
    ("ext-points-at-l1", lambda b: _patch(b, _ext_pos(b) + 8, ">Q", 3 * 65536), "not in LUKS format"),
    ("ext-too-short-for-slots", lambda b: _patch(b, _ext_pos(b) + 16, ">Q", 8192), "outside the image"),
]


@pytest.mark.parametrize("name,mutate,message", QCOW2_CASES, ids=[c[0] for c in QCOW2_CASES])
def test_hostile_encrypted_qcow2(tmp_path, luks_qcow2, name, mutate, message):
    from qimg.crypto.secrets import SecretStore
    from qimg.image import open_image
    path = tmp_path / "h.qcow2"
    path.write_bytes(mutate(luks_qcow2))
    store = SecretStore()
    store.add("s0", PW.encode())
    with pytest.raises(QimgError) as e:
        open_image(str(path), secrets=store, key_secret="s0").close()
    assert message in str(e.value) and "\n" not in str(e.value)
