# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`bitmap`: add, remove, clear, enable, disable and merge persistent dirty bitmaps of a qcow2
image (qemu-img bitmap), several actions in one call, in order.

As in qemu-img, the actions work on the bitmaps in memory and the image stores them when it is
closed; an action that fails stops the list, and the ones before it are kept (stored).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import QimgError
from ..image import open_image

ACTIONS = ("add", "remove", "clear", "enable", "disable", "merge")
NODE_NAME = "#block000"   # qemu-img names the nodes it opens "#blockNNN"


def _failed(op, name, err):
    from ..formats.qcow2.bitmap_ops import BitmapError
    return BitmapError("Operation %s on bitmap %s failed: %s" % (op, name, err.message), hint=err.hint)


def _store_of(dev):
    if dev.format_name != "qcow2":
        return None
    from ..formats.qcow2.bitmap_ops import bitmap_store
    return bitmap_store(dev)


def _not_found(name):
    from ..formats.qcow2.bitmap_ops import BitmapError
    return BitmapError("Dirty bitmap '%s' not found" % name)


def _apply(store, src_store, act, arg, name, granularity):
    from ..formats.qcow2.bitmap_ops import BitmapError
    if store is None:
        if act == "add":
            if not name:
                raise BitmapError("Bitmap name cannot be empty")
            if granularity is not None and (granularity < 512 or granularity & (granularity - 1)):
                raise BitmapError("Granularity must be power of 2 and at least 512")
            raise BitmapError("Can't store persistent bitmaps to %s: Operation not supported" % NODE_NAME)
        raise _not_found(name)
    if act == "add":
        store.add(name, granularity, node=NODE_NAME)
    elif act == "remove":
        store.remove(name)
    elif act == "clear":
        store.clear(name)
    elif act in ("enable", "disable"):
        store.enable(name, act == "enable")
    elif act == "merge":
        store.lookup(name)
        if src_store is None:
            raise _not_found(arg)
        store.merge(name, src_store, arg)


def bitmap_list(dev, counts=True):
    """[{"name", "granularity", "flags", "count"}] of an open image (count: dirty bytes, None when
    the bitmap is inconsistent)."""
    store = _store_of(dev)
    if store is None:
        return []
    out = []
    for b in store.bitmaps:
        flags = []
        if b.inconsistent:
            flags.append("in-use")
        if b.enabled:
            flags.append("auto")
        out.append({"name": b.name, "granularity": b.granularity, "flags": flags,
                    "count": None if b.inconsistent or not counts else b.dirty_count()})
    return out


def has_bits(dev, name):
    """Whether the bitmap has bits set (True for an inconsistent one: using it is refused)."""
    store = _store_of(dev)
    if store is None:
        raise _not_found(name)
    b = store.lookup(name)
    return b.inconsistent or b.has_bits()


def merge_needed(dev, name, source, src_name):
    """Whether merging source's bitmap src_name into dev's bitmap name would set new bits (the
    lookups and checks of the merge itself fail as they would)."""
    store = _store_of(dev)
    src_store = _store_of(source)
    if store is None:
        raise _not_found(name)
    dst = store.lookup(name)
    if src_store is None:
        raise _not_found(src_name)
    src = src_store.lookup(src_name)
    if dst.inconsistent or src.inconsistent:
        return True     # the merge reports it
    return not dst.contains(src)


def run_actions(dev, name, actions, granularity=None, source=None):
    """Run (action, argument) pairs on the open, writable image dev, qemu-img bitmap's way; the
    bitmaps go to the file when dev closes. source: the open image --merge reads from (default dev)."""
    store = _store_of(dev)
    src_store = store if source is None else _store_of(source)
    for act, arg in actions:
        if act not in ACTIONS:
            raise QimgError("Unknown bitmap action '%s'" % act)
        try:
            _apply(store, src_store, act, arg, name, granularity)
        except QimgError as err:
            raise _failed(act, name, err)


def bitmap(filename, name, actions, fmt=None, source_file=None, source_fmt=None, granularity=None):
    """qemu-img bitmap: actions is a list of (action, argument) with action in ACTIONS (the
    argument is the source bitmap of "merge", else None). Returns {"before": [...], "after": [...]}
    (bitmap_list() of the image before and after)."""
    if not actions:
        raise QimgError("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge")
    source = None
    with open_image(filename, fmt, read_only=False, open_backing=False) as dev:
        before = bitmap_list(dev, counts=False)
        try:
            if source_file is not None:
                source = open_image(source_file, source_fmt, read_only=True, open_backing=False)
            run_actions(dev, name, actions, granularity, source)
        finally:
            if source is not None:
                source.close()
    with open_image(filename, fmt, read_only=True, force_share=True, open_backing=False) as dev:
        after = bitmap_list(dev, counts=False)
    return {"before": before, "after": after}
