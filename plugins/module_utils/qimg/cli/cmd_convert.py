# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img convert``."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import CACHE_MODES, add_option_list, cvtnum, image_arg, snapshot_opts, split_opt_list
from .errors import CommandError, HelpRequested
from .getopt import getopt
from .output import format_option_help
from .progress import MAX_BUF_SECTORS, QemuProgress, progress_printer


SPARSE_HINT = ("Invalid buffer size for sparse output specified. Valid sizes are multiples of 512 up to %d. "
               "Select 0 to disable sparse detection (fully allocates output)." % (MAX_BUF_SECTORS * 512))


def _open_sources(names, fmt, share, snapshot):
    """Open the sources as qemu-img does before creating the target; QimgError propagates."""
    from ..image import open_image
    from ..ops.convert import parse_snapshot_param
    devs = []
    try:
        for name in names:
            devs.append(open_image(name, fmt, read_only=True, force_share=share))
        if snapshot is not None:
            if len(names) > 1 and not snapshot.startswith("snapshot."):
                raise CommandError("No support for concatenating multiple snapshot")
            snap_id, snap_name = parse_snapshot_param(snapshot)
            dev = devs[0]
            if not hasattr(dev, "activate_snapshot"):
                raise CommandError("Failed to load snapshot: Can't find snapshot")
            if snap_id is None:
                from ..errors import ImageNotFound
                try:
                    dev.activate_snapshot(snapshot_id=snap_name)
                except ImageNotFound:
                    dev.activate_snapshot(snapshot_id=None, name=snap_name)
            else:
                dev.activate_snapshot(snapshot_id=snap_id, name=snap_name)
        return devs
    except BaseException:
        for dev in devs:
            dev.close()
        raise


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
            if arg not in ("human", "json"):
                raise CommandError("--progress must be used with human or json as argument.")
            progress = arg
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
        elif opt == "r":
            cvtnum("rate limit", arg, ctx.warn)
        elif opt == "object":
            objects.append(arg)
        else:
            flags.add(opt)      # C c q n W U object image-opts target-image-opts salvage target-is-zero bitmaps ...
    out_fmt = out_fmt or "raw"
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
    for name in ("target-image-opts",):
        if name in flags:
            raise CommandError("--%s is not supported" % name)
    out_filename = args[-1] if len(args) >= 2 else None
    from ..ops import create as ops_create
    if options is not None and any(i in ("help", "?") for i in split_opt_list(options)):
        if out_fmt not in ops_create.CREATE_OPTIONS:
            raise CommandError("Unknown file format '%s'" % out_fmt)
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
        sources = [image_arg(name, fmt, "image-opts" in flags, objects) for name in args[:-1]]
        code = _convert(ctx, sources, out_filename, fmt, out_fmt, base, base_fmt, options, snapshot, cache,
                        min_sparse, flags, (progress, prog))
        ok = code == 0
        return code
    finally:
        if ok:
            prog.print_(100, 0)
        prog.end()


