# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Image specifications, one way in: file names, `json:{...}`, `--image-opts` and protocol names.

Every way of naming an image ends in ONE structure, QEMU's crumpled options QDict: a dict with
"driver", the driver's own options and its children as nested dicts, e.g.
  {"driver": "qcow2", "file": {"driver": "file", "filename": "x"}, "backing": None}
Values keep the type they were given in (strings from --image-opts, JSON types from json:),
as QEMU keeps them; the typed accessors below read them the way QemuOpts does.

  parse_json(text)            QEMU's JSON dialect (single-quoted strings too) -> Python objects
  parse_image_opts(text)      key=value,... (",," escapes a comma) -> flat dict of strings
  flatten(d) / crumple(flat)  dotted keys <-> nested dicts (qdict_flatten / qdict_crumple)
  image_spec(name, ...)       a name or option string from the user -> crumpled dict
  build_tree(spec, ...)       validates a crumpled dict against our drivers -> NodeSpec tree
  NodeSpec.filename()         bdrv_refresh_filename(): what `qemu-img info` prints as image:
  ImageName(text, ...)        a command-line name carrying --image-opts / --object along

A backing file name read from an image is not a user's choice: the opener refuses json: and
protocol names there unless the caller opts in (allow_unsafe_backing).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .errors import InvalidArgument, UnsupportedFeature
from .qjson import json_str as _json_text, tdb_hash as _tdb_hash

MAX_NESTING = 64          # json: nesting (QEMU allows 1024; a typed name never needs more)
MAX_SPEC_LENGTH = 1 << 20  # characters in one json:/--image-opts text
MAX_LIST_ITEMS = 4096

FORMAT_DRIVERS = ("raw", "qcow2", "luks")
PROTOCOL_DRIVERS = ("file", "null-co", "null-aio", "nbd", "blkdebug", "ssh", "quorum")
SIZE_HINT = ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-",
             "and exabytes, respectively.")


class SpecError(InvalidArgument):
    """A bad image specification; the message is qemu-img's, without the "Could not open" prefix."""


