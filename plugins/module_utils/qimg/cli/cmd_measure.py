# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img measure``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import add_option_list, cvtnum, image_name, output_format, snapshot_opts, split_opt_list
from .errors import CommandError, HelpRequested
from .getopt import GetoptError, LetterGetopt
from .output import format_measure


def _measure_getopt(argv, ctx):
    """measure parses without ':' in 7.2: glibc prints its own message, then qemu-img shows the help."""
    longopts = {"help": (False, "h"), "image-opts": (False, "image-opts"), "object": (True, "object"),
                "output": (True, "output"), "size": (True, "size"), "force-share": (False, "U")}
    parser = LetterGetopt(argv, "hf:O:o:l:U", longopts)
    opts = []
    try:
        for item in parser:
            opts.append(item)
    except GetoptError as err:
        if err.arg.startswith("--"):
            text = ("option '%s' requires an argument" % err.arg if err.kind == "missing"
                    else "unrecognized option '%s'" % err.arg)
        else:
            text = ("option requires an argument -- '%s'" % parser.letter if err.kind == "missing"
                    else "invalid option -- '%s'" % parser.letter)
        ctx.err("%s: %s\n" % (argv[0], text))
        opts.append(("h", None))
    return opts, parser.argv[parser.optind:]


def run(argv, ctx):
    opts, args = _measure_getopt(argv, ctx)
    fmt, out_fmt, options, snapshot, size, output = None, "raw", None, None, None, None
    objects, image_opts = [], False
    share = False
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "O":
            out_fmt = arg
        elif opt == "o":
            options = add_option_list(options, arg)
        elif opt == "l":
            snapshot = snapshot_opts(arg)
        elif opt == "U":
            share = True
        elif opt == "output":
            output = output_format(arg)
        elif opt == "size":
            size = cvtnum("image size", arg, ctx.warn)
        elif opt == "object":
            objects.append(arg)
        elif opt == "image-opts":
            image_opts = True
    output = output or "human"
    if len(args) > 1:
        raise CommandError("At most one filename argument is allowed.")
    filename = args[0] if args else None
    if filename is None and (fmt is not None or snapshot is not None or image_opts):
        raise CommandError("--image-opts, -f, and -l require a filename argument.")
    if filename is not None and size is not None:
        raise CommandError("--size N cannot be used together with a filename.")
    if filename is None and size is None:
        raise CommandError("Either --size N or one filename must be specified.")
    if filename is not None:
        from ..ops.convert import open_sources
        # the single place the image's name reaches the engine
        filename = image_name(filename, fmt=fmt, image_opts=image_opts, objects=objects)
        open_sources([filename], fmt, share, snapshot)[0].close()
    from ..errors import InvalidArgument
    from ..ops import create as ops_create
    from ..ops import measure as ops_measure
    if out_fmt not in ops_create.CREATE_OPTIONS:
        from ..errors import QimgError
        try:
            ops_create.check_create_format(out_fmt)
        except QimgError as err:
            raise CommandError(err.message)
    optdict = {}
    if options is not None:
        try:
            for item in split_opt_list(options):
                if item and "=" not in item:
                    raise InvalidArgument("Invalid parameter '%s'" % item)
            optdict = ops_create.parse_option_string(options)
            typed = ops_create.normalize_options(out_fmt, None, optdict)
        except InvalidArgument as err:
            # qemu: the message, its hint, then its own line
            raise CommandError(err.message, hint=[h + "\n" for h in err.hint]
                               + ["%s: Invalid options for file format '%s'\n" % (ctx.prog, out_fmt)])
    else:
        typed = {}
    if size is not None:
        optdict.pop("size", None)
    if out_fmt == "qcow2":
        ops_measure.check_qcow2_options(typed)
    res = ops_measure.measure(filename=filename, size=size, fmt=fmt, out_fmt=out_fmt, options=optdict,
                              snapshot=snapshot, force_share=share)
    ctx.out(format_measure(res, output))
    return 0
