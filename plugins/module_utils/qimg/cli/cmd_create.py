# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img create``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import add_option_list, cvtnum, image_name, split_opt_list
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
    secrets = None
    if objects:
        # like qemu-img: the objects are created first; `--object help` prints and exits
        from ..crypto.secrets import parse_object, SecretStore
        secrets = SecretStore()
        for text in objects:
            spec = parse_object(text)
            if spec.help:
                ctx.out("".join(line + "\n" for line in spec.help_lines()))
                return 0
            secrets.add_object(spec)
    filename = args[0] if args else None
    if options is not None and any(i in ("help", "?") for i in split_opt_list(options)):
        from ..ops import create as ops_create
        _check_format(ops_create, fmt)
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
    if fmt not in ops_create.CREATE_OPTIONS:  # qemu looks the driver up before the file name
        try:
            _check_format(ops_create, fmt)
        except CommandError as err:
            _reraise_with_prefix(err, filename)
    try:
        # the single place the new image's name reaches the engine
        path = image_name(filename, "create")
        plan = ops_create.plan_create(path, fmt, size=size, options=options, backing_file=base,
                                      backing_fmt=base_fmt, unsafe=unsafe, typed_backing=True)
        if not quiet and plan["pairs"] is not None:
            ctx.out(format_formatting_line(filename, fmt, plan["pairs"], plan["types"]))
        ops_create.create_image(path, fmt, size=size, options=plan["options"], backing_file=base,
                                backing_fmt=base_fmt, unsafe=unsafe, warn=ctx.warn, secrets=secrets,
                                typed_backing=True)
    except Exception as err:
        _reraise_with_prefix(err, filename)
    return 0


def _check_format(ops_create, fmt):
    from ..errors import QimgError
    try:
        ops_create.check_create_format(fmt)
    except QimgError as err:
        raise CommandError(err.message)


def _reraise_with_prefix(err, filename):
    """qemu-img create reports bdrv_img_create() errors as "FILE: message"."""
    from ..errors import QimgError
    hint = []
    if isinstance(err, CommandError):
        msg = err.lines[0]
        hint = err.hint
    elif isinstance(err, QimgError):
        msg = err.message
        newline = "\n" if getattr(err, "hint_newline", True) else ""
        hint = [h + newline for h in err.hint]
    else:
        raise err
    if not msg.startswith(filename + ": "):
        msg = "%s: %s" % (filename, msg)
    raise CommandError(msg, hint=hint)
