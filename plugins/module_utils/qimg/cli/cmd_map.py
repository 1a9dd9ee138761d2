# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img map``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import cvtnum, image_name, output_format
from .errors import CommandError, HelpRequested, UsageError
from .getopt import getopt
from .output import write_map


def run(argv, ctx):
    longopts = {"help": (False, "h"), "format": (True, "f"), "output": (True, "output"),
                "object": (True, "object"), "image-opts": (False, "image-opts"),
                "force-share": (False, "U"), "start-offset": (True, "s"), "max-length": (True, "l")}
    opts, args = getopt(argv, ":f:hU", longopts)
    fmt, output, share, start, max_length = None, None, False, 0, None
    objects, image_opts = [], False
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "output":
            output = arg
        elif opt == "U":
            share = True
        elif opt == "s":
            start = cvtnum("start offset", arg, ctx.warn)
        elif opt == "l":
            max_length = cvtnum("max length", arg, ctx.warn)
        elif opt == "object":
            objects.append(arg)
        elif opt == "image-opts":
            image_opts = True
    if len(args) != 1:
        raise UsageError("Expecting one image file name")
    output = output_format(output)
    from ..ops import map as ops_map
    name = image_name(args[0], fmt=fmt, image_opts=image_opts, objects=objects)
    entries = ops_map.iter_map(name, fmt=fmt, start_offset=start, max_length=max_length, force_share=share)
    error = write_map(ctx.out, entries, output, start)
    if error:
        raise CommandError(error)
    return 0
