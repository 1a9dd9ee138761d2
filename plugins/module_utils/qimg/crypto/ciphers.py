# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sector ciphers as QEMU's crypto/block.c applies them: each 512-byte sector is encrypted on its
own with an IV computed from its sector number (crypto/ivgen-*.c).

encrypt()/decrypt() take many sectors at once and do the work in a few large calls of
`cryptography`'s ECB primitive instead of one cipher object per sector:
- XTS: the tweaks of all sectors come from one ECB call over the IVs; the per-block tweaks
  (multiplication by alpha in GF(2^128)) are computed lane-wise on Python integers holding all
  sectors at once; data is XORed with them in one integer operation on each side of one ECB call.
- CBC decryption: one ECB call, XOR with the ciphertext shifted by one block (IVs at sector starts).
- CBC encryption: one ECB call per block column (block j of every sector together).
- CTR with plain/plain64 IVs: the counter blocks of all sectors, one ECB call, one XOR.
Everything else (ESSIV with CTR, a short last sector) goes sector by sector.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import struct
import sys
from array import array

from ..errors import InvalidArgument, UnsupportedFeature
from .backend import require

SECTOR_SIZE = 512

# QEMU's QCryptoCipherAlgorithm names: (family, key bytes, block bytes)
CIPHER_ALGS = {
    "aes-128": ("aes", 16, 16),
    "aes-192": ("aes", 24, 16),
    "aes-256": ("aes", 32, 16),
    "cast5-128": ("cast5", 16, 8),
    "serpent-128": ("serpent", 16, 16),
    "serpent-192": ("serpent", 24, 16),
    "serpent-256": ("serpent", 32, 16),
    "twofish-128": ("twofish", 16, 16),
    "twofish-192": ("twofish", 24, 16),
    "twofish-256": ("twofish", 32, 16),
}
CIPHER_MODES = ("ecb", "cbc", "xts", "ctr")
IVGEN_ALGS = ("plain", "plain64", "essiv")
HASH_ALGS = ("md5", "sha1", "sha224", "sha256", "sha384", "sha512", "ripemd160")
HASH_SIZES = {"md5": 16, "sha1": 20, "sha224": 28, "sha256": 32, "sha384": 48, "sha512": 64, "ripemd160": 20}

_LITTLE = sys.byteorder == "little"
_MASKS = {}


def hash_new(name, data=b""):
    """A hashlib-style object for one of QEMU's hash names (cryptography when hashlib lacks it)."""
    try:
        return hashlib.new(name, data)
    except (ValueError, TypeError):
        pass
    cr = require()
    cls = getattr(cr.hashes, name.upper(), None)
    if cls is None:
        raise UnsupportedFeature("Hash algorithm '%s' not supported" % name)

    class _H(object):
        def __init__(self):
            self._h = cr.hashes.Hash(cls())
            self.digest_size = cls.digest_size

        def update(self, d):
            self._h.update(d)

        def digest(self):
            return self._h.copy().finalize()
    h = _H()
    h.update(data)
    return h


def hash_algorithm(name):
    """cryptography's hash class instance for a QEMU hash name (PBKDF2)."""
    cr = require()
    cls = getattr(cr.hashes, name.upper(), None)
    if cls is None:
        raise UnsupportedFeature("Hash algorithm '%s' not supported" % name)
    return cls()


def _algorithm(alg, key):
    cr = require()
    family = CIPHER_ALGS[alg][0]
    if family == "aes":
        return cr.algorithms.AES(key)
    if family == "cast5" and cr.CAST5 is not None:
        return cr.CAST5(key)
    raise UnsupportedFeature("Cipher algorithm '%s' is not provided by the installed 'cryptography' package" % alg)


def cipher_key_len(alg, mode):
    """Master key length in bytes for a cipher algorithm and mode (XTS doubles it)."""
    keylen = CIPHER_ALGS[alg][1]
    return keylen * 2 if mode == "xts" else keylen


def _ecb(alg, key):
    cr = require()
    return cr.Cipher(_algorithm(alg, key), cr.modes.ECB())


def _xor(a, b):
    n = len(a)
    return (int.from_bytes(a, "little") ^ int.from_bytes(b, "little")).to_bytes(n, "little")


def _qview(buf):
    return memoryview(buf).cast("B").cast("Q")


def _masks(lanes):
    """(lowbit-of-each-lane, all-but-top-bit-of-each-lane) integers for `lanes` 128-bit lanes."""
    m = _MASKS.get(lanes)
    if m is None:
        if len(_MASKS) > 32:
            _MASKS.clear()
        one = int.from_bytes((b"\x01" + b"\0" * 15) * lanes, "little")
        keep = int.from_bytes((b"\xff" * 15 + b"\x7f") * lanes, "little")
        m = _MASKS[lanes] = (one, keep)
    return m


