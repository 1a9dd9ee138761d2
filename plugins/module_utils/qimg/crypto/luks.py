# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The LUKS1 on-disk format (cryptsetup's LUKS1 specification 1.2.1, as QEMU's crypto/block-luks.c
writes and checks it): a 592-byte big-endian header with 8 key slots, each slot holding the master
key AF-split into 4000 stripes and encrypted with a PBKDF2-derived key.

The container (a whole `luks` file, or the clusters a qcow2 image names) is reached through two
callables, read(offset, length) -> bytes and write(offset, data), with offsets relative to the
LUKS header, plus its size for bounds checks. Every header field is validated before anything is
allocated or read; time is bounded by a cap on PBKDF2 iteration counts.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import struct
import time
import uuid as uuidlib

from ..errors import InvalidArgument, QimgError, UnsupportedFeature
from . import ciphers
from .backend import require

MAGIC = b"LUKS\xba\xbe"
VERSION = 1
SECTOR = 512
NUM_SLOTS = 8
STRIPES = 4000
SALT_LEN = 32
DIGEST_LEN = 20
UUID_LEN = 40
KEY_SLOT_OFFSET = 4096
HEADER_SECTORS = KEY_SLOT_OFFSET // SECTOR
SLOT_ENABLED = 0x00AC71F3
SLOT_DISABLED = 0x0000DEAD
MIN_SLOT_ITERS = 1000
MIN_MASTER_ITERS = 1000
DEFAULT_ITER_TIME = 2000
ERASE_ITERATIONS = 40
# far above what a 2000 ms benchmark gives on any current CPU (a few million), low enough that a
# hostile header cannot keep us busy for more than some seconds per slot
MAX_ITERATIONS = 1 << 26
UINT32_MAX = 0xffffffff

_HDR = struct.Struct(">6sH32s32s32sII20s32sI40s")
_SLOT = struct.Struct(">II32sII")
HEADER_SIZE = _HDR.size + NUM_SLOTS * _SLOT.size  # 592

# the family names LUKS headers use, and QEMU's cipher names by (family, key bytes)
_LUKS_NAMES = {"aes": {16: "aes-128", 24: "aes-192", 32: "aes-256"},
               "cast5": {16: "cast5-128"},
               "serpent": {16: "serpent-128", 24: "serpent-192", 32: "serpent-256"},
               "twofish": {16: "twofish-128", 24: "twofish-192", 32: "twofish-256"}}


class LuksError(QimgError):
    """The LUKS header is invalid or cannot be used."""


class InvalidPassword(LuksError):
    """No key slot opens with the passphrase."""


class KeySlot(object):
    __slots__ = ("active", "iterations", "salt", "key_offset_sector", "stripes")

    def __init__(self, active, iterations, salt, key_offset_sector, stripes):
        self.active = active
        self.iterations = iterations
        self.salt = salt
        self.key_offset_sector = key_offset_sector
        self.stripes = stripes

    @property
    def enabled(self):
        return self.active == SLOT_ENABLED


def _cstr(raw):
    return raw.split(b"\0", 1)[0].decode("ascii", "replace")


def essiv_cipher(cipher_alg, hash_alg):
    """dm-crypt's ESSIV quirk: the IV cipher takes the hash digest as its key, so its key size
    follows the digest length (aes-128 with sha256 uses aes-256 for the IVs)."""
    family, keylen, dummy = ciphers.CIPHER_ALGS[cipher_alg]
    digest = ciphers.HASH_SIZES[hash_alg]
    if digest == keylen:
        return cipher_alg
    names = _LUKS_NAMES.get(family, {})
    if family in ("aes", "serpent", "twofish") and digest in names:
        return names[digest]
    if family in ("aes", "serpent", "twofish"):
        label = {"aes": "AES", "serpent": "Serpent", "twofish": "Twofish"}[family]
        raise LuksError("No %s cipher with key size %d available" % (label, digest))
    raise LuksError("Cipher %s not supported with essiv" % cipher_alg)


def splitkey_sectors(key_len, stripes):
    """Sectors of one slot's key material, rounded as cryptsetup does (to whole header sizes)."""
    sectors = (key_len * stripes + SECTOR - 1) // SECTOR
    return (sectors + HEADER_SECTORS - 1) // HEADER_SECTORS * HEADER_SECTORS


# --- primitives -------------------------------------------------------------------------------

