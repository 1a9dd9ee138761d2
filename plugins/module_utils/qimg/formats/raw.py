# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The raw format: guest offset == file offset; holes found with SEEK_DATA/SEEK_HOLE."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import InvalidArgument, QimgError
from ..image import DATA, DATA_ZERO, HOLE, ZERO, BlockDevice, Extent
from ..protocols.cache import write_zeros


class RawImage(BlockDevice):
    format_name = "raw"

    def __init__(self, filename, file, read_only=True):
        super(RawImage, self).__init__(filename, read_only)
        self.file = file
        # like QEMU's block layer, a raw image's size is rounded up to whole 512-byte sectors
        self.size = (file.length() + 511) // 512 * 512

    @property
    def fd(self):
        return self.file.fd

    def read(self, offset, length):
        self.check_range(offset, length)
        return self.file.pread(offset, length)

    def readinto(self, offset, view):
        self.check_range(offset, len(view))
        self.file.preadinto(offset, view)

    def write(self, offset, data):
        self.check_writable()
        self.check_range(offset, len(data))
        self.file.pwrite(offset, data)

    def write_zeroes(self, offset, length):
        self.check_writable()
        self.check_range(offset, length)
        self.file.punch(offset, length)

    def discard(self, offset, length):
        self.write_zeroes(offset, length)

    def block_status(self, offset, length):
        self.check_range(offset, length)
        return [Extent(s, n, DATA if is_data else ZERO, s)
                for s, n, is_data in self.file.extents(offset, length)]

    def flush(self):
        if not self.read_only:
            self.file.flush()

    def close_self(self):
        if self.file is None:
            return
        try:
            if not self.read_only:
                self.file.flush()
        finally:
            self.file.close()
            self.file = None

    def actual_size(self):
        return self.file.allocated_bytes()

    def resize(self, new_size, preallocation="off"):
        """Truncate or extend the file to new_size bytes (file-posix's truncate: falloc reserves and
        full writes zeros from the old end; shrinking is refused by the caller unless asked)."""
        self.check_writable()
        if preallocation not in ("off", "falloc", "full"):
            raise InvalidArgument("Unsupported preallocation mode: %s" % preallocation)
        old = self.file.length()
        if new_size < old and preallocation != "off":
            raise InvalidArgument("Preallocation can't be used for shrinking an image")
        try:
            if preallocation == "falloc" and new_size > old:
                self.file.allocate(old, new_size - old)
            elif preallocation == "full" and new_size > old:
                zeros = bytes(min(new_size - old, 1 << 20))
                pos = old
                while pos < new_size:
                    n = min(new_size - pos, len(zeros))
                    self.file.pwrite(pos, zeros if n == len(zeros) else zeros[:n])
                    pos += n
            self.file.truncate(new_size)
        except OSError as e:
            raise QimgError("Could not resize file: %s" % e.strerror)
        self.file.flush()
        self.size = (new_size + 511) // 512 * 512


class ProtocolDevice(RawImage):
    """A protocol node at the top (`--image-opts driver=nbd,...`, `json:{"driver": "null-co"}`):
    the guest sees its bytes, and qemu-img names the protocol as the format."""

    def __init__(self, filename, node, read_only=True):
        super(ProtocolDevice, self).__init__(filename, node, read_only)
        self.format_name = node.driver

    def block_status(self, offset, length):
        status = getattr(self.file, "block_status", None)
        if status is None:
            return super(ProtocolDevice, self).block_status(offset, length)
        self.check_range(offset, length)
        out = []
        for s, n, flags in status(offset, length):  # NBD-style flags: 1 hole, 2 zero
            data, zero = not flags & 1, bool(flags & 2)
            kind = (DATA_ZERO if zero else DATA) if data else (ZERO if zero else HOLE)
            out.append(Extent(s, n, kind, s))
        return out


def create_raw(file, size, preallocation="off"):
    """Size an empty file (a protocol node) as a raw image with the given preallocation."""
    if preallocation not in ("off", "falloc", "full"):
        raise InvalidArgument("Invalid parameter '%s'" % preallocation)
    try:
        file.truncate(size)
        if preallocation == "falloc" and size:
            file.allocate(0, size)
        elif preallocation == "full" and size:
            write_zeros(file, 0, size)
        if preallocation != "full" and size:
            # QEMU's file driver allocates the first block of a file it grows from 0 (for its alignment
            # probing): `qemu-img map` of a new raw image shows that block as data
            file.pwrite(0, bytes(min(size, 512 if size < 4096 else 4096)))
    except OSError as e:
        raise QimgError("Could not preallocate image: %s" % e.strerror)
