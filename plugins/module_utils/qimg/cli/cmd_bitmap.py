# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img bitmap``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import cvtnum, image_name
from .errors import CommandError, HelpRequested
from .getopt import getopt

_ACTION_OPTS = ("add", "remove", "clear", "enable", "disable", "merge")


def run(argv, ctx):
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts"),
                "add": (False, "add"), "remove": (False, "remove"), "clear": (False, "clear"),
                "enable": (False, "enable"), "disable": (False, "disable"), "merge": (True, "merge"),
                "granularity": (True, "g"), "source-file": (True, "b"), "source-format": (True, "F")}
    opts, args = getopt(argv, ":b:f:F:g:h", longopts)
    fmt = src_fmt = src_file = None
    granularity = 0
    image_opts = False
    actions, objects = [], []
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "b":
            src_file = arg
        elif opt == "f":
            fmt = arg
        elif opt == "F":
            src_fmt = arg
        elif opt == "g":
            granularity = cvtnum("granularity", arg, ctx.warn)
        elif opt in _ACTION_OPTS:
            actions.append((opt, arg if opt == "merge" else None))
        elif opt == "object":
            objects.append(arg)
        elif opt == "image-opts":
            image_opts = True
    acts = [a for a, _ in actions]
    if not actions:
        raise CommandError("Need at least one of --add, --remove, --clear, --enable, --disable, or --merge")
    if granularity and "add" not in acts:
        raise CommandError("granularity only supported with --add")
    if src_fmt and not src_file:
        raise CommandError("-F only supported with -b")
    if src_file and "merge" not in acts:
        raise CommandError("Merge bitmap source file only supported with --merge")
    if len(args) != 2:
        raise CommandError("Expecting filename and bitmap name")
    filename, name = args
    # qemu-img passes the granularity on as a uint32, and 0 as "not given"
    gran = (granularity & 0xFFFFFFFF) if granularity else None
    target = image_name(filename, fmt=fmt, image_opts=image_opts, objects=objects)
    source = image_name(src_file, fmt=src_fmt, objects=objects) if src_file else None
    from ..ops import bitmap as ops_bitmap
    ops_bitmap.bitmap(target, name, actions, fmt=fmt, source_file=source, source_fmt=src_fmt, granularity=gran)
    return 0
