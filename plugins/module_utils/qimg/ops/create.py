# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`create`: new raw and qcow2 images, written to a temporary file and renamed into place."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ..errors import ImageExists, ImageInUse, ImageNotFound, InvalidArgument, QimgError, UnsupportedFeature
from ..crypto.create_opts import qcow2_encryption
from ..formats.qcow2.create import create_qcow2
from ..formats.raw import create_raw
from ..image import FORMATS, full_backing_path, is_pseudo_filename, open_image, refuse_pseudo_filename
from ..locking import ImageLock
from ..protocols.cache import cache_mode
from ..sizes import parse_size, strtosz
from ..util import atomic_output

# (name, qemu type, help) in qemu-img's `-o help` order: the format's own options
CREATE_OPTIONS = {
    "qcow2": [
        ("backing_file", "str", "File name of a base image"),
        ("backing_fmt", "str", "Image format of the base image"),
        ("cluster_size", "size", "qcow2 cluster size"),
        ("compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])"),
        ("compression_type", "str", "Compression method used for image cluster compression"),
        ("data_file", "str", "File name of an external data file"),
        ("data_file_raw", "bool", "The external data file must stay valid as a raw image"),
        ("encrypt.cipher-alg", "str", "Name of encryption cipher algorithm"),
        ("encrypt.cipher-mode", "str", "Name of encryption cipher mode"),
        ("encrypt.format", "str", "Encrypt the image, format choices: 'aes', 'luks'"),
        ("encrypt.hash-alg", "str", "Name of encryption hash algorithm"),
        ("encrypt.iter-time", "num", "Time to spend in PBKDF in milliseconds"),
        ("encrypt.ivgen-alg", "str", "Name of IV generator algorithm"),
        ("encrypt.ivgen-hash-alg", "str", "Name of IV generator hash algorithm"),
        ("encrypt.key-secret", "str", "ID of secret providing qcow AES key or LUKS passphrase"),
        ("encryption", "bool", "Encrypt the image with format 'aes'. (Deprecated in favor of encrypt.format=aes)"),
        ("extended_l2", "bool", "Extended L2 tables"),
        ("lazy_refcounts", "bool", "Postpone refcount updates"),
        ("preallocation", "str", "Preallocation mode (allowed values: off, metadata, falloc, full)"),
        ("refcount_bits", "num", "Width of a reference count entry in bits"),
        ("size", "size", "Virtual disk size"),
    ],
    "raw": [
        ("size", "size", "Virtual disk size"),
    ],
    "luks": [
        ("cipher-alg", "str", "Name of encryption cipher algorithm"),
        ("cipher-mode", "str", "Name of encryption cipher mode"),
        ("hash-alg", "str", "Name of encryption hash algorithm"),
        ("iter-time", "num", "Time to spend in PBKDF in milliseconds"),
        ("ivgen-alg", "str", "Name of IV generator algorithm"),
        ("ivgen-hash-alg", "str", "Name of IV generator hash algorithm"),
        ("key-secret", "str", "ID of the secret that provides the keyslot passphrase"),
        ("size", "size", "Virtual disk size"),
    ],
}
# options of the host file itself (qemu's file protocol), accepted for every format
FILE_PROTOCOL_OPTIONS = [
    ("extent_size_hint", "size", "Extent size hint for the image file, 0 to disable"),
    ("nocow", "bool", "Turn off copy-on-write (valid only on btrfs)"),
    ("preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"),
]
# options qemu-img knows but we refuse with a clear message
_NOT_YET = {}  # options qemu-img knows that we refuse with a clear message: none left for create
# encryption: create only (crypto/create_opts.py); convert and measure targets still refuse it
_ENCRYPT_NOT_YET = ("encryption", "encrypt.format", "encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode",
                    "encrypt.hash-alg", "encrypt.iter-time", "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg")
_HOST_HINTS = ("nocow", "extent_size_hint")  # hints to the host file system (util.apply_host_hints), not image options
_BOOL_WORDS = {"on": True, "off": False, "true": True, "false": False, "yes": True, "no": False}
_SIZE_HINT = ["Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-",
              "and exabytes, respectively."]


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


