# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`map`: where guest data lives, in qemu-img's `map --output=json` shape."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import InvalidArgument
from ..image import chain_block_status, open_image

CHUNK = 1 << 30  # guest bytes examined per block_status call (keeps memory flat)


def _host_split(recurse, ext):
    """In a metadata-preallocated qcow2, data over holes in the file reads as zeros: qemu says zero: true."""
    dev = recurse.get(ext.filename)
    if dev is None or ext.offset is None or not ext.data:
        return [ext]
    out = []
    for s, n, is_data in dev.data_file.extents(ext.offset, ext.length):  # where the data lives
        out.append(ext._replace(start=ext.start + (s - ext.offset), length=n, zero=not is_data, offset=s))
    return out


def _entry(e):
    d = {"start": e.start, "length": e.length, "depth": e.depth, "present": e.present,
         "zero": e.zero, "data": e.data}
    if e.offset is not None:
        d["offset"] = e.offset
    d["filename"] = e.filename
    return d


def iter_map(filename, fmt=None, start_offset=0, max_length=None, force_share=False):
    """Map entries one at a time (merged like qemu-img), so memory stays flat however long the map."""
    if start_offset < 0 or (max_length is not None and max_length < 0):
        raise InvalidArgument("Invalid offset or length")
    with open_image(filename, fmt, read_only=True, force_share=force_share) as dev:
        recurse = dict((layer.filename, layer) for layer in dev.chain()
                       if layer.format_name == "qcow2" and layer.metadata_preallocated())
        # host offsets of a qcow2 layer with an external data file are in that file: qemu-img names it
        data_files = dict((layer.filename, layer.data_file.filename) for layer in dev.chain()
                          if getattr(layer, "has_data_file", False))
        end = dev.size if max_length is None else min(dev.size, start_offset + max_length)
        last = None  # the run being merged (a ChainExtent); a dict is made only when it is emitted
        pos = start_offset
        while pos < end:
            n = min(CHUNK, end - pos)
            for ext in chain_block_status(dev, pos, n):
                for piece in (_host_split(recurse, ext) if recurse else (ext,)):
                    if data_files and piece.offset is not None and piece.filename in data_files:
                        piece = piece._replace(filename=data_files[piece.filename])
                    # qemu-img merges entries with the same flags, file and contiguous offsets
                    if last is not None and last[2:6] == piece[2:6] and last.filename == piece.filename and (
                            (last.offset is None and piece.offset is None) or (
                                last.offset is not None and piece.offset is not None
                                and last.offset + last.length == piece.offset)):
                        last = last._replace(length=last.length + piece.length)
                        continue
                    if last is not None:
                        yield _entry(last)
                    last = piece
            pos += n
        if last is not None:
            yield _entry(last)


def image_map(filename, fmt=None, start_offset=0, max_length=None, force_share=False):
    """List of map entries (see docs/engine-api.md), merged like qemu-img."""
    return list(iter_map(filename, fmt, start_offset, max_length, force_share))
