# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``checksum`` (no qemu-img has it): ``HEXDIGEST  filename``, blksum's digest of the guest content."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import image_name
from .errors import HelpRequested, UsageError
from .getopt import getopt
from .progress import QemuProgress


def run(argv, ctx):
    longopts = {"help": (False, "h"), "format": (True, "f"), "object": (True, "object"),
                "image-opts": (False, "image-opts"), "force-share": (False, "U"),
                "algorithm": (True, "a"), "progress": (False, "p")}
    opts, args = getopt(argv, ":hf:Upa:", longopts)
    fmt, share, show_progress, algorithm = None, False, False, "sha256"
    objects, image_opts = [], False
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "U":
            share = True
        elif opt == "p":
            show_progress = True
        elif opt == "a":
            algorithm = arg
        elif opt == "object":
            objects.append(arg)
        elif opt == "image-opts":
            image_opts = True
    if len(args) != 1:
        raise UsageError("Expecting one image file name")
    from ..ops import checksum as ops_checksum
    ops_checksum.new_hash(algorithm)    # an unknown algorithm fails before the image is opened
    name = image_name(args[0], fmt=fmt, image_opts=image_opts, objects=objects)
    prog = QemuProgress(show_progress, 2.0, ctx.out)
    prog.print_(0, 100)
    state = {"done": 0}

    def report(done, total, elapsed):
        if total and done < total:   # 100% is printed once, at the end
            step = done - state["done"]
            state["done"] = done
            prog.print_(100.0 * step / total, 100)
    try:
        result = ops_checksum.image_checksum(name, fmt=fmt, algorithm=algorithm, force_share=share,
                                             progress=report if show_progress else None)
        prog.print_(100, 0)
    finally:
        prog.end()
    ctx.out("%s  %s\n" % (result["checksum"], args[0]))
    return 0