def _known_options(fmt):
    known = dict((entry[0], entry[1]) for entry in FILE_PROTOCOL_OPTIONS)
    known.update((entry[0], entry[1]) for entry in CREATE_OPTIONS[fmt])
    return known


def _typed(name, typ, value):
    if typ == "size":
        if isinstance(value, int) and not isinstance(value, bool):
            return parse_size(value)
        try:
            n = strtosz(str(value))[0]     # qemu's parse_option_size(): hex, fractions, suffixes
        except OverflowError:
            raise InvalidArgument("Value '%s' is out of range for parameter '%s'" % (value, name))
        except ValueError:
            raise InvalidArgument("Parameter '%s' expects a non-negative number below 2^64" % name, hint=_SIZE_HINT)
        return parse_size(n) if name == "size" else n
    if typ == "bool":
        return _bool(name, value)
    if typ == "num":
        try:
            return int(str(value), 0)
        except ValueError:
            raise InvalidArgument("Parameter '%s' expects a number" % name)
    return str(value)


# QEMU 7.2's drivers that qemu-img knows but that cannot create images (no create options):
# create, convert and measure name them in their refusal instead of "Unknown file format"
NO_CREATE_DRIVERS = ("blkdebug", "blklogwrites", "blkverify", "bochs", "cloop", "compress", "copy-before-write",
                     "copy-on-read", "dmg", "null-aio", "null-co", "preallocate", "quorum", "replication",
                     "snapshot-access", "throttle", "vvfat")


def check_create_format(fmt):
    """qemu-img's refusal of an output format it cannot create images in (bdrv_find_format(), then
    the driver's create_opts), or nothing for the formats we create."""
    if fmt in CREATE_OPTIONS:
        return
    if fmt in NO_CREATE_DRIVERS:
        raise UnsupportedFeature("Format driver '%s' does not support image creation" % fmt)
    raise InvalidArgument("Unknown file format '%s'" % fmt)


def _given(fmt, size, options, backing_file, backing_fmt):
    """[(name, value as given, typed value)] for the options given, without None values."""
    if fmt not in FORMATS:
        raise InvalidArgument("Unknown file format '%s'" % fmt)
    known = _known_options(fmt)
    out = []
    for name, value in (options or {}).items():
        if value is None or name == "help":
            continue
        if name not in known:
            raise InvalidArgument("Invalid parameter '%s'" % name)
        out.append((name, value, _typed(name, known[name], value)))
    if size is not None:
        out = [o for o in out if o[0] != "size"] + [("size", size, parse_size(size))]
    if backing_file:
        out = [o for o in out if o[0] != "backing_file"] + [("backing_file", backing_file, backing_file)]
    if backing_fmt:
        out = [o for o in out if o[0] != "backing_fmt"] + [("backing_fmt", backing_fmt, backing_fmt)]
    return out


def normalize_options(fmt, size=None, options=None, backing_file=None, backing_fmt=None, allow_encryption=False):
    """Validate and type the create options. Returns a dict of typed values (only those given)."""
    if fmt == "luks" and not allow_encryption:
        raise UnsupportedFeature("The luks format is supported by create and for reading only (not as a target) yet")
    out = {}
    for name, _value, typed in _given(fmt, size, options, backing_file, backing_fmt):
        if name == "encryption" and typed is False:
            continue    # encryption=off: the default, nothing to refuse
        if name in _NOT_YET and fmt == "qcow2":
            raise UnsupportedFeature("%s are not supported yet" % _NOT_YET[name].capitalize())
        if name in _ENCRYPT_NOT_YET and fmt == "qcow2" and not allow_encryption:
            raise UnsupportedFeature("Encryption is not supported yet")

        if name in _HOST_HINTS:
            continue
        out[name] = typed
    return out


def host_options(fmt, options=None):
    """The host-file hints among the create options, as util.atomic_output takes them:
    {"nocow": bool, "extent_size_hint": int or None (not given)}."""
    out = {"nocow": False, "extent_size_hint": None}
    if fmt not in FORMATS:
        return out
    known = _known_options(fmt)
    for name in _HOST_HINTS:
        value = (options or {}).get(name)
        if value is not None:
            out[name] = _typed(name, known[name], value)
    return out