def pbkdf2(hash_alg, password, salt, iterations, length):
    cr = require()
    kdf = cr.PBKDF2HMAC(algorithm=ciphers.hash_algorithm(hash_alg), length=length, salt=bytes(salt),
                        iterations=iterations)
    return kdf.derive(bytes(password))


def _xor(a, b):
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def _diffuse(hash_alg, block):
    """AF diffusion: hash each digest-sized piece of the block with its big-endian index prefixed."""
    size = len(block)
    digest = ciphers.HASH_SIZES[hash_alg]
    out = []
    for i, start in enumerate(range(0, size, digest)):
        piece = block[start:start + digest]
        h = ciphers.hash_new(hash_alg, struct.pack(">I", i) + piece).digest()
        out.append(h[:len(piece)])
    return b"".join(out)


def af_merge(hash_alg, material, key_len, stripes):
    block = bytes(key_len)
    for i in range(stripes - 1):
        block = _diffuse(hash_alg, _xor(material[i * key_len:(i + 1) * key_len], block))
    return _xor(material[(stripes - 1) * key_len:stripes * key_len], block)


def af_split(hash_alg, key, stripes):
    key_len = len(key)
    rnd = os.urandom(key_len * (stripes - 1))
    block = bytes(key_len)
    for i in range(stripes - 1):
        block = _diffuse(hash_alg, _xor(rnd[i * key_len:(i + 1) * key_len], block))
    return rnd + _xor(key, block)


def benchmark_pbkdf2(hash_alg, key_len, out_len, budget=0.05):
    """PBKDF2 iterations per second for this hash and output length, timed on the monotonic
    clock (never fails, unlike QEMU's thread-CPU-time benchmark)."""
    password = os.urandom(key_len)
    salt = os.urandom(SALT_LEN)
    iterations = 1 << 10
    while True:
        start = time.perf_counter()
        pbkdf2(hash_alg, password, salt, iterations, out_len)
        elapsed = time.perf_counter() - start
        if elapsed >= budget or iterations >= (1 << 26):
            break
        if elapsed < budget / 10:
            iterations *= 8
        else:
            iterations = int(iterations * budget * 1.2 / elapsed) + 1
    return iterations / max(elapsed, 1e-6)


def _scaled_iterations(rate, iter_time, divisor, minimum):
    iters = int(rate * iter_time / 1000) // divisor
    if iters > UINT32_MAX:
        raise LuksError("PBKDF iterations %d larger than %d" % (iters, UINT32_MAX))
    return max(iters, minimum)


# --- the header -------------------------------------------------------------------------------

