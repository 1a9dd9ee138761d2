# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`resize`: grow or shrink an image in place (qemu-img resize), with qemu-img's refusals."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import InvalidArgument
from ..image import open_image
from ..sizes import parse_size

PREALLOCATION_MODES = ("off", "metadata", "falloc", "full")
SHRINK_WARNING = ("Shrinking an image will delete all data beyond the shrunken image's end. Before performing "
                  "such an operation, make sure there is no important data there.")


class ShrinkRefused(InvalidArgument):
    """Shrinking without shrink=True: qemu-img's error plus its warning (self.warning)."""

    warning = SHRINK_WARNING


def _int64(n):
    """qemu-img keeps sizes in an int64_t: values of 2^63 and more wrap to negative."""
    n &= (1 << 64) - 1
    return n - (1 << 64) if n >= 1 << 63 else n


def new_size_for(current, size, relative=0):
    """The target size qemu-img computes: size, or current +/- size when relative is +1/-1."""
    if relative:
        return _int64(current + relative * _int64(size))
    return _int64(size)


def plan_resize(dev, size, relative=0, shrink=False, preallocation=None, strict=False):
    """Validate a resize of the open device like qemu-img; returns the new size in bytes.

    An unchanged size passes unless strict (qemu-img asks the driver anyway, which may refuse)."""
    prealloc = preallocation or "off"
    total = new_size_for(dev.size, size, relative)
    if total <= 0:
        raise InvalidArgument("New image size must be positive")
    if total <= dev.size and prealloc != "off":
        raise InvalidArgument("Preallocation can only be used for growing images")
    if total < dev.size and not shrink:
        raise ShrinkRefused("Use the --shrink option to perform a shrink operation.")
    if total == dev.size and not strict:
        return total
    if dev.format_name == "qcow2":
        from ..formats.qcow2.resize import check_resize
        check_resize(dev, total, prealloc)
    elif prealloc not in ("off", "falloc", "full"):
        raise InvalidArgument("Unsupported preallocation mode: %s" % prealloc)
    return total


def resize_device(dev, new_size, preallocation=None):
    """Resize an open, writable device to new_size (already validated by plan_resize)."""
    prealloc = preallocation or "off"
    if dev.format_name == "qcow2":
        from ..formats.qcow2.resize import resize
        resize(dev, new_size, prealloc)
    else:
        dev.resize(new_size, prealloc)


def resize_image(filename, size, fmt=None, relative=0, shrink=False, preallocation=None, check_mode=False,
                 on_open=None, strict=False):
    """Resize an image (see docs/engine-api.md).

    size: bytes (int) or a size string ("10G"); relative: 0, +1 or -1 (qemu-img's "+N"/"-N").
    Returns {"old-size", "new-size", "changed"}; check_mode decides without writing.
    A size equal to the current one changes nothing (qemu-img still says "Image resized."; with
    strict, the format's refusals apply to it as in qemu-img).
    """
    if preallocation is not None and preallocation not in PREALLOCATION_MODES:
        raise InvalidArgument("Invalid preallocation mode '%s'" % preallocation)
    if not isinstance(size, int) or isinstance(size, bool):
        size = parse_size(size)
    with open_image(filename, fmt, read_only=check_mode, force_share=check_mode) as dev:
        if on_open is not None:
            on_open(dev)
        old = dev.size
        total = plan_resize(dev, size, relative, shrink, preallocation, strict)
        changed = total != old
        if changed and not check_mode:
            resize_device(dev, total, preallocation)
        return {"old-size": old, "new-size": total, "changed": changed}