def resolved_options(fmt, size=None, options=None, backing_file=None, backing_fmt=None, filename=None):
    """The (name, value) pairs qemu-img prints on its "Formatting ..." line, in its order.

    Values are echoed as given (qemu prints "lazy_refcounts=true" as typed), sizes and numbers
    as numbers. Errors qemu-img reports before that line are raised here.
    """
    given = _given(fmt, size, options, backing_file, backing_fmt)
    backing = dict((g[0], g[2]) for g in given if g[0] in ("backing_file", "backing_fmt"))
    if fmt == "raw" and "backing_file" in backing:
        raise InvalidArgument("Backing file not supported for file format 'raw'")
    if filename is not None and backing.get("backing_file") == filename:
        raise InvalidArgument("Error: Trying to create an image with the same filename as the backing file")
    if "backing_file" in backing and "backing_fmt" not in backing:
        raise InvalidArgument("Backing file specified without backing format")
    shown = {}
    for name, value, typed in given:
        if isinstance(typed, int) and not isinstance(typed, bool):
            shown[name] = typed
        elif isinstance(value, bool):
            shown[name] = "on" if value else "off"
        else:
            shown[name] = str(value)
    if fmt == "raw":
        order = [("size", 0), ("preallocation", None)]
    elif fmt == "luks":
        # block/crypto.c block_crypto_create_opts_luks, then the file protocol's options
        order = [("size", 0), ("key-secret", None), ("cipher-alg", None), ("cipher-mode", None), ("ivgen-alg", None),
                 ("ivgen-hash-alg", None), ("hash-alg", None), ("iter-time", None), ("preallocation", None)]
    else:
        # qcow2_create_opts' order (block/qcow2.c): the encryption options first
        order = [("encryption", None), ("encrypt.format", None), ("encrypt.key-secret", None),
                 ("encrypt.cipher-alg", None), ("encrypt.cipher-mode", None), ("encrypt.ivgen-alg", None),
                 ("encrypt.ivgen-hash-alg", None), ("encrypt.hash-alg", None), ("encrypt.iter-time", None),
                 ("cluster_size", 65536), ("extended_l2", "off"), ("preallocation", None),
                 ("compression_type", "zlib"), ("size", 0), ("compat", None), ("backing_file", None),
                 ("backing_fmt", None), ("data_file", None), ("data_file_raw", None),
                 ("lazy_refcounts", "off"), ("refcount_bits", 16)]
    pairs = []
    for name, default in order:
        if name in shown:
            pairs.append((name, shown.pop(name)))
        elif default is not None:
            pairs.append((name, default))
    for name in ("nocow", "extent_size_hint"):
        if name in shown:
            pairs.append((name, shown.pop(name)))
    pairs.extend(sorted(shown.items()))
    return pairs


def _backing_target(filename, backing_file, typed_backing=False, allow_unsafe_backing=False):
    """What create opens for the backing file: a json:/protocol name as it is when the user typed it
    (typed_backing: the command line's -b, as qemu-img opens it) or unsafe names are allowed, else
    the file it names relative to the new image (pseudo-filenames refused)."""
    if (typed_backing or allow_unsafe_backing) and is_pseudo_filename(backing_file):
        return backing_file
    refuse_pseudo_filename(backing_file, "Backing file name")
    return full_backing_path(filename, backing_file)


def _backing_size(filename, backing_file, backing_fmt, allow_unsafe_backing=False, typed_backing=False):
    path = _backing_target(filename, backing_file, typed_backing, allow_unsafe_backing)
    pseudo = path is backing_file and is_pseudo_filename(path)
    if not pseudo and not os.path.lexists(path):
        raise ImageNotFound("Could not open '%s': No such file or directory" % path,
                            hint=["Could not open backing image."])
    try:
        with open_image(path, backing_fmt, read_only=True, force_share=True,
                        allow_unsafe_backing=allow_unsafe_backing) as dev:
            return dev.size, dev.format_name
    except QimgError as e:
        message = e.message
        # bdrv_img_create() reports an error deeper in the chain without naming the backing file
        own = "Could not open '%s': Could not open backing file: " % path
        if message.startswith(own) or (pseudo and message.startswith("Could not open '%s': " % path)):
            message = message[len("Could not open '%s': " % path):]   # qemu names no json:/protocol text
        raise QimgError(message, hint=e.hint + ["Could not open backing image."])


