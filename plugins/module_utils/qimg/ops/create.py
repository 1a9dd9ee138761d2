# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`create`: new raw and qcow2 images, written to a temporary file and renamed into place."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ..errors import ImageExists, InvalidArgument, QimgError, UnsupportedFeature
from ..formats.qcow2 import create_qcow2
from ..formats.qcow2.compress import zstd_available
from ..formats.raw import create_raw
from ..image import FORMATS, full_backing_path, open_image, refuse_pseudo_filename
from ..sizes import parse_size
from ..util import atomic_output

# (name, qemu type, help) in qemu-img's `-o help` order
CREATE_OPTIONS = {
    "qcow2": [
        ("backing_file", "str", "File name of a base image"),
        ("backing_fmt", "str", "Image format of the base image"),
        ("cluster_size", "size", "qcow2 cluster size"),
        ("compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"),
        ("compression_type", "str", "Compression method used for image cluster compression"),
        ("extended_l2", "bool", "Extended L2 tables"),
        ("lazy_refcounts", "bool", "Postpone refcount updates"),
        ("preallocation", "str", "Preallocation mode (allowed values: off, metadata, falloc, full)"),
        ("refcount_bits", "num", "Width of a reference count entry in bits"),
        ("size", "size", "Virtual disk size"),
    ],
    "raw": [
        ("preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"),
        ("size", "size", "Virtual disk size"),
    ],
}
# options qemu-img knows but we refuse with a clear message
_NOT_YET = {"data_file": "external data files", "data_file_raw": "external data files",
            "encryption": "encryption", "encrypt.format": "encryption", "encrypt.key-secret": "encryption",
            "encrypt.cipher-alg": "encryption", "encrypt.cipher-mode": "encryption",
            "encrypt.hash-alg": "encryption", "encrypt.iter-time": "encryption",
            "encrypt.ivgen-alg": "encryption", "encrypt.ivgen-hash-alg": "encryption"}
_IGNORED = ("nocow", "extent_size_hint")  # host file system hints with no effect on the image
_BOOL_WORDS = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False}


def parse_option_string(text):
    """qemu's -o syntax: "a=b,c=d"; ",," is a literal comma."""
    out = {}
    if not text:
        return out
    items, cur, i = [], "", 0
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if text[i + 1:i + 2] == ",":
                cur += ","
                i += 2
                continue
            items.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    items.append(cur)
    for item in items:
        if not item:
            continue
        if "=" not in item:
            if item in ("help", "?"):
                out["help"] = True
                continue
            raise InvalidArgument("Invalid parameter '%s'" % item)
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _bool(name, value):
    if isinstance(value, bool):
        return value
    word = str(value).strip().lower()
    if word not in _BOOL_WORDS:
        raise InvalidArgument("Parameter '%s' expects 'on' or 'off'" % name)
    return _BOOL_WORDS[word]


def normalize_options(fmt, size=None, options=None, backing_file=None, backing_fmt=None):
    """Validate and type the create options. Returns a dict of typed values (only those given)."""
    if fmt not in FORMATS:
        raise InvalidArgument("Unknown file format '%s'" % fmt)
    opts = dict(options or {})
    for k in list(opts):
        if opts[k] is None:
            del opts[k]
    known = dict((entry[0], entry[1]) for entry in CREATE_OPTIONS[fmt])
    out = {}
    for name, value in opts.items():
        if name in _NOT_YET and fmt == "qcow2":
            raise UnsupportedFeature("%s are not supported yet" % _NOT_YET[name].capitalize())
        if name in _IGNORED:
            continue
        if name not in known:
            raise InvalidArgument("Invalid parameter '%s'" % name)
        typ = known[name]
        if typ == "size":
            out[name] = parse_size(value)
        elif typ == "bool":
            out[name] = _bool(name, value)
        elif typ == "num":
            try:
                out[name] = int(str(value), 0)
            except ValueError:
                raise InvalidArgument("Parameter '%s' expects a number" % name)
        else:
            out[name] = str(value)
    if size is not None:
        out["size"] = parse_size(size)
    if backing_file:
        out["backing_file"] = backing_file
    if backing_fmt:
        out["backing_fmt"] = backing_fmt
    if "backing_fmt" in out and "backing_file" not in out:
        raise InvalidArgument("Backing format set without a backing file")
    return out


