# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img convert``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import CACHE_MODES, add_option_list, cvtnum, image_name, progress_mode, snapshot_opts, split_opt_list
from .errors import CommandError, HelpRequested
from .getopt import getopt
from .output import format_option_help
from .progress import MAX_BUF_SECTORS, QemuProgress, progress_printer


SPARSE_HINT = ("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to %d. "
               "Select 0 to disable sparse detection (fully allocates output)." % (MAX_BUF_SECTORS * 512))


def run(argv, ctx):
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts"),
                "force-share": (False, "U"), "target-image-opts": (False, "target-image-opts"),
                "salvage": (False, "salvage"), "target-is-zero": (False, "target-is-zero"),
                "bitmaps": (False, "bitmaps"), "skip-broken-bitmaps": (False, "skip-broken-bitmaps"),
                "progress": (True, "progress")}
    opts, args = getopt(argv, ":hf:O:B:Cco:l:S:pt:T:qnm:WUr:F:", longopts)
    fmt, out_fmt, base, base_fmt, options, snapshot = None, None, None, None, None, None
    cache, src_cache, min_sparse, explicit_sparse = "unsafe", "writeback", 4096, False
    flags = set()
    progress = None
    objects = []
    workers, rate_limit = None, 0
    for opt, arg in opts:
        if opt == "h":
            raise HelpRequested()
        if opt == "f":
            fmt = arg
        elif opt == "O":
            out_fmt = arg
        elif opt == "B":
            base = arg
        elif opt == "F":
            base_fmt = arg
        elif opt == "o":
            options = add_option_list(options, arg)
        elif opt == "l":
            snapshot = snapshot_opts(arg)
        elif opt == "S":
            value = cvtnum("buffer size for sparse output", arg, ctx.warn)
            if value % 512 or value // 512 > MAX_BUF_SECTORS:
                raise CommandError(SPARSE_HINT)
            min_sparse, explicit_sparse = value, True
        elif opt == "p":
            progress = progress or "human"
        elif opt == "progress":
            progress = progress_mode(arg)
        elif opt == "t":
            cache = arg
        elif opt == "T":
            src_cache = arg
        elif opt == "m":
            try:
                count = int(arg, 0)
            except ValueError:
                count = 0
            if not 1 <= count <= 16:
                raise CommandError("Invalid number of coroutines. Allowed number of coroutines is between 1 and 16")
            workers = count
        elif opt == "r":
            rate_limit = cvtnum("rate limit", arg, ctx.warn)
        elif opt == "object":
            objects.append(arg)
        else:
            flags.add(opt)      # C c q n W U object image-opts target-image-opts salvage target-is-zero bitmaps ...
    target_opts = "target-image-opts" in flags
    if target_opts and out_fmt:
        raise CommandError("--image-opts and --format are mutually exclusive")
    out_fmt = None if target_opts else (out_fmt or "raw")  # --target-image-opts: the spec names the driver
    quiet, skip_create, copy_range = "q" in flags, "n" in flags, "C" in flags
    checks = [("skip-broken-bitmaps" in flags and "bitmaps" not in flags,
               "Use of --skip-broken-bitmaps requires --bitmaps"),
              ("c" in flags and copy_range, "Cannot enable copy offloading when -c is used"),
              (explicit_sparse and copy_range, "Cannot enable copy offloading when -S is used"),
              (copy_range and "salvage" in flags, "Cannot use copy offloading in salvaging mode"),
              ("target-image-opts" in flags and not skip_create, "--target-image-opts requires use of -n flag"),
              (skip_create and options is not None, "-o has no effect when skipping image creation"),
              ("target-is-zero" in flags and not skip_create, "--target-is-zero requires use of -n flag")]
    for failed, message in checks:
        if failed:
            raise CommandError(message)
    out_filename = args[-1] if len(args) >= 2 else None
    from ..ops import create as ops_create
    if options is not None and any(i in ("help", "?") for i in split_opt_list(options)):
        if out_fmt not in ops_create.CREATE_OPTIONS:  # (with --target-image-opts, -n already refused -o)
            from ..errors import QimgError
            try:
                ops_create.check_create_format(out_fmt)
            except QimgError as err:
                raise CommandError(err.message)
        ctx.out(format_option_help(out_fmt, ops_create.CREATE_OPTIONS[out_fmt], out_filename))
        return 0
    if len(args) < 2:
        raise CommandError("Must specify image file name")
    if src_cache not in CACHE_MODES:
        raise CommandError("Invalid source cache option: %s" % src_cache)
    if quiet:
        progress = None
    prog = QemuProgress(progress == "human", 1.0, ctx.out)
    prog.print_(0, 100)
    ok = False
    try:
        from ..ops.convert import Tuning
        tuning = Tuning(workers, in_order="W" not in flags, copy_offload=copy_range, rate_limit=rate_limit)
        code = _convert(ctx, args[:-1], out_filename, fmt, out_fmt, base, base_fmt, options, snapshot, cache,
                        min_sparse, flags, (progress, prog), src_cache, objects, tuning)
        ok = code == 0
        return code
    finally:
        if ok:
            prog.print_(100, 0)
        prog.end()


