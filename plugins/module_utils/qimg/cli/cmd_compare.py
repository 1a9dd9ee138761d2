# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img compare``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import CACHE_MODES, image_name
from .errors import CommandError, HelpRequested, UsageError
from .getopt import getopt
from .progress import QemuProgress, compare_progress


def run(argv, ctx):
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts"),
                "force-share": (False, "U")}
    opts, args = getopt(argv, ":hf:F:T:pqsU", longopts)
    fmt1 = fmt2 = None
    cache = "writeback"
    flags = set()
    objects, image_opts = [], False
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt1 = arg
        elif opt == "F":
            fmt2 = arg
        elif opt == "T":
            cache = arg
        elif opt == "object":
            objects.append(arg)
        elif opt == "image-opts":
            image_opts = True
        else:
            flags.add(opt)
    quiet = "q" in flags
    if len(args) != 2:
        raise UsageError("Expecting two image file names")
    prog = QemuProgress("p" in flags and not quiet, 2.0, ctx.out)
    try:
        return _compare(ctx, args, fmt1, fmt2, cache, flags, prog, objects, image_opts)
    finally:
        prog.end()


def _compare(ctx, args, fmt1, fmt2, cache, flags, prog, objects=(), image_opts=False):
    from ..errors import QimgError
    from ..image import open_image
    from ..ops import compare as ops_compare
    quiet = "q" in flags
    # the single place the names reach the engine
    args = [image_name(a, fmt=f, image_opts=image_opts, objects=objects) for a, f in zip(args, (fmt1, fmt2))]

    def say(text):
        if not quiet:
            ctx.out(text)
    if cache not in CACHE_MODES:
        raise CommandError("Invalid source cache option: %s" % cache, code=2)
    devs = []
    try:
        for name, fmt in ((args[0], fmt1), (args[1], fmt2)):
            try:
                devs.append(open_image(name, fmt, read_only=True, force_share="U" in flags, cache=cache))
            except QimgError as err:
                raise CommandError(err.message, code=2, hint=[h + "\n" for h in err.hint])
        sizes = [d.size for d in devs]
        prog.print_(0, 100)
        try:
            res = ops_compare.compare_devices(devs[0], devs[1], strict="s" in flags)
        except QimgError as err:
            if sizes[0] != sizes[1] and (getattr(err, "offset", None) or 0) >= min(sizes):
                # the error was in the larger image's tail, after qemu-img's warning (on stdout, which
                # qemu-img flushes at exit: after the error)
                ctx.err("%s: %s\n" % (ctx.prog, err.message))
                say("Warning: Image size mismatch!\n")
                return 4
            raise CommandError(err.message, code=4, hint=[h + "\n" for h in err.hint])
        common = min(sizes)
        result, offset = res["result"], res.get("offset")
        if result == ops_compare.SIZE_MISMATCH:
            say("Strict mode: Image size mismatch!\n")
            return 1
        compare_progress(prog, devs, offset, False)
        if result == ops_compare.STATUS_MISMATCH:
            say("Strict mode: Offset %d block status mismatch!\n" % offset)
            return 1
        if result == ops_compare.CONTENT_MISMATCH and offset < common:
            say("Content mismatch at offset %d!\n" % offset)
            return 1
        if sizes[0] != sizes[1]:
            say("Warning: Image size mismatch!\n")
            compare_progress(prog, devs, offset, True)
        if result == ops_compare.CONTENT_MISMATCH:
            say("Content mismatch at offset %d!\n" % offset)
            return 1
        say("Images are identical.\n")
        return 0
    finally:
        for dev in devs:
            dev.close()
