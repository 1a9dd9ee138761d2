# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img create``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import add_option_list, cvtnum, image_arg, split_opt_list
from .errors import CommandError, HelpRequested, UsageError
from .getopt import getopt
from .output import format_option_help, format_formatting_line


def run(argv, ctx):
    opts, args = getopt(argv, ":F:b:f:ho:qu", {"help": (False, "h"), "object": (True, "object")})
    fmt, base_fmt, base, options, quiet, unsafe = "raw", None, None, None, False, False
    objects = []
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "F":
            base_fmt = arg
        elif opt == "b":
            base = arg
        elif opt == "f":
            fmt = arg
        elif opt == "o":
            options = add_option_list(options, arg)
        elif opt == "q":
            quiet = True
        elif opt == "u":
            unsafe = True
        elif opt == "object":
            objects.append(arg)
    filename = image_arg(args[0], None, False, objects) if args else None
    if options is not None and any(i in ("help", "?") for i in split_opt_list(options)):
        from ..ops import create as ops_create
        if fmt not in ops_create.CREATE_OPTIONS:
            raise CommandError("Unknown file format '%s'" % fmt)
        ctx.out(format_option_help(fmt, ops_create.CREATE_OPTIONS[fmt], filename))
        return 0
    if not args:
        raise UsageError("Expecting image file name")
    size = None
    if len(args) > 1:
        size = cvtnum("image size", args[1], ctx.warn)
    if len(args) > 2:
        raise UsageError("Unexpected argument: %s" % args[2])
    from ..ops import create as ops_create
    try:
        if fmt not in ops_create.CREATE_OPTIONS:
            raise CommandError("Unknown file format '%s'" % fmt)
        optdict = ops_create.parse_option_string(options) if options is not None else {}
        if size is not None and optdict.get("size") is not None:
            raise CommandError("The image size must be specified only once")
        backing = base or optdict.get("backing_file")
        if backing and fmt != "raw" and not (base_fmt or optdict.get("backing_fmt")):
            # qemu-img 7.2 refuses to probe; it names what it would have detected
            detected = None if unsafe else _backing_format(filename, backing)
            raise CommandError("Backing file specified without backing format",
                               hint=["Detected format of %s." % detected] if detected else [])  # no newline, as qemu
        pairs = ops_create.resolved_options(fmt, size, optdict, base, base_fmt, filename=filename)
        # qemu-img prints "Formatting ..." once it knows the size (given, or read from the
        # backing file unless -u); without one the create fails and nothing is printed.
        line_size = size if size is not None else optdict.get("size")
        backing = base or optdict.get("backing_file")
        if line_size is None and backing and not unsafe:
            line_size = _backing_size(filename, backing, base_fmt or optdict.get("backing_fmt"))
            if line_size is not None:
                pairs = ops_create.resolved_options(fmt, line_size, optdict, base, base_fmt, filename=filename)
        if not quiet and line_size is not None:
            types = dict((n, t) for n, t, _h in ops_create.CREATE_OPTIONS[fmt])
            ctx.out(format_formatting_line(filename, fmt, pairs, types))
        ops_create.create_image(filename, fmt, size=size, options=optdict, backing_file=base,
                                backing_fmt=base_fmt, unsafe=unsafe)
    except Exception as err:
        _reraise_with_prefix(err, filename)
    return 0


def _backing_size(filename, backing, backing_fmt):
    """Virtual size of the backing file qemu-img would open, or None (create reports the error)."""
    from ..errors import QimgError
    from ..image import full_backing_path, open_image
    try:
        with open_image(full_backing_path(filename, backing), backing_fmt, read_only=True,
                        force_share=True) as dev:
            return dev.size
    except QimgError:
        return None


def _backing_format(filename, backing):
    """The probed format of the backing file, or None when it cannot be opened."""
    from ..errors import QimgError
    from ..image import full_backing_path, open_image
    try:
        with open_image(full_backing_path(filename, backing), None, read_only=True, force_share=True,
                        open_backing=False) as dev:
            return dev.format_name
    except QimgError:
        return None


def _reraise_with_prefix(err, filename):
    """qemu-img create reports bdrv_img_create() errors as "FILE: message"."""
    from ..errors import QimgError
    hint = []
    if isinstance(err, CommandError):
        msg = err.lines[0]
        hint = err.hint
    elif isinstance(err, QimgError):
        msg = err.message
        hint = [h + "\n" for h in err.hint]
    else:
        raise err
    if not msg.startswith(filename + ": "):
        msg = "%s: %s" % (filename, msg)
    raise CommandError(msg, hint=hint)
