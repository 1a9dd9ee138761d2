# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`amend` of LUKS keyslots (qemu-img amend -o encrypt.state=...), for `luks` files and qcow2
images with LUKS encryption, as QEMU 7.2's qcrypto_block_luks_amend_options does it.

The options (qapi QCryptoBlockAmendOptionsLUKS): state (active|inactive, required), new-secret,
old-secret, keyslot, iter-time; in qcow2 they carry the "encrypt." prefix. Activating unlocks the
master key with the image's own key-secret and stores it under new-secret; deactivating erases
one keyslot, or every keyslot old-secret opens.

Crash safety: a new keyslot's key material is written (and flushed) before the one-sector header
write that enables it; an erase disables the slot in the header first and only then overwrites its
material. No other slot is touched, so a kill at any write leaves every passphrase that was not
being removed working.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import InvalidArgument, UnsupportedFeature

# qemu-img amend -o help for luks (name, type, help), in its order
LUKS_AMEND_OPTIONS = [
    ("iter-time", "num", "Time to spend in PBKDF in milliseconds"),
    ("keyslot", "num", "Select a single keyslot to modify explicitly"),
    ("new-secret", "str", "New secret to set in the matching keyslots. Empty string to erase"),
    ("old-secret", "str", "Select all keyslots that match this password"),
    ("state", "str", "Select new state of affected keyslots (active/inactive)"),
]
_CREATE_ONLY = ("key-secret", "cipher-alg", "cipher-mode", "ivgen-alg", "ivgen-hash-alg", "hash-alg", "size",
                "preallocation")
_TYPES = dict((n, t) for n, t, _h in LUKS_AMEND_OPTIONS)


def check_qcow2_encryption(img):
    """qcow2_amend_options' checks when an encrypt.* option is given."""
    crypto = getattr(img, "crypto", None)
    if crypto is None:
        raise InvalidArgument("Can't amend encryption options - encryption not present")
    if crypto.method != 2:
        raise UnsupportedFeature("Only LUKS encryption options can be amended")


def _typed(name, value, shown):
    if _TYPES[name] == "num" and not (isinstance(value, int) and not isinstance(value, bool)):
        try:
            return int(str(value), 0)
        except ValueError:
            raise InvalidArgument("Parameter '%s' expects a number" % shown)
    return value if _TYPES[name] == "num" else str(value)


def parse_luks_options(options, prefix=""):
    """The keyslot options among `options` (names with `prefix`), typed: {state, keyslot, ...}.
    Raises qemu's messages for unknown and create-only names (luks files) and bad values."""
    out = {}
    for name, value in (options or {}).items():
        if value is None:
            continue
        if not name.startswith(prefix):
            continue
        short = name[len(prefix):]
        if short not in _TYPES:
            hint = ["This option is only supported for image creation"] if short in _CREATE_ONLY else None
            raise InvalidArgument("Invalid parameter '%s'" % name, hint=hint)
        out[short] = _typed(short, value, name)
    return out


def _header_io(dev):
    """(LUKS header, read, write, key-secret id) of a luks file or a LUKS qcow2 image; write
    flushes before and after the header sector, so key material is durable before it is used."""
    crypto = getattr(dev, "crypto", None)
    if crypto is not None:
        header = crypto.header
        read, raw_write = crypto.keyslot_io(dev.file)
        key_secret = crypto.key_secret
        flush = dev.file.flush
    else:
        header = dev.header
        if dev.read_only:   # check mode: nothing is written
            read, raw_write = dev.file.pread, None
        else:
            read, raw_write = dev.keyslot_io()
        key_secret = dev.key_secret
        flush = dev.file.flush

    def write(offset, data):
        if offset == 0:
            flush()
            raw_write(offset, data)
            flush()
        else:
            raw_write(offset, data)
    return header, read, write, key_secret


