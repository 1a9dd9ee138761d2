# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`dd`: copy a range of an image's guest content into a new image, as qemu-img 7.2 dd does.

qemu-img 7.2 (img_dd) reads `size` bytes of the input, where size is the input's size or count*bs
when that is smaller, starting at skip*bs, and creates the output with size - skip*bs bytes (0 when
skip*bs is past size: it then reports "cannot skip to specified offset" and still succeeds). Note
that count is measured from the start of the input, not from the skip offset (so skip=1 count=2
copies one block): that is 7.2's behaviour and is kept. The created output's size is rounded up to
512 bytes, as QEMU's raw and qcow2 drivers create it.

The copy is convert's pipeline run on a window of the input (a read-only view of the range): the
output goes to a temporary file renamed into place (a failure leaves an existing output file
untouched), and zero or unallocated ranges are not written as data (the output holds the same
guest content qemu-img's does; qemu-img dd writes every block).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ..errors import BlockIOError, ImageInUse, InvalidArgument, QimgError, UnsupportedFeature
from ..image import _PROTOCOLS, DATA, ZERO, BlockDevice, Extent, chain_block_status
from .convert import convert, open_sources
from .create import refuse_if_in_use

INT64_MAX = (1 << 63) - 1
OUTPUT_FORMATS = ("raw", "qcow2")


def plan_dd(size, block_size=512, count=None, skip=None):
    """qemu-img 7.2's arithmetic: (input offset, bytes to copy, output size before rounding,
    skip_failed). count/skip None: not given."""
    bs = block_size
    if count is not None and count <= INT64_MAX // bs and count * bs < size:
        size = count * bs
    if skip is not None and (skip > INT64_MAX // bs or size < bs * skip):
        return size, 0, 0, True
    in_pos = 0 if skip is None else skip * bs
    return in_pos, size - in_pos, size - in_pos, False


class InputWindow(BlockDevice):
    """A read-only view of [start, start+length) of an open device (its whole backing chain),
    zero-padded to size bytes. Closing it closes the device."""

    format_name = "raw"

    def __init__(self, dev, start, length, size):
        super(InputWindow, self).__init__(dev.filename, read_only=True)
        self.dev, self.start, self.length, self.size = dev, start, length, size

    def block_status(self, offset, length):
        end = min(offset + length, self.size)
        out = []
        data_end = min(end, self.length)
        if offset < data_end:
            for ext in chain_block_status(self.dev, self.start + offset, data_end - offset):
                out.append(Extent(ext.start - self.start, ext.length, ZERO if ext.zero else DATA, None))
        lo = max(offset, self.length)
        if lo < end:
            out.append(Extent(lo, end - lo, ZERO, None))
        return out

    def readinto(self, offset, view):
        n = len(view)
        self.check_range(offset, n)
        data = max(0, min(n, self.length - offset))
        try:
            if data:
                self.dev.readinto(self.start + offset, view[:data])
        except BlockIOError as err:
            raise BlockIOError("error while reading from input image file: %s" % err.message)
        if data < n:
            view[data:] = bytes(n - data)

    def read(self, offset, length):
        buf = bytearray(length)
        self.readinto(offset, memoryview(buf))
        return bytes(buf)

    def close(self):
        if self.dev is not None:
            dev, self.dev = self.dev, None
            dev.close()


def output_path(text):
    """The file an `of=` name creates: ``file:NAME`` is NAME; another protocol's name is refused
    with qemu-img's message (json: is no protocol there)."""
    if text.startswith("file:"):
        return text[5:]
    colon = text.find(":")
    if colon > 0 and "/" not in text[:colon]:
        prefix = text[:colon]
        if prefix in _PROTOCOLS and prefix != "json":
            raise UnsupportedFeature("Protocol driver '%s' does not support image creation" % prefix)
        raise InvalidArgument("Unknown protocol '%s'" % prefix)
    return text


def dd(source, dest, src_fmt=None, out_fmt="raw", block_size=512, count=None, skip=None, force_share=False,
       warn=None, dest_name=None):
    """Copy as `qemu-img dd if=source of=dest` does. Returns {"virtual-size": output size,
    "cannot-skip": bool}: with skip past the input's end qemu-img reports "SOURCE: cannot skip to
    specified offset" and creates an empty output (exit code 0).

    source/dest are image names as the opener takes them (dest a plain file name); dest_name is
    the output's name as typed, for messages (default dest)."""
    shown = dest if dest_name is None else dest_name
    if not 1 <= block_size <= (1 << 31) - 1:
        raise InvalidArgument("Invalid bs specified. Must be between 1 and 2147483647.")
    for name, value in (("count", count), ("skip", skip)):
        if value is not None and not 0 <= value <= INT64_MAX:
            raise InvalidArgument("Invalid %s specified. Must be between 0 and %d." % (name, INT64_MAX))
    if source == "":
        raise InvalidArgument("Could not open '': The 'file' block driver requires a file name")
    dev = open_sources([source], src_fmt, force_share)[0]
    try:
        if out_fmt == "luks":
            # qemu-img dd passes no encryption options, so QEMU's luks driver always refuses
            raise InvalidArgument("%s: error while creating output image: Parameter 'key-secret' is required for "
                                  "cipher" % shown)
        if out_fmt not in OUTPUT_FORMATS:
            raise InvalidArgument("Unknown file format")
        dest = output_path(dest)
        if not dest:
            raise InvalidArgument("%s: error while creating output image: Could not create '': No such file or "
                                  "directory" % shown)
        if os.path.isdir(dest):     # (renaming over "." would say "Device or resource busy")
            raise InvalidArgument("%s: error while creating output image: Could not create '%s': Is a directory"
                                  % (shown, dest))
        in_pos, length, out_size, skip_failed = plan_dd(dev.size, block_size, count, skip)
        out_size = (out_size + 511) // 512 * 512
        try:
            refuse_if_in_use(dest)
        except ImageInUse as err:
            raise ImageInUse("%s: error while creating output image: %s" % (shown, err.message), hint=err.hint)
        window = InputWindow(dev, in_pos, length, out_size)
    except BaseException:
        dev.close()
        raise
    try:
        convert([window], dest, out_fmt=out_fmt, options={}, warn=warn)
    except BlockIOError:
        raise
    except QimgError as err:
        if err.message.startswith("Could not create '") or err.message.startswith("Could not open '%s'" % dest):
            raise type(err)("%s: error while creating output image: %s" % (shown, err.message), hint=err.hint)
        raise
    finally:
        window.close()
    return {"virtual-size": out_size, "cannot-skip": skip_failed}