# ---------------------------------------------------------------------------- QEMU's JSON
class _Json(object):
    """A recursive-descent reader of QEMU's JSON (qobject/json-lexer.c, json-parser.c)."""

    _ESC = {'"': '"', "'": "'", "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}

    def __init__(self, text):
        self.s = text
        self.i = 0

    def fail(self, what):
        raise SpecError("Could not parse the JSON options: JSON parse error, %s" % what)

    def ws(self):
        s, i = self.s, self.i
        while i < len(s) and s[i] in " \t\r\n":
            i += 1
        self.i = i

    def document(self):
        self.ws()
        if self.i >= len(self.s):
            raise SpecError("Could not parse the JSON options: Expecting a JSON value")
        value = self.value(0)
        self.ws()
        if self.i < len(self.s):
            raise SpecError("Could not parse the JSON options: Expecting at most one JSON value")
        return value

    def value(self, depth):
        self.ws()
        if self.i >= len(self.s):
            self.fail("premature EOI")
        c = self.s[self.i]
        if c == "{":
            return self.obj(depth + 1)
        if c == "[":
            return self.array(depth + 1)
        if c in "\"'":
            return self.string()
        if c == "-" or c.isdigit():
            return self.number()
        if c.isalpha():
            j = self.i
            while j < len(self.s) and self.s[j].isalpha():
                j += 1
            word = self.s[self.i:j]
            self.i = j
            if word == "true":
                return True
            if word == "false":
                return False
            if word == "null":
                return None
            self.fail("invalid keyword '%s'" % word)
        if c in "}],:":
            self.fail("expecting value")
        self.fail("stray '%s'" % c)

    def _nest(self, depth):
        if depth > MAX_NESTING:
            self.fail("too deeply nested")

    def obj(self, depth):
        self._nest(depth)
        self.i += 1
        out = {}
        self.ws()
        if self.peek() == "}":
            self.i += 1
            return out
        while True:
            self.ws()
            if self.peek() not in ("\"", "'"):
                if self.peek() is None:
                    self.fail("premature EOI")
                self.fail("key is not a string in object")
            key = self.string()
            self.ws()
            if self.peek() != ":":
                if self.peek() is None:
                    self.fail("premature EOI")
                self.fail("missing : in object pair")
            self.i += 1
            val = self.value(depth)
            if key in out:
                self.fail("duplicate key")
            out[key] = val
            self.ws()
            c = self.peek()
            if c == ",":
                self.i += 1
                continue
            if c == "}":
                self.i += 1
                return out
            if c is None:
                self.fail("premature EOI")
            self.fail("expected separator in dict")

    def array(self, depth):
        self._nest(depth)
        self.i += 1
        out = []
        self.ws()
        if self.peek() == "]":
            self.i += 1
            return out
        while True:
            out.append(self.value(depth))
            if len(out) > MAX_LIST_ITEMS:
                self.fail("too many list items")
            self.ws()
            c = self.peek()
            if c == ",":
                self.i += 1
                continue
            if c == "]":
                self.i += 1
                return out
            if c is None:
                self.fail("premature EOI")
            self.fail("expected separator in list")

    def peek(self):
        return self.s[self.i] if self.i < len(self.s) else None

    def string(self):
        quote = self.s[self.i]
        self.i += 1
        out = []
        s = self.s
        while True:
            if self.i >= len(s):
                self.fail("premature EOI")
            c = s[self.i]
            if c == quote:
                self.i += 1
                return "".join(out)
            if c == "\\":
                self.i += 1
                if self.i >= len(s):
                    self.fail("premature EOI")
                e = s[self.i]
                if e in self._ESC:
                    out.append(self._ESC[e])
                    self.i += 1
                elif e == "u":
                    hexa = s[self.i + 1:self.i + 5]
                    if len(hexa) != 4 or any(h not in "0123456789abcdefABCDEF" for h in hexa):
                        self.fail("invalid escape sequence in string")
                    cp = int(hexa, 16)
                    self.i += 5
                    if 0xD800 <= cp < 0xDC00 and s[self.i:self.i + 2] == "\\u":
                        low = s[self.i + 2:self.i + 6]
                        if len(low) == 4 and all(h in "0123456789abcdefABCDEF" for h in low) \
                                and 0xDC00 <= int(low, 16) < 0xE000:
                            cp = 0x10000 + ((cp - 0xD800) << 10) + (int(low, 16) - 0xDC00)
                            self.i += 6
                    if cp == 0:
                        self.fail("\\u0000 is not supported")
                    out.append(chr(cp) if not 0xD800 <= cp < 0xE000 else "\ufffd")
                else:
                    self.fail("invalid escape sequence in string")
            elif ord(c) < 0x20:
                self.fail("stray '%s'" % c)
            else:
                out.append(c)
                self.i += 1

    def number(self):
        s = self.s
        j = self.i
        if s[j] == "-":
            j += 1
        k = j
        while j < len(s) and s[j].isdigit():
            j += 1
        if j == k:
            self.fail("stray '-'")
        is_float = False
        if j < len(s) and s[j] == ".":
            is_float = True
            j += 1
            k = j
            while j < len(s) and s[j].isdigit():
                j += 1
            if j == k:
                self.fail("invalid number")
        if j < len(s) and s[j] in "eE":
            is_float = True
            j += 1
            if j < len(s) and s[j] in "+-":
                j += 1
            k = j
            while j < len(s) and s[j].isdigit():
                j += 1
            if j == k:
                self.fail("invalid number")
        text = s[self.i:j]
        self.i = j
        if not is_float:
            n = int(text)
            if -(1 << 63) <= n < (1 << 64):
                return n
        try:
            return float(text)
        except (ValueError, OverflowError):
            self.fail("invalid number")


def parse_json(text):
    """QEMU's JSON (single-quoted strings accepted) -> Python objects; SpecError on bad input."""
    if len(text) > MAX_SPEC_LENGTH:
        raise SpecError("Could not parse the JSON options: JSON parse error, too large")
    return _Json(text).document()


def qdict_order(d):
    """Keys of d in the order qemu's QDict iterates them (bucket, then most recently inserted first);
    the dict's own order is taken as the insertion order."""
    keys = list(d)
    pos = dict((k, i) for i, k in enumerate(keys))
    return sorted(keys, key=lambda k: (_tdb_hash(k) % 512, -pos[k]))


def format_number(value):
    if isinstance(value, float):
        text = "%.17g" % value
        # qemu prints the shortest form that reads back the same
        for digits in range(1, 18):
            cand = "%.*g" % (digits, value)
            if float(cand) == value:
                text = cand
                break
        return text
    return "%d" % value


def compact_json(obj):
    """qobject_to_json(): one line, ", " and ": " separators, QDict key order."""
    if isinstance(obj, dict):
        return "{" + ", ".join("%s: %s" % (_json_text(k), compact_json(obj[k])) for k in qdict_order(obj)) + "}"
    if isinstance(obj, (list, tuple)):
        return "[" + ", ".join(compact_json(v) for v in obj) + "]"
    if obj is None:
        return "null"
    if obj is True:
        return "true"
    if obj is False:
        return "false"
    if isinstance(obj, (int, float)):
        return format_number(obj)
    return _json_text(str(obj))


# ---------------------------------------------------------------------------- dotted keys
def flatten(obj, prefix="", out=None):
    """qdict_flatten(): nested dicts and lists become dotted keys ("file.filename", "rules.0.event")."""
    if out is None:
        out = {}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj)
    for k, v in items:
        key = "%s%s" % (prefix, k)
        if isinstance(v, (dict, list)) and v:
            flatten(v, key + ".", out)
        else:
            out[key] = v
    return out


def crumple(flat):
    """qdict_crumple(): dotted keys become nested dicts; dicts whose keys are 0..n-1 become lists."""
    root = {}
    for key, value in flat.items():
        parts = key.split(".")
        node = root
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None or not isinstance(nxt, dict) or p not in node:
                if p in node and not isinstance(node[p], dict):
                    raise SpecError("Cannot mix scalar and non-scalar keys")
                nxt = node[p] = {}
            node = nxt
        last = parts[-1]
        if last in node and isinstance(node[last], dict):
            raise SpecError("Cannot mix scalar and non-scalar keys")
        node[last] = value
    return _listify(root)


