# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit]
[-d] [-p] filename``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import CACHE_MODES, cvtnum, edit_target
from .cmd_resize import report_open
from .errors import CommandError, HelpRequested, UsageError
from .getopt import getopt
from .progress import QemuProgress


def run(argv, ctx):
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts")}
    opts, args = getopt(argv, ":f:ht:b:dpqr:", longopts)
    fmt = base = None
    cache = "writeback"
    drop = progress = quiet = image_opts = False
    objects = []
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "t":
            cache = arg
        elif opt == "b":
            base = arg
            drop = True
        elif opt == "d":
            drop = True
        elif opt == "p":
            progress = True
        elif opt == "q":
            quiet = True
        elif opt == "r":
            cvtnum("rate limit", arg)   # accepted; the commit is not throttled
        elif opt == "image-opts":
            image_opts = True
        elif opt == "object":
            objects.append(arg)
    if quiet:
        progress = False
    if len(args) != 1:
        raise UsageError("Expecting one image file name")
    filename = args[0]
    if cache not in CACHE_MODES:
        raise CommandError("Invalid cache option: %s" % cache)
    filename, fmt = edit_target(filename, fmt, image_opts, objects)
    from ..ops import commit as ops_commit
    meter = QemuProgress(progress, 1.0, ctx.out)

    def opened(dev):
        report_open(ctx, dev, fmt, filename)
        meter.print_(0, 100)

    def step(done, total):
        meter.print_(100.0 * done / total, 0)

    try:
        ops_commit.commit_image(filename, fmt=fmt, base=base, drop=drop, cache=cache, on_open=opened,
                                progress=step)
        meter.print_(100, 0)
    finally:
        meter.end()
    if not quiet:
        ctx.out("Image committed.\n")
    return 0