class LuksHeader(object):
    """A parsed and validated LUKS1 header (all fields in native form)."""

    def __init__(self):
        self.version = VERSION
        self.cipher_name = "aes"
        self.cipher_mode_spec = "xts-plain64"
        self.hash_spec = "sha256"
        self.payload_offset_sector = 0
        self.master_key_len = 0
        self.master_key_digest = bytes(DIGEST_LEN)
        self.master_key_salt = bytes(SALT_LEN)
        self.master_key_iterations = 0
        self.uuid = ""
        self.slots = []
        # derived by _parse_spec
        self.cipher_alg = None
        self.cipher_mode = None
        self.ivgen_alg = None
        self.ivgen_hash_alg = None
        self.ivgen_cipher_alg = None
        self.hash_alg = None

    # parse ------------------------------------------------------------------------------------

    @classmethod
    def parse(cls, buf, container_size=None):
        """Parse and check a header from the first HEADER_SIZE bytes of `buf` (container_size: the
        bytes really there, when the reader pads short reads with zeros)."""
        if container_size is not None and container_size < len(buf):
            buf = buf[:max(0, container_size)]
        if len(buf) < HEADER_SIZE:
            if len(buf) >= 8 and bytes(buf[:6]) == MAGIC:
                raise LuksError("LUKS header is truncated (%d of %d bytes)" % (len(buf), HEADER_SIZE))
            raise LuksError("Volume is not in LUKS format")
        fields = _HDR.unpack_from(buf, 0)
        h = cls()
        (magic, h.version, cname, cmode, hspec, h.payload_offset_sector, h.master_key_len,
         h.master_key_digest, h.master_key_salt, h.master_key_iterations, raw_uuid) = fields
        if magic != MAGIC:
            raise LuksError("Volume is not in LUKS format")
        if h.version != VERSION:
            raise LuksError("LUKS version %d is not supported" % h.version)
        for raw, what in ((cname, "cipher name"), (cmode, "cipher mode"), (hspec, "hash spec")):
            if b"\0" not in raw:
                raise LuksError("LUKS header %s is not NUL terminated" % what)
        h.cipher_name = _cstr(cname)
        h.cipher_mode_spec = _cstr(cmode)
        h.hash_spec = _cstr(hspec)
        h.uuid = _cstr(raw_uuid)
        for i in range(NUM_SLOTS):
            h.slots.append(KeySlot(*_SLOT.unpack_from(buf, _HDR.size + i * _SLOT.size)))
        h._check(container_size)
        h._parse_spec()
        return h

    def _check(self, container_size):
        min_sector = (KEY_SLOT_OFFSET + SECTOR - 1) // SECTOR
        if self.payload_offset_sector < min_sector:
            raise LuksError("LUKS payload is overlapping with the header")
        if self.master_key_iterations == 0:
            raise LuksError("LUKS key iteration count is zero")
        if self.master_key_iterations > MAX_ITERATIONS:
            raise LuksError("LUKS master key iteration count %d is too large (at most %d)"
                            % (self.master_key_iterations, MAX_ITERATIONS))
        if not 1 <= self.master_key_len <= 64:
            raise LuksError("LUKS master key length %d is not supported" % self.master_key_len)
        spans = []
        for i, slot in enumerate(self.slots):
            if slot.stripes != STRIPES:
                raise LuksError("Keyslot %d is corrupted (stripes %d != %d)" % (i, slot.stripes, STRIPES))
            if slot.active not in (SLOT_ENABLED, SLOT_DISABLED):
                raise LuksError("Keyslot %d state (active/disable) is corrupted" % i)
            if slot.enabled and slot.iterations == 0:
                raise LuksError("Keyslot %d iteration count is zero" % i)
            if slot.enabled and slot.iterations > MAX_ITERATIONS:
                raise LuksError("Keyslot %d iteration count %d is too large (at most %d)"
                                % (i, slot.iterations, MAX_ITERATIONS))
            start = slot.key_offset_sector
            length = splitkey_sectors(self.master_key_len, slot.stripes)
            if start < min_sector:
                raise LuksError("Keyslot %d is overlapping with the LUKS header" % i)
            if start + length > self.payload_offset_sector:
                raise LuksError("Keyslot %d is overlapping with the encrypted payload" % i)
            if slot.enabled and container_size is not None and \
                    slot.key_offset_sector * SECTOR + self.master_key_len * slot.stripes > container_size:
                raise LuksError("Keyslot %d key material lies outside the image" % i)
            spans.append((start, length))
        for i in range(NUM_SLOTS):
            s1, l1 = spans[i]
            for j in range(i + 1, NUM_SLOTS):
                s2, l2 = spans[j]
                if s1 + l1 > s2 and s2 + l2 > s1:
                    raise LuksError("Keyslots %d and %d are overlapping in the header" % (i, j))

    def _parse_spec(self):
        spec = self.cipher_mode_spec
        if "-" not in spec:
            raise LuksError("Unexpected cipher mode string format '%s'" % spec)
        mode, ivgen = spec.split("-", 1)
        ivhash = None
        if ":" in ivgen:
            ivgen, ivhash = ivgen.split(":", 1)
            if ivhash not in ciphers.HASH_ALGS:
                raise LuksError("Hash algorithm '%s' not supported" % ivhash)
        if mode not in ciphers.CIPHER_MODES:
            raise LuksError("Cipher mode '%s' not supported" % mode)
        keybytes = self.master_key_len // 2 if mode == "xts" else self.master_key_len
        alg = _LUKS_NAMES.get(self.cipher_name, {}).get(keybytes)
        if alg is None or (mode == "xts" and self.master_key_len % 2):
            raise LuksError("Algorithm '%s' with key size %d bytes not supported" % (self.cipher_name, keybytes))
        if self.hash_spec not in ciphers.HASH_ALGS:
            raise LuksError("Hash algorithm '%s' not supported" % self.hash_spec)
        if ivgen not in ciphers.IVGEN_ALGS:
            raise LuksError("IV generator '%s' not supported" % ivgen)
        self.cipher_alg = alg
        self.cipher_mode = mode
        self.ivgen_alg = ivgen
        self.ivgen_hash_alg = ivhash
        self.hash_alg = self.hash_spec
        if ivgen == "essiv":
            if not ivhash:
                raise LuksError("Missing IV generator hash specification")
            self.ivgen_cipher_alg = essiv_cipher(alg, ivhash)
        else:
            self.ivgen_cipher_alg = alg

    # pack -------------------------------------------------------------------------------------

    def pack(self):
        out = [_HDR.pack(MAGIC, self.version, self.cipher_name.encode("ascii"),
                         self.cipher_mode_spec.encode("ascii"), self.hash_spec.encode("ascii"),
                         self.payload_offset_sector, self.master_key_len, self.master_key_digest,
                         self.master_key_salt, self.master_key_iterations, self.uuid.encode("ascii"))]
        for slot in self.slots:
            out.append(_SLOT.pack(slot.active, slot.iterations, slot.salt, slot.key_offset_sector, slot.stripes))
        return b"".join(out)

    # facts ------------------------------------------------------------------------------------

    @property
    def payload_offset(self):
        return self.payload_offset_sector * SECTOR

    def active_slots(self):
        return [i for i, s in enumerate(self.slots) if s.enabled]

    def info(self, with_format=False):
        """QEMU's QCryptoBlockInfoLUKS, keys in the order qemu-img's JSON output shows them."""
        d = {"ivgen-alg": self.ivgen_alg}
        d["hash-alg"] = self.hash_alg
        d["cipher-alg"] = self.cipher_alg
        d["uuid"] = self.uuid
        if self.ivgen_alg == "essiv":
            d["ivgen-hash-alg"] = self.ivgen_hash_alg
        if with_format:
            d["format"] = "luks"
        d["cipher-mode"] = self.cipher_mode
        slots = []
        for s in self.slots:
            e = {"active": s.enabled}
            if s.enabled:
                e["iters"] = s.iterations
            e["key-offset"] = s.key_offset_sector * SECTOR
            if s.enabled:
                e["stripes"] = s.stripes
            slots.append(e)
        d["slots"] = slots
        d["payload-offset"] = self.payload_offset
        d["master-key-iters"] = self.master_key_iterations
        return d

    # keys -------------------------------------------------------------------------------------

    def _slot_cipher(self, key):
        return ciphers.SectorCipher(self.cipher_alg, self.cipher_mode, key, self.ivgen_alg,
                                    self.ivgen_hash_alg, self.ivgen_cipher_alg)

    def payload_cipher(self, master_key):
        """The SectorCipher for the encrypted payload."""
        return self._slot_cipher(master_key)

    def _material_len(self, slot):
        return self.master_key_len * slot.stripes

    def try_slot(self, index, password, read):
        """The master key if `password` opens slot `index`, else None."""
        slot = self.slots[index]
        if not slot.enabled:
            return None
        length = self._material_len(slot)
        material = read(slot.key_offset_sector * SECTOR, length)
        if len(material) != length:
            raise LuksError("Keyslot %d key material lies outside the image" % index)
        slot_key = pbkdf2(self.hash_alg, password, slot.salt, slot.iterations, self.master_key_len)
        split = self._slot_cipher(slot_key).decrypt(0, material)
        candidate = af_merge(self.hash_alg, split, self.master_key_len, slot.stripes)
        digest = pbkdf2(self.hash_alg, candidate, self.master_key_salt, self.master_key_iterations, DIGEST_LEN)
        if digest == self.master_key_digest:
            return candidate
        return None

    def unlock(self, password, read):
        """Try every active slot; the master key, or qemu's error."""
        password = _password_bytes(password)
        for i in range(NUM_SLOTS):
            key = self.try_slot(i, password, read)
            if key is not None:
                return key
        raise InvalidPassword("Invalid password, cannot unlock any keyslot")

    def store_key(self, index, password, master_key, iter_time, write, rate=None):
        """Fill slot `index` with the master key under `password` (key material first, then the
        header); returns the slot's iteration count."""
        password = _password_bytes(password)
        slot = self.slots[index]
        salt = os.urandom(SALT_LEN)
        if rate is None:
            rate = benchmark_pbkdf2(self.hash_alg, len(password) or 1, self.master_key_len)
        iters = _scaled_iterations(rate, iter_time, 1, MIN_SLOT_ITERS)
        slot_key = pbkdf2(self.hash_alg, password, salt, iters, self.master_key_len)
        split = af_split(self.hash_alg, master_key, slot.stripes)
        material = self._slot_cipher(slot_key).encrypt(0, split)
        write(slot.key_offset_sector * SECTOR, material)
        slot.salt = salt
        slot.iterations = iters
        slot.active = SLOT_ENABLED
        write(0, self.pack())
        return iters

    def erase_key(self, index, write):
        """Disable slot `index` (header first) and overwrite its key material with random data."""
        slot = self.slots[index]
        slot.salt = bytes(SALT_LEN)
        slot.iterations = 0
        slot.active = SLOT_DISABLED
        write(0, self.pack())
        length = self._material_len(slot)
        for dummy in range(ERASE_ITERATIONS):
            write(slot.key_offset_sector * SECTOR, os.urandom(length))