def _listify(node):
    if not isinstance(node, dict):
        return node
    for k in list(node):
        node[k] = _listify(node[k])
    if node and all(k.isdigit() for k in node):
        idx = sorted(int(k) for k in node)
        if idx == list(range(len(idx))):
            return [node[str(i)] for i in idx]
    return node


def merge(base, extra):
    """Join two crumpled dicts; keys already in base win (qdict_join(.., false))."""
    out = flatten(extra)
    out.update(flatten(base))
    return crumple(out)


# ---------------------------------------------------------------------------- --image-opts
def parse_image_opts(text, implied="file"):
    """QemuOpts syntax: key=value pairs separated by ",", ",," is a literal comma; a first element
    without "=" is the implied option ("file" for qemu-img); a bare key later means key=on."""
    if len(text) > MAX_SPEC_LENGTH:
        raise SpecError("Parameter string too long")
    out = {}
    i, n, first = 0, len(text), True
    while i < n:
        j = i
        while j < n and text[j] not in "=,":
            j += 1
        if j < n and text[j] == "=":
            key, i = text[i:j], j + 1
        elif first and implied:
            key = implied
        else:
            key, i = text[i:j], j + 1
            if key.startswith("no") and len(key) > 2:
                out[key[2:]] = "off"
            else:
                out[key] = "on"
            first = False
            continue
        val = []
        while i < n:
            if text[i] == ",":
                if text[i + 1:i + 2] == ",":
                    val.append(",")
                    i += 2
                    continue
                break
            val.append(text[i])
            i += 1
        out[key] = "".join(val)
        i += 1
        first = False
    return out


# ---------------------------------------------------------------------------- protocol names
_UNAVAILABLE = ("http", "https", "ftp", "ftps", "iscsi", "rbd", "gluster", "gluster+tcp", "gluster+unix",
                "gluster+rdma", "nfs", "host_device", "host_cdrom", "vvfat", "blkverify", "throttle", "fd",
                "nvme", "sheepdog", "vxhs", "fat", "tftp")


def protocol_of(name):
    """The protocol prefix of a name as QEMU's path_has_protocol() sees it, or None."""
    if name.startswith("json:"):
        return "json"
    colon = name.find(":")
    if colon <= 0:
        return None
    prefix = name[:colon]
    if "/" in prefix:
        return None
    return prefix.lower()


def _nbd_uri(name):
    """nbd://host[:port][/export], nbd+unix:///export?socket=PATH, nbd+tcp://... -> options."""
    from urllib.parse import parse_qs, unquote, urlsplit
    try:
        u = urlsplit(name)
        port = u.port
    except ValueError:
        raise SpecError("Failed to parse NBD URI")
    scheme = u.scheme.lower()
    if scheme not in ("nbd", "nbd+tcp", "nbd+unix"):
        raise SpecError("Failed to parse NBD URI")
    out = {}
    export = unquote(u.path[1:]) if u.path.startswith("/") else unquote(u.path)
    if export:
        out["export"] = export
    query = parse_qs(u.query, keep_blank_values=True)
    if scheme == "nbd+unix":
        if u.netloc or list(query) != ["socket"] or len(query["socket"]) != 1:
            raise SpecError("Failed to parse NBD URI")
        out["server"] = {"type": "unix", "path": query["socket"][0]}
    else:
        if query or not u.hostname:
            raise SpecError("Failed to parse NBD URI")
        out["server"] = {"type": "inet", "host": u.hostname,
                         "port": str(port if port is not None else 10809)}
    return out


def _nbd_legacy(name):
    """nbd:HOST:PORT[:exportname=E] and nbd:unix:PATH[:exportname=E]."""
    rest = name[4:]
    export = None
    k = rest.find(":exportname=")
    if k >= 0:
        export = rest[k + len(":exportname="):]
        rest = rest[:k]
    out = {}
    if rest.startswith("unix:"):
        out["server"] = {"type": "unix", "path": rest[5:]}
    else:
        host, sep, port = rest.rpartition(":")
        if not sep or not host:
            raise SpecError("No valid URL specified")
        out["server"] = {"type": "inet", "host": host, "port": port}
    if export is not None:
        out["export"] = export
    return out


def file_path(name):
    """The local path a `file:NAME` names (bdrv_parse_filename_strip_prefix): the prefix goes, and a
    rest that would look like a protocol name again gets "./" in front ("file:a:b" -> "./a:b")."""
    if not name.startswith("file:"):
        return name
    rest = name[5:]
    return "./" + rest if protocol_of(rest) not in (None, "json") or rest.startswith("json:") else rest


def protocol_options(driver, filename):
    """A protocol driver's bdrv_parse_filename(): its options from a pseudo-filename."""
    if driver == "file":
        return {"filename": file_path(filename)}
    if driver in ("null-co", "null-aio"):
        return {}
    if driver == "nbd":
        if "://" in filename:
            return _nbd_uri(filename)
        return _nbd_legacy(filename)
    if driver == "blkdebug":
        if not filename.startswith("blkdebug:"):
            return {"x-image": filename}
        rest = filename[len("blkdebug:"):]
        c = rest.find(":")
        if c < 0:
            raise SpecError("blkdebug requires both config file and image path")
        out = {"x-image": rest[c + 1:]}
        if c:
            out["config"] = rest[:c]
        return out
    if driver == "ssh":
        return _ssh_uri(filename)
    return {}


