# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Create-time encryption options (`encryption=on`, `encrypt.*`) for qcow2, checked in QEMU's
order with its messages, and the object create_qcow2() takes to lay out the encryption header."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import InvalidArgument
from .secrets import SecretStore

# the -o names, in the order qemu-img prints them on its "Formatting ..." line
ENCRYPT_OPTIONS = ("encryption", "encrypt.format", "encrypt.key-secret", "encrypt.cipher-alg",
                   "encrypt.cipher-mode", "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg", "encrypt.hash-alg",
                   "encrypt.iter-time")
LUKS_ONLY = ENCRYPT_OPTIONS[3:]


class _Plan(object):
    """What create_qcow2 needs: crypt_method, header_length, write_header(write, base)."""

    def __init__(self, crypt_method, pieces=None, header_length=0):
        self.crypt_method = crypt_method
        self.header_length = header_length
        self._pieces = pieces or []

    def write_header(self, write, base):
        for offset, data in self._pieces:
            write(base + offset, data)
        self._pieces = []


def qcow2_encryption(opts, secrets=None):
    """None when the options ask for no encryption, else the plan (the LUKS header is built here:
    PBKDF2 benchmark, key slot 0). opts holds the typed -o values given."""
    fmt = checked_format(opts)
    if fmt is None:
        return None
    secret_id = opts.get("encrypt.key-secret")
    if not secret_id:
        raise InvalidArgument("Parameter 'encrypt.key-secret' is required for cipher")
    return _plan(fmt, opts, secrets, secret_id)


def checked_format(opts):
    """The encryption format ("aes", "luks") the typed options ask for, or None; QEMU's
    complaints about the option combination (before it looks at the secret)."""
    given = [name for name in ENCRYPT_OPTIONS if name in opts]
    if not given:
        return None
    fmt = opts.get("encrypt.format")
    if "encryption" in opts:
        if fmt is not None:
            raise InvalidArgument("'encrypt.format' and its alias 'encryption' can't be used at the same time")
        if opts["encryption"]:
            fmt = "aes"
    if fmt is None:
        if any(name != "encryption" for name in given):
            raise InvalidArgument("Parameter 'encrypt.format' is missing")
        return None
    if fmt not in ("aes", "luks"):
        raise InvalidArgument("Parameter 'format' does not accept value '%s'" % fmt)
    if fmt == "aes":
        for name in LUKS_ONLY:
            if name in opts:
                raise InvalidArgument("Parameter '%s' is unexpected" % name)
    return fmt


def _plan(fmt, opts, secrets, secret_id):
    store = secrets if secrets is not None else SecretStore()
    password = store.lookup_passphrase(secret_id)
    if fmt == "aes":
        from .backend import require
        require()
        return _Plan(1)
    from . import luks
    pieces = []
    header, master_key = luks.create(
        password, lambda off, data: pieces.append((off, bytes(data))),
        cipher_alg=opts.get("encrypt.cipher-alg"), cipher_mode=opts.get("encrypt.cipher-mode"),
        ivgen_alg=opts.get("encrypt.ivgen-alg"), ivgen_hash_alg=opts.get("encrypt.ivgen-hash-alg"),
        hash_alg=opts.get("encrypt.hash-alg"), iter_time=opts.get("encrypt.iter-time"))
    del master_key
    return _Plan(2, pieces, header.payload_offset)
