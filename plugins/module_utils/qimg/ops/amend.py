# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`amend`: change a qcow2 image's options in place (qemu-img amend), with qemu-img's messages."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import InvalidArgument, UnsupportedFeature
from ..crypto.amend import keyslot_facts, register_amend_extension, slot_states
from ..formats.qcow2.amend import AMEND_OPTIONS, amend, current_options
from ..image import open_image
from .create import CREATE_OPTIONS, _typed

register_amend_extension()   # the LUKS keyslots: encrypt.* options of qcow2 amend
_AMEND_TYPES = dict((name, typ) for name, typ, _help in AMEND_OPTIONS)
_CREATE_ONLY_HINT = ["This option is only supported for image creation"]


# QEMU 7.2's other block drivers: known to qemu-img, without option amendment (luks has it in
# QEMU; its keyslot amends arrive with the encryption work)
_OTHER_DRIVERS = ("blkdebug", "blklogwrites", "blkverify", "bochs", "cloop", "compress", "copy-before-write",
                  "copy-on-read", "dmg", "file", "ftp", "ftps", "host_cdrom", "host_device", "http", "https",
                  "iscsi", "nbd", "nfs", "null-aio", "null-co", "nvme", "parallels", "preallocate", "qcow", "qed",
                  "quorum", "raw", "rbd", "replication", "snapshot-access", "ssh", "throttle", "vdi", "vhdx",
                  "vmdk", "vpc", "vvfat")


def amend_option_help(fmt="qcow2"):
    """qemu-img amend -o help: [(name, type, help)] or the refusal for formats without amend."""
    if fmt == "luks":
        from ..crypto.amend import LUKS_AMEND_OPTIONS
        return list(LUKS_AMEND_OPTIONS)
    if fmt != "qcow2" and fmt not in _OTHER_DRIVERS:
        raise InvalidArgument("Unknown file format '%s'" % fmt)
    if fmt != "qcow2":
        raise UnsupportedFeature("Format driver '%s' does not support option amendment" % fmt)
    return list(AMEND_OPTIONS)


def parse_amend_options(options):
    """Type the given options (a dict; values as strings or already typed) like qemu-img parses
    them against the amend options; a create-only option gets qemu-img's hint."""
    out = {}
    create_names = set(o[0] for o in CREATE_OPTIONS["qcow2"])
    for name, value in (options or {}).items():
        if value is None:
            continue
        if name not in _AMEND_TYPES:
            hint = _CREATE_ONLY_HINT if name in create_names else None
            raise InvalidArgument("Invalid parameter '%s'" % name, hint=hint)
        typ = _AMEND_TYPES[name]
        if typ == "num" and isinstance(value, int) and not isinstance(value, bool):
            out[name] = value
        else:
            out[name] = _typed(name, typ, value)
    return out


def _wanted(current, opts):
    """The amendable options as they will be after the amend (what check mode reports)."""
    after = dict(current)
    for name in ("lazy_refcounts", "refcount_bits", "size"):
        if name in opts and not (name == "size" and not opts[name]):
            after[name] = opts[name]
    if "compat" in opts:
        after["compat"] = {"v2": "0.10", "v3": "1.1"}.get(opts["compat"], opts["compat"])
        if after["compat"] == "0.10":
            after["lazy_refcounts"] = False
    if opts.get("data_file") is not None and current.get("data_file") is not None:
        after["data_file"] = opts["data_file"] or None
    if "data_file_raw" in opts and current.get("data_file") is not None:
        after["data_file_raw"] = opts["data_file_raw"]
    return after


def amend_image(filename, options, fmt=None, force=False, check_mode=False, on_open=None, progress=None):
    """Amend an image's options (see docs/engine-api.md).

    Returns {"changed", "before", "after"} with the amendable options (compat, lazy_refcounts,
    refcount_bits, size, data_file, data_file_raw) before and after. Nothing is written when every value is already there
    (or in check mode).
    """
    deferred = None
    opts = {}
    try:
        if fmt != "luks":
            opts = parse_amend_options(options)
    except InvalidArgument as e:
        deferred = e    # qemu-img parses the options after it opened the image (a luks file has others)
    with open_image(filename, fmt, read_only=check_mode, force_share=check_mode) as dev:
        if on_open is not None:
            on_open(dev)
        if dev.format_name == "luks":
            return _amend_luks(dev, options, force, check_mode)
        if deferred is not None:
            raise deferred
        if dev.format_name != "qcow2":
            raise UnsupportedFeature("Format driver '%s' does not support option amendment" % dev.format_name)
        before = current_options(dev)
        slots = _keyslots(dev, opts, force)
        if slots is not None:
            before["keyslots"] = slots[0]
        if check_mode:
            after = _wanted(before, opts)
            if slots is not None:
                after["keyslots"] = _predicted(slots)
            return {"changed": after != before or bool(slots and slots[1][1]), "before": before, "after": after}
        amend(dev, opts, force=force, progress=progress)
        dev.flush()
        after = current_options(dev)
        changed = before != after
        if slots is not None:
            after["keyslots"] = keyslot_facts(dev)
            changed = changed or slot_states(dev) != slots[2]
    return {"changed": changed or before != after, "before": before, "after": after}


def _keyslots(dev, opts, force):
    """None without encrypt.* options, else (keyslot facts before, (state, the slots check mode
    predicts), slot states before)."""
    from ..crypto.amend import amend_keyslots
    enc = dict((k[len("encrypt."):], v) for k, v in opts.items() if k.startswith("encrypt."))
    if not enc or getattr(dev, "crypto", None) is None or dev.crypto.method != 2:
        return None
    predicted = amend_keyslots(dev, enc, force=force, check_mode=True)
    return keyslot_facts(dev), (enc["state"], predicted), slot_states(dev)


def _predicted(slots):
    facts, (state, numbers) = [dict(f) for f in slots[0]], slots[1]
    for i in numbers:
        facts[i]["active"] = state == "active"
    return facts


def _amend_luks(dev, options, force, check_mode):
    """qemu-img amend on a luks file: keyslots only."""
    from ..crypto.amend import amend_keyslots, parse_luks_options
    opts = parse_luks_options(options)
    before = {"size": dev.size, "keyslots": keyslot_facts(dev)}
    states = slot_states(dev)
    if check_mode:
        numbers = amend_keyslots(dev, opts, force=force, check_mode=True)
        after = dict(before, keyslots=_predicted((before["keyslots"], (opts.get("state"), numbers))))
        return {"changed": bool(numbers), "before": before, "after": after}
    amend_keyslots(dev, opts, force=force)
    dev.flush()
    after = {"size": dev.size, "keyslots": keyslot_facts(dev)}
    return {"changed": slot_states(dev) != states, "before": before, "after": after}