def _ssh_uri(name):
    from urllib.parse import unquote, urlsplit
    try:
        u = urlsplit(name)
        port = u.port
    except ValueError:
        raise SpecError("Failed to parse SSH URI")
    if u.scheme != "ssh" or not u.hostname:
        raise SpecError("Failed to parse SSH URI")
    out = {"server": {"host": u.hostname}, "path": unquote(u.path)}
    if port is not None:
        out["server"]["port"] = str(port)
    if u.username:
        out["user"] = unquote(u.username)
    return out


def _driver_of_prefix(prefix):
    if prefix in ("nbd", "nbd+unix", "nbd+tcp"):
        return "nbd"
    if prefix in ("file", "null-co", "null-aio", "blkdebug", "ssh"):
        return prefix
    if prefix in _UNAVAILABLE:
        raise SpecError("Unknown protocol '%s'" % prefix)
    return None


def name_spec(name):
    """A name as the user gave it -> crumpled dict (no "driver" at the top: the format is probed)."""
    prefix = protocol_of(name)
    if prefix == "json":
        obj = parse_json(name[5:])
        if not isinstance(obj, dict):
            raise SpecError("Invalid JSON object given")
        return crumple(flatten(obj))
    return {"filename": name}


def image_spec(name, fmt=None, image_opts=False):
    """What the user named (a file name, json:{...} or, with image_opts, an --image-opts string)
    -> the crumpled options dict; fmt (-f) wins over a "driver" given in json: (as in QEMU)."""
    if image_opts:
        if fmt:
            raise SpecError("--image-opts and --format are mutually exclusive")
        return crumple(parse_image_opts(name))
    spec = name_spec(name)
    if fmt:
        spec["driver"] = fmt
    return spec


# ---------------------------------------------------------------------------- typed options
_TRUE = ("on", "yes", "true", "y")
_FALSE = ("off", "no", "false", "n")


def _as_text(value):
    if value is True:
        return "on"
    if value is False:
        return "off"
    if isinstance(value, (int, float)):
        return format_number(value)
    return value


def opt_str(value, name):
    if isinstance(value, (dict, list)) or value is None:
        raise SpecError("Invalid parameter type for '%s', expected: string" % name)
    return _as_text(value)


def opt_bool(value, name):
    text = opt_str(value, name)
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise SpecError("Parameter '%s' expects 'on' or 'off'" % name)


def opt_number(value, name):
    text = opt_str(value, name)
    t = text.strip()
    try:
        n = int(t, 0) if not t.startswith("-") else -1
    except ValueError:
        n = -1
    if n < 0 or n >= 1 << 64:
        raise SpecError("Parameter '%s' expects a number" % name)
    return n


def opt_size(value, name):
    import re
    text = opt_str(value, name)
    m = re.match(r"^\s*([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)\s*([bkKmMgGtTpPeE]?)\s*$", text)
    if not m:
        raise SpecError("Parameter '%s' expects a non-negative number below 2^64" % name, hint=SIZE_HINT)
    mult = 1 << (10 * "bkmgtpe".index(m.group(2).lower())) if m.group(2) else 1
    num = m.group(1)
    n = int(num) * mult if num.isdigit() else int(float(num) * mult)
    if n >= 1 << 64:
        raise SpecError("Value '%s' is out of range for parameter '%s'" % (text, name))
    return n


# ---------------------------------------------------------------------------- the node tree
_GENERIC = ("node-name", "driver", "read-only", "auto-read-only", "detect-zeroes", "discard", "force-share",
            "cache.direct", "cache.no-flush")
_OPTIONS = {
    "file": ("filename", "aio", "aio-max-batch", "locking", "pr-manager", "drop-cache", "x-check-cache-dropped"),
    "null-co": ("filename", "size", "latency-ns", "read-zeroes"),
    "raw": ("offset", "size"),
    "luks": ("key-secret",),
    "qcow2": ("lazy-refcounts", "pass-discard-request", "pass-discard-snapshot", "pass-discard-other",
              "overlap-check", "cache-size", "l2-cache-size", "l2-cache-entry-size", "refcount-cache-size",
              "cache-clean-interval", "encrypt.format", "encrypt.key-secret"),
    "blkdebug": ("config", "x-image", "align", "max-transfer", "opt-write-zero", "max-write-zero", "opt-discard",
                 "max-discard"),
    "nbd": ("filename", "host", "port", "path", "export", "tls-creds", "tls-hostname", "x-dirty-bitmap",
            "reconnect-delay", "open-timeout"),
    "ssh": ("filename", "host", "port", "path", "user", "host_key_check"),
    "quorum": ("vote-threshold", "blkverify", "rewrite-corrupted", "read-pattern"),
}
_OPTIONS["null-aio"] = _OPTIONS["null-co"]
_PREFIX_OPTIONS = {"qcow2": ("overlap-check.",),
                   "blkdebug": ("inject-error.", "set-state.", "take-child-perms.", "unshare-child-perms."),
                   "nbd": ("server.",), "ssh": ("server.", "host-key-check.")}
_CHILDREN = {"raw": ("file",), "luks": ("file",), "qcow2": ("file", "backing", "data-file"), "blkdebug": ("image",),
             "quorum": ("children",)}
