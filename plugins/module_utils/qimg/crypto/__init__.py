# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Encryption: QEMU secret objects, sector ciphers, LUKS1 and legacy qcow2 AES.

Every primitive (AES modes, PBKDF2, hashes, random numbers) comes from the optional
`cryptography` package; `backend.require()` turns its absence into one clear error line.
Only the LUKS structures and the anti-forensic split/merge are written here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

# the key policy of this process (the CLI and the modules run one command per process); no
# threading import here: `info` start-up stays lean
_STATE = {"policy": "lazy"}


class _policy(object):
    def __init__(self, name):
        self.name = name
        self.old = None

    def __enter__(self):
        self.old = _STATE["policy"]
        _STATE["policy"] = self.name
        return self

    def __exit__(self, *exc):
        _STATE["policy"] = self.old
        return False


def strict_keys():
    """Opens need the key at once, as in qemu-img: an encrypted image opened without its
    key-secret fails with qemu's message (the CLI runs every command under this)."""
    return _policy("strict")


def no_io():
    """Open images without I/O, as qemu-img info does (BDRV_O_NO_IO): an encrypted image opens
    without its key, and a key given is not even looked up (the header is still checked)."""
    return _policy("no_io")


def key_policy():
    """"lazy" (the engine's default: a keyless open fails at the first data access), "strict" or
    "no_io"."""
    return _STATE["policy"]


def reopen_keys(dev, *others):
    """open_image keyword arguments that open `dev`'s file again with the key it was opened with
    (commit reopens its base for writing): the secret store of dev or the first of `others` that
    has one, and dev's key-secret id."""
    secrets = None
    for d in (dev,) + others:
        secrets = getattr(d, "secrets", None)
        if secrets is not None:
            break
    crypto = getattr(dev, "crypto", None)
    key = getattr(crypto if crypto is not None else dev, "key_secret", None)
    return {"secrets": secrets, "key_secret": key}
