# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img resize``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import strtosz
from .errors import CommandError, HelpRequested, UsageError
from .getopt import getopt

_SIZE_HINT = ("Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-",
              "and exabytes, respectively.")
PREALLOC_MODES = ("off", "metadata", "falloc", "full")
PROBED_RAW_WARNING = ("WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                      "         Automatically detecting the format is dangerous for raw images, "
                      "write operations on block 0 will be restricted.\n"
                      "         Specify the 'raw' format explicitly to remove the restrictions.\n")


def report_open(ctx, dev, fmt, filename):
    """What qemu-img prints while it opens an image for writing: the probed-raw warning, the
    messages of the repair of a dirty lazy-refcounts image."""
    if fmt is None and dev.format_name == "raw":
        ctx.err(PROBED_RAW_WARNING % filename)
    messages = getattr(dev, "repair_messages", None)
    if messages:
        ctx.err("".join(m + "\n" for m in messages))


def image_opts_target(text, fmt):
    """--image-opts: the file and format of a "driver=FMT,file.filename=PATH,..." spec (options
    of the driver's runtime, e.g. cache sizes, do not change what resize/amend write)."""
    from .args import split_opt_list
    spec = {}
    for item in split_opt_list(text):
        key, _eq, value = item.partition("=")
        spec[key] = value
    if fmt is not None:
        raise CommandError("--image-opts and --format are mutually exclusive")
    filename = spec.get("file.filename") or spec.get("file")
    if not filename and not spec.get("driver"):
        raise CommandError("Could not open '%s': Must specify either driver or file" % text)
    if not filename:
        raise CommandError("Could not open '%s': A block device must be specified for \"file\"" % text)
    return filename, spec.get("driver")


def run(argv, ctx):
    if len(argv) < 3:
        raise UsageError("Not enough arguments")
    # the size goes first, so that a negative size is not taken for an option
    argv = list(argv)
    size = argv.pop()
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts"),
                "preallocation": (True, "preallocation"), "shrink": (False, "shrink")}
    image_opts = False
    objects = []
    opts, args = getopt(argv, ":f:hq", longopts)
    fmt, quiet, shrink, prealloc = None, False, False, None
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "q":
            quiet = True
        elif opt == "preallocation":
            if arg not in PREALLOC_MODES:
                raise CommandError("Invalid preallocation mode '%s'" % arg)
            prealloc = arg
        elif opt == "shrink":
            shrink = True
        elif opt == "image-opts":
            image_opts = True
        elif opt == "object":
            objects.append(arg)
    if len(args) != 1:
        raise UsageError("Expecting image file name and size")
    from .args import edit_target
    filename, fmt = edit_target(args[0], fmt, image_opts, objects)
    relative = 0
    if size[:1] == "+":
        relative, size = 1, size[1:]
    elif size[:1] == "-":
        relative, size = -1, size[1:]
    try:
        n, _hexwarn = strtosz(size)
    except (ValueError, OverflowError):
        raise CommandError("Parameter 'size' expects a non-negative number below 2^64",
                           hint=[h + "\n" for h in _SIZE_HINT])
    from ..ops import resize as ops_resize

    def opened(dev):
        report_open(ctx, dev, fmt, filename)

    try:
        ops_resize.resize_image(filename, n, fmt=fmt, relative=relative, shrink=shrink, preallocation=prealloc,
                                on_open=opened, strict=True)
    except ops_resize.ShrinkRefused as e:
        ctx.err("%s: %s\n" % (ctx.prog, e.message))
        ctx.warn(e.warning)
        return 1
    if not quiet:
        ctx.out("Image resized.\n")
    return 0
