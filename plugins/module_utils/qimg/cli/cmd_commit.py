# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img commit [--object objectdef] [--image-opts] [-q] [-f fmt] [-t cache] [-b base] [-r rate_limit]
[-d] [-p] filename``, and our ``--progress=json`` (one JSON object per line, as convert's).

The base is written in place, as qemu-img writes it (its layout is what `map` and `check` show, and
iotests compare): a kill leaves no corruption and each cluster old or new. The modules (and the
engine's default) switch a qcow2 base to its new content as a whole instead."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import CACHE_MODES, cvtnum, edit_target, progress_mode
from .cmd_resize import report_open
from .errors import CommandError, HelpRequested, UsageError
from .getopt import getopt
from .progress import JsonProgress, QemuProgress


def run(argv, ctx):
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts"),
                "progress": (True, "progress")}
    opts, args = getopt(argv, ":f:ht:b:dpqr:", longopts)
    fmt = base = None
    rate = 0
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
            progress = progress or "human"
        elif opt == "progress":
            progress = progress_mode(arg)
        elif opt == "q":
            quiet = True
        elif opt == "r":
            rate = cvtnum("rate limit", arg)
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
    meter = QemuProgress(progress == "human", 1.0, ctx.out)
    as_json = JsonProgress(ctx.out) if progress == "json" else None

    def opened(dev):
        report_open(ctx, dev, fmt, filename)
        meter.print_(0, 100)

    def step(done, total):
        if as_json is not None:
            as_json(done, total)
        else:
            meter.print_(100.0 * done / total, 0)

    try:
        done = ops_commit.commit_image(filename, fmt=fmt, base=base, drop=drop, cache=cache, on_open=opened,
                                       progress=step, rate_limit=rate, atomic=False)
        meter.print_(100, 0)
        if as_json is not None:
            as_json.finish(done["committed-bytes"])
    finally:
        meter.end()
    if not quiet:
        ctx.out("Image committed.\n")
    return 0
