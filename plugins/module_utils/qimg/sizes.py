# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Sizes the way qemu-img reads and prints them."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .errors import InvalidArgument

_SUFFIXES = {"": 0, "b": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_SIZE_PATTERN = r"^\s*([0-9]+(?:\.[0-9]*)?)\s*([a-zA-Z]?)\s*$"
MAX_IMAGE_SIZE = (1 << 63) - 512


def parse_size(value, default_suffix=""):
    """Parse "10G", "512k", "1.5M" or an int into bytes (binary multiples, like qemu-img).

    A bare number uses default_suffix. 'b'/'B' means bytes. Raises InvalidArgument.
    """
    if isinstance(value, bool):
        raise InvalidArgument("Invalid image size specified: %r" % (value,))
    if isinstance(value, int):
        n = value
    else:
        import re  # here, not at the top: re and enum cost a few ms of every start
        m = re.match(_SIZE_PATTERN, str(value))
        if not m:
            raise InvalidArgument("Invalid image size specified. You may use k, M, G, T, P or E "
                                  "suffixes for kilobytes, megabytes, gigabytes, terabytes, "
                                  "petabytes and exabytes.")
        number, suffix = m.group(1), (m.group(2) or default_suffix).lower()
        if suffix not in _SUFFIXES:
            raise InvalidArgument("Invalid image size specified. You may use k, M, G, T, P or E "
                                  "suffixes for kilobytes, megabytes, gigabytes, terabytes, "
                                  "petabytes and exabytes.")
        mult = 1 << (10 * _SUFFIXES[suffix])
        if "." in number:
            whole, frac = number.split(".", 1)
            frac = frac or "0"
            n = int(whole) * mult + (int(frac) * mult) // (10 ** len(frac))
        else:
            n = int(number) * mult
    if n < 0 or n > MAX_IMAGE_SIZE:
        raise InvalidArgument("Image size must be less than 8 EiB!")
    return n


def human_size(n):
    """qemu's size_to_str(): '64 MiB', '1.5 GiB', '196 KiB', '0 B' (three significant digits)."""
    units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    idx = 0
    value = float(n)
    # qemu switches unit when the value reaches 1000 of the current one (0.977 * 1024).
    while value >= 1000 and idx < len(units) - 1:
        value /= 1024
        idx += 1
    if idx == 0:
        return "%d %s" % (n, units[0])
    text = "%0.3g" % value
    return "%s %s" % (text, units[idx])


# ---------------------------------------------------------------------------------------------
# qemu_strtosz(), as qemu-img's cvtnum() and the size-typed -o options read sizes.

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
