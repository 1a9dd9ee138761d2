# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`commit`: write what an image allocates into its backing file (qemu-img commit), then empty it.

The base is the backing file, or any image deeper in the chain (then every range an image above
it allocates is written, and drop is implied as in qemu-img). Write order: the base is
grown when it is smaller, the top's data and zero ranges are written into the base through its
driver (refcounts, data, L2, L1 in that order), the base is flushed, and only then is the top
emptied (unless drop). The top's guest view never changes: every range reads the same from the
top and, once committed, from the base. The base itself is written in place: a kill during the
commit leaves each of its ranges old or new, not the base as a whole (the atomic switch of a
qcow2 base to new tables is not done yet).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ..errors import InvalidArgument
from ..image import UNALLOCATED, ZERO, open_image

CHUNK = 1024 * 1024


class CommitError(InvalidArgument):
    """The image has no backing file, or the base is not in its chain."""


def _identity(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _find_base(top, base):
    """The depth (1 = the backing file) of `base` in top's chain, or None."""
    want = _identity(base)
    depth = 0
    for layer in top.chain():
        if depth and want is not None and _identity(layer.filename) == want:
            return depth
        depth += 1
    return None


def _allocated_above(layers, size):
    """[(start, length, zero)]: the ranges of [0, size) that one of layers (top first) allocates, with
    whether the first layer allocating it reads zeros there."""
    out = []

    def walk(i, offset, length):
        if i == len(layers):
            return
        layer = layers[i]
        end = offset + length
        n = max(0, min(end, layer.size) - offset)
        for e in (layer.block_status(offset, n) if n else []):
            if not e.length:
                continue
            if e.status == UNALLOCATED:
                walk(i + 1, e.start, e.length)
            else:
                zero = e.status == ZERO
                if out and out[-1][0] + out[-1][1] == e.start and out[-1][2] == zero:
                    out[-1] = (out[-1][0], out[-1][1] + e.length, zero)
                else:
                    out.append((e.start, e.length, zero))
        if offset + n < end:
            walk(i + 1, offset + n, end - offset - n)
    walk(0, 0, size)
    return out


def _make_empty(dev):
    """qcow2's make_empty: every cluster unallocated (the backing file shows through)."""
    if dev.format_name != "qcow2":
        return False
    dev._prepare_write()
    n = -(-dev.size // dev.cluster_size)
    step = dev.l2_entries
    try:
        gc = 0
        while gc < n:
            if not dev._l2_offset(gc // step)[0]:
                gc = (gc // step + 1) * step
                continue
            l2off, table, idx = dev._l2_for_write(gc)
            e = table[idx]
            if e or (dev.extended_l2 and table[idx + 1]):
                dev._set_entry(l2off, table, idx, 0, 0 if dev.extended_l2 else None)
                dev._release(e)
            gc += 1
    finally:
        dev._commit_metadata()
    dev.sync()
    return True


def commit_image(filename, fmt=None, base=None, drop=False, cache=None, check_mode=False, on_open=None,
                 progress=None):
    """Commit `filename` into its backing file (see docs/engine-api.md).

    base: the backing file's name (as the user typed it); with base, drop is implied (qemu-img).
    Returns {"committed-bytes", "changed", "base"}; check_mode counts without writing.
    """
    if base is not None:
        drop = True
    with open_image(filename, fmt, read_only=check_mode, force_share=check_mode, cache=cache) as top:
        if on_open is not None:
            on_open(top)
        depth = 1
        if base is not None:
            depth = _find_base(top, base)
            if depth is None:
                raise CommitError("Did not find '%s' in the backing chain of '%s'" % (base, filename))
        if top.backing is None:
            raise CommitError("Image does not have a backing file")
        layers = list(top.chain())
        above, base_dev = layers[:depth], layers[depth]
        base_path = base_dev.filename
        base_fmt = base_dev.format_name
        extents = _allocated_above(above, top.size)
        committed = sum(length for _s, length, _z in extents)
        result = {"committed-bytes": committed, "base": base_path,
                  "changed": bool(committed) or top.size > base_dev.size}
        if check_mode:
            return result
        # the read-only base chain lets go of its locks: the base is opened for writing now (what
        # is read from the layers above it is all theirs: the ranges they allocate)
        for layer in layers[depth:]:
            layer.close_self()
        above[-1].backing = None
        from ..crypto import reopen_keys
        keys = reopen_keys(base_dev, top)
        with open_image(base_path, base_fmt, read_only=False, cache=cache, **keys) as dest:
            if dest.size < top.size:
                from .resize import resize_device
                resize_device(dest, top.size)
            done = 0
            for start, length, zero in extents:
                if zero:
                    dest.write_zeroes(start, length)
                else:
                    off, end = start, start + length
                    while off < end:
                        n = min(CHUNK, end - off)
                        dest.write(off, top.read(off, n))
                        off += n
                done += length
                if progress is not None:
                    progress(done, committed)
            dest.flush()
        if not drop and committed:
            _make_empty(top)
        return result
