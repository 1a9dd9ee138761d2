# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img rebase [-q] [-f fmt] [-t cache] [-T src_cache] [-p] [-u] [-U] [--object ...] [--image-opts]
-b backing_file [-F backing_fmt] filename`` (qemu-img 7.2 has no -c for rebase: it is refused as there), and
our ``--progress=json`` (one JSON object per line, as convert's)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import CACHE_MODES, edit_target, progress_mode
from .cmd_resize import report_open
from .errors import CommandError, HelpRequested, UsageError
from .getopt import getopt
from .progress import JsonProgress, QemuProgress


def run(argv, ctx):
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts"),
                "force-share": (False, "U"), "progress": (True, "progress")}
    opts, args = getopt(argv, ":hf:F:b:upt:T:qU", longopts)
    fmt = backing_fmt = backing = None
    cache = src_cache = "writeback"
    unsafe = progress = quiet = share = image_opts = False
    objects = []
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "F":
            backing_fmt = arg
        elif opt == "b":
            backing = arg
        elif opt == "u":
            unsafe = True
        elif opt == "p":
            progress = progress or "human"
        elif opt == "progress":
            progress = progress_mode(arg)
        elif opt == "t":
            cache = arg
        elif opt == "T":
            src_cache = arg
        elif opt == "q":
            quiet = True
        elif opt == "U":
            share = True
        elif opt == "image-opts":
            image_opts = True
        elif opt == "object":
            objects.append(arg)
    if quiet:
        progress = False
    if len(args) != 1:
        raise UsageError("Expecting one image file name")
    if not unsafe and backing is None:
        raise UsageError("Must specify backing file (-b) or use unsafe mode (-u)")
    filename = args[0]
    meter = QemuProgress(progress == "human", 2.0, ctx.out)
    as_json = JsonProgress(ctx.out) if progress == "json" else None
    meter.print_(0, 100)
    try:
        if cache not in CACHE_MODES:
            raise CommandError("Invalid cache option: %s" % cache)
        if src_cache not in CACHE_MODES:
            raise CommandError("Invalid source cache option: %s" % src_cache)
        filename, fmt = edit_target(filename, fmt, image_opts, objects)
        from ..ops import rebase as ops_rebase

        def opened(dev):
            report_open(ctx, dev, fmt, filename)

        def step(done, total):
            if as_json is not None:
                as_json(done, total)
                return
            # qemu-img: (float)100 / (size / MIN(size, IO_BUF_SIZE)) per compared step
            meter.print_(100.0 / (total // min(total, ops_rebase.IO_BUF_SIZE)), 100)

        done = ops_rebase.rebase_image(filename, backing, backing_fmt, fmt=fmt, unsafe=unsafe, force_share=share,
                                       cache=cache, src_cache=src_cache, on_open=opened, progress=step)
        meter.print_(100, 0)
        if as_json is not None:
            as_json.finish(done["size"])
    finally:
        meter.end()
    return 0
