# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img check``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import CACHE_MODES, image_name, output_format
from .errors import CommandError, HelpRequested, UsageError
from .getopt import iter_getopt
from .output import format_check
from ..formats.qcow2.check import PROG


# The qcow2 driver's message when -r leaks meets a referenced cluster with refcount 0.
# raw_open()'s warning for a probed raw image opened read-write (no program name prefix).
PROBED_RAW_WARNING = ("WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                      "         Automatically detecting the format is dangerous for raw images, "
                      "write operations on block 0 will be restricted.\n"
                      "         Specify the 'raw' format explicitly to remove the restrictions.\n")


def run(argv, ctx):
    longopts = {"help": (False, "h"), "format": (True, "f"), "repair": (True, "r"), "output": (True, "output"),
                "object": (True, "object"), "image-opts": (False, "image-opts"), "force-share": (False, "U")}
    fmt, output, cache, repair, quiet, share = None, None, "writeback", None, False, False
    objects, image_opts = [], False
    args = []
    for opt, arg in iter_getopt(argv, ":hf:r:T:qU", longopts):
        if opt is None:
            args = arg
        elif opt == "h":
            raise HelpRequested()
        elif opt == "f":
            fmt = arg
        elif opt == "r":
            if arg not in ("leaks", "all"):
                raise UsageError("Unknown option value for -r (expecting 'leaks' or 'all'): %s" % arg)
            repair = arg
        elif opt == "output":
            output = arg
        elif opt == "T":
            cache = arg
        elif opt == "q":
            quiet = True
        elif opt == "U":
            share = True
        elif opt == "object":
            objects.append(arg)
        elif opt == "image-opts":
            image_opts = True
    if len(args) != 1:
        raise UsageError("Expecting one image file name")
    filename = args[0]
    output = output_format(output)
    if cache not in CACHE_MODES:
        raise CommandError("Invalid source cache option: %s" % cache)
    from ..ops import check as ops_check
    # the single place the image's name reaches the engine
    filename = image_name(filename, fmt=fmt, image_opts=image_opts, objects=objects)
    # qemu-img opens the whole chain first: a missing backing file fails the check
    probed = ops_check.probe_format(filename, fmt)
    if repair is not None and probed["probed-raw"]:
        ctx.err(PROBED_RAW_WARNING % filename)
    try:
        res = ops_check.check_image(filename, fmt=fmt, repair=repair, force_share=share, cache=cache)
    except ops_check.CheckNotSupported as err:
        raise CommandError(err.message, code=ops_check.EXIT_UNSUPPORTED)
    if res["messages"]:
        # a line starting with PROG is an error_report(): qemu-img's name first
        ctx.err("".join((ctx.prog + ": " + line[len(PROG):] if line.startswith(PROG) else line) + "\n"
                        for line in res["messages"]))
    if res.get("failed"):
        # qemu's check stops (e.g. -EIO when -r leaks meets a cluster that needs a rebuild):
        # bdrv_check() fails and no figures are printed
        raise CommandError("Check failed: %s" % res["failed"])
    if not quiet:
        ctx.out(format_check(res, output))
    if res["check-errors"]:
        raise CommandError("Check failed")
    return res["exit-code"]
