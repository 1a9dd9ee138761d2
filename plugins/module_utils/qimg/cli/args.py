# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-img's argument conventions: sizes (cvtnum/qemu_strtosz), -o option lists, --output,
snapshot parameters, cache modes, and where a command-line image name becomes an image spec."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .errors import CommandError


# qemu-img's fixed texts.
SIZE_HINT = ("You may use k, M, G, T, P or E suffixes for",
             "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")


INT64_MAX = (1 << 63) - 1


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


def split_opt_list(text):
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


def valid_option_list(text):
    if not text or text.startswith(","):
        return False
    trailing = len(text) - len(text.rstrip(","))
    return trailing % 2 == 0


def output_format(output):
    if output is None or output == "human":
        return "human"
    if output == "json":
        return "json"
    raise CommandError("--output must be used with human or json as argument.")


def add_option_list(options, arg):
    """Accumulate repeated -o arguments as qemu-img does ("a=1" then "b=2" -> "a=1,b=2")."""
    if not valid_option_list(arg):
        raise CommandError("Invalid option list: %s" % arg)
    return arg if options is None else "%s,%s" % (options, arg)


def snapshot_opts(text):
    """convert/measure -l: qemu parses "snapshot.*" params; returns the text (validated)."""
    if text.startswith("snapshot."):
        for item in split_opt_list(text):
            key = item.partition("=")[0]
            if key not in ("snapshot.id", "snapshot.name"):
                raise CommandError(["Invalid parameter '%s'" % key, "Failed in parsing snapshot param '%s'" % text])
    return text


def image_name(text, fmt=None, image_opts=False, objects=()):
    """A command-line image name as the engine's opener takes it.

    The one place a filename typed by the user becomes an image spec: the name itself, or (with
    --image-opts or --object) a spec.ImageName carrying them; json: and protocol names need
    nothing more (the opener reads them). Names read from images never pass through here.
    qemu-img's check of the combination comes first.
    """
    if image_opts and fmt:
        raise CommandError("--image-opts and --format are mutually exclusive")
    if not image_opts and not objects:
        return text
    from ..spec import ImageName
    secrets = None
    if objects:
        from ..crypto.secrets import store_from_objects
        secrets = store_from_objects(objects)
    return ImageName(text, image_opts=image_opts, secrets=secrets)


CACHE_MODES = ("none", "off", "writeback", "writethrough", "directsync", "unsafe")
