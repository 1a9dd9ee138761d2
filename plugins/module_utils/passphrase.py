# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Passphrases of encrypted images in the modules.

A module takes a passphrase as a ``no_log`` option (``passphrase``; ``src_passphrase`` for
qimg_convert's sources, ``passphrase1`` / ``passphrase2`` for qimg_compare). ``key_paths()``
replaces the image path in ``module.params`` by a name that carries the passphrase to the engine
(a spec.ImageName with a one-secret store, the key-secret of the image and of its encrypted
backing files): every engine call made with that path can open the encrypted image, and nothing
else ever sees the passphrase. Ansible masks no_log values in results and logs besides.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.qimg.disk.plugins.module_utils.qimg.crypto.secrets import SecretStore
from ansible_collections.qimg.disk.plugins.module_utils.qimg.spec import ImageName

SECRET_ID = "passphrase"

# the argument_spec entry of a passphrase option
PASSPHRASE = dict(type="str", no_log=True)


def keyed(path, passphrase):
    """`path` carrying `passphrase` for the engine (the path itself without one)."""
    if passphrase is None or path is None:
        return path
    store = SecretStore()
    store.add(SECRET_ID, passphrase.encode("utf-8") if not isinstance(passphrase, bytes) else passphrase)
    return ImageName(str(path), secrets=store, key_secret=SECRET_ID)


def key_paths(module, pairs=(("path", "passphrase"),)):
    """For each (path option, passphrase option): module.params[path] carries the passphrase.
    A list-valued path option (qimg_convert's src) gets each of its names keyed."""
    params = module.params
    for path_key, pw_key in pairs:
        passphrase = params.get(pw_key)
        value = params.get(path_key)
        if passphrase is None or value is None:
            continue
        if isinstance(value, list):
            params[path_key] = [keyed(v, passphrase) for v in value]
        else:
            params[path_key] = keyed(value, passphrase)


# qimg_amend's options.encrypt (LUKS keyslots)
KEYSLOT_SPEC = dict(type="dict", options=dict(
    state=dict(type="str", choices=["active", "inactive"], default="active"),
    new_passphrase=dict(type="str", no_log=True),
    old_passphrase=dict(type="str", no_log=True),
    keyslot=dict(type="int", no_log=False),
    iter_time=dict(type="int"),
))


def _luks_header(dev):
    crypto = getattr(dev, "crypto", None)
    return crypto.header if crypto is not None else getattr(dev, "header", None)


def _opening_slots(dev, passphrase):
    """The keyslots `passphrase` opens."""
    header = _luks_header(dev)
    crypto = getattr(dev, "crypto", None)
    read = crypto.keyslot_io(dev.file)[0] if crypto is not None else dev.file.pread
    pw = passphrase.encode("utf-8")
    return [i for i in range(8) if header.try_slot(i, pw, read) is not None]


def keyslot_change(path, wanted, check_mode, force=False):
    """Apply options.encrypt (state, new_passphrase, old_passphrase, keyslot, iter_time) to the
    LUKS keyslots of `path` (keyed with its passphrase, see key_paths), idempotently:
    state=active is done when new_passphrase already opens a slot (the slot asked for, if any),
    state=inactive when no slot (or the slot asked for) holds old_passphrase any more.
    Returns (changed, keyslots before, keyslots after) with keyslots as [{"active": bool}]."""
    from ansible_collections.qimg.disk.plugins.module_utils.qimg.crypto.amend import keyslot_facts
    from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import InvalidArgument
    from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import open_image
    from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.amend import amend_image
    state = wanted.get("state") or "active"
    keyslot = wanted.get("keyslot")
    with open_image(path, read_only=True, force_share=True, open_backing=False) as dev:
        header = _luks_header(dev)
        if header is None or not hasattr(header, "slots"):
            raise InvalidArgument("%s: options.encrypt needs a LUKS encrypted image (a luks file or qcow2 with "
                                  "encrypt.format=luks)" % path)
        prefix = "" if dev.format_name == "luks" else "encrypt."
        before = keyslot_facts(dev)
        if state == "active":
            if not wanted.get("new_passphrase"):
                raise InvalidArgument("options.encrypt.new_passphrase is required with state=active")
            have = _opening_slots(dev, wanted["new_passphrase"])
            todo = not have if keyslot is None else keyslot not in have
        else:
            if wanted.get("old_passphrase"):
                have = _opening_slots(dev, wanted["old_passphrase"])
                todo = bool(have) if keyslot is None else keyslot in have
            elif keyslot is not None:
                todo = 0 <= keyslot < 8 and header.slots[keyslot].enabled
            else:
                raise InvalidArgument("options.encrypt needs old_passphrase or keyslot with state=inactive")
    if not todo:
        return False, before, before
    secrets = getattr(path, "secrets", None)
    if secrets is None:
        raise InvalidArgument("options.encrypt needs the image's passphrase")
    opts = {prefix + "state": state}
    for key, sid in (("new_passphrase", "amend-new"), ("old_passphrase", "amend-old")):
        if wanted.get(key):
            if sid not in secrets:
                secrets.add(sid, wanted[key])
            opts[prefix + key.replace("_passphrase", "-secret")] = sid
    if keyslot is not None:
        opts[prefix + "keyslot"] = keyslot
    if wanted.get("iter_time") is not None and state == "active":
        opts[prefix + "iter-time"] = wanted["iter_time"]
    res = amend_image(path, opts, force=force, check_mode=check_mode)
    return True, before, res["after"].get("keyslots", before)


# qimg_create's options.encrypt (the encryption of a new qcow2 image)
ENCRYPT_SPEC = dict(type="dict", options=dict(
    format=dict(type="str", choices=["luks", "aes"], default="luks"),
    passphrase=dict(type="str", no_log=True, required=True),
    cipher_alg=dict(type="str"),
    cipher_mode=dict(type="str"),
    ivgen_alg=dict(type="str"),
    ivgen_hash_alg=dict(type="str"),
    hash_alg=dict(type="str"),
    iter_time=dict(type="int"),
))
_ENCRYPT_FACTS = ("cipher_alg", "cipher_mode", "ivgen_alg", "ivgen_hash_alg", "hash_alg")


def encrypt_options(encrypt):
    """(the -o options, a SecretStore with the passphrase) for a new image's options.encrypt."""
    opts = {"encrypt.format": encrypt.get("format") or "luks", "encrypt.key-secret": SECRET_ID}
    for key in _ENCRYPT_FACTS + ("iter_time",):
        if encrypt.get(key) is not None:
            opts["encrypt." + key.replace("_", "-")] = str(encrypt[key])
    store = SecretStore()
    store.add(SECRET_ID, encrypt["passphrase"])
    return opts, store


def encryption_differences(info, encrypt):
    """['encryption <current> != <requested>', ...] between an image_info dict and options.encrypt
    (None: no encryption asked for); only what `info` shows (never the key)."""
    data = (info.get("format-specific") or {}).get("data") or {}
    current = data.get("encrypt") if isinstance(data, dict) else None
    have = current.get("format") if current else None
    want = (encrypt.get("format") or "luks") if encrypt else None
    if have != want:
        return ["encryption %s != %s" % (have or "none", want or "none")]
    out = []
    for key in _ENCRYPT_FACTS if want == "luks" else ():
        wanted = encrypt.get(key)
        if wanted is None:
            wanted = _LUKS_DEFAULTS.get(key)
            if key == "ivgen_hash_alg" and (encrypt.get("ivgen_alg") or "plain64") == "essiv":
                wanted = "sha256"
        have = current.get(key.replace("_", "-"))
        if str(wanted) != str(have):
            out.append("encrypt.%s %s != %s" % (key, have or "none", wanted or "none"))
    return out


# what QEMU gives a LUKS image for what is not asked for (qapi/crypto.json)
_LUKS_DEFAULTS = {"cipher_alg": "aes-256", "cipher_mode": "xts", "ivgen_alg": "plain64", "ivgen_hash_alg": None,
                  "hash_alg": "sha256"}
