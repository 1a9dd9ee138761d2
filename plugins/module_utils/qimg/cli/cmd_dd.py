# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img dd``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import SIZE_HINT, cvtnum, image_name, strtosz
from .errors import CommandError, HelpRequested
from .getopt import getopt

INT_MAX = (1 << 31) - 1
OPERANDS = ("bs", "count", "if", "of", "skip")


def _block_size(value, warn):
    """qemu-img's cvtnum_full("bs", value, 1, INT_MAX)."""
    try:
        res, hexwarn = strtosz(value)
        if hexwarn:
            warn("Using a multiplier suffix on hex numbers is deprecated: %s" % value)
    except OverflowError:
        res = None
    except ValueError:
        raise CommandError(["Invalid bs specified. %s" % SIZE_HINT[0], SIZE_HINT[1]])
    if res is None or not 1 <= res <= INT_MAX:
        raise CommandError("Invalid bs specified. Must be between 1 and %d." % INT_MAX)
    return res


def run(argv, ctx):
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts"),
                "force-share": (False, "U")}
    opts, args = getopt(argv, ":hf:O:U", longopts)
    fmt, out_fmt, share, image_opts, objects = None, "raw", False, False, []
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "O":
            out_fmt = arg
        elif opt == "U":
            share = True
        elif opt == "object":
            objects.append(arg)
        elif opt == "image-opts":
            image_opts = True
    given = {}
    for operand in args:
        key, eq, value = operand.partition("=")
        if not eq or key not in OPERANDS:
            raise CommandError("unrecognized operand %s" % key)
        if key == "bs":
            given[key] = _block_size(value, ctx.warn)
        elif key in ("count", "skip"):
            given[key] = cvtnum(key, value, ctx.warn)
        else:
            given[key] = value
    if "if" not in given or "of" not in given:
        raise CommandError("Must specify both input and output files")
    from ..ops import dd as ops_dd
    source = image_name(given["if"], fmt=fmt, image_opts=image_opts, objects=objects)
    result = ops_dd.dd(source, given["of"], src_fmt=fmt, out_fmt=out_fmt, block_size=given.get("bs", 512),
                       count=given.get("count"), skip=given.get("skip"), force_share=share, warn=ctx.warn)
    if result["cannot-skip"]:
        ctx.err("%s: %s: cannot skip to specified offset\n" % (ctx.prog, given["if"]))
    return 0
