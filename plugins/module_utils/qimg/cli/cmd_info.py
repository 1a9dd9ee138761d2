# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img info``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import image_name, output_format
from ..errors import UnsafeImage
from .errors import CommandError, HelpRequested, UsageError
from .getopt import getopt
from .output import format_info


def run(argv, ctx):
    longopts = {"help": (False, "h"), "format": (True, "f"), "output": (True, "output"),
                "backing-chain": (False, "backing-chain"), "object": (True, "object"),
                "image-opts": (False, "image-opts"), "force-share": (False, "U")}
    opts, args = getopt(argv, ":f:hU", longopts)
    fmt, output, chain, share = None, None, False, False
    objects, image_opts = [], False
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "output":
            output = arg
        elif opt == "backing-chain":
            chain = True
        elif opt == "U":
            share = True
        elif opt == "object":
            objects.append(arg)
        elif opt == "image-opts":
            image_opts = True
    if len(args) != 1:
        raise UsageError("Expecting one image file name")
    output = output_format(output)
    from ..ops import info as ops_info
    name = image_name(args[0], fmt=fmt, image_opts=image_opts, objects=objects)
    try:
        data = ops_info.image_info(name, fmt=fmt, backing_chain=chain, force_share=share)
    except UnsafeImage as e:
        if chain and getattr(e, "loop_path", None):
            raise CommandError("Backing file '%s' creates an infinite loop." % e.loop_path)
        raise
    ctx.out(format_info(data, output))
    return 0
