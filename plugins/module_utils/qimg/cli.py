# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-img-compatible command line for the qimg engine (``bin/qimg``).

Parsing and printing only: every command's work is done by ``qimg.ops.*``. The syntax, the
output (human and JSON, including qemu's JSON key order), the messages and the exit codes follow
qemu-img 7.2. Busybox style: the program name in messages is the basename of argv[0], so a link
named ``qemu-img`` prints ``qemu-img: ...``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import itertools
import os
import sys
import time

__version__ = "0.1.0"

# qemu-img's fixed texts.
SIZE_HINT = ("You may use k, M, G, T, P or E suffixes for",
             "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")
INT64_MAX = (1 << 63) - 1

# Options the "file" protocol driver adds to "create -o help" when a filename is given
# (qemu's file-posix create options; the format driver's entries win on duplicates).
FILE_PROTOCOL_OPTIONS = [
    ("extent_size_hint", "size", "Extent size hint for the image file, 0 to disable"),
    ("nocow", "bool", "Turn off copy-on-write (valid only on btrfs)"),
    ("preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)"),
    ("size", "size", "Virtual disk size"),
]

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


class UsageError(Exception):
    """qemu-img's error_exit(): message, then the "Try ... --help" line, exit 1."""


class CommandError(Exception):
    """A plain error_report() followed by exit code ``code``; lines are printed one by one."""

    def __init__(self, lines, code=1, hint=None):
        if isinstance(lines, str):
            lines = [lines]
        super(CommandError, self).__init__(lines[0])
        self.lines = lines
        self.code = code
        self.hint = list(hint or [])  # qemu's error_printf() text: no prefix, printed verbatim


class HelpRequested(Exception):
    """-h/--help anywhere: print the help text and exit 0."""


# ---------------------------------------------------------------------------------------------
# GNU getopt_long, as qemu-img uses it (permutation, grouped short options, abbreviations,
# ':' mode, '--'), including which argv element it blames in its error messages.

class GetoptError(Exception):
    def __init__(self, kind, arg):
        super(GetoptError, self).__init__(arg)
        self.kind = kind        # "missing" or "unrecognized"
        self.arg = arg


class Getopt:
    """Iterate ``(opt, optarg)`` over argv like glibc's getopt_long (opterr off, ':' mode).

    ``shortopts`` is a getopt string without the leading ':' ('+' first means stop at the
    first non-option). ``longopts`` maps a long name to ``(takes_arg, key)``. After the loop
    ``self.argv[self.optind:]`` are the operands (argv is permuted like glibc does).
    """

    def __init__(self, argv, shortopts, longopts=None):
        self.argv = list(argv)
        self.require_order = shortopts.startswith("+")
        self.shortopts = shortopts.lstrip("+:")
        self.longopts = longopts or {}
        self.optind = 1
        self.nextchar = ""
        self.first_nonopt = self.last_nonopt = 1

    @staticmethod
    def _nonoption(arg):
        return not arg.startswith("-") or arg == "-"

    def _exchange(self):
        a, b, c = self.first_nonopt, self.last_nonopt, self.optind
        self.argv[a:c] = self.argv[b:c] + self.argv[a:b]
        self.first_nonopt += c - b
        self.last_nonopt = c

    def _blame(self):
        return self.argv[self.optind - 1]

    def __iter__(self):
        while True:
            item = self._next()
            if item is None:
                return
            yield item

    def _next(self):
        argv, argc = self.argv, len(self.argv)
        if not self.nextchar:
            self.last_nonopt = min(self.last_nonopt, self.optind)
            self.first_nonopt = min(self.first_nonopt, self.optind)
            if not self.require_order:
                if self.first_nonopt != self.last_nonopt and self.last_nonopt != self.optind:
                    self._exchange()
                elif self.last_nonopt != self.optind:
                    self.first_nonopt = self.optind
                while self.optind < argc and self._nonoption(argv[self.optind]):
                    self.optind += 1
                self.last_nonopt = self.optind
            if self.optind != argc and argv[self.optind] == "--":
                self.optind += 1
                if self.first_nonopt != self.last_nonopt and self.last_nonopt != self.optind:
                    self._exchange()
                elif self.first_nonopt == self.last_nonopt:
                    self.first_nonopt = self.optind
                self.last_nonopt = argc
                self.optind = argc
            if self.optind == argc:
                if self.first_nonopt != self.last_nonopt:
                    self.optind = self.first_nonopt
                return None
            if self._nonoption(argv[self.optind]):
                return None     # only reached with require_order
            arg = argv[self.optind]
            if arg.startswith("--"):
                return self._long(arg[2:])
            self.nextchar = arg[1:]
        return self._short()

    def _long(self, body):
        name, eq, value = body.partition("=")
        self.optind += 1
        self.nextchar = ""
        if name in self.longopts:
            match = name
        else:
            cands = [k for k in self.longopts if k.startswith(name)]
            # glibc accepts an abbreviation shared by entries that are all the same option.
            if not cands or len(set(self.longopts[k] for k in cands)) != 1:
                raise GetoptError("unrecognized", self._blame())
            match = cands[0]
        takes_arg, key = self.longopts[match]
        if eq:
            if not takes_arg:
                raise GetoptError("unrecognized", self._blame())
            return key, value
        if takes_arg:
            if self.optind >= len(self.argv):
                raise GetoptError("missing", self._blame())
            self.optind += 1
            return key, self.argv[self.optind - 1]
        return key, None

    def _short(self):
        c, self.nextchar = self.nextchar[0], self.nextchar[1:]
        pos = self.shortopts.find(c)
        if not self.nextchar:
            self.optind += 1
        if pos < 0 or c in ":;":
            raise GetoptError("unrecognized", self._blame())
        if self.shortopts[pos + 1:pos + 2] != ":":
            return c, None
        if self.nextchar:
            value, self.nextchar = self.nextchar, ""
            self.optind += 1
            return c, value
        if self.optind >= len(self.argv):
            raise GetoptError("missing", self._blame())
        self.optind += 1
        return c, self.argv[self.optind - 1]


def _getopt(argv, shortopts, longopts):
    """Run the getopt loop; return (list of (opt, arg), operands). Raises UsageError."""
    parser = Getopt(argv, shortopts, longopts)
    try:
        opts = list(parser)
    except GetoptError as err:
        if err.kind == "missing":
            raise UsageError("missing argument for option '%s'" % err.arg)
        raise UsageError("unrecognized option '%s'" % err.arg)
    return opts, parser.argv[parser.optind:]


# ---------------------------------------------------------------------------------------------
# Sizes, as qemu-img's cvtnum() / qemu_strtosz() read them.

_SUFFIX_SHIFT = {"b": 0, "k": 10, "m": 20, "g": 30, "t": 40, "p": 50, "e": 60}
_HEX = "0123456789abcdefABCDEF"


def _strtou64(text, base):
    """qemu_strtou64() on a prefix: (value or None on ERANGE, consumed, rest); None: no digits."""
    i = 0
    while i < len(text) and text[i] in " \t\n\v\f\r":
        i += 1
    start = i
    if i < len(text) and text[i] in "+-":
        i += 1
    if base == 16 and text[i:i + 2] in ("0x", "0X") and text[i + 2:i + 3] and text[i + 2] in _HEX:
        i += 2
    digits = "0123456789" if base == 10 else _HEX
    j = i
    while j < len(text) and text[j] in digits:
        j += 1
    if j == i:
        return None
    value = int(text[i:j], base)
    if value > (1 << 64) - 1:
        value = None
    return value, text[start:j], text[j:]


def strtosz(text):
    """qemu_strtosz() without an end pointer: (bytes, hexwarn).

    hexwarn is set for a hex number with a suffix (accepted, deprecated in qemu 7.2).
    Raises ValueError (qemu's EINVAL) or OverflowError (ERANGE).
    """
    parsed = _strtou64(text, 10)
    if parsed is None:
        raise ValueError(text)
    val, consumed, rest = parsed
    if val is None:
        if rest:
            raise ValueError(text)
        raise OverflowError(text)
    if "-" in consumed:
        raise ValueError(text)
    valf = 0
    hexwarn = False
    if val == 0 and rest[:1] in ("x", "X"):
        val, consumed, rest = _strtou64(text, 16)
        if val is None:
            if rest:
                raise ValueError(text)
            raise OverflowError(text)
        if rest[:1] == ".":
            raise ValueError(text)
        hexwarn = bool(rest[:1]) and rest[:1].lower() in _SUFFIX_SHIFT
    elif rest[:1] == ".":
        import re  # here, not at the top: re and enum cost a few ms of every start
        m = re.match(r"\.[0-9]*", rest)
        if m.group(0) == ".":
            rest = rest[1:]                 # "1.k": strtod() fails, the dot is skipped
        else:
            if re.match(r"[eE][+-]?[0-9]", rest[m.end():]):
                raise ValueError(text)      # an exponent makes the whole input invalid
            valf = int(float("0" + m.group(0)) * (1 << 64))
            rest = rest[m.end():]
    shift = _SUFFIX_SHIFT.get(rest[:1].lower()) if rest else None
    if shift is None:
        shift = 0
    else:
        rest = rest[1:]
    if shift == 0:
        if valf:
            raise ValueError(text)
        if rest:
            raise ValueError(text)
        return val, hexwarn
    mul = 1 << shift
    frac = valf * mul
    total = val * mul + (frac >> 64) + ((frac >> 63) & 1)   # round 0.5 up
    if total >= 1 << 64:
        raise OverflowError(text)
    if rest:
        raise ValueError(text)
    return total, hexwarn


def cvtnum(name, value, warn=None):
    """qemu-img's cvtnum(): a size in [0, INT64_MAX] or CommandError with qemu's wording."""
    try:
        res, hexwarn = strtosz(value)
        if hexwarn and warn is not None:
            warn("Using a multiplier suffix on hex numbers is deprecated: %s" % value)
    except OverflowError:
        res = None
    except ValueError:
        raise CommandError(["Invalid %s specified. %s" % (name, SIZE_HINT[0]), SIZE_HINT[1]])
    if res is None or res > INT64_MAX:
        raise CommandError("Invalid %s specified. Must be between 0 and %d." % (name, INT64_MAX))
    return res


# ---------------------------------------------------------------------------------------------
# qemu's JSON writer (qobject/json-writer.c, pretty mode) and QDict iteration order.

def tdb_hash(key):
    """qemu's QDict hash (tdb_hash of the key's UTF-8 bytes), before the modulo."""
    data = key.encode("utf-8", "surrogateescape")
    value = (0x238F13AF * len(data)) & 0xffffffff
    for i, byte in enumerate(data):
        value = (value + (byte << (i * 5 % 24))) & 0xffffffff
    return (1103515243 * value + 12345) & 0xffffffff


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


def _json_str(text):
    raw = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    out = ['"']
    for ch in raw:
        cp = ord(ch)
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\b":
            out.append("\\b")
        elif ch == "\f":
            out.append("\\f")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif cp > 0xFFFF:
            cp -= 0x10000
            out.append("\\u%04X\\u%04X" % (0xD800 + (cp >> 10), 0xDC00 + (cp & 0x3FF)))
        elif cp < 0x20 or cp >= 0x7F:
            out.append("\\u%04X" % cp)
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


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


# ---------------------------------------------------------------------------------------------
# Human output (block/qapi.c: bdrv_image_info_dump and friends).

def _human_size(n):
    from .sizes import human_size
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


# ---------------------------------------------------------------------------------------------
# Commands

def _split_opt_list(text):
    """qemu's get_opt_value() loop: items split at ',' with ',,' as a literal comma."""
    items, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if text[i + 1:i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    items.append("".join(cur))
    return items


def _valid_option_list(text):
    if not text or text.startswith(","):
        return False
    trailing = len(text) - len(text.rstrip(","))
    return trailing % 2 == 0


def _output_format(output):
    if output is None or output == "human":
        return "human"
    if output == "json":
        return "json"
    raise CommandError("--output must be used with human or json as argument.")


def _add_option_list(options, arg):
    """Accumulate repeated -o arguments as qemu-img does ("a=1" then "b=2" -> "a=1,b=2")."""
    if not _valid_option_list(arg):
        raise CommandError("Invalid option list: %s" % arg)
    return arg if options is None else "%s,%s" % (options, arg)


def cmd_create(argv, ctx):
    opts, args = _getopt(argv, ":F:b:f:ho:qu", {"help": (False, "h"), "object": (True, "object")})
    fmt, base_fmt, base, options, quiet, unsafe = "raw", None, None, None, False, False
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "F":
            base_fmt = arg
        elif opt == "b":
            base = arg
        elif opt == "f":
            fmt = arg
        elif opt == "o":
            options = _add_option_list(options, arg)
        elif opt == "q":
            quiet = True
        elif opt == "u":
            unsafe = True
        elif opt == "object":
            raise CommandError("--object is not supported")
    filename = args[0] if args else None
    if options is not None and any(i in ("help", "?") for i in _split_opt_list(options)):
        from .ops import create as ops_create
        if fmt not in ops_create.CREATE_OPTIONS:
            raise CommandError("Unknown file format '%s'" % fmt)
        ctx.out(format_option_help(fmt, ops_create.CREATE_OPTIONS[fmt], filename))
        return 0
    if not args:
        raise UsageError("Expecting image file name")
    size = None
    if len(args) > 1:
        size = cvtnum("image size", args[1], ctx.warn)
    if len(args) > 2:
        raise UsageError("Unexpected argument: %s" % args[2])
    from .ops import create as ops_create
    try:
        if fmt not in ops_create.CREATE_OPTIONS:
            raise CommandError("Unknown file format '%s'" % fmt)
        optdict = ops_create.parse_option_string(options) if options is not None else {}
        if size is not None and optdict.get("size") is not None:
            raise CommandError("The image size must be specified only once")
        backing = base or optdict.get("backing_file")
        if backing and fmt != "raw" and not (base_fmt or optdict.get("backing_fmt")):
            # qemu-img 7.2 refuses to probe; it names what it would have detected
            detected = None if unsafe else _backing_format(filename, backing)
            raise CommandError("Backing file specified without backing format",
                               hint=["Detected format of %s." % detected] if detected else [])  # no newline, as qemu
        pairs = ops_create.resolved_options(fmt, size, optdict, base, base_fmt, filename=filename)
        # qemu-img prints "Formatting ..." once it knows the size (given, or read from the
        # backing file unless -u); without one the create fails and nothing is printed.
        line_size = size if size is not None else optdict.get("size")
        backing = base or optdict.get("backing_file")
        if line_size is None and backing and not unsafe:
            line_size = _backing_size(filename, backing, base_fmt or optdict.get("backing_fmt"))
            if line_size is not None:
                pairs = ops_create.resolved_options(fmt, line_size, optdict, base, base_fmt, filename=filename)
        if not quiet and line_size is not None:
            types = dict((n, t) for n, t, _h in ops_create.CREATE_OPTIONS[fmt])
            ctx.out(format_formatting_line(filename, fmt, pairs, types))
        ops_create.create_image(filename, fmt, size=size, options=optdict, backing_file=base,
                                backing_fmt=base_fmt, unsafe=unsafe)
    except Exception as err:
        _reraise_with_prefix(err, filename)
    return 0


def _backing_size(filename, backing, backing_fmt):
    """Virtual size of the backing file qemu-img would open, or None (create reports the error)."""
    from .errors import QimgError
    from .image import full_backing_path, open_image
    try:
        with open_image(full_backing_path(filename, backing), backing_fmt, read_only=True,
                        force_share=True) as dev:
            return dev.size
    except QimgError:
        return None


def _backing_format(filename, backing):
    """The probed format of the backing file, or None when it cannot be opened."""
    from .errors import QimgError
    from .image import full_backing_path, open_image
    try:
        with open_image(full_backing_path(filename, backing), None, read_only=True, force_share=True,
                        open_backing=False) as dev:
            return dev.format_name
    except QimgError:
        return None


def _reraise_with_prefix(err, filename):
    """qemu-img create reports bdrv_img_create() errors as "FILE: message"."""
    from .errors import QimgError
    hint = []
    if isinstance(err, CommandError):
        msg = err.lines[0]
        hint = err.hint
    elif isinstance(err, QimgError):
        msg = err.message
        hint = [h + "\n" for h in err.hint]
    else:
        raise err
    if not msg.startswith(filename + ": "):
        msg = "%s: %s" % (filename, msg)
    raise CommandError(msg, hint=hint)


def cmd_info(argv, ctx):
    longopts = {"help": (False, "h"), "format": (True, "f"), "output": (True, "output"),
                "backing-chain": (False, "backing-chain"), "object": (True, "object"),
                "image-opts": (False, "image-opts"), "force-share": (False, "U")}
    opts, args = _getopt(argv, ":f:hU", longopts)
    fmt, output, chain, share = None, None, False, False
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "output":
            output = arg
        elif opt == "backing-chain":
            chain = True
        elif opt == "U":
            share = True
        elif opt in ("object", "image-opts"):
            raise CommandError("--%s is not supported" % opt)
    if len(args) != 1:
        raise UsageError("Expecting one image file name")
    output = _output_format(output)
    from .ops import info as ops_info
    data = ops_info.image_info(args[0], fmt=fmt, backing_chain=chain, force_share=share)
    ctx.out(format_info(data, output))
    return 0


def cmd_map(argv, ctx):
    longopts = {"help": (False, "h"), "format": (True, "f"), "output": (True, "output"),
                "object": (True, "object"), "image-opts": (False, "image-opts"),
                "force-share": (False, "U"), "start-offset": (True, "s"), "max-length": (True, "l")}
    opts, args = _getopt(argv, ":f:hU", longopts)
    fmt, output, share, start, max_length = None, None, False, 0, None
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "output":
            output = arg
        elif opt == "U":
            share = True
        elif opt == "s":
            start = cvtnum("start offset", arg, ctx.warn)
        elif opt == "l":
            max_length = cvtnum("max length", arg, ctx.warn)
        elif opt in ("object", "image-opts"):
            raise CommandError("--%s is not supported" % opt)
    if len(args) != 1:
        raise UsageError("Expecting one image file name")
    output = _output_format(output)
    from .ops import map as ops_map
    entries = ops_map.iter_map(args[0], fmt=fmt, start_offset=start, max_length=max_length,
                               force_share=share)
    error = write_map(ctx.out, entries, output, start)
    if error:
        raise CommandError(error)
    return 0


# ---------------------------------------------------------------------------------------------
# convert, compare, measure

MAX_BUF_SECTORS = 32768             # qemu-img convert's largest -S and buffer, in sectors
IO_BUF_SECTORS = 4096               # its default copy step for data (2 MiB)
REQUEST_MAX_SECTORS = (2 ** 31 - 1) >> 9
SPARSE_HINT = ("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to %d. "
               "Select 0 to disable sparse detection (fully allocates output)." % (MAX_BUF_SECTORS * 512))


def _float32(value):
    import struct
    return struct.unpack("f", struct.pack("f", value))[0]


class QemuProgress:
    """qemu's util/qemu-progress.c in its simple mode: "    (NN.NN/100%)\\r" lines, "\\n" at the end."""

    def __init__(self, enabled, min_skip, out):
        self.enabled = enabled
        self.min_skip = _float32(min_skip)
        self.out = out
        self.current = _float32(0.0)
        self.last_print = _float32(0.0)

    def print_(self, delta, maximum):
        if maximum == 0:
            current = _float32(delta)
        else:
            current = _float32(self.current + _float32(_float32(delta) / 100) * maximum)
        if current > 100:
            current = _float32(100.0)
        self.current = current
        if (current > _float32(self.last_print + self.min_skip) or current < _float32(self.last_print - self.min_skip)
                or current == 0 or current == 100):
            self.last_print = current
            if self.enabled:
                self.out("    (%3.2f/100%%)\r" % current)

    def end(self):
        if self.enabled:
            self.out("\n")


def _status_runs(dev, offset, length):
    """[(start, end, zero)]: the extents one qemu block-status call after another would report."""
    from .image import chain_block_status
    split = None
    if dev.format_name == "qcow2":
        cs = getattr(dev, "cluster_size", 65536)
        split = cs * (cs // (16 if getattr(dev, "extended_l2", False) else 8))   # one L2 table
    runs = []
    for e in chain_block_status(dev, offset, length) if length else []:
        s, t = e.start, e.start + e.length
        kind = (e.zero, e.present, e.depth)
        while s < t:
            u = t if split is None else min(t, (s // split + 1) * split)
            host = None if e.offset is None else e.offset + (s - e.start)
            if runs:
                ps, pe, pk, ph = runs[-1]
                same = pe == s and pk == kind and (split is None or s % split)
                if same and not e.zero:     # data runs must be contiguous in the file too
                    same = ph is not None and host is not None and ph + (s - ps) == host
                if same:
                    runs[-1] = (ps, u, pk, ph)
                    s = u
                    continue
            runs.append((s, u, kind, host))
            s = u
    return [(r[0], r[1], r[2][0]) for r in runs]


def convert_progress_steps(devs, min_sparse, compressed=False, cluster_sectors=128):
    """[(start byte, percent)] qemu-img convert -p prints on its copy pass (convert_iteration_sectors)."""
    sizes = [(d.size + 511) // 512 for d in devs]
    total = sum(sizes)
    aligns = []
    runs = []
    for dev in devs:
        cs = getattr(dev, "cluster_size", 0) if dev.format_name == "qcow2" else 0
        aligns.append(max(1, cs // 512))
        runs.append(_status_runs(dev, 0, dev.size))
    state = {"next": 0, "status": None}
    buf = cluster_sectors if compressed else IO_BUF_SECTORS

    def iteration(sector):
        src, base = 0, 0
        while sector - base >= sizes[src]:
            base += sizes[src]
            src += 1
        n = min(total - sector, REQUEST_MAX_SECTORS)
        if state["next"] <= sector:
            off = (sector - base) * 512
            zero, end = True, off + n * 512
            for s, e, z in runs[src]:
                if s <= off < e:
                    zero, end = z, e
                    break
            count = min(end, off + n * 512, devs[src].size) - off
            n = max(1, -(-count // 512))
            tail = (sector - base + n) % aligns[src]
            if n > tail:
                n -= tail
            state["status"] = "zero" if zero else "data"
            state["next"] = sector + n
        n = min(n, state["next"] - sector)
        if state["status"] == "data":
            n = min(n, buf)
        if compressed:
            if n < cluster_sectors:
                n = min(cluster_sectors, total - sector)
                state["status"] = "data"
            else:
                n = n // cluster_sectors * cluster_sectors
        return n

    def walk(copy_pass):
        out, sector = [], 0
        state["next"] = 0
        while sector < total:
            n = iteration(sector)
            if copy_pass and not min_sparse and state["status"] == "zero":
                n = min(n, buf)
            if state["status"] == "data" or (not min_sparse and state["status"] == "zero"):
                out.append((sector, n))
            sector += n
        return out

    allocated = sum(n for _s, n in walk(False))
    steps, done = [], 0
    for sector, n in walk(True):
        done += n
        steps.append((sector * 512, 100.0 * done / allocated))
    return steps


def _progress_printer(mode, ctx, prog, devs, min_sparse, compressed, cluster_size=65536):
    """A progress(done, total, elapsed) callback for the engine, and a finish(ok) function."""
    import json
    if mode == "json":
        last = {"done": None, "total": sum(d.size for d in devs), "elapsed": 0.0}

        def emit(done, total, elapsed):
            last.update(done=done, total=total, elapsed=elapsed)
            ctx.out(json.dumps({"done": done, "total": total, "elapsed": round(elapsed, 6)}) + "\n")

        def finish_json(ok):
            if ok and last["done"] != last["total"]:
                emit(last["total"], last["total"], last["elapsed"])
        return emit, finish_json
    steps = convert_progress_steps(devs, min_sparse, compressed, cluster_size // 512) if prog.enabled else []
    pending = [0]

    def report(done, _total, _elapsed):
        while pending[0] < len(steps) and steps[pending[0]][0] < done:
            prog.print_(steps[pending[0]][1], 0)
            pending[0] += 1

    def finish(ok):
        if ok:
            report(float("inf"), None, None)
    return report, finish


def _snapshot_opts(text):
    """convert/measure -l: qemu parses "snapshot.*" params; returns the text (validated)."""
    if text.startswith("snapshot."):
        for item in _split_opt_list(text):
            key = item.partition("=")[0]
            if key not in ("snapshot.id", "snapshot.name"):
                raise CommandError(["Invalid parameter '%s'" % key, "Failed in parsing snapshot param '%s'" % text])
    return text


CACHE_MODES = ("none", "off", "writeback", "writethrough", "directsync", "unsafe")


def _open_sources(names, fmt, share, snapshot):
    """Open the sources as qemu-img does before creating the target; QimgError propagates."""
    from .image import open_image
    from .ops.convert import parse_snapshot_param
    devs = []
    try:
        for name in names:
            devs.append(open_image(name, fmt, read_only=True, force_share=share))
        if snapshot is not None:
            if len(names) > 1 and not snapshot.startswith("snapshot."):
                raise CommandError("No support for concatenating multiple snapshot")
            snap_id, snap_name = parse_snapshot_param(snapshot)
            dev = devs[0]
            if not hasattr(dev, "activate_snapshot"):
                raise CommandError("Failed to load snapshot: Can't find snapshot")
            if snap_id is None:
                from .errors import ImageNotFound
                try:
                    dev.activate_snapshot(snapshot_id=snap_name)
                except ImageNotFound:
                    dev.activate_snapshot(snapshot_id=None, name=snap_name)
            else:
                dev.activate_snapshot(snapshot_id=snap_id, name=snap_name)
        return devs
    except BaseException:
        for dev in devs:
            dev.close()
        raise


def cmd_convert(argv, ctx):
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts"),
                "force-share": (False, "U"), "target-image-opts": (False, "target-image-opts"),
                "salvage": (False, "salvage"), "target-is-zero": (False, "target-is-zero"),
                "bitmaps": (False, "bitmaps"), "skip-broken-bitmaps": (False, "skip-broken-bitmaps"),
                "progress": (True, "progress")}
    opts, args = _getopt(argv, ":hf:O:B:Cco:l:S:pt:T:qnm:WUr:F:", longopts)
    fmt, out_fmt, base, base_fmt, options, snapshot = None, None, None, None, None, None
    cache, src_cache, min_sparse, explicit_sparse = "unsafe", "writeback", 4096, False
    flags = set()
    progress = None
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "O":
            out_fmt = arg
        elif opt == "B":
            base = arg
        elif opt == "F":
            base_fmt = arg
        elif opt == "o":
            options = _add_option_list(options, arg)
        elif opt == "l":
            snapshot = _snapshot_opts(arg)
        elif opt == "S":
            value = cvtnum("buffer size for sparse output", arg, ctx.warn)
            if value % 512 or value // 512 > MAX_BUF_SECTORS:
                raise CommandError(SPARSE_HINT)
            min_sparse, explicit_sparse = value, True
        elif opt == "p":
            progress = progress or "human"
        elif opt == "progress":
            if arg not in ("human", "json"):
                raise CommandError("--progress must be used with human or json as argument.")
            progress = arg
        elif opt == "t":
            cache = arg
        elif opt == "T":
            src_cache = arg
        elif opt == "m":
            try:
                count = int(arg, 0)
            except ValueError:
                count = 0
            if not 1 <= count <= 16:
                raise CommandError("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16")
        elif opt == "r":
            cvtnum("rate limit", arg, ctx.warn)
        else:
            flags.add(opt)      # C c q n W U object image-opts target-image-opts salvage target-is-zero bitmaps ...
    out_fmt = out_fmt or "raw"
    quiet, skip_create, copy_range = "q" in flags, "n" in flags, "C" in flags
    checks = [("skip-broken-bitmaps" in flags and "bitmaps" not in flags, "Use of --skip-broken-bitmaps requires --bitmaps"),
              ("c" in flags and copy_range, "Cannot enable copy offloading when -c is used"),
              (explicit_sparse and copy_range, "Cannot enable copy offloading when -S is used"),
              (copy_range and "salvage" in flags, "Cannot use copy offloading in salvaging mode"),
              ("target-image-opts" in flags and not skip_create, "--target-image-opts requires use of -n flag"),
              (skip_create and options is not None, "-o has no effect when skipping image creation"),
              ("target-is-zero" in flags and not skip_create, "--target-is-zero requires use of -n flag")]
    for failed, message in checks:
        if failed:
            raise CommandError(message)
    for name in ("object", "image-opts", "target-image-opts"):
        if name in flags:
            raise CommandError("--%s is not supported" % name)
    out_filename = args[-1] if len(args) >= 2 else None
    from .ops import create as ops_create
    if options is not None and any(i in ("help", "?") for i in _split_opt_list(options)):
        if out_fmt not in ops_create.CREATE_OPTIONS:
            raise CommandError("Unknown file format '%s'" % out_fmt)
        ctx.out(format_option_help(out_fmt, ops_create.CREATE_OPTIONS[out_fmt], out_filename))
        return 0
    if len(args) < 2:
        raise CommandError("Must specify image file name")
    if src_cache not in CACHE_MODES:
        raise CommandError("Invalid source cache option: %s" % src_cache)
    if quiet:
        progress = None
    prog = QemuProgress(progress == "human", 1.0, ctx.out)
    prog.print_(0, 100)
    ok = False
    try:
        code = _convert(ctx, args[:-1], out_filename, fmt, out_fmt, base, base_fmt, options, snapshot, cache,
                        min_sparse, flags, (progress, prog))
        ok = code == 0
        return code
    finally:
        if ok:
            prog.print_(100, 0)
        prog.end()


def _convert(ctx, sources, out_filename, fmt, out_fmt, base, base_fmt, options, snapshot, cache, min_sparse, flags,
             progress):
    from .errors import QimgError
    from .ops import create as ops_create
    from .ops import convert as ops_convert
    devs = _open_sources(sources, fmt, "U" in flags, snapshot)
    try:
        total = sum((d.size + 511) // 512 * 512 for d in devs)
        skip_create = "n" in flags
        optdict, typed = {}, {}
        if not skip_create:
            if out_fmt not in ops_create.CREATE_OPTIONS:
                raise CommandError("Unknown file format '%s'" % out_fmt)
            optdict = ops_create.parse_option_string(options) if options is not None else {}
            optdict.pop("size", None)       # qemu-img sets the size from the sources
            typed = ops_create.normalize_options(out_fmt, None, optdict)
            if out_fmt == "raw" and base:
                raise CommandError("Backing file not supported for file format 'raw'")
            if out_fmt == "raw" and base_fmt:
                raise CommandError("Backing file format not supported for file format 'raw'")
        backing = base or optdict.get("backing_file")
        if "target-is-zero" in flags and backing:
            # qemu-img 7.2 reports this and exits 0 without converting
            ctx.err("%s: Cannot use --target-is-zero when the destination image has a backing file\n" % ctx.prog)
            return 0
        if len(sources) > 1 and backing:
            raise CommandError("Having a backing file for the target makes no sense when concatenating "
                               "multiple input images")
        if not skip_create and backing and not (base_fmt or optdict.get("backing_fmt")):
            raise CommandError("Use of backing file requires explicit backing format")
        if "c" in flags:
            if not skip_create and out_fmt != "qcow2":
                raise CommandError("Compression not supported for this file format")
            if optdict.get("preallocation", "off") != "off":
                raise CommandError("Compression and preallocation not supported at the same time")
        if "bitmaps" in flags and len(sources) > 1:
            raise CommandError("Copying bitmaps only possible with single source")
        if "bitmaps" in flags and devs[0].format_name != "qcow2":
            raise CommandError("Source lacks bitmap support")
        if not skip_create and out_fmt == "qcow2":
            _check_qcow2_create(out_filename, total, typed, backing, base_fmt)
        if cache not in CACHE_MODES:
            raise CommandError("Invalid cache option: %s" % cache)
        if backing and not skip_create:
            _check_backing(out_filename, backing, base_fmt or optdict.get("backing_fmt"))
        if "bitmaps" in flags:
            if skip_create or out_fmt != "qcow2":
                raise CommandError("Format driver '%s' does not support bitmaps" % out_fmt)
            raise CommandError("--bitmaps is not supported yet")
        report, finish = (None, None)
        if progress[0]:
            report, finish = _progress_printer(progress[0], ctx, progress[1], devs, min_sparse, "c" in flags,
                                               typed.get("cluster_size", 65536))
    finally:
        for dev in devs:
            dev.close()
    try:
        ops_convert.convert(sources, out_filename, src_fmt=fmt, out_fmt=out_fmt, options=optdict,
                            compress="c" in flags, sparse_size=min_sparse, snapshot=snapshot,
                            backing_file=base, backing_fmt=base_fmt, target_exists="n" in flags,
                            target_is_zero="target-is-zero" in flags, progress=report,
                            force_share="U" in flags)
    except QimgError as err:
        if err.message == "Output image is too small":
            raise CommandError("output file is smaller than input file")
        if err.message.startswith("Could not create '"):
            raise CommandError("%s: error while converting %s: %s" % (out_filename, out_fmt, err.message),
                               hint=err.hint)
        raise
    if finish is not None:
        finish(True)
    return 0


def _check_qcow2_create(filename, size, optdict, backing, backing_fmt):
    """qemu-img convert's bdrv_create() errors: "OUT: error while converting qcow2: MESSAGE"."""
    from .errors import InvalidArgument
    from .formats.qcow2.create import plan_header
    o = dict(optdict)
    try:
        plan_header(size, cluster_size=o.get("cluster_size", 65536), compat=o.get("compat", "1.1"),
                    refcount_bits=o.get("refcount_bits", 16), lazy_refcounts=o.get("lazy_refcounts", False),
                    extended_l2=o.get("extended_l2", False), preallocation=o.get("preallocation", "off"),
                    compression_type=o.get("compression_type", "zlib"), backing_file=backing,
                    backing_fmt=backing_fmt)
    except InvalidArgument as err:
        raise CommandError("%s: error while converting qcow2: %s" % (filename, err.message), hint=err.hint)


def _check_backing(filename, backing, backing_fmt):
    from .errors import QimgError
    from .image import full_backing_path, open_image
    try:
        with open_image(full_backing_path(filename, backing), backing_fmt, read_only=True, force_share=True):
            pass
    except QimgError as err:
        message = err.message
        twice = "Could not open '%s': " % backing
        if message.startswith(twice + twice):
            message = message[len(twice):]
        raise CommandError("Could not open '%s': Could not open backing file: %s" % (filename, message),
                           hint=err.hint)


def cmd_compare(argv, ctx):
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts"),
                "force-share": (False, "U")}
    opts, args = _getopt(argv, ":hf:F:T:pqsU", longopts)
    fmt1 = fmt2 = None
    cache = "writeback"
    flags = set()
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt1 = arg
        elif opt == "F":
            fmt2 = arg
        elif opt == "T":
            cache = arg
        elif opt in ("object", "image-opts"):
            raise CommandError("--%s is not supported" % opt)
        else:
            flags.add(opt)
    quiet = "q" in flags
    if len(args) != 2:
        raise UsageError("Expecting two image file names")
    prog = QemuProgress("p" in flags and not quiet, 2.0, ctx.out)
    try:
        return _compare(ctx, args, fmt1, fmt2, cache, flags, prog)
    finally:
        prog.end()


def _compare(ctx, args, fmt1, fmt2, cache, flags, prog):
    from .errors import QimgError
    from .image import open_image
    from .ops import compare as ops_compare
    quiet = "q" in flags

    def say(text):
        if not quiet:
            ctx.out(text)
    if cache not in CACHE_MODES:
        raise CommandError("Invalid source cache option: %s" % cache, code=2)
    devs = []
    try:
        for name, fmt in ((args[0], fmt1), (args[1], fmt2)):
            try:
                devs.append(open_image(name, fmt, read_only=True, force_share="U" in flags))
            except QimgError as err:
                raise CommandError(err.message, code=2, hint=[h + "\n" for h in err.hint])
        sizes = [d.size for d in devs]
        prog.print_(0, 100)
        try:
            res = ops_compare.compare_images(args[0], args[1], fmt1=fmt1, fmt2=fmt2, strict="s" in flags,
                                             force_share="U" in flags)
        except QimgError as err:
            raise CommandError(err.message, code=4, hint=[h + "\n" for h in err.hint])
        common = min(sizes)
        result, offset = res["result"], res.get("offset")
        if result == ops_compare.SIZE_MISMATCH:
            say("Strict mode: Image size mismatch!\n")
            return 1
        _compare_progress(prog, devs, offset, False)
        if result == ops_compare.STATUS_MISMATCH:
            say("Strict mode: Offset %d block status mismatch!\n" % offset)
            return 1
        if result == ops_compare.CONTENT_MISMATCH and offset < common:
            say("Content mismatch at offset %d!\n" % offset)
            return 1
        if sizes[0] != sizes[1]:
            say("Warning: Image size mismatch!\n")
            _compare_progress(prog, devs, offset, True)
        if result == ops_compare.CONTENT_MISMATCH:
            say("Content mismatch at offset %d!\n" % offset)
            return 1
        say("Images are identical.\n")
        return 0
    finally:
        for dev in devs:
            dev.close()


def _compare_progress(prog, devs, stop, tail):
    """The progress qemu-img compare prints on its way (chunk by chunk, 2 MiB at most for data):
    over the common part, or (tail=True) over the larger image's excess. Stops at offset ``stop``."""
    sizes = [d.size for d in devs]
    base, common = max(sizes), min(sizes)
    buf = IO_BUF_SECTORS * 512

    def step(chunk):
        prog.print_(_float32(_float32(_float32(chunk) / _float32(base)) * 100), 100)

    if not prog.enabled:
        return
    if tail:
        over = devs[0] if sizes[0] > sizes[1] else devs[1]
        for s, e, zero in _status_runs(over, common, base - common):
            pos = s
            while pos < e:
                chunk = e - pos if zero else min(e - pos, buf)
                if stop is not None and pos <= stop < pos + chunk:
                    return
                pos += chunk
                step(chunk)
        return
    runs = [_status_runs(d, 0, common) for d in devs]
    offset, idx = 0, [0, 0]
    while offset < common:
        ends, zeros = [], []
        for k in (0, 1):
            while runs[k][idx[k]][1] <= offset:
                idx[k] += 1
            ends.append(runs[k][idx[k]][1])
            zeros.append(runs[k][idx[k]][2])
        chunk = min(ends) - offset
        if not (zeros[0] and zeros[1]):
            chunk = min(chunk, buf)
        if stop is not None and offset <= stop < offset + chunk:
            return
        offset += chunk
        step(chunk)


class _LetterGetopt(Getopt):
    """Getopt that remembers the short option letter it looked at last (for glibc's own messages)."""

    letter = ""

    def _short(self):
        self.letter = self.nextchar[:1]
        return Getopt._short(self)


def _measure_getopt(argv, ctx):
    """measure parses without ':' in 7.2: glibc prints its own message, then qemu-img shows the help."""
    longopts = {"help": (False, "h"), "image-opts": (False, "image-opts"), "object": (True, "object"),
                "output": (True, "output"), "size": (True, "size"), "force-share": (False, "U")}
    parser = _LetterGetopt(argv, "hf:O:o:l:U", longopts)
    opts = []
    try:
        for item in parser:
            opts.append(item)
    except GetoptError as err:
        if err.arg.startswith("--"):
            text = ("option '%s' requires an argument" % err.arg if err.kind == "missing"
                    else "unrecognized option '%s'" % err.arg)
        else:
            text = ("option requires an argument -- '%s'" % parser.letter if err.kind == "missing"
                    else "invalid option -- '%s'" % parser.letter)
        ctx.err("%s: %s\n" % (argv[0], text))
        opts.append(("h", None))
    return opts, parser.argv[parser.optind:]


def cmd_measure(argv, ctx):
    opts, args = _measure_getopt(argv, ctx)
    fmt, out_fmt, options, snapshot, size, output = None, "raw", None, None, None, None
    share = False
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "O":
            out_fmt = arg
        elif opt == "o":
            options = _add_option_list(options, arg)
        elif opt == "l":
            snapshot = _snapshot_opts(arg)
        elif opt == "U":
            share = True
        elif opt == "output":
            output = _output_format(arg)
        elif opt == "size":
            size = cvtnum("image size", arg, ctx.warn)
        elif opt in ("object", "image-opts"):
            raise CommandError("--%s is not supported" % opt)
    output = output or "human"
    if len(args) > 1:
        raise CommandError("At most one filename argument is allowed.")
    filename = args[0] if args else None
    if filename is None and (fmt is not None or snapshot is not None):
        raise CommandError("--image-opts, -f, and -l require a filename argument.")
    if filename is not None and size is not None:
        raise CommandError("--size N cannot be used together with a filename.")
    if filename is None and size is None:
        raise CommandError("Either --size N or one filename must be specified.")
    if filename is not None:
        _open_sources([filename], fmt, share, snapshot)[0].close()
    from .errors import InvalidArgument
    from .ops import create as ops_create
    from .ops import measure as ops_measure
    if out_fmt not in ops_create.CREATE_OPTIONS:
        raise CommandError("Unknown file format '%s'" % out_fmt)
    optdict = {}
    if options is not None:
        try:
            for item in _split_opt_list(options):
                if item and "=" not in item:
                    raise InvalidArgument("Invalid parameter '%s'" % item)
            optdict = ops_create.parse_option_string(options)
            typed = ops_create.normalize_options(out_fmt, None, optdict)
        except InvalidArgument as err:
            raise CommandError([err.message, "Invalid options for file format '%s'" % out_fmt])
    else:
        typed = {}
    if size is not None:
        optdict.pop("size", None)
    if out_fmt == "qcow2":
        _check_measure_qcow2(typed)
    res = ops_measure.measure(filename=filename, size=size, fmt=fmt, out_fmt=out_fmt, options=optdict,
                              snapshot=snapshot, force_share=share)
    ctx.out(format_measure(res, output))
    return 0


def _check_measure_qcow2(optdict):
    """qcow2_measure()'s option errors, reported without a prefix."""
    from .errors import InvalidArgument
    from .formats.qcow2.create import plan_header
    o = optdict
    try:
        plan_header(0, cluster_size=o.get("cluster_size", 65536), compat=o.get("compat", "1.1"),
                    refcount_bits=o.get("refcount_bits", 16), lazy_refcounts=o.get("lazy_refcounts", False),
                    extended_l2=o.get("extended_l2", False), preallocation=o.get("preallocation", "off"),
                    compression_type=o.get("compression_type", "zlib"))
    except InvalidArgument as err:
        raise CommandError(err.message, hint=err.hint)


def format_measure(res, output):
    """``measure`` stdout: qemu's human lines or its JSON (BlockMeasureInfo in QDict order)."""
    if output == "json":
        data = dict((k, res[k]) for k in ("required", "fully-allocated", "bitmaps") if k in res)
        return qemu_json(data) + "\n"
    text = "required size: %d\nfully allocated size: %d\n" % (res["required"], res["fully-allocated"])
    if "bitmaps" in res:
        text += "bitmaps size: %d\n" % res["bitmaps"]
    return text


# ---------------------------------------------------------------------------------------------
# check

# ImageCheck's members (qapi/block-core.json) in QAPI order: qemu inserts them in this order.
CHECK_KEYS = ("filename", "format", "check-errors", "image-end-offset", "corruptions", "leaks",
              "corruptions-fixed", "leaks-fixed", "total-clusters", "allocated-clusters",
              "fragmented-clusters", "compressed-clusters")
# Optional members qemu leaves out when they are zero.
CHECK_OPTIONAL = CHECK_KEYS[3:]
# The qcow2 driver's message when -r leaks meets a referenced cluster with refcount 0.
# raw_open()'s warning for a probed raw image opened read-write (no program name prefix).
PROBED_RAW_WARNING = ("WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                      "         Automatically detecting the format is dangerous for raw images, "
                      "write operations on block 0 will be restricted.\n"
                      "         Specify the 'raw' format explicitly to remove the restrictions.\n")


def _iter_getopt(argv, shortopts, longopts):
    """(opt, arg) pairs in argv order; a getopt error is raised when the loop reaches it, as in qemu."""
    parser = Getopt(argv, shortopts, longopts)
    items = iter(parser)
    while True:
        try:
            item = next(items)
        except StopIteration:
            break
        except GetoptError as err:
            if err.kind == "missing":
                raise UsageError("missing argument for option '%s'" % err.arg)
            raise UsageError("unrecognized option '%s'" % err.arg)
        yield item
    yield None, parser.argv[parser.optind:]


def cmd_check(argv, ctx):
    longopts = {"help": (False, "h"), "format": (True, "f"), "repair": (True, "r"), "output": (True, "output"),
                "object": (True, "object"), "image-opts": (False, "image-opts"), "force-share": (False, "U")}
    fmt, output, cache, repair, quiet, share = None, None, "writeback", None, False, False
    args = []
    for opt, arg in _iter_getopt(argv, ":hf:r:T:qU", longopts):
        if opt is None:
            args = arg
        elif opt == "h":
            raise HelpRequested()
        elif opt == "f":
            fmt = arg
        elif opt == "r":
            if arg not in ("leaks", "all"):
                raise UsageError("Unknown option value for -r (expecting 'leaks' or 'all'): %s" % arg)
            repair = arg
        elif opt == "output":
            output = arg
        elif opt == "T":
            cache = arg
        elif opt == "q":
            quiet = True
        elif opt == "U":
            share = True
        elif opt in ("object", "image-opts"):
            raise CommandError("--%s is not supported" % opt)
    if len(args) != 1:
        raise UsageError("Expecting one image file name")
    filename = args[0]
    output = _output_format(output)
    if cache not in CACHE_MODES:
        raise CommandError("Invalid source cache option: %s" % cache)
    from .image import open_image
    from .ops import check as ops_check
    # qemu-img opens the whole chain first: a missing backing file fails the check
    with open_image(filename, fmt, read_only=True, force_share=True) as dev:
        probed_raw = fmt is None and dev.format_name == "raw"
    if repair is not None and probed_raw:
        ctx.err(PROBED_RAW_WARNING % filename)
    try:
        res = ops_check.check_image(filename, fmt=fmt, repair=repair, force_share=share)
    except ops_check.CheckNotSupported as err:
        raise CommandError(err.message, code=ops_check.EXIT_UNSUPPORTED)
    if res["messages"]:
        ctx.err("".join(line + "\n" for line in res["messages"]))
    if res.get("failed"):
        # qemu's check stops (e.g. -EIO when -r leaks meets a cluster that needs a rebuild):
        # bdrv_check() fails and no figures are printed
        raise CommandError("Check failed: %s" % res["failed"])
    if not quiet:
        ctx.out(format_check(res, output))
    if res["check-errors"]:
        raise CommandError("Check failed")
    return res["exit-code"]


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


COMMANDS = {"check": cmd_check, "create": cmd_create, "info": cmd_info, "map": cmd_map, "convert": cmd_convert,
            "compare": cmd_compare, "measure": cmd_measure}

COMMAND_SYNTAX = [
    "check [--object objectdef] [--image-opts] [-q] [-f fmt] [--output=ofmt] [-r [leaks | all]] [-T src_cache] [-U] filename",
    "compare [--object objectdef] [--image-opts] [-f fmt] [-F fmt] [-T src_cache] [-p] [-q] [-s] [-U] filename1 filename2",
    "convert [--object objectdef] [--image-opts] [--target-image-opts] [--target-is-zero] [--bitmaps] [-U] [-C] [-c] "
    "[-p] [-q] [-n] [-f fmt] [-t cache] [-T src_cache] [-O output_fmt] [-B backing_file [-F backing_fmt]] [-o options] "
    "[-l snapshot_param] [-S sparse_size] [-r rate_limit] [-m num_coroutines] [-W] [--salvage] "
    "filename [filename2 [...]] output_filename",
    "create [-q] [-f fmt] [-b backing_file [-F backing_fmt]] [-u] [-o options] filename [size]",
    "info [-f fmt] [--output=ofmt] [--backing-chain] [-U] filename",
    "map [-f fmt] [--start-offset=offset] [--max-length=len] [--output=ofmt] [-U] filename",
    "measure [--output=ofmt] [-O output_fmt] [-o options] [--size N | [--object objectdef] [--image-opts] [-f fmt] "
    "[-l snapshot_param] filename]",
]


def version_text(prog):
    return ("%s version %s (qimg.disk, pure-Python qemu-img 7.2 compatible)\n"
            "Copyright (c) qimg.disk contributors\n" % (prog, __version__))


def help_text(prog):
    return version_text(prog) + (
        "usage: %(prog)s [standard options] command [command options]\n"
        "Disk image utility (pure Python, qemu-img compatible)\n"
        "\n"
        "    '-h', '--help'       display this help and exit\n"
        "    '-V', '--version'    output version information and exit\n"
        "\n"
        "Command syntax:\n"
        "%(syntax)s"
        "\n"
        "Command parameters:\n"
        "  'filename' is a disk image filename\n"
        "  'fmt' is the disk image format (raw or qcow2). It is guessed automatically in most cases\n"
        "  'size' is the disk image size in bytes. Optional suffixes\n"
        "    'k' or 'K' (kilobyte, 1024), 'M' (megabyte, 1024k), 'G' (gigabyte, 1024M),\n"
        "    'T' (terabyte, 1024G), 'P' (petabyte, 1024T) and 'E' (exabyte, 1024P)  are\n"
        "    supported. 'b' is ignored.\n"
        "  'options' is a comma separated list of format specific options in a\n"
        "    name=value format. Use -o help for an overview of the options supported by\n"
        "    the used format\n"
        "  '-u' allows unsafe backing chains. For image creation, allow creating without\n"
        "       attempting to open the backing file.\n"
        "  '-h' with or without a command shows this help\n"
        "  '-q' use Quiet mode - do not print any output (except errors)\n"
        "  '--output' takes the format in which the output must be done (human or json)\n"
        "  'output_filename' is the destination disk image filename\n"
        "  'output_fmt' is the destination format\n"
        "  'snapshot_param' is param used for internal snapshot, format\n"
        "    is 'snapshot.id=[ID],snapshot.name=[NAME]', or\n"
        "    '[ID_OR_NAME]'\n"
        "  'cache' and 'src_cache' are accepted for compatibility (none, writeback, writethrough,\n"
        "    directsync, unsafe); they have no effect\n"
        "  '-c' indicates that target image must be compressed (qcow format only)\n"
        "  '-p' show progress of command (only certain commands)\n"
        "  '-S' indicates the consecutive number of bytes (defaults to 4k) that must\n"
        "       contain only zeros for qemu-img to create a sparse image during\n"
        "       conversion. If the number of bytes is 0, the source will not be scanned for\n"
        "       unallocated or zero sectors, and the destination image will always be\n"
        "       fully allocated\n"
        "  '-n' skips the target volume creation (useful if the volume is created\n"
        "       prior to running qemu-img)\n"
        "\n"
        "Parameters to check subcommand:\n"
        "  '-r' tries to repair any inconsistencies that are found during the check.\n"
        "       '-r leaks' repairs only cluster leaks, whereas '-r all' fixes all\n"
        "       kinds of errors, with a higher risk of choosing the wrong fix or\n"
        "       hiding corruption that has already occurred.\n"
        "\n"
        "Parameters to convert subcommand:\n"
        "  '--progress=json' (qimg extension) prints one JSON object per line on stdout while\n"
        "       converting: {\"done\": bytes, \"total\": bytes, \"elapsed\": seconds}, the last\n"
        "       one with done == total; '--progress=human' is '-p'\n"
        "  '-C' (copy offloading), '-m', '-W', '-r' and '--salvage' are accepted and validated\n"
        "       like qemu-img's; they have no effect\n"
        "  '--bitmaps' copies all top-level persistent bitmaps to destination (not supported yet)\n"
        "\n"
        "Parameters to compare subcommand:\n"
        "  '-f' first image format\n"
        "  '-F' second image format\n"
        "  '-s' run in Strict mode - fail on different image size or sector allocation\n"
        "\n"
        "Supported formats: qcow2 raw\n"
    ) % {"prog": prog, "syntax": "".join("  %s\n" % s for s in COMMAND_SYNTAX)}


def _write(stream, text):
    stream.flush()
    buf = getattr(stream, "buffer", None)
    if buf is not None:
        buf.write(text.encode("utf-8", "surrogateescape"))
        buf.flush()
    else:
        stream.write(text)
        stream.flush()


def _dispatch(argv, ctx):
    if len(argv) < 2:
        raise UsageError("Not enough arguments")
    opts, args = _getopt(argv, "+:hVT:", {"help": (False, "h"), "version": (False, "V"),
                                          "trace": (True, "T")})
    for opt, _arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "V":
            ctx.out(version_text(ctx.prog))
            return 0
    if not args:
        return 0
    handler = COMMANDS.get(args[0])
    if handler is None:
        raise UsageError("Command not found: %s" % args[0])
    return handler(args, ctx)


class _Context:
    """What a command needs besides argv: the program name, stdout, warnings on stderr."""

    def __init__(self, prog):
        self.prog = prog

    @staticmethod
    def out(text):
        _write(sys.stdout, text)

    @staticmethod
    def err(text):
        _write(sys.stderr, text)

    def warn(self, message):
        self.err("%s: warning: %s\n" % (self.prog, message))


def main(argv=None):
    """Run the CLI; return the exit code."""
    if argv is None:
        argv = sys.argv
    prog = os.path.basename(argv[0]) if argv and argv[0] else "qimg"

    ctx = _Context(prog)
    out, err = ctx.out, ctx.err
    from .errors import QimgError
    try:
        return _dispatch(list(argv), ctx)
    except HelpRequested:
        out(help_text(prog))
        return 0
    except UsageError as exc:
        err("%s: %s\nTry '%s --help' for more information\n" % (prog, exc, prog))
        return 1
    except CommandError as exc:
        err("".join("%s: %s\n" % (prog, line) for line in exc.lines) + "".join(exc.hint))
        return exc.code
    except QimgError as exc:
        err("%s: %s\n" % (prog, exc.message) + "".join(h + "\n" for h in exc.hint))
        return 1
    except KeyboardInterrupt:
        err("%s: interrupted\n" % prog)
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): no traceback, and none at interpreter exit either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:        # pylint: disable=broad-except
        if os.environ.get("QIMG_DEBUG") == "1":
            raise
        text = " ".join(("%s: %s" % (type(exc).__name__, exc)).splitlines())
        err("%s: internal error: %s\n" % (prog, text))
        return 1
