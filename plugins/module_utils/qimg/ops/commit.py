# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`commit`: write what an image allocates into its backing file (qemu-img commit), then empty it.

This version commits into the direct backing file only (qcow2 or raw). Write order: the base is
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

from ..errors import InvalidArgument, UnsupportedFeature
from ..image import DATA, ZERO, full_backing_path, open_image

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
        if base is not None:
            depth = _find_base(top, base)
            if depth is None:
                raise CommitError("Did not find '%s' in the backing chain of '%s'" % (base, filename))
            if depth != 1:
                raise UnsupportedFeature("Committing into '%s', which is not the backing file of '%s', is not "
                                         "supported yet" % (base, filename))
        if top.backing is None:
            raise CommitError("Image does not have a backing file")
        base_path = full_backing_path(top.filename, top.backing_filename)
        base_fmt = top.backing.format_name
        extents = [e for e in top.block_status(0, top.size) if e.status in (DATA, ZERO) and e.length]
        committed = sum(e.length for e in extents)
        result = {"committed-bytes": committed, "base": base_path,
                  "changed": bool(committed) or top.size > top.backing.size}
        if check_mode:
            return result
        # the read-only backing chain lets go of its locks: the base is opened for writing now
        for layer in list(top.backing.chain()):
            layer.close_self()
        top.backing = None
        with open_image(base_path, base_fmt, read_only=False, cache=cache) as dest:
            if dest.size < top.size:
                from .resize import resize_device
                resize_device(dest, top.size)
            done = 0
            for e in extents:
                if e.status == ZERO:
                    dest.write_zeroes(e.start, e.length)
                else:
                    off, end = e.start, e.start + e.length
                    while off < end:
                        n = min(CHUNK, end - off)
                        dest.write(off, top.read(off, n))
                        off += n
                done += e.length
                if progress is not None:
                    progress(done, committed)
            dest.flush()
        if not drop and committed:
            _make_empty(top)
        return result