def _salvage_warning(ctx, flags):
    """--salvage: where the engine's warnings go (nowhere with -q); None without --salvage."""
    if "salvage" not in flags:
        return None
    return (lambda message: None) if "q" in flags else ctx.warn


def _convert(ctx, sources, out_filename, fmt, out_fmt, base, base_fmt, options, snapshot, cache, min_sparse, flags,
             progress, src_cache=None, objects=(), tuning=None):
    from ..errors import QimgError
    from ..ops import convert as ops_convert
    printer = {}

    def inspect(devs, typed):
        if progress[0]:
            printer["report"], printer["finish"] = progress_printer(
                progress[0], ctx, progress[1], devs, min_sparse, "c" in flags, typed.get("cluster_size", 65536))

    # the single place where the sources and the target are named to the engine
    sources = [image_name(name, fmt=fmt, image_opts="image-opts" in flags, objects=objects) for name in sources]
    out_filename = image_name(out_filename, "target", image_opts="target-image-opts" in flags, objects=objects)
    plan = ops_convert.prepare_convert(
        sources, out_filename, src_fmt=fmt, out_fmt=out_fmt, options=options, compress="c" in flags,
        backing_file=base, backing_fmt=base_fmt, snapshot=snapshot, target_exists="n" in flags,
        target_is_zero="target-is-zero" in flags, bitmaps="bitmaps" in flags, cache=cache,
        force_share="U" in flags, inspect=inspect, src_cache=src_cache,
        skip_broken_bitmaps="skip-broken-bitmaps" in flags)
    if plan["skip"]:
        ctx.err("%s: %s\n" % (ctx.prog, plan["skip"]))
        return 0
    try:
        ops_convert.convert(sources, out_filename, src_fmt=fmt, out_fmt=out_fmt, options=plan["options"],
                            compress="c" in flags, sparse_size=min_sparse, snapshot=snapshot,
                            backing_file=base, backing_fmt=base_fmt, target_exists="n" in flags,
                            target_is_zero="target-is-zero" in flags, progress=printer.get("report"),
                            force_share="U" in flags, cache=cache, src_cache=src_cache, warn=ctx.warn,
                            salvage=_salvage_warning(ctx, flags), tuning=tuning, bitmaps="bitmaps" in flags,
                            skip_broken_bitmaps="skip-broken-bitmaps" in flags)
    except QimgError as err:
        if err.message == "Output image is too small":
            raise CommandError("output file is smaller than input file")
        if err.message.startswith("Could not create '"):
            raise CommandError("%s: error while converting %s: %s" % (out_filename, out_fmt, err.message),
                               hint=err.hint)
        raise
    if printer.get("finish") is not None:
        printer["finish"](True)
    return 0
