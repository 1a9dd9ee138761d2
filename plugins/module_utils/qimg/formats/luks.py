# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The luks format: a whole file that is a LUKS1 volume (QEMU block/crypto.c).

The payload follows the header area; guest offset 0 is the payload offset, and each 512-byte
sector's IV is its guest sector number. The header is validated at open; without a key-secret
the image opens for `info` only and data access fails with qemu's message.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


from ..errors import ImageCorrupt, InvalidArgument, QimgError
from ..image import DATA, BlockDevice, Extent

SECTOR = 512
CREATE_OPTION_NAMES = ("key-secret", "cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg", "hash-alg",
                       "iter-time")


class LuksImage(BlockDevice):
    format_name = "luks"

    def __init__(self, filename, file, read_only=True, secrets=None, key_secret=None):
        super(LuksImage, self).__init__(filename, read_only)
        from ..crypto import luks
        self.file = file
        length = file.length()
        try:
            self.header = luks.read_header(file.pread, length)
        except luks.LuksError as e:
            raise ImageCorrupt("Could not open '%s': %s" % (filename, e.message))
        self.payload = self.header.payload_offset
        if self.payload > length:
            raise ImageCorrupt("Could not open '%s': LUKS payload offset %d is beyond the end of the file"
                               % (filename, self.payload))
        self.size = (length - self.payload) // SECTOR * SECTOR
        self._cipher = None
        self._error = None
        self.key_secret = key_secret
        from ..crypto import key_policy
        policy = key_policy()
        if key_secret is None or policy == "no_io":
            self._error = InvalidArgument("Could not open '%s': Parameter 'key-secret' is required for cipher"
                                          % filename)
            if key_secret is None and policy == "strict":
                raise self._error
            return
        try:
            if secrets is None:
                from ..crypto.secrets import SecretError
                raise SecretError("No secret with id '%s'" % key_secret)
            password = secrets.lookup_passphrase(key_secret)
            key = self.header.unlock(password, file.pread)
            self._cipher = self.header.payload_cipher(key)
        except QimgError as e:
            raise type(e)("Could not open '%s': %s" % (filename, e.message), hint=e.hint)

    @property
    def fd(self):
        return self.file.fd

    def _need(self):
        if self._cipher is None:
            raise self._error

    def read(self, offset, length):
        self.check_range(offset, length)
        self._need()
        lead = offset % SECTOR
        start = offset - lead
        span = -(-(lead + length) // SECTOR) * SECTOR
        plain = self._decrypt(start, self.file.pread(self.payload + start, span))
        return plain[lead:lead + length] if (lead or span != length) else plain

    def _decrypt(self, start, data):
        step = 1 << 17
        if len(data) <= step:
            return self._cipher.decrypt(start // SECTOR, data)
        view = memoryview(data)
        return b"".join(self._cipher.decrypt((start + i) // SECTOR, view[i:i + step])
                        for i in range(0, len(data), step))

    def _encrypt(self, start, data):
        step = 1 << 17
        if len(data) <= step:
            return self._cipher.encrypt(start // SECTOR, data)
        view = memoryview(data)
        return b"".join(self._cipher.encrypt((start + i) // SECTOR, view[i:i + step])
                        for i in range(0, len(data), step))

    def write(self, offset, data):
        self.check_writable()
        self.check_range(offset, len(data))
        self._need()
        n = len(data)
        lead = offset % SECTOR
        tail = -(offset + n) % SECTOR
        start = offset - lead
        if lead or tail:
            buf = bytearray(self.read(start, lead + n + tail))
            buf[lead:lead + n] = data
            data = bytes(buf)
        self.file.pwrite(self.payload + start, self._encrypt(start, bytes(data)))

    def write_zeroes(self, offset, length):
        # encrypted zeros (QEMU's crypto driver has no zero-write shortcut either)
        pos = offset
        end = offset + length
        while pos < end:
            n = min(end - pos, 1 << 20)
            self.write(pos, bytes(n))
            pos += n

    def discard(self, offset, length):
        self.check_writable()
        self.check_range(offset, length)

    def block_status(self, offset, length):
        self.check_range(offset, length)
        return [Extent(offset, length, DATA, None)] if length else []

    def flush(self):
        if not self.read_only:
            self.file.flush()

    def close_self(self):
        if self.file is None:
            return
        try:
            if not self.read_only:
                self.file.flush()
        finally:
            self.file.close()
            self.file = None

    def resize(self, new_size, preallocation="off"):
        """block/crypto.c's truncate: the file becomes payload offset + new size (preallocation is
        the file's, as in QEMU: a grown area reads as whatever the cipher makes of its bytes)."""
        self.check_writable()
        if preallocation not in ("off", "falloc", "full"):
            raise InvalidArgument("Unsupported preallocation mode: %s" % preallocation)
        old = self.file.length()
        end = self.payload + new_size
        try:
            if preallocation == "falloc" and end > old:
                self.file.allocate(old, end - old)
            elif preallocation == "full" and end > old:
                zeros = bytes(1 << 20)
                pos = old
                while pos < end:
                    n = min(end - pos, len(zeros))
                    self.file.pwrite(pos, zeros[:n])
                    pos += n
            self.file.truncate(end)
        except OSError as e:
            raise QimgError("Could not resize file: %s" % e.strerror)
        self.file.flush()
        self.size = new_size // SECTOR * SECTOR

    def keyslot_io(self):
        """(read, write) over the LUKS header, for crypto.luks.add_keyslot / erase_keyslots (amend)."""
        self.check_writable()
        end = self.payload

        def write(o, data):
            if o < 0 or o + len(data) > end:
                raise ImageCorrupt("%s: key slot write outside the LUKS header" % self.filename)
            self.file.pwrite(o, data)
        return self.file.pread, write

    def actual_size(self):
        return self.file.allocated_bytes()

    def info_fields(self):
        return {"encrypted": True}

    def format_specific(self):
        return {"type": "luks", "data": self.header.info()}


def create_luks(node, size, options, secrets, preallocation="off"):
    """Write a new LUKS volume of `size` payload bytes into the empty file (a protocol node).

    options: the typed -o values (key-secret, cipher-alg, ... iter-time)."""
    from ..crypto import luks
    secret_id = options.get("key-secret")
    if not secret_id:
        raise InvalidArgument("Parameter 'key-secret' is required for cipher")
    if secrets is None:
        from ..crypto.secrets import SecretError
        raise SecretError("No secret with id '%s'" % secret_id)
    password = secrets.lookup_passphrase(secret_id)
    if preallocation not in ("off", "falloc", "full"):
        raise InvalidArgument("Parameter 'preallocation' does not accept value '%s'" % preallocation)
    state = {}

    def reserve(length):
        state["payload"] = length
        node.truncate(length + size)
    header, key = luks.create(password, node.pwrite,
                              cipher_alg=options.get("cipher-alg"), cipher_mode=options.get("cipher-mode"),
                              ivgen_alg=options.get("ivgen-alg"), ivgen_hash_alg=options.get("ivgen-hash-alg"),
                              hash_alg=options.get("hash-alg"), iter_time=options.get("iter-time"), reserve=reserve)
    if preallocation != "off" and size:
        # preallocated payload reads as zeros, as QEMU's (it writes encrypted zeros)
        cipher = header.payload_cipher(key)
        zeros = bytes(1 << 20)
        pos = 0
        while pos < size:
            n = min(size - pos, len(zeros))
            node.pwrite(header.payload_offset + pos, cipher.encrypt(pos // SECTOR, zeros[:n]))
            pos += n
    del key
