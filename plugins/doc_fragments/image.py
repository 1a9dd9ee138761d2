# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):

    # Options and notes shared by every module that works on one disk image file.
    DOCUMENTATION = r"""
options:
  path:
    description:
      - Path of the disk image file on the managed host.
    type: path
    required: true
requirements:
  - Python 3.9 or newer on the managed host.
notes:
  - The disk image formats are implemented in pure Python inside this collection;
    the managed host needs neither C(qemu-img) nor C(qemu-utils).
  - Facts use the names of C(qemu-img info --output=json) with C(-) replaced by C(_),
    for example C(virtual-size) becomes C(virtual_size).
"""

    # Attributes of a module that only reads images.
    INFO_MODULE = r"""
attributes:
  check_mode:
    support: full
    details: This action does not modify state.
  diff_mode:
    support: N/A
    details: This action does not modify state.
  platform:
    platforms: posix
"""

    # The option of every module that opens an image with its backing chain.
    UNSAFE_BACKING = r"""
options:
  allow_unsafe_backing:
    description:
      - Open backing files whose names, as stored in the images read, use QEMU's C(json:) syntax
        or a protocol prefix (such as C(nbd:), C(file:) or C(http:)).
      - By default such a backing file name is refused and the task fails, because the name comes
        from whoever wrote the image and could make the module open something other than a local
        file. Set it to V(true) only for images you trust.
    type: bool
    default: false
"""
