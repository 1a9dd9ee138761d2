# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu's JSON printer (qobject/json-writer.c, pretty mode, QDict order) and qemu-img's human
layouts (block/qapi.c and qemu-img.c): info, snapshot table, map, check, measure, create."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import time

from ..qjson import json_str as _json_str, tdb_hash


# QAPI member order (qapi/block-core.json): qemu inserts QDict keys in this order, which
# decides the output order of keys that fall into the same hash bucket.
QAPI_ORDER = [
    # ImageInfo
    "filename", "format", "dirty-flag", "actual-size", "virtual-size", "cluster-size",
    "encrypted", "compressed", "backing-filename", "full-backing-filename",
    "backing-filename-format", "snapshots", "backing-image", "format-specific",
    # ImageInfoSpecific
    "type", "data",
    # ImageInfoSpecificQCow2
    "compat", "data-file", "data-file-raw", "extended-l2", "lazy-refcounts", "corrupt",
    "refcount-bits", "encrypt", "bitmaps", "compression-type",
    # SnapshotInfo
    "id", "name", "vm-state-size", "date-sec", "date-nsec", "vm-clock-sec", "vm-clock-nsec",
    "icount",
    # Qcow2BitmapInfo
    "granularity", "flags",
]


_QAPI_RANK = dict((k, i) for i, k in enumerate(QAPI_ORDER))


QDICT_BUCKETS = 512


def qdict_order(keys):
    """The order qemu's qdict_first()/qdict_next() visit ``keys``.

    Buckets ascending; inside a bucket the most recently inserted key first. Insertion order is
    qemu's (QAPI member order) for known keys, else the given order.
    """
    keys = list(keys)
    pos = dict((k, i) for i, k in enumerate(keys))

    def inserted(k):
        return (_QAPI_RANK.get(k, len(QAPI_ORDER)), pos[k])

    return sorted(keys, key=lambda k: (tdb_hash(k) % QDICT_BUCKETS,
                                       tuple(-x for x in inserted(k))))


def _json_scalar(value):
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return "%d" % value
    if isinstance(value, float):
        return "%.17g" % value
    return _json_str(str(value))


def qemu_json(obj, indent=0):
    """Serialize like qobject_to_json_pretty(): 4-space indent, QDict key order."""
    pad = "    " * (indent + 1)
    end = "\n" + "    " * indent
    if isinstance(obj, dict):
        items = ["%s%s: %s" % (pad, _json_str(k), qemu_json(obj[k], indent + 1))
                 for k in qdict_order(obj)]
        return "{" + ("\n" + ",\n".join(items) if items else "") + end + "}"
    if isinstance(obj, (list, tuple)):
        items = [pad + qemu_json(v, indent + 1) for v in obj]
        return "[" + ("\n" + ",\n".join(items) if items else "") + end + "]"
    return _json_scalar(obj)


def _human_size(n):
    from ..sizes import human_size
    return human_size(n)


def _dump_scalar(value):
    if value is True:
        return "true"
    if value is False:
        return "false"
    return str(value)


def dump_qobject(indent, obj, out):
    """qemu's dump_qobject(): nested dicts/lists as "key:" lines, dashes in keys as spaces."""
    if isinstance(obj, dict):
        entries = [(k.replace("-", " "), obj[k]) for k in qdict_order(obj)]
    elif isinstance(obj, (list, tuple)):
        entries = [("[%d]" % i, v) for i, v in enumerate(obj)]
    else:
        out.append(_dump_scalar(obj))
        return
    for label, value in entries:
        if isinstance(value, (dict, list, tuple)):
            out.append("%s%s:\n" % ("    " * indent, label))
            dump_qobject(indent + 1, value, out)
        else:
            out.append("%s%s: %s\n" % ("    " * indent, label, _dump_scalar(value)))