STRONG = {"raw": ("offset", "size"), "qcow2": ("encrypt.key-secret",), "luks": ("key-secret",), "null-co": ("size", "read-zeroes"),
          "null-aio": ("size", "read-zeroes"),
          "blkdebug": ("config", "inject-error.", "set-state.", "align", "max-transfer", "opt-write-zero",
                       "max-write-zero", "opt-discard", "max-discard"),
          "nbd": ("path", "host", "port", "export", "tls-creds", "tls-hostname", "server."),
          "ssh": ("host", "port", "path", "user", "host_key_check", "server."),
          "quorum": ("vote-threshold", "blkverify", "rewrite-corrupted", "read-pattern")}


def is_format(driver):
    return driver in FORMAT_DRIVERS


class NodeSpec(object):
    """One node of a validated specification.

    driver: the driver name, or None for "probe the format" (only where QEMU probes)
    options: this node's own options, flat dotted keys, values as given
    children: name -> NodeSpec, or None for an explicit null (backing: null)
    """

    def __init__(self, driver, options, children):
        self.driver = driver
        self.options = options
        self.children = children
        self.probed = None      # the format found by probing, once opened (driver None)
        self.inherited = {}     # cache.* options a parent passes down (bdrv_inherited_options)

    @property
    def drv(self):
        return self.driver or self.probed or "raw"

    def __repr__(self):
        return "NodeSpec(%r, %r, %r)" % (self.driver, self.options, self.children)

    def get(self, key, default=None):
        return self.options.get(key, default)

    def str(self, key, default=None):
        return default if key not in self.options else opt_str(self.options[key], key)

    def bool(self, key, default=False):
        return default if key not in self.options else opt_bool(self.options[key], key)

    def number(self, key, default=None):
        return default if key not in self.options else opt_number(self.options[key], key)

    def size(self, key, default=None):
        return default if key not in self.options else opt_size(self.options[key], key)

    def sub(self, prefix):
        """Options under "prefix." crumpled (e.g. "inject-error" -> a list of rule dicts)."""
        flat = dict((k[len(prefix) + 1:], v) for k, v in self.options.items() if k.startswith(prefix + "."))
        return crumple(flat) if flat else None

    # --- bdrv_refresh_filename() ---
    def full_options(self, backing_overridden=False):
        opts = {}
        for key in ("driver", "filename"):
            if key in self.options and self.options[key] is not None and (key != "filename" or not is_format(
                    self.drv)):
                opts[key] = self.options[key]
        strong = False
        for s in STRONG.get(self.drv, ()):
            for k, v in self.options.items():
                if (k == s) or (s.endswith(".") and k.startswith(s)):
                    opts[k] = v
                    strong = True
        if "driver" not in opts:
            opts["driver"] = self.drv
        for name, child in self.children.items():
            if name == "backing":
                continue
            if name.startswith("children."):
                # quorum_gather_child_options(): the children as one list
                opts.setdefault("children", []).append(child.full_options()[0])
            elif child is not None:
                opts[name] = child.full_options()[0]
        if backing_overridden:
            child = self.children.get("backing")
            opts["backing"] = None if child is None else child.full_options()[0]
        return opts, strong or backing_overridden

    def exact_filename(self, backing_overridden=False):
        d = self.drv
        if d == "file":
            return opt_str(self.options["filename"], "filename")
        if d in ("null-co", "null-aio"):
            if all(k in ("filename", "driver", "latency-ns") for k in self.options):
                return "%s://" % d
            return ""
        if d == "nbd":
            return _nbd_exact(self)
        if d == "blkdebug":
            child = self.children.get("image")
            inner = child.exact_filename() if child is not None else ""
            if not inner:
                return ""
            if any(k not in ("config", "x-image", "driver", "filename") and not k.startswith("image")
                   for k in self.options):
                return ""
            return "blkdebug:%s:%s" % (_as_text(self.options.get("config", "")), inner)
        if d in ("ssh", "quorum"):
            return ""
        # a format node: its file's name, when that opens the same tree again
        child = self.children.get("file")
        if child is None or child.driver is None or is_format(child.driver):
            return ""
        strong = self.full_options(backing_overridden)[1]
        if strong:
            return ""
        return child.exact_filename()

    def filename(self, backing_overridden=False):
        exact = self.exact_filename(backing_overridden)
        if exact:
            return exact
        return "json:" + compact_json(self.full_options(backing_overridden)[0])

    def dirname(self):
        """bdrv_dirname(): the directory relative backing names are resolved in, or None."""
        import os.path
        if self.drv in ("nbd", "quorum"):
            return None
        child = self.primary_child()
        if child is not None:
            return child.dirname()
        exact = self.exact_filename()
        if exact and "://" not in exact:
            return os.path.dirname(exact)
        return None

    def primary_child(self):
        for name in ("file", "image"):
            child = self.children.get(name)
            if child is not None:
                return child
        return None


