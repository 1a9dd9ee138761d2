# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-img-compatible command line for the qimg engine (``bin/qimg``).

The package: this module is the entry point and dispatch; ``errors``, ``getopt``, ``args``
(sizes, -o lists, --output ...), ``output`` (qemu's JSON printer, human layouts), ``progress``
and ``help`` hold the conventions every command shares; ``cmd_NAME`` modules each turn one
command's argv into one call of ``qimg.ops`` and print the result. A command module is imported
only when its command runs (start-up time), and exposes ``run(argv, ctx) -> exit code``.

The syntax, the output (human and JSON, including qemu's JSON key order), the messages and the
exit codes follow qemu-img 7.2. Busybox style: the program name in messages is the basename of
argv[0], so a link named ``qemu-img`` prints ``qemu-img: ...``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys

from .errors import CommandError, HelpRequested, UsageError
from .getopt import getopt

# command name -> module (imported when the command runs); a value may also be a function
# run(argv, ctx) (tests replace entries)
COMMANDS = {
    "check": "cmd_check",
    "compare": "cmd_compare",
    "convert": "cmd_convert",
    "create": "cmd_create",
    "info": "cmd_info",
    "map": "cmd_map",
    "measure": "cmd_measure",
    "snapshot": "cmd_snapshot",
    "resize": "cmd_resize",
    "amend": "cmd_amend",
    "rebase": "cmd_rebase",
    "commit": "cmd_commit",
    "dd": "cmd_dd",
    "checksum": "cmd_checksum",
    "bitmap": "cmd_bitmap",
}

# Names this package re-exports from its modules (the pre-package ``qimg.cli`` API), loaded on
# first use so that ``import qimg.cli`` stays cheap.
_EXPORTS = {
    "args": ("strtosz", "cvtnum", "SIZE_HINT", "INT64_MAX", "CACHE_MODES",
             ("_split_opt_list", "split_opt_list"), ("_valid_option_list", "valid_option_list"),
             ("_output_format", "output_format"), ("_add_option_list", "add_option_list"),
             ("_snapshot_opts", "snapshot_opts")),
    "getopt": ("Getopt", "GetoptError", ("_getopt", "getopt"), ("_iter_getopt", "iter_getopt")),
    "output": ("time", "QAPI_ORDER", "tdb_hash", "qdict_order", "qemu_json", "dump_qobject", "snapshot_line",
               "format_info_human", "format_info", "map_human_line", "MAP_HEADER", "map_json_entry",
               "format_map", "write_map", "FILE_PROTOCOL_OPTIONS", "format_option_help",
               "format_formatting_line", "format_measure", "CHECK_KEYS", "format_check", "format_check_human"),
    "progress": ("QemuProgress", "convert_progress_steps"),
    "help": ("__version__", "COMMAND_SYNTAX", "version_text", "help_text"),
}
_EXPORT_MAP = {}
for _mod, _names in _EXPORTS.items():
    for _name in _names:
        _alias, _real = (_name, _name) if isinstance(_name, str) else _name
        _EXPORT_MAP[_alias] = (_mod, _real)


def __getattr__(name):
    try:
        mod, real = _EXPORT_MAP[name]
    except KeyError:
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    return getattr(_submodule(mod), real)


def _typed_message(message):
    args = sys.modules.get(__name__ + ".args")   # loaded when a command named an image
    return message if args is None else args.typed_message(message)


def _submodule(name):
    # __import__ rather than importlib.import_module: importlib's package costs a start-up
    return __import__(name, globals(), None, ["__name__"], 1)


def _write(stream, text):
    stream.flush()
    buf = getattr(stream, "buffer", None)
    if buf is not None:
        buf.write(text.encode("utf-8", "surrogateescape"))
        buf.flush()
    else:
        stream.write(text)
        stream.flush()


def _dispatch(argv, ctx):
    if len(argv) < 2:
        raise UsageError("Not enough arguments")
    opts, args = getopt(argv, "+:hVT:", {"help": (False, "h"), "version": (False, "V"),
                                         "trace": (True, "T")})
    for opt, _arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "V":
            from .help import version_text
            ctx.out(version_text(ctx.prog))
            return 0
    if not args:
        return 0
    handler = COMMANDS.get(args[0])
    if handler is None:
        raise UsageError("Command not found: %s" % args[0])
    if not callable(handler):
        handler = _submodule(handler).run
    return handler(args, ctx)


class _Context:
    """What a command needs besides argv: the program name, stdout, warnings on stderr."""

    def __init__(self, prog):
        self.prog = prog

    @staticmethod
    def out(text):
        _write(sys.stdout, text)

    @staticmethod
    def err(text):
        _write(sys.stderr, text)

    def warn(self, message):
        self.err("%s: warning: %s\n" % (self.prog, message))


def main(argv=None):
    """Run the CLI; return the exit code."""
    if argv is None:
        argv = sys.argv
    prog = os.path.basename(argv[0]) if argv and argv[0] else "qimg"

    ctx = _Context(prog)
    out, err = ctx.out, ctx.err
    from ..errors import QimgError
    from ..crypto import strict_keys
    try:
        with strict_keys():
            return _dispatch(list(argv), ctx)
    except HelpRequested:
        from .help import help_text
        out(help_text(prog))
        return 0
    except UsageError as exc:
        err("%s: %s\nTry '%s --help' for more information\n" % (prog, exc, prog))
        return 1
    except CommandError as exc:
        lines = [_typed_message(exc.lines[0])] + exc.lines[1:]
        err("".join("%s: %s\n" % (prog, line) for line in lines) + "".join(exc.hint))
        return exc.code
    except QimgError as exc:
        # exc.reports: further error_report() lines QEMU prints after the first (program name first)
        err("%s: %s\n" % (prog, _typed_message(exc.message)) +
            "".join("%s: %s\n" % (prog, line) for line in getattr(exc, "reports", ())) +
            "".join(h + "\n" for h in exc.hint))
        return 1
    except KeyboardInterrupt:
        err("%s: interrupted\n" % prog)
        return 130
    except BrokenPipeError:
        # The reader went away (``| head``): no traceback, and none at interpreter exit either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as exc:        # pylint: disable=broad-except
        if os.environ.get("QIMG_DEBUG") == "1":
            raise
        text = " ".join(("%s: %s" % (type(exc).__name__, exc)).splitlines())
        err("%s: internal error: %s\n" % (prog, text))
        return 1
