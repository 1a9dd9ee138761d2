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