def _nbd_exact(node):
    srv = node.sub("server") or {}
    path = node.options.get("path", srv.get("path") if srv.get("type", "inet") == "unix" or "path" in srv else None)
    host = node.options.get("host", srv.get("host"))
    port = node.options.get("port", srv.get("port", "10809"))
    export = node.options.get("export")
    if path is not None:
        path = _as_text(path)
        return ("nbd+unix:///%s?socket=%s" % (_as_text(export), path)) if export is not None \
            else "nbd+unix://?socket=%s" % path
    if host is not None:
        host = _as_text(host)
        return ("nbd://%s:%s/%s" % (host, _as_text(port), _as_text(export))) if export is not None \
            else "nbd://%s:%s" % (host, _as_text(port))
    return ""


def _split(spec, driver):
    """Own options (flat) and child specs (crumpled dicts, strings or None) of one node."""
    own, children = {}, {}
    names = _CHILDREN.get(driver, ())
    for k, v in spec.items():
        if k in names:
            children[k] = v
        else:
            if isinstance(v, dict) and v:
                for fk, fv in flatten(v, k + ".").items():
                    own[fk] = fv
            elif isinstance(v, list) and v:
                for fk, fv in flatten(v, k + ".").items():
                    own[fk] = fv
            else:
                own[k] = v
    return own, children


def _check_options(driver, own):
    allowed = _GENERIC + _OPTIONS.get(driver, ())
    prefixes = _PREFIX_OPTIONS.get(driver, ())
    for k in own:
        if k in allowed or any(k.startswith(p) for p in prefixes):
            continue
        if is_format(driver):
            raise SpecError("Block format '%s' does not support the option '%s'" % (driver, k))
        raise SpecError("Block protocol '%s' doesn't support the option '%s'" % (driver, k))


def _driver_name(spec):
    d = spec.get("driver")
    if d is None:
        return None
    if not isinstance(d, str):
        raise SpecError("Must specify either driver or file")
    if d not in FORMAT_DRIVERS and d not in PROTOCOL_DRIVERS:
        raise SpecError("Unknown driver '%s'" % d)
    return d


def build_tree(spec, protocol=False, depth=0):
    """A crumpled spec -> NodeSpec tree, validated. protocol=True: a child QEMU opens without probing
    (a format's "file", blkdebug's "image"): its driver comes from its filename's protocol."""
    if depth > 16:
        raise SpecError("Image specification nested too deeply")
    if not isinstance(spec, dict):
        raise SpecError("Invalid image specification")
    spec = dict(spec)
    driver = _driver_name(spec)
    filename = spec.get("filename")
    if filename is not None and not isinstance(filename, str):
        filename = _as_text(filename) if not isinstance(filename, (dict, list)) else None
        if filename is None:
            raise SpecError("Invalid parameter type for 'filename', expected: string")
    if driver is None:
        if filename is not None and (protocol or "file" not in spec):
            pdrv = _driver_of_prefix(protocol_of(filename) or "") if protocol_of(filename) else None
            if protocol:
                driver = pdrv or "file"
            elif pdrv is not None and pdrv != "file":
                # a protocol name at the top: the format on top of it is probed (raw for these)
                spec.pop("filename")
                child = dict(protocol_options(pdrv, filename))
                child["driver"] = pdrv
                return _probe_node(spec, child, depth)
            else:
                spec.pop("filename")
                return _probe_node(spec, {"driver": "file", "filename": filename}, depth)
        elif "file" in spec and not protocol:
            return _probe_node(spec, None, depth)
        elif protocol and filename is None:
            raise SpecError("The 'file' block driver requires a file name")
        else:
            raise SpecError("Must specify either driver or file")
    if not is_format(driver) and filename is not None:
        pdrv = _driver_of_prefix(protocol_of(filename) or "") if protocol_of(filename) else None
        parsed = protocol_options(driver, filename) if pdrv == driver or driver in ("file", "blkdebug") else None
        if parsed is not None:
            if driver != "file":
                spec.pop("filename")
            spec = merge(spec, parsed) if driver != "file" else dict(spec, **parsed)
    if is_format(driver) and filename is not None:
        spec.pop("filename")
        if "file" not in spec:
            spec["file"] = {"filename": filename}
    own, kids = _split(spec, driver)
    _check_options(driver, own)
    children = {}
    if driver == "quorum":
        kids = _quorum_children(kids.get("children"))
    backing_key = None
    for name, child in list(kids.items()):
        if name == "backing" and _backing_key_only(child):
            # options for the backing file the image names (its key): no node of its own
            backing_key = _key_secret_of(child)
            continue
        if child == "" and name == "backing":
            child = None  # QEMU: deprecated spelling of null
        if child is None:
            if name == "backing":
                children[name] = None
                continue
            raise SpecError("Invalid parameter type for '%s', expected: object" % name)
        if not isinstance(child, dict):
            if name == "backing":
                raise SpecError("Block format '%s' does not support the option 'backing'" % driver)
            text = _as_text(child) if not isinstance(child, list) else "list"
            raise SpecError("Cannot find device='%s' nor node-name='%s'" % (text, text))
        children[name] = build_tree(child, protocol=name in ("file", "image") or name.startswith("children."),
                                    depth=depth + 1)
    if driver == "file" and "filename" not in own:
        raise SpecError("The 'file' block driver requires a file name")
    if is_format(driver) and "file" not in children:
        raise SpecError('A block device must be specified for "file"')
    if driver == "blkdebug" and "image" not in children:
        x = own.get("x-image")
        if x is None:
            raise SpecError('A block device must be specified for "image"')
        children["image"] = build_tree({"filename": _as_text(x)}, protocol=True, depth=depth + 1)
    node = NodeSpec(driver, own, children)
    node.backing_key_secret = backing_key
    _validate_values(node)
    _inherit(node)
    return node