class MissingBackingFormat(InvalidArgument):
    """qemu-img 7.2 refuses to probe a new image's backing file; its hint names what it detected
    (printed without a newline, as qemu does: ``hint_newline`` is False)."""

    hint_newline = False


def probe_backing(filename, backing_file, backing_fmt=None, open_backing=True, typed_backing=False):
    """The backing file qemu-img create would open: (virtual size, format), or None when it cannot
    be opened (create itself reports that error later)."""
    try:
        with open_image(_backing_target(filename, backing_file, typed_backing), backing_fmt, read_only=True,
                        force_share=True, open_backing=open_backing) as dev:
            return dev.size, dev.format_name
    except QimgError:
        return None


def plan_create(filename, fmt, size=None, options=None, backing_file=None, backing_fmt=None, unsafe=False,
                typed_backing=False):
    """qemu-img create's checks before it writes, in its order, and its "Formatting" line.

    ``options`` is the ``-o`` text. Returns {"options": dict for create_image(), "pairs": the
    (name, value) pairs of the "Formatting ..." line or None when qemu-img prints none (no size
    known yet), "types": {option: qemu type}}. Raises QimgError subclasses. typed_backing: the
    backing name is the user's own (-b on the command line): json: and protocol names are opened.
    """
    check_create_format(fmt)
    optdict = parse_option_string(options) if options is not None else {}
    if size is not None and optdict.get("size") is not None:
        raise InvalidArgument("The image size must be specified only once")
    if backing_file == "" or (backing_file is None and optdict.get("backing_file") == ""):
        raise InvalidArgument("Expected backing file name, got empty string")
    backing = backing_file or optdict.get("backing_file")
    if backing and fmt != "raw" and not (backing_fmt or optdict.get("backing_fmt")):
        # bdrv_img_create() opens the backing file first (unless -u): its open error wins
        detected = None if unsafe else _backing_size(filename, backing, None, typed_backing=typed_backing)[1]
        raise MissingBackingFormat("Backing file specified without backing format",
                                   hint=["Detected format of %s." % detected] if detected else [])
    pairs = resolved_options(fmt, size, optdict, backing_file, backing_fmt, filename=filename)
    # qemu-img prints "Formatting ..." once it knows the size (given, or read from the backing
    # file unless -u); without one the create fails and nothing is printed.
    line_size = size if size is not None else optdict.get("size")
    if line_size is None and backing and not unsafe:
        probed = probe_backing(filename, backing, backing_fmt or optdict.get("backing_fmt"),
                               typed_backing=typed_backing)
        if probed is not None:
            line_size = probed[0]
            pairs = resolved_options(fmt, line_size, optdict, backing_file, backing_fmt, filename=filename)
    types = dict((n, t) for n, t, _h in CREATE_OPTIONS[fmt])
    return {"options": optdict, "pairs": pairs if line_size is not None else None, "types": types}


