# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`amend`: change a qcow2 image's options in place (qemu-img amend), with qemu-img's messages."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import InvalidArgument, UnsupportedFeature
from ..formats.qcow2.amend import AMEND_OPTIONS, amend, current_options
from ..image import open_image
from .create import CREATE_OPTIONS, _typed

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
        raise UnsupportedFeature("Amending 'luks' options is not supported yet")
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
    refcount_bits, size) before and after. Nothing is written when every value is already there
    (or in check mode).
    """
    opts = parse_amend_options(options)
    with open_image(filename, fmt, read_only=check_mode, force_share=check_mode) as dev:
        if on_open is not None:
            on_open(dev)
        if dev.format_name != "qcow2":
            raise UnsupportedFeature("Format driver '%s' does not support option amendment" % dev.format_name)
        before = current_options(dev)
        if check_mode:
            after = _wanted(before, opts)
            return {"changed": after != before, "before": before, "after": after}
        amend(dev, opts, force=force, progress=progress)
        dev.flush()
        after = current_options(dev)
    return {"changed": before != after, "before": before, "after": after}