def _key_secret_of(opts):
    enc = opts.get("encrypt")
    if isinstance(enc, dict) and "key-secret" in enc:
        return _as_text(enc["key-secret"])
    for key in ("encrypt.key-secret", "key-secret"):
        if key in opts:
            return _as_text(opts[key])
    return None


def _backing_key_only(child):
    """backing.encrypt.key-secret=ID alone: the key of the backing file the header names."""
    if not isinstance(child, dict) or not child:
        return False
    for key, value in child.items():
        if key == "encrypt" and isinstance(value, dict) and set(value) == {"key-secret"}:
            continue
        if key not in ("encrypt.key-secret", "key-secret"):
            return False
    return True


def _inherit(node):
    """cache.direct / cache.no-flush reach the children that do not set them (QEMU's inheritance)."""
    for child in node.children.values():
        if child is None:
            continue
        for key in ("cache.direct", "cache.no-flush"):
            value = node.options.get(key, node.inherited.get(key))
            if value is not None and key not in child.options:
                child.inherited[key] = value
        _inherit(child)


def _quorum_children(value):
    if value is None:
        raise SpecError("Number of provided children must be 1 or more")
    if isinstance(value, dict):
        value = [value[k] for k in sorted(value)] if all(k.isdigit() for k in value) else None
    if not isinstance(value, list):
        raise SpecError("Option children is not a valid array")
    if not value:
        raise SpecError("Number of provided children must be 1 or more")
    if len(value) > 32:
        raise SpecError("Too many children")
    return dict(("children.%d" % i, v) for i, v in enumerate(value))


def _probe_node(spec, file_spec, depth):
    """A node whose format is probed at open (driver None) over the given file."""
    if file_spec is not None:
        spec["file"] = file_spec if "file" not in spec else merge(spec["file"], file_spec)
    own, kids = _split(spec, "qcow2")
    for k in own:
        if k not in _GENERIC and k not in _OPTIONS["qcow2"] + _OPTIONS["raw"] and not k.startswith("overlap-check."):
            raise SpecError("Block format 'raw' does not support the option '%s'" % k)
    children = {}
    for name, child in kids.items():
        if child is None:
            children[name] = None
        elif not isinstance(child, dict):
            text = _as_text(child) if not isinstance(child, list) else "list"
            raise SpecError("Cannot find device='%s' nor node-name='%s'" % (text, text))
        else:
            children[name] = build_tree(child, protocol=name in ("file", "image"), depth=depth + 1)
    node = NodeSpec(None, own, children)
    _inherit(node)
    return node


_BLKDEBUG_EVENTS = (
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table", "l2_load", "l2_update",
    "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write", "read_aio", "read_backing_aio",
    "read_compressed", "write_aio", "write_compressed", "vmstate_load", "vmstate_save", "cow_read", "cow_write",
    "reftable_load", "reftable_grow", "reftable_update", "refblock_load", "refblock_update",
    "refblock_update_part", "refblock_alloc", "refblock_alloc_hookup", "refblock_alloc_write",
    "refblock_alloc_write_blocks", "refblock_alloc_write_table", "refblock_alloc_switch_table",
    "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os", "flush_to_disk",
    "pwritev_rmw_head", "pwritev_rmw_after_head", "pwritev_rmw_tail", "pwritev_rmw_after_tail", "pwritev",
    "pwritev_zero", "pwritev_done", "empty_image_prepare", "l1_shrink_write_table", "l1_shrink_free_l2_clusters",
    "cor_write", "cluster_alloc_space", "none")
_BLKDEBUG_IOTYPES = ("read", "write", "write-zeroes", "discard", "flush", "block-status")