def resolved_options(fmt, size=None, options=None, backing_file=None, backing_fmt=None):
    """The (name, value) pairs qemu-img prints on its "Formatting ..." line, in its order."""
    o = normalize_options(fmt, size, options, backing_file, backing_fmt)
    if fmt == "raw":
        pairs = [("size", o.get("size", 0))]
        if "preallocation" in o:
            pairs.append(("preallocation", o["preallocation"]))
        return pairs
    onoff = {True: "on", False: "off"}
    pairs = [("cluster_size", o.get("cluster_size", 65536)),
             ("extended_l2", onoff[o.get("extended_l2", False)])]
    if "preallocation" in o:
        pairs.append(("preallocation", o["preallocation"]))
    pairs.append(("compression_type", o.get("compression_type", "zlib")))
    pairs.append(("size", o.get("size", 0)))
    for name in ("backing_file", "backing_fmt", "compat"):
        if name in o:
            pairs.append((name, o[name]))
    pairs.append(("lazy_refcounts", onoff[o.get("lazy_refcounts", False)]))
    pairs.append(("refcount_bits", o.get("refcount_bits", 16)))
    return pairs


def _backing_size(filename, backing_file, backing_fmt):
    refuse_pseudo_filename(backing_file, "Backing file name")
    path = full_backing_path(filename, backing_file)
    try:
        with open_image(path, backing_fmt, read_only=True, force_share=True) as dev:
            return dev.size, dev.format_name
    except QimgError as e:
        raise QimgError("Could not open backing image: %s" % e)


def create_image(filename, fmt, size=None, options=None, backing_file=None, backing_fmt=None,
                 unsafe=False, overwrite=True):
    """Create a raw or qcow2 image (see docs/engine-api.md)."""
    o = normalize_options(fmt, size, options, backing_file, backing_fmt)
    backing_file = o.get("backing_file")
    backing_fmt = o.get("backing_fmt")
    if backing_file and fmt == "raw":
        raise InvalidArgument("Backing file not supported for file format 'raw'")
    if backing_fmt and backing_fmt not in FORMATS:
        raise InvalidArgument("Unknown backing file format '%s'" % backing_fmt)
    size = o.get("size")
    if backing_file:
        refuse_pseudo_filename(backing_file, "Backing file name")
        if not unsafe:
            bsize, bfmt = _backing_size(filename, backing_file, backing_fmt)
            if size is None:
                size = bsize
            if backing_fmt is None:
                backing_fmt = bfmt
        elif size is None:
            raise InvalidArgument("Image creation needs a size parameter")
    if size is None:
        raise InvalidArgument("Image creation needs a size parameter")
    if not overwrite and os.path.lexists(filename):
        raise ImageExists("Could not create '%s': File exists" % filename)
    if fmt == "qcow2":
        compression = o.get("compression_type", "zlib")
        if compression == "zstd" and not zstd_available():
            raise UnsupportedFeature("zstd compression needs the zstandard or pyzstd Python package")
        size = (size + 511) // 512 * 512

        def build(fd):
            create_qcow2(fd, size, cluster_size=o.get("cluster_size", 65536), compat=o.get("compat", "1.1"),
                         refcount_bits=o.get("refcount_bits", 16),
                         lazy_refcounts=o.get("lazy_refcounts", False),
                         extended_l2=o.get("extended_l2", False),
                         preallocation=o.get("preallocation", "off"), compression_type=compression,
                         backing_file=backing_file, backing_fmt=backing_fmt)
    else:
        def build(fd):
            create_raw(fd, size, o.get("preallocation", "off"))
    atomic_output(filename, build)