def snapshot_line(sn=None):
    """One row of qemu's snapshot table (bdrv_snapshot_dump), or the header when sn is None."""
    if sn is None:
        return "%-10s%-17s%8s%20s%13s%11s" % ("ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT")
    date = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(sn.get("date-sec", 0)))
    clock_ns = sn.get("vm-clock-sec", 0) * 1000000000 + sn.get("vm-clock-nsec", 0)
    secs = clock_ns // 1000000000
    clock = "%02d:%02d:%02d.%03d" % (secs // 3600, (secs // 60) % 60, secs % 60,
                                     (clock_ns // 1000000) % 1000)
    icount = "%d" % sn["icount"] if sn.get("icount") is not None else ""
    return "%-9s %-16s %8s%20s%13s%11s" % (sn.get("id", ""), sn.get("name", ""),
                                           _human_size(sn.get("vm-state-size", 0)),
                                           date, clock, icount)


def format_info_human(info):
    """qemu's bdrv_image_info_dump() for one image-info dict."""
    out = []
    actual = info.get("actual-size")
    dsize = _human_size(actual) if actual is not None else "unavailable"
    out.append("image: %s\n" % info.get("filename"))
    out.append("file format: %s\n" % info.get("format"))
    out.append("virtual size: %s (%d bytes)\n" % (_human_size(info["virtual-size"]), info["virtual-size"]))
    out.append("disk size: %s\n" % dsize)
    if info.get("encrypted"):
        out.append("encrypted: yes\n")
    if info.get("cluster-size") is not None:
        out.append("cluster_size: %d\n" % info["cluster-size"])
    if info.get("dirty-flag"):
        out.append("cleanly shut down: no\n")
    if info.get("backing-filename") is not None:
        line = "backing file: %s" % info["backing-filename"]
        full = info.get("full-backing-filename")
        if full is None:
            line += " (cannot determine actual path)"
        elif full != info["backing-filename"]:
            line += " (actual path: %s)" % full
        out.append(line + "\n")
        if info.get("backing-filename-format") is not None:
            out.append("backing file format: %s\n" % info["backing-filename-format"])
    if info.get("snapshots") is not None:
        out.append("Snapshot list:\n")
        out.append(snapshot_line() + "\n")
        for sn in info["snapshots"]:
            out.append(snapshot_line(sn) + "\n")
    spec = info.get("format-specific")
    if spec is not None:
        out.append("Format specific information:\n")
        dump_qobject(1, spec.get("data", {}), out)
    return "".join(out)


def format_info(info, output):
    """The whole stdout of ``info`` for a dict (or, with --backing-chain, a list of dicts)."""
    if output == "json":
        return qemu_json(info) + "\n"
    if isinstance(info, list):
        return "\n".join(format_info_human(i) for i in info)
    return format_info_human(info)


def _hex(n):
    return "%#x" % n if n else "0"


def map_human_line(entry):
    return "%-16s%-16s%-16s%s\n" % (_hex(entry["start"]), _hex(entry["length"]),
                                    _hex(entry.get("offset") or 0), entry.get("filename") or "")


MAP_HEADER = "%-16s%-16s%-16s%s\n" % ("Offset", "Length", "Mapped to", "File")


def map_json_entry(e):
    text = '{ "start": %d, "length": %d, "depth": %d, "present": %s, "zero": %s, "data": %s' % (
        e["start"], e["length"], e["depth"], _json_scalar(bool(e["present"])),
        _json_scalar(bool(e["zero"])), _json_scalar(bool(e["data"])))
    if e.get("offset") is not None:
        text += ', "offset": %d' % e["offset"]
    return text + "}"


def format_map(entries, output, start_offset=0):
    """(stdout text, error message or None) for ``map``; qemu prints what it has, then fails."""
    out = []
    error = write_map(out.append, entries, output, start_offset)
    return "".join(out), error


def write_map(write, entries, output, start_offset=0):
    """Write ``map`` output piece by piece as entries arrive; returns an error message or None."""
    empty = {"start": start_offset, "length": 0, "depth": 0, "present": False, "zero": False, "data": False}
    import itertools
    entries = iter(entries)
    first = next(entries, None)  # opens the image: a failure comes before any output
    entries = itertools.chain([first] if first is not None else [], entries)
    if output == "json":
        sep = "["
        for e in entries:
            write(sep + map_json_entry(e))
            sep = ",\n"
        if sep == "[":
            write("[" + map_json_entry(empty))
        write("]\n")
        return None
    write(MAP_HEADER)
    for e in entries:
        if e.get("data") and e.get("offset") is None:
            return "File contains external, encrypted or compressed clusters."
        if e.get("data") and not e.get("zero"):
            write(map_human_line(e))
    return None


# Options the "file" protocol driver adds to "create -o help" when a filename is given
# (qemu's file-posix create options; the format driver's entries win on duplicates).
FILE_PROTOCOL_OPTIONS = [
    ("extent_size_hint", "size", "Extent size hint for the image file, 0 to disable"),
    ("nocow", "bool", "Turn off copy-on-write (valid only on btrfs)"),
    ("preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"),
    ("size", "size", "Virtual disk size"),
]


def format_option_help(fmt, options, filename):
    """``create -o help``: qemu's print_block_option_help() for ``options`` [(name, type, help)]."""
    merged = {}
    for name, typ, text in options:
        merged.setdefault(name, (typ, text))
    if filename:
        for name, typ, text in FILE_PROTOCOL_OPTIONS:
            merged.setdefault(name, (typ, text))
    out = ["Supported options:\n" if filename else "Supported %s options:\n" % fmt]
    for name in sorted(merged, key=lambda n: n.encode("utf-8")):
        typ, text = merged[name]
        if typ == "bool":
            typ = "bool (on/off)"
        line = "  %s=<%s>" % (name, typ)
        if text:
            line = "%-24s - %s" % (line, text)
        out.append(line + "\n")
    if not filename:
        out.append("\nThe protocol level may support further options.\n"
                   "Specify the target filename to include those options.\n")
    return "".join(out)


def _escaped(value):
    return str(value).replace(",", ",,")


def format_formatting_line(filename, fmt, pairs, types=None):
    """qemu's "Formatting 'FILE', fmt=FMT name=value ..." line (string values ',,'-escaped)."""
    types = types or {}
    parts = []
    for name, value in pairs:
        if isinstance(value, bool):
            value = "on" if value else "off"
        elif types.get(name) == "str":
            value = _escaped(value)
        parts.append("%s=%s" % (name, value))
    return "Formatting '%s', fmt=%s %s\n" % (filename, fmt, " ".join(parts))


def format_measure(res, output):
    """``measure`` stdout: qemu's human lines or its JSON (BlockMeasureInfo in QDict order)."""
    if output == "json":
        data = dict((k, res[k]) for k in ("required", "fully-allocated", "bitmaps") if k in res)
        return qemu_json(data) + "\n"
    text = "required size: %d\nfully allocated size: %d\n" % (res["required"], res["fully-allocated"])
    if "bitmaps" in res:
        text += "bitmaps size: %d\n" % res["bitmaps"]
    return text


# ImageCheck's members (qapi/block-core.json) in QAPI order: qemu inserts them in this order.
CHECK_KEYS = ("filename", "format", "check-errors", "image-end-offset", "corruptions", "leaks",
              "corruptions-fixed", "leaks-fixed", "total-clusters", "allocated-clusters",
              "fragmented-clusters", "compressed-clusters")


# Optional members qemu leaves out when they are zero.
CHECK_OPTIONAL = CHECK_KEYS[3:]


def format_check(res, output):
    """``check`` stdout: the repair summary (human, after a repair), then the figures (human or JSON)."""
    repaired = res.get("repaired") or {}
    text = ""
    if output == "human" and (repaired.get("leaks") or repaired.get("corruptions")):
        text = ("The following inconsistencies were found and repaired:\n\n"
                "    %d leaked clusters\n"
                "    %d corruptions\n\n"
                "Double checking the fixed image now...\n" % (repaired.get("leaks", 0), repaired.get("corruptions", 0)))
    if output == "json":
        data = dict((k, res[k]) for k in CHECK_KEYS if k in res and (res[k] or k not in CHECK_OPTIONAL))
        return text + qemu_json(data) + "\n"
    return text + format_check_human(res)


def format_check_human(res):
    """qemu-img's dump_human_image_check()."""
    corruptions, leaks, errors = res.get("corruptions", 0), res.get("leaks", 0), res.get("check-errors", 0)
    out = []
    if not (corruptions or leaks or errors):
        out.append("No errors were found on the image.\n")
    else:
        if corruptions:
            out.append("\n%d errors were found on the image.\n"
                       "Data may be corrupted, or further writes to the image may corrupt it.\n" % corruptions)
        if leaks:
            out.append("\n%d leaked clusters were found on the image.\n"
                       "This means waste of disk space, but no harm to data.\n" % leaks)
        if errors:
            out.append("\n%d internal errors have occurred during the check.\n" % errors)
    total, allocated = res.get("total-clusters", 0), res.get("allocated-clusters", 0)
    if total and allocated:
        out.append("%d/%d = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n" % (
            allocated, total, allocated * 100.0 / total, res.get("fragmented-clusters", 0) * 100.0 / allocated,
            res.get("compressed-clusters", 0) * 100.0 / allocated))
    if res.get("image-end-offset"):
        out.append("Image end offset: %d\n" % res["image-end-offset"])
    return "".join(out)