def _password_bytes(password):
    if isinstance(password, str):
        password = password.encode("utf-8")
    # QEMU takes the secret as a C string
    return bytes(password).split(b"\0", 1)[0]


def read_header(read, container_size=None):
    """Read and validate the header through read(offset, length)."""
    return LuksHeader.parse(read(0, HEADER_SIZE), container_size)


def has_format(buf):
    return len(buf) >= 8 and bytes(buf[:6]) == MAGIC and struct.unpack(">H", bytes(buf[6:8]))[0] == VERSION


def check_create_options(cipher_alg="aes-256", cipher_mode="xts", ivgen_alg="plain64", ivgen_hash_alg=None,
                         hash_alg="sha256", iter_time=DEFAULT_ITER_TIME):
    """Validate LUKS creation options as QEMU does; returns the normalised tuple."""
    cipher_alg = cipher_alg or "aes-256"
    cipher_mode = cipher_mode or "xts"
    ivgen_alg = ivgen_alg or "plain64"
    hash_alg = hash_alg or "sha256"
    if iter_time is None:
        iter_time = DEFAULT_ITER_TIME
    if cipher_alg not in ciphers.CIPHER_ALGS:
        raise InvalidArgument("Parameter 'cipher-alg' does not accept value '%s'" % cipher_alg)
    if cipher_mode not in ciphers.CIPHER_MODES:
        raise InvalidArgument("Parameter 'cipher-mode' does not accept value '%s'" % cipher_mode)
    if ivgen_alg not in ciphers.IVGEN_ALGS:
        raise InvalidArgument("Parameter 'ivgen-alg' does not accept value '%s'" % ivgen_alg)
    for name, value in (("ivgen-hash-alg", ivgen_hash_alg), ("hash-alg", hash_alg)):
        if value is not None and value not in ciphers.HASH_ALGS:
            raise InvalidArgument("Parameter '%s' does not accept value '%s'" % (name, value))
    if ivgen_alg == "essiv" and not ivgen_hash_alg:
        ivgen_hash_alg = "sha256"
    try:
        iter_time = int(iter_time)
    except (TypeError, ValueError):
        raise InvalidArgument("Parameter 'iter-time' expects a number")
    if iter_time < 0:
        raise InvalidArgument("Parameter 'iter-time' expects a non-negative number")
    family, keylen, block = ciphers.CIPHER_ALGS[cipher_alg]
    if cipher_mode == "xts" and block != 16:
        raise InvalidArgument("Cipher mode 'xts' is not supported with %s" % cipher_alg)
    key_len = keylen * 2 if cipher_mode == "xts" else keylen
    if (key_len * STRIPES) % block:
        raise UnsupportedFeature("Cipher %s in mode %s is not supported for LUKS" % (cipher_alg, cipher_mode))
    if (key_len * STRIPES) % SECTOR:
        # QEMU 7.2 aborts on these (key material that is not whole sectors)
        raise UnsupportedFeature("Cipher %s in mode %s is not supported for LUKS: its key material is not a "
                                 "whole number of sectors" % (cipher_alg, cipher_mode))
    ciphers._algorithm(cipher_alg, bytes(keylen))  # refuses algorithms `cryptography` lacks
    ciphers.hash_algorithm(hash_alg)
    if ivgen_alg == "essiv":
        essiv_cipher(cipher_alg, ivgen_hash_alg)
        ciphers.hash_new(ivgen_hash_alg)
    return cipher_alg, cipher_mode, ivgen_alg, ivgen_hash_alg, hash_alg, iter_time


