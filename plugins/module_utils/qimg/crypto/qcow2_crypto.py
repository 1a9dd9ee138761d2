# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The encryption layer of a qcow2 image (QEMU block/qcow2.c, qcow2-threads.c).

crypt_method 1 (legacy AES) IVs come from the guest offset, crypt_method 2 (LUKS, header in the
clusters the full-disk-encryption header extension names) from the host offset. The header is
parsed (and validated) when the image opens; the key is derived only when the caller gave a
key-secret, so `info` works without it, as qemu-img's does, and the first data access without
a key fails with qemu's message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from ..errors import ImageCorrupt, InvalidArgument, QimgError

SECTOR = 512


class Qcow2Crypto(object):
    """encrypt()/decrypt() of data at (host offset, guest offset); info() for format-specific."""

    def __init__(self, filename, crypt_method, crypto_ext, file, file_size, cluster_size, secrets=None,
                 key_secret=None):
        self.filename = filename
        self.method = crypt_method
        self.key_secret = key_secret  # the id only: reopen_keys() passes it on
        self.header = None
        self.region = None
        self._cipher = None
        self._error = None
        if crypt_method == 2:
            if crypto_ext is None:
                raise ImageCorrupt("Could not open '%s': Missing CRYPTO header for crypt method 2" % filename)
            if len(crypto_ext) != 16:
                raise ImageCorrupt("Could not open '%s': CRYPTO header extension size %d, but expected size %d"
                                   % (filename, len(crypto_ext), 16))
            off, length = struct.unpack(">QQ", crypto_ext)
            if off % cluster_size:
                raise ImageCorrupt("Could not open '%s': Encryption header offset '%d' is not a multiple of "
                                   "cluster size '%d'" % (filename, off, cluster_size))
            if off < cluster_size or off + length > file_size:
                raise ImageCorrupt("Could not open '%s': the encryption header [%#x, +%d) is outside the image"
                                   % (filename, off, length))
            from .luks import read_header, LuksError
            self.region = (off, length)

            def read(o, n):
                if o < 0 or o + n > length:
                    raise ImageCorrupt("Could not open '%s': Request for data outside of extension header"
                                       % filename)
                return file.pread(off + o, n)
            self._read = read
            try:
                self.header = read_header(read, length)
            except LuksError as e:
                raise ImageCorrupt("Could not open '%s': %s" % (filename, e.message))
        elif crypto_ext is not None:
            raise ImageCorrupt("Could not open '%s': CRYPTO header extension only expected with LUKS encryption "
                               "method" % filename)
        from . import key_policy
        policy = key_policy()
        if key_secret is None or policy == "no_io":
            # qemu opens without I/O (info) without looking at the key at all
            self._error = InvalidArgument("Could not open '%s': Parameter 'encrypt.key-secret' is required for cipher"
                                          % filename)
            if key_secret is None and policy == "strict":
                raise self._error
            return
        try:
            if secrets is None:
                from .secrets import SecretError
                raise SecretError("No secret with id '%s'" % key_secret)
            password = secrets.lookup_passphrase(key_secret)
            if crypt_method == 1:
                from .aes_legacy import legacy_cipher
                self._cipher = legacy_cipher(password)
            else:
                self._cipher = self.header.payload_cipher(self.header.unlock(password, self._read))
        except QimgError as e:
            raise type(e)("Could not open '%s': %s" % (filename, e.message), hint=e.hint)

    @property
    def unlocked(self):
        return self._cipher is not None

    def _need(self):
        if self._cipher is None:
            raise self._error

    def _sector(self, host, guest):
        return (host if self.method == 2 else guest) // SECTOR

    def decrypt(self, host, guest, data):
        """Plain text of the encrypted bytes read at host offset `host` (guest offset `guest`);
        both must share their offset within a sector, data may start and end anywhere."""
        self._need()
        return self._apply(host, guest, data, False)

    def encrypt(self, host, guest, data):
        self._need()
        return self._apply(host, guest, data, True)

    def _apply(self, host, guest, data, enc):
        lead = host % SECTOR
        if lead or len(data) % SECTOR:
            raise InvalidArgument("%s: encrypted I/O at %#x of %d bytes is not sector aligned"
                                  % (self.filename, host, len(data)))
        fn = self._cipher.encrypt if enc else self._cipher.decrypt
        n = len(data)
        step = 1 << 17
        if n <= step:
            return fn(self._sector(host, guest), data)
        view = memoryview(data)
        return b"".join(fn(self._sector(host + i, guest + i), view[i:i + step]) for i in range(0, n, step))

    def keyslot_io(self, file):
        """(read, write) over the LUKS header area, for crypto.luks.add_keyslot / erase_keyslots
        (qemu-img amend); writes are refused outside the area."""
        if self.header is None:
            raise InvalidArgument("Only LUKS encrypted qcow2 images have key slots")
        off, length = self.region

        def write(o, data):
            if o < 0 or o + len(data) > length:
                raise ImageCorrupt("%s: key slot write outside the LUKS header area" % self.filename)
            file.pwrite(off + o, data)
        return self._read, write

    def info(self):
        if self.method == 1:
            return {"format": "aes"}
        return self.header.info(with_format=True)
