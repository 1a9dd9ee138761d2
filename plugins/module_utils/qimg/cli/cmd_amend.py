# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img amend``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import CACHE_MODES, add_option_list, image_name, split_opt_list
from .errors import CommandError, HelpRequested, UsageError
from .getopt import getopt


def _help_text(fmt):
    from ..errors import QimgError
    from ..ops.amend import amend_option_help
    try:
        options = amend_option_help(fmt)
    except QimgError as e:
        raise CommandError(e.message)
    out = ["Amend options for '%s':\n" % fmt]
    for name, typ, text in options:
        line = "  %s=<%s>" % (name, "bool (on/off)" if typ == "bool" else typ)
        out.append("%-24s - %s\n" % (line, text))
    return "".join(out)


def _option_dict(text):
    out = {}
    for item in split_opt_list(text):
        if not item:
            continue
        name, eq, value = item.partition("=")
        out[name] = value if eq else "on"
    return out


def run(argv, ctx):
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts"),
                "force": (False, "force")}
    image_opts = False
    objects = []
    opts, args = getopt(argv, ":ho:f:t:pq", longopts)
    fmt, options, cache, progress, quiet, force = None, None, "writeback", False, False, False
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "o":
            options = add_option_list(options, arg)
        elif opt == "f":
            fmt = arg
        elif opt == "t":
            cache = arg
        elif opt == "p":
            progress = True
        elif opt == "q":
            quiet = True
        elif opt == "force":
            force = True
        elif opt == "image-opts":
            image_opts = True
        elif opt == "object":
            objects.append(arg)
    if options is None:
        raise UsageError("Must specify options (-o)")
    if quiet:
        progress = False
    from .progress import QemuProgress
    meter = QemuProgress(progress, 1.0, ctx.out)
    wants_help = any(i in ("help", "?") for i in split_opt_list(options))
    try:
        if fmt and wants_help:
            ctx.out(_help_text(fmt))
            return 0
        if len(args) != 1:
            raise CommandError("Expecting one image file name")
        # the single place the image's name reaches the engine
        filename = image_name(args[0], fmt=fmt, image_opts=image_opts, objects=objects)
        if cache not in CACHE_MODES:
            raise CommandError("Invalid cache option: %s" % cache)
        from ..image import open_image
        from ..ops import amend as ops_amend
        if wants_help:
            with open_image(filename, fmt, read_only=True, force_share=True, open_backing=False) as dev:
                detected = dev.format_name
            ctx.out(_help_text(detected))
            return 0
        meter.print_(0, 0)
        from .cmd_resize import report_open

        def opened(dev):
            report_open(ctx, dev, fmt, filename)
        ops_amend.amend_image(filename, _option_dict(options), fmt=fmt, force=force, on_open=opened,
                              progress=lambda percent: meter.print_(percent, 0))
        meter.print_(100, 0)
    finally:
        meter.end()
    return 0
