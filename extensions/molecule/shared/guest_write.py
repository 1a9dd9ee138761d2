# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Write guest data into a disk image with the collection's engine, as a VM's guest would.

Usage: guest_write.py IMAGE OFFSET LENGTH BYTE [OFFSET LENGTH BYTE ...]
Writes LENGTH bytes of the value BYTE at OFFSET (sizes in bytes, or with k/M suffixes) for each
triple, through the image's format (raw or qcow2, probed), and flushes. The molecule scenarios
use it for "a job wrote to this runner's disk" and to fill their source images.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "plugins", "module_utils"))

from qimg.errors import QimgError  # noqa: E402
from qimg.image import open_image  # noqa: E402
from qimg.sizes import parse_size  # noqa: E402


def main(argv):
    if len(argv) < 4 or (len(argv) - 1) % 3:
        sys.stderr.write(__doc__)
        return 2
    try:
        with open_image(argv[0], read_only=False) as dev:
            for i in range(1, len(argv), 3):
                offset, length = parse_size(argv[i]), parse_size(argv[i + 1])
                dev.write(offset, bytes([int(argv[i + 2], 0)]) * length)
            dev.flush()
    except QimgError as err:
        sys.stderr.write("guest_write.py: %s\n" % err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