def _validate_values(node):
    """Type-check the options whose types QEMU checks at open (so bad specs fail before any I/O)."""
    d = node.driver
    for key in ("read-only", "auto-read-only", "force-share", "cache.direct", "cache.no-flush"):
        node.bool(key)
    if d in ("null-co", "null-aio"):
        node.size("size")
        node.number("latency-ns")
        node.bool("read-zeroes")
    elif d == "raw":
        node.size("offset")
        node.size("size")
    elif d == "file":
        aio = node.str("aio", "threads")
        if aio not in ("threads", "native", "io_uring"):
            raise SpecError("invalid parameter value: %s" % aio)
        locking = node.str("locking", "auto")
        if locking not in ("on", "off", "auto"):
            raise SpecError("invalid parameter value: %s" % locking)
        if "pr-manager" in node.options:
            raise UnsupportedFeature("The 'file' driver's option 'pr-manager' is not supported")
        node.bool("drop-cache", True)
    elif d == "blkdebug":
        for key in ("align", "max-transfer", "opt-write-zero", "max-write-zero", "opt-discard", "max-discard"):
            node.size(key)
        for section in ("inject-error", "set-state"):
            rules = node.sub(section)
            if rules is None:
                continue
            if not isinstance(rules, list):
                raise SpecError("Invalid parameter type for '%s', expected: array" % section)
            for rule in rules:
                if not isinstance(rule, dict):
                    raise SpecError("Invalid parameter type for '%s', expected: object" % section)
                blkdebug_rule(section, rule)
    elif d == "nbd":
        srv = node.sub("server") or {}
        if not isinstance(srv, dict):
            raise SpecError("Invalid parameter type for 'server', expected: object")
        for k, v in srv.items():
            if k not in ("type", "host", "port", "path", "abstract", "tight", "numeric", "to", "ipv4", "ipv6",
                         "keep-alive"):
                raise SpecError("Block protocol 'nbd' doesn't support the option 'server.%s'" % k)
            opt_str(v, "server." + k)
        for key in ("host", "port", "path", "export", "x-dirty-bitmap", "tls-creds", "tls-hostname"):
            node.str(key)
        node.number("reconnect-delay")
        node.number("open-timeout")
    elif d == "quorum":
        n = len(node.children)
        threshold = node.number("vote-threshold", 0) if "vote-threshold" in node.options else None
        if threshold is None:
            raise SpecError("Parameter 'vote-threshold' is missing")
        if threshold < 1:
            raise SpecError("Parameter 'vote-threshold' expects a value >= 1")
        if threshold > n:
            raise SpecError("threshold may not exceed children count")
        if node.str("read-pattern", "quorum") not in ("quorum", "fifo"):
            raise SpecError("Please set read-pattern as fifo or quorum")
        if node.bool("blkverify") and (n != 2 or threshold != 2):
            raise SpecError("blkverify=on can only be set if there are exactly two files and vote-threshold is 2")
        if node.bool("rewrite-corrupted"):
            raise UnsupportedFeature("quorum's rewrite-corrupted=on is not supported")
    elif d == "ssh":
        port = node.options.get("port", (node.sub("server") or {}).get("port"))
        if port is not None:
            _ssh_port(port)


def _ssh_port(value):
    if isinstance(value, bool) or isinstance(value, float) or isinstance(value, (dict, list)):
        raise SpecError("Parameter 'port' expects a number")
    if isinstance(value, int):
        n = value
    else:
        try:
            n = int(value.strip(), 10)
        except ValueError:
            raise SpecError("Parameter 'port' expects a number")
    if n < 0 or n > 65535:
        raise SpecError("Parameter 'port' expects a number")
    return n


def blkdebug_rule(section, rule):
    """One inject-error/set-state rule (config file section or json list item) -> a typed dict."""
    allowed = ("event", "state", "iotype", "errno", "sector", "once", "immediately") if section == "inject-error" \
        else ("event", "state", "new_state")
    for k in rule:
        if k not in allowed:
            raise SpecError("Invalid parameter '%s'" % k)
    event = rule.get("event")
    if event is None:
        raise SpecError("Missing event name for rule")
    event = opt_str(event, "event")
    if event not in _BLKDEBUG_EVENTS:
        raise SpecError("invalid parameter value: %s" % event)
    out = {"event": event, "state": opt_number(rule["state"], "state") if "state" in rule else 0}
    if section == "inject-error":
        out["errno"] = opt_number(rule["errno"], "errno") if "errno" in rule else 5
        out["once"] = opt_bool(rule["once"], "once") if "once" in rule else False
        out["immediately"] = opt_bool(rule["immediately"], "immediately") if "immediately" in rule else False
        sector = rule.get("sector")
        if sector is None:
            out["offset"] = None
        else:
            text = opt_str(sector, "sector")
            try:
                n = int(text.strip(), 0)
            except ValueError:
                raise SpecError("Parameter 'sector' expects a number")
            out["offset"] = None if n == -1 else n * 512
        iotype = rule.get("iotype")
        if iotype is None:
            out["iotypes"] = ("read", "write", "write-zeroes", "discard", "flush")
        else:
            iotype = opt_str(iotype, "iotype")
            if iotype not in _BLKDEBUG_IOTYPES:
                raise SpecError("invalid parameter value: %s" % iotype)
            out["iotypes"] = (iotype,)
    else:
        out["new_state"] = opt_number(rule["new_state"], "new_state") if "new_state" in rule else 0
    return out


def spec_tree(name, fmt=None, image_opts=False):
    """The whole way in: what the user named -> (crumpled dict, NodeSpec tree)."""
    spec = image_spec(name, fmt, image_opts)
    return spec, build_tree(spec)


# ---------------------------------------------------------------------------- names from a command line
class ImageName(str):
    """A name as a command line gave it, with what came with it: image_opts (the text is an
    --image-opts string) and secrets (the --object secrets, a crypto.secrets.SecretStore, for the
    drivers: encrypt.key-secret names one), and key_secret (that id, when the name is a plain file
    name). The ops pass it to open_image unchanged."""

    image_opts = False
    secrets = None
    key_secret = None
    backing_key_secret = None

    def __new__(cls, text, image_opts=False, secrets=None, key_secret=None):
        obj = str.__new__(cls, text)
        obj.image_opts = image_opts
        obj.secrets = secrets
        # the key-secret id of an --image-opts spec reduced to its file name (resize, amend, ...)
        obj.key_secret = key_secret
        return obj