class SectorCipher(object):
    """One cipher algorithm + mode + IV generator over 512-byte sectors, keyed with `key`.

    repr never shows the key.
    """

    def __init__(self, cipher_alg, cipher_mode, key, ivgen_alg="plain64", ivgen_hash_alg=None,
                 ivgen_cipher_alg=None, sector_size=SECTOR_SIZE):
        if cipher_alg not in CIPHER_ALGS:
            raise InvalidArgument("Algorithm '%s' not supported" % cipher_alg)
        if cipher_mode not in CIPHER_MODES:
            raise InvalidArgument("Cipher mode '%s' not supported" % cipher_mode)
        if ivgen_alg not in IVGEN_ALGS:
            raise InvalidArgument("IV generator '%s' not supported" % ivgen_alg)
        family, keylen, block = CIPHER_ALGS[cipher_alg]
        key = bytes(key)
        want = keylen * 2 if cipher_mode == "xts" else keylen
        if len(key) != want:
            raise InvalidArgument("Cipher key length %d should be %d" % (len(key), want))
        if cipher_mode == "xts" and block != 16:
            raise InvalidArgument("Cipher mode 'xts' needs a 16-byte block cipher, not '%s'" % cipher_alg)
        self.cipher_alg = cipher_alg
        self.cipher_mode = cipher_mode
        self.ivgen_alg = ivgen_alg
        self.block = block
        self.sector_size = sector_size
        self.niv = 0 if cipher_mode == "ecb" else block
        if cipher_mode == "xts":
            self._ecb = _ecb(cipher_alg, key[:keylen])
            self._ecb2 = _ecb(cipher_alg, key[keylen:])
        else:
            self._ecb = _ecb(cipher_alg, key)
            self._ecb2 = None
        self._alg_key = key
        self._essiv = None
        if self.niv and ivgen_alg == "essiv":
            if not ivgen_hash_alg:
                raise InvalidArgument("Missing IV generator hash specification")
            salt = hash_new(ivgen_hash_alg, key).digest()
            ealg = ivgen_cipher_alg or cipher_alg
            elen = CIPHER_ALGS[ealg][1]
            self._essiv = _ecb(ealg, salt[:min(len(salt), elen)])
            self._essiv_block = CIPHER_ALGS[ealg][2]

    def __repr__(self):
        return "SectorCipher(%s-%s-%s)" % (self.cipher_alg, self.cipher_mode, self.ivgen_alg)

    # --- IVs ------------------------------------------------------------------------------------

    def _plain_ivs(self, sector, count, width):
        """IVs (`width` bytes each) of plain64 (the little-endian sector number) or plain (its low
        32 bits), zero-padded, for `count` sectors from `sector`."""
        words = width // 8
        q = array("Q", bytes(count * width))
        if self.ivgen_alg == "plain":
            end = sector + count
            if (sector >> 32) == ((end - 1) >> 32):
                nums = range(sector & 0xffffffff, (sector & 0xffffffff) + count)
            else:
                nums = [s & 0xffffffff for s in range(sector, end)]
        else:
            nums = range(sector, sector + count)
        q[0::words] = array("Q", nums)
        if not _LITTLE:
            q.byteswap()
        return q.tobytes()

    def ivs(self, sector, count):
        """The IVs of `count` sectors from `sector`, concatenated (niv bytes each)."""
        if not self.niv:
            return b""
        if self._essiv is not None:
            width = self._essiv_block
            raw = self._plain64(sector, count, width)
            enc = self._essiv.encryptor().update(raw)
            if width == self.niv:
                return enc
            return b"".join((enc[i * width:(i + 1) * width] + bytes(self.niv))[:self.niv] for i in range(count))
        width = max(self.niv, 8)
        raw = self._plain_ivs(sector, count, width)
        if width == self.niv:
            return raw
        return b"".join(raw[i * width:i * width + self.niv] for i in range(count))

    def _plain64(self, sector, count, width):
        q = array("Q", bytes(count * width))
        q[0::width // 8] = array("Q", range(sector, sector + count))
        if not _LITTLE:
            q.byteswap()
        return q.tobytes()

    # --- public ---------------------------------------------------------------------------------

    def encrypt(self, sector, data):
        """Encrypt whole sectors (the last may be short but a multiple of the block size)."""
        return self._run(sector, data, True)

    def decrypt(self, sector, data):
        return self._run(sector, data, False)

    def _run(self, sector, data, enc):
        n = len(data)
        if n % self.block:
            raise InvalidArgument("Encrypted data length %d is not a multiple of the cipher block size" % n)
        if not n:
            return b""
        ss = self.sector_size
        full = n - n % ss
        out = []
        if full:
            chunk = data if full == n else memoryview(data)[:full]
            out.append(self._bulk(sector, chunk, enc))
        if full != n:
            out.append(self._one_sector(sector + full // ss, memoryview(data)[full:], enc))
        return out[0] if len(out) == 1 else b"".join(out)

    def _bulk(self, sector, data, enc):
        mode = self.cipher_mode
        if mode == "ecb":
            ctx = self._ecb.encryptor() if enc else self._ecb.decryptor()
            return ctx.update(data)
        count = len(data) // self.sector_size
        if mode == "xts":
            return self._xts(sector, count, data, enc)
        if mode == "cbc":
            if enc:
                return self._cbc_encrypt(sector, count, data)
            return self._cbc_decrypt(sector, count, data)
        if mode == "ctr" and self._essiv is None and self.block == 16 and self.sector_size // 16 <= 256:
            return self._ctr(sector, count, data)
        return b"".join(self._one_sector(sector + i, memoryview(data)[i * self.sector_size:(i + 1) * self.sector_size],
                                         enc) for i in range(count))

    def _one_sector(self, sector, data, enc):
        cr = require()
        iv = self.ivs(sector, 1)
        mode = self.cipher_mode
        if mode == "ecb":
            ctx = self._ecb.encryptor() if enc else self._ecb.decryptor()
            return ctx.update(data)
        if mode == "xts":
            return self._xts(sector, 1, bytes(data), enc, blocks=len(data) // 16)
        if mode == "cbc":
            c = cr.Cipher(self._ecb.algorithm, cr.modes.CBC(iv))
        else:
            c = cr.Cipher(self._ecb.algorithm, cr.modes.CTR(iv))
        ctx = c.encryptor() if enc else c.decryptor()
        return ctx.update(data)

    def _xts(self, sector, count, data, enc, blocks=None):
        """XTS (IEEE P1619) over `count` data units of `blocks` 16-byte blocks each."""
        bps = blocks or self.sector_size // 16
        t0 = self._ecb2.encryptor().update(self.ivs(sector, count))
        one, keep = _masks(count)
        x = int.from_bytes(t0, "little")
        tweaks = bytearray(count * bps * 16)
        tq = _qview(tweaks)
        stride = bps * 2
        for j in range(bps):
            xq = _qview(x.to_bytes(count * 16, "little"))
            tq[2 * j::stride] = xq[0::2]
            tq[2 * j + 1::stride] = xq[1::2]
            if j + 1 < bps:
                x = ((x & keep) << 1) ^ (((x >> 127) & one) * 0x87)
        w = int.from_bytes(tweaks, "little")
        n = len(data)
        mixed = (int.from_bytes(data, "little") ^ w).to_bytes(n, "little")
        ctx = self._ecb.encryptor() if enc else self._ecb.decryptor()
        done = ctx.update(mixed)
        return (int.from_bytes(done, "little") ^ w).to_bytes(n, "little")

    def _cbc_decrypt(self, sector, count, data):
        blk = self.block
        ss = self.sector_size
        n = len(data)
        dec = self._ecb.decryptor().update(data)
        prev = bytearray(n)
        prev[blk:] = memoryview(data)[:n - blk]
        ivs = self.ivs(sector, count)
        pq = _qview(prev)
        iq = _qview(ivs)
        wpb = blk // 8
        for k in range(wpb):
            pq[k::ss // 8] = iq[k::wpb]
        return _xor(dec, prev)

    def _cbc_encrypt(self, sector, count, data):
        blk = self.block
        ss = self.sector_size
        wpb = blk // 8
        stride = ss // 8
        src = _qview(data)
        out = bytearray(len(data))
        oq = _qview(out)
        prev = self.ivs(sector, count)
        ctx = self._ecb.encryptor()
        col = bytearray(count * blk)
        cq = _qview(col)
        for j in range(ss // blk):
            for k in range(wpb):
                cq[k::wpb] = src[j * wpb + k::stride]
            prev = ctx.update(_xor(col, prev))
            pq = _qview(prev)
            for k in range(wpb):
                oq[j * wpb + k::stride] = pq[k::wpb]
        return bytes(out)

    def _ctr(self, sector, count, data):
        """CTR with plain/plain64 IVs: counter block j of a sector is its IV + j (big-endian), and
        the IV's low-order bytes are zero, so the increment never carries past the last byte."""
        ss = self.sector_size
        bps = ss // 16
        ivs = self.ivs(sector, count)
        ctr = bytearray(len(data))
        cq = _qview(ctr)
        iq = _qview(ivs)
        stride = ss // 8
        lowword = array("Q", [0]) * count
        lq = memoryview(lowword)
        for j in range(bps):
            cq[2 * j::stride] = iq[0::2]
            if j:
                val = struct.unpack("=Q", (7 * b"\0" + struct.pack("B", j)))[0]
                lowword = array("Q", [val]) * count
                lq = memoryview(lowword)
            cq[2 * j + 1::stride] = lq
        ks = self._ecb.encryptor().update(bytes(ctr))
        return _xor(data, ks)