def create(password, write, cipher_alg="aes-256", cipher_mode="xts", ivgen_alg="plain64", ivgen_hash_alg=None,
           hash_alg="sha256", iter_time=DEFAULT_ITER_TIME, reserve=None, uuid=None):
    """Build a new LUKS header with slot 0 opened by `password`.

    reserve(length) is called with the header area's length (payload offset) before anything is
    written (qcow2 allocates its clusters there; a luks file grows to it). Returns (header, master
    key); the key is for the caller to build the payload cipher, never to store.
    """
    cipher_alg, cipher_mode, ivgen_alg, ivgen_hash_alg, hash_alg, iter_time = check_create_options(
        cipher_alg, cipher_mode, ivgen_alg, ivgen_hash_alg, hash_alg, iter_time)
    h = LuksHeader()
    family = ciphers.CIPHER_ALGS[cipher_alg][0]
    h.cipher_name = family
    if ivgen_hash_alg:
        h.cipher_mode_spec = "%s-%s:%s" % (cipher_mode, ivgen_alg, ivgen_hash_alg)
    else:
        h.cipher_mode_spec = "%s-%s" % (cipher_mode, ivgen_alg)
    h.hash_spec = hash_alg
    h.uuid = str(uuid or uuidlib.uuid4())
    h.master_key_len = ciphers.cipher_key_len(cipher_alg, cipher_mode)
    h.master_key_salt = os.urandom(SALT_LEN)
    master_key = os.urandom(h.master_key_len)
    rate = benchmark_pbkdf2(hash_alg, h.master_key_len, DIGEST_LEN)
    h.master_key_iterations = _scaled_iterations(rate, iter_time, 8, MIN_MASTER_ITERS)
    h.master_key_digest = pbkdf2(hash_alg, master_key, h.master_key_salt, h.master_key_iterations, DIGEST_LEN)
    split = splitkey_sectors(h.master_key_len, STRIPES)
    h.slots = [KeySlot(SLOT_DISABLED, 0, bytes(SALT_LEN), HEADER_SECTORS + i * split, STRIPES)
               for i in range(NUM_SLOTS)]
    h.payload_offset_sector = HEADER_SECTORS + NUM_SLOTS * split
    h._parse_spec()
    if reserve is not None:
        reserve(h.payload_offset)
    slot_rate = benchmark_pbkdf2(hash_alg, len(_password_bytes(password)) or 1, h.master_key_len)
    h.store_key(0, password, master_key, iter_time, write, rate=slot_rate)
    return h, master_key