def slot_states(dev):
    """[(active, iterations, salt)] of the 8 keyslots (what amend compares to report a change),
    or None for an image without LUKS keyslots."""
    crypto = getattr(dev, "crypto", None)
    header = crypto.header if crypto is not None else getattr(dev, "header", None)
    if header is None or not hasattr(header, "slots"):
        return None
    return [(s.enabled, s.iterations, bytes(s.salt)) for s in header.slots]


def keyslot_facts(dev):
    """The keyslots as `info` shows them ([{"active": bool}...]), for amend's before/after."""
    states = slot_states(dev)
    if states is None:
        return None
    return [{"active": active} for active, _iters, _salt in states]


def amend_keyslots(dev, opts, force=False, check_mode=False):
    """Apply typed keyslot options ({state, new-secret, old-secret, keyslot, iter-time}) to an open,
    writable luks / LUKS-qcow2 image. Returns the keyslot numbers changed (check_mode: the ones
    that would change, nothing written)."""
    from . import luks
    state = opts.get("state")
    if state is None:
        raise InvalidArgument("Parameter 'state' is missing")
    if state not in ("active", "inactive"):
        raise InvalidArgument("Parameter 'state' does not accept value '%s'" % state)
    header, read, write, key_secret = _header_io(dev)
    secrets = getattr(dev, "secrets", None)
    if secrets is None:
        from .secrets import SecretStore
        secrets = SecretStore()
    keyslot = opts.get("keyslot")
    if state == "active":
        if "new-secret" not in opts:
            raise InvalidArgument("'new-secret' is required to activate a keyslot")
        if "old-secret" in opts:
            raise InvalidArgument("'old-secret' must not be given when activating keyslots")
        if keyslot is not None and not 0 <= keyslot < luks.NUM_SLOTS:
            raise InvalidArgument("Invalid keyslot %d specified, must be between 0 and %d"
                                  % (keyslot & 0xffffffff, luks.NUM_SLOTS - 1))
        old = secrets.lookup_passphrase(key_secret)
        new = secrets.lookup_passphrase(opts["new-secret"])
        if check_mode:
            free = [i for i, sl in enumerate(header.slots) if not sl.enabled]
            return [keyslot] if keyslot is not None else free[:1]
        slot = luks.add_keyslot(header, read, write, old, new, keyslot=keyslot, iter_time=opts.get("iter-time"),
                                force=force)
        return [slot]
    if "new-secret" in opts:
        raise InvalidArgument("'new-secret' must not be given when erasing keyslots")
    if "iter-time" in opts:
        raise InvalidArgument("'iter-time' must not be given when erasing keyslots")
    old = None
    if "old-secret" in opts:
        old = secrets.lookup_passphrase(opts["old-secret"])
    if keyslot is None and old is None:
        raise InvalidArgument("To erase keyslot(s), either explicit keyslot index or the password currently "
                              "contained in them must be given")
    if check_mode:
        if keyslot is not None:
            return [keyslot] if header.slots[keyslot % luks.NUM_SLOTS].enabled else []
        pw = luks._password_bytes(old)
        return [i for i in range(luks.NUM_SLOTS) if header.try_slot(i, pw, read) is not None]
    return luks.erase_keyslots(header, read, write, old_password=old, keyslot=keyslot, force=force)


def register_amend_extension():
    """The "encrypt." options of qcow2 amend (formats/qcow2/amend.py's extension hook); ops/amend.py
    calls this once when it is imported."""
    from ..formats.qcow2.amend import EXTENSIONS, AmendExtension, register_extension
    if "encrypt." in EXTENSIONS:
        return

    class KeyslotAmend(AmendExtension):
        def parse(self, img, name, value, plan):
            check_qcow2_encryption(img)
            plan.extra.setdefault("encrypt", {})[name[len("encrypt."):]] = value

        def wanted(self, plan):
            return bool(plan.extra.get("encrypt"))

        def apply(self, img, plan, force, status):
            status(0, 1)
            amend_keyslots(img, plan.extra["encrypt"], force=force)
            status(1, 1)
    register_extension("encrypt.", KeyslotAmend())