def refuse_if_in_use(filename):
    """Raise ImageInUse when another process (e.g. QEMU) holds the existing file open for use."""
    try:
        fd = os.open(filename, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return  # nothing there we could disturb
    try:
        ImageLock(fd, filename, writable=True).release()
    finally:
        os.close(fd)


def data_file_options(o):
    """The data_file / data_file_raw create options for the qcow2 writers (validated before any file
    is touched: qemu-img's rules and messages)."""
    from ..formats.qcow2.create import check_data_file_options
    data_file = o.get("data_file")
    raw = bool(o.get("data_file_raw", False))
    check_data_file_options(2 if str(o.get("compat", "1.1")) in ("0.10", "v2") else 3, data_file, raw,
                            o.get("backing_file"))
    if data_file is None:
        return {}
    refuse_pseudo_filename(data_file, "Data file name")
    return {"data_file": data_file, "data_file_raw": raw}


def with_data_file(options, build, overwrite=True, image=None, cache=None):
    """build(data_node) with the external data file named in options, or build(None) without one.

    As qemu-img, the data file is (re)created empty; like every whole-file output here it is written
    to a temporary file and renamed into place when build() succeeds (before the image itself is, so
    a new image never names a data file that is not there yet). With overwrite=False an existing
    data file is refused, as an existing image is."""
    name = options.get("data_file")
    if name is None:
        return build(None)
    if image is not None and (name == image or (os.path.exists(name) and os.path.exists(image)
                                                and os.path.samefile(name, image))):
        # QEMU opens both for writing and its locks collide
        raise ImageInUse('Failed to get shared "resize" lock', hint=["Is another process using the image [%s]?" % name])
    if os.path.lexists(name):
        if not overwrite:
            raise ImageExists("Could not create '%s': File exists" % name)
        refuse_if_in_use(name)
    result = []
    atomic_output(name, lambda data_node: result.append(build(data_node)), cache=cache)
    return result[0]


def create_image(filename, fmt, size=None, options=None, backing_file=None, backing_fmt=None,
                 unsafe=False, overwrite=True, allow_unsafe_backing=False, cache=None, warn=None, secrets=None,
                 typed_backing=False):
    """Create a raw, qcow2 or luks image (see docs/engine-api.md).

    cache: the cache mode the new file is written with (qemu-img create's is writeback: the file
    is synced, then its directory, before this returns). warn(message) gets qemu's warnings
    (an extent size hint the file system refused). secrets: a crypto.secrets.SecretStore holding
    the secret `encrypt.key-secret` names. typed_backing: the backing name is the user's own (the
    command line's -b): a json: or protocol name is stored and opened as qemu-img does."""
    mode = cache_mode(cache)
    o = normalize_options(fmt, size, options, backing_file, backing_fmt, allow_encryption=True)
    hints = host_options(fmt, options)
    backing_file = o.get("backing_file")
    backing_fmt = o.get("backing_fmt")
    if backing_file and fmt == "raw":
        raise InvalidArgument("Backing file not supported for file format 'raw'")
    if backing_fmt and not backing_file:
        raise InvalidArgument("Backing format cannot be used without backing file")
    if backing_file and (backing_file == filename or (
            os.path.exists(filename) and os.path.realpath(full_backing_path(filename, backing_file))
            == os.path.realpath(filename))):
        raise InvalidArgument("Error: Trying to create an image with the same filename as the backing file")
    if backing_fmt and backing_fmt not in FORMATS:
        raise InvalidArgument("Unknown backing file format '%s'" % backing_fmt)
    size = o.get("size")
    if backing_file:
        _backing_target(filename, backing_file, typed_backing, allow_unsafe_backing)
        if not unsafe:
            bsize, bfmt = _backing_size(filename, backing_file, backing_fmt, allow_unsafe_backing, typed_backing)
            if size is None:
                size = bsize
            if backing_fmt is None:
                backing_fmt = bfmt
        elif size is None:
            raise InvalidArgument("Image creation needs a size parameter")
    if size is None:
        raise InvalidArgument("Image creation needs a size parameter")
    if os.path.lexists(filename):
        if not overwrite:
            raise ImageExists("Could not create '%s': File exists" % filename)
        refuse_if_in_use(filename)
    size = (size + 511) // 512 * 512  # whole sectors, as qemu-img
    if fmt == "qcow2":
        compression = o.get("compression_type", "zlib")  # zstd needs no library until data is compressed
        qcow2_options = dict(cluster_size=o.get("cluster_size", 65536), compat=o.get("compat", "1.1"),
                             refcount_bits=o.get("refcount_bits", 16),
                             lazy_refcounts=o.get("lazy_refcounts", False),
                             extended_l2=o.get("extended_l2", False),
                             preallocation=o.get("preallocation", "off"), compression_type=compression,
                             backing_file=backing_file, backing_fmt=backing_fmt)
        qcow2_options.update(data_file_options(o))
        encryption = qcow2_encryption(o, secrets)

        def build(node):
            with_data_file(qcow2_options,
                           lambda data_node: create_qcow2(node, size, data_node=data_node, encryption=encryption,
                                                          **qcow2_options),
                           overwrite, filename, cache=mode)
    elif fmt == "luks":
        from ..formats.luks import create_luks

        def build(node):
            create_luks(node, size, o, secrets, o.get("preallocation", "off"))
    else:
        def build(node):
            create_raw(node, size, o.get("preallocation", "off"))
    atomic_output(filename, build, cache=mode, warn=warn, **hints)
