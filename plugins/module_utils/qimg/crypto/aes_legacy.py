# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qcow2's legacy encryption (crypt_method 1, `encryption=on` / `encrypt.format=aes`), as
QEMU's crypto/block-qcow.c does it: the key is the passphrase's first 16 bytes (zero-padded, the
passphrase taken as a C string), AES-128-CBC per 512-byte sector with the plain64 IV of the
sector's *guest* offset. There is no header and no way to tell a wrong passphrase: it decrypts
to garbage, as in QEMU. (qemu-img 7.2 prints no deprecation warning when it creates one.)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .ciphers import SectorCipher



def legacy_key(password):
    if isinstance(password, str):
        password = password.encode("utf-8")
    password = bytes(password).split(b"\0", 1)[0]
    return (password[:16] + bytes(16))[:16]


def legacy_cipher(password):
    """The SectorCipher of a crypt_method=1 qcow2 image (sector numbers are guest offsets / 512)."""
    return SectorCipher("aes-128", "cbc", legacy_key(password), "plain64")
