# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Pieces of qemu's JSON writer (qobject/json-writer.c) and QDict hashing that both the CLI's
printer and image-spec filenames (bdrv_refresh_filename's json: names) need."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


def tdb_hash(key):
    """qemu's QDict hash (tdb_hash of the key's UTF-8 bytes), before the modulo."""
    data = key.encode("utf-8", "surrogateescape")
    value = (0x238F13AF * len(data)) & 0xffffffff
    for i, byte in enumerate(data):
        value = (value + (byte << (i * 5 % 24))) & 0xffffffff
    return (1103515243 * value + 12345) & 0xffffffff


def json_str(text):
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