def add_keyslot(header, read, write, old_password, new_password, keyslot=None, iter_time=None, force=False):
    """amend encrypt.state=active: unlock with old_password, store the key under new_password."""
    if keyslot is not None:
        if not 0 <= keyslot < NUM_SLOTS:
            raise InvalidArgument("Invalid keyslot %d specified, must be between 0 and %d" % (keyslot, NUM_SLOTS - 1))
    else:
        free = [i for i, s in enumerate(header.slots) if not s.enabled]
        if not free:
            raise LuksError("Can't add a keyslot - all keyslots are in use")
        keyslot = free[0]
    if not force and header.slots[keyslot].enabled:
        raise LuksError("Refusing to overwrite active keyslot %d - please erase it first" % keyslot)
    try:
        master = header.unlock(old_password, read)
    except InvalidPassword as e:
        raise InvalidPassword(e.message, hint=["Failed to retrieve the master key"])
    header.store_key(keyslot, new_password, master, DEFAULT_ITER_TIME if iter_time is None else iter_time, write)
    return keyslot


def erase_keyslots(header, read, write, old_password=None, keyslot=None, force=False):
    """amend encrypt.state=inactive: erase `keyslot`, or every slot old_password opens.
    Returns the erased slot numbers."""
    if keyslot is not None:
        if not 0 <= keyslot < NUM_SLOTS:
            raise InvalidArgument("Invalid keyslot %d specified, must be between 0 and %d" % (keyslot, NUM_SLOTS - 1))
        if old_password is not None:
            if header.try_slot(keyslot, _password_bytes(old_password), read) is None:
                raise LuksError("Given keyslot %d doesn't contain the given old password for erase operation"
                                % keyslot)
        if not force and not header.slots[keyslot].enabled:
            raise LuksError("Given keyslot %d is already erased (inactive) " % keyslot)
        if not force and len(header.active_slots()) == 1:
            raise LuksError("Attempt to erase the only active keyslot %d which will erase all the data in the "
                            "image irreversibly - refusing operation" % keyslot)
        header.erase_key(keyslot, write)
        return [keyslot]
    if old_password is None:
        raise InvalidArgument("To erase keyslot(s), either explicit keyslot index or the password currently "
                              "contained in them must be given")
    pw = _password_bytes(old_password)
    matches = [i for i in range(NUM_SLOTS) if header.try_slot(i, pw, read) is not None]
    if not matches:
        raise LuksError("No keyslots match given (old) password for erase operation")
    if not force and len(matches) == len(header.active_slots()):
        raise LuksError("All the active keyslots match the (old) password that was given and erasing them will "
                        "erase all the data in the image irreversibly - refusing operation")
    for i in matches:
        header.erase_key(i, write)
    return matches