def _convert(ctx, sources, out_filename, fmt, out_fmt, base, base_fmt, options, snapshot, cache, min_sparse, flags,
             progress):
    from ..errors import QimgError
    from ..ops import create as ops_create
    from ..ops import convert as ops_convert
    devs = _open_sources(sources, fmt, "U" in flags, snapshot)
    try:
        total = sum((d.size + 511) // 512 * 512 for d in devs)
        skip_create = "n" in flags
        optdict, typed = {}, {}
        if not skip_create:
            if out_fmt not in ops_create.CREATE_OPTIONS:
                raise CommandError("Unknown file format '%s'" % out_fmt)
            optdict = ops_create.parse_option_string(options) if options is not None else {}
            optdict.pop("size", None)       # qemu-img sets the size from the sources
            typed = ops_create.normalize_options(out_fmt, None, optdict)
            if out_fmt == "raw" and base:
                raise CommandError("Backing file not supported for file format 'raw'")
            if out_fmt == "raw" and base_fmt:
                raise CommandError("Backing file format not supported for file format 'raw'")
        backing = base or optdict.get("backing_file")
        if "target-is-zero" in flags and backing:
            # qemu-img 7.2 reports this and exits 0 without converting
            ctx.err("%s: Cannot use --target-is-zero when the destination image has a backing file\n" % ctx.prog)
            return 0
        if len(sources) > 1 and backing:
            raise CommandError("Having a backing file for the target makes no sense when concatenating "
                               "multiple input images")
        if not skip_create and backing and not (base_fmt or optdict.get("backing_fmt")):
            raise CommandError("Use of backing file requires explicit backing format")
        if "c" in flags:
            if not skip_create and out_fmt != "qcow2":
                raise CommandError("Compression not supported for this file format")
            if optdict.get("preallocation", "off") != "off":
                raise CommandError("Compression and preallocation not supported at the same time")
        if "bitmaps" in flags and len(sources) > 1:
            raise CommandError("Copying bitmaps only possible with single source")
        if "bitmaps" in flags and devs[0].format_name != "qcow2":
            raise CommandError("Source lacks bitmap support")
        if not skip_create and out_fmt == "qcow2":
            _check_qcow2_create(out_filename, total, typed, backing, base_fmt)
        if cache not in CACHE_MODES:
            raise CommandError("Invalid cache option: %s" % cache)
        if backing and not skip_create:
            _check_backing(out_filename, backing, base_fmt or optdict.get("backing_fmt"))
        if "bitmaps" in flags:
            if skip_create or out_fmt != "qcow2":
                raise CommandError("Format driver '%s' does not support bitmaps" % out_fmt)
            raise CommandError("--bitmaps is not supported yet")
        report, finish = (None, None)
        if progress[0]:
            report, finish = progress_printer(progress[0], ctx, progress[1], devs, min_sparse, "c" in flags,
                                               typed.get("cluster_size", 65536))
    finally:
        for dev in devs:
            dev.close()
    try:
        ops_convert.convert(sources, out_filename, src_fmt=fmt, out_fmt=out_fmt, options=optdict,
                            compress="c" in flags, sparse_size=min_sparse, snapshot=snapshot,
                            backing_file=base, backing_fmt=base_fmt, target_exists="n" in flags,
                            target_is_zero="target-is-zero" in flags, progress=report,
                            force_share="U" in flags)
    except QimgError as err:
        if err.message == "Output image is too small":
            raise CommandError("output file is smaller than input file")
        if err.message.startswith("Could not create '"):
            raise CommandError("%s: error while converting %s: %s" % (out_filename, out_fmt, err.message),
                               hint=err.hint)
        raise
    if finish is not None:
        finish(True)
    return 0


def _check_qcow2_create(filename, size, optdict, backing, backing_fmt):
    """qemu-img convert's bdrv_create() errors: "OUT: error while converting qcow2: MESSAGE"."""
    from ..errors import InvalidArgument
    from ..formats.qcow2.create import plan_header
    o = dict(optdict)
    try:
        plan_header(size, cluster_size=o.get("cluster_size", 65536), compat=o.get("compat", "1.1"),
                    refcount_bits=o.get("refcount_bits", 16), lazy_refcounts=o.get("lazy_refcounts", False),
                    extended_l2=o.get("extended_l2", False), preallocation=o.get("preallocation", "off"),
                    compression_type=o.get("compression_type", "zlib"), backing_file=backing,
                    backing_fmt=backing_fmt)
    except InvalidArgument as err:
        raise CommandError("%s: error while converting qcow2: %s" % (filename, err.message), hint=err.hint)


def _check_backing(filename, backing, backing_fmt):
    from ..errors import QimgError
    from ..image import full_backing_path, open_image
    try:
        with open_image(full_backing_path(filename, backing), backing_fmt, read_only=True, force_share=True):
            pass
    except QimgError as err:
        message = err.message
        twice = "Could not open '%s': " % backing
        if message.startswith(twice + twice):
            message = message[len(twice):]
        raise CommandError("Could not open '%s': Could not open backing file: %s" % (filename, message),
                           hint=err.hint)
