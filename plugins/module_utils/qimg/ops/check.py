# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`check`: consistency check and repair, with qemu-img's figures and exit codes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import InvalidArgument, UnsupportedFeature
from ..formats.qcow2.check import check as qcow2_check
from ..formats.qcow2.snapshots import SnapshotTableError
from ..image import open_image, open_layer
from ..protocols.cache import cache_mode

EXIT_CLEAN = 0
EXIT_ERROR = 1
EXIT_CORRUPT = 2
EXIT_LEAKS = 3
EXIT_UNSUPPORTED = 63


class CheckNotSupported(UnsupportedFeature):
    """The format has no consistency check (raw): qemu-img exits 63."""


def probe_format(filename, fmt=None):
    """Open the image and its whole chain as qemu-img check does before checking (a missing
    backing file fails here). Returns {"format": name, "probed-raw": True when the format was
    probed and is raw (qemu warns before a repair)}."""
    try:
        dev = open_image(filename, fmt, read_only=True, force_share=True)
    except SnapshotTableError:
        # qemu-img check opens the image in check mode: its snapshot table is the check's to report
        dev = open_layer(filename, fmt, read_only=True, force_share=True, repair=True)
    with dev:
        return {"format": dev.format_name, "probed-raw": fmt is None and dev.format_name == "raw"}


def check_image(filename, fmt=None, repair=None, force_share=False, cache=None):
    """Check an image. Returns a dict in qemu-img's `check --output=json` shape plus
    "messages" (the lines qemu-img prints to stderr), "exit-code" and, after a repair,
    "repaired": {"leaks": n, "corruptions": n} found in the first pass.

    cache: the image's cache mode (qemu-img check's `-T`, default writeback: a repair is synced
    before this returns)."""
    mode = cache_mode(cache, source=True)
    if repair not in (None, "leaks", "all"):
        raise InvalidArgument("Unknown option for -r")
    writable = repair is not None
    # repair=True: check mode (QEMU's BDRV_O_CHECK), read-only or not
    dev = open_layer(filename, fmt, read_only=not writable, force_share=force_share and not writable,
                     repair=True, cache=mode)
    try:
        if dev.format_name != "qcow2":
            raise CheckNotSupported("This image format does not support checks")
        first = qcow2_check(dev, repair)
        res = first
        if repair is not None and not first.failed and (first.leaks_fixed or first.corruptions_fixed):
            # "Double checking the fixed image now...": the figures describe the repaired image
            res = qcow2_check(dev, None)
            res.leaks_fixed, res.corruptions_fixed = first.leaks_fixed, first.corruptions_fixed
        dev.flush()
    finally:
        dev.close()
    out = {"filename": filename, "format": dev.format_name, "check-errors": res.check_errors,
           "image-end-offset": res.image_end_offset, "total-clusters": res.total_clusters}
    for key, value in (("corruptions", res.corruptions), ("leaks", res.leaks),
                       ("corruptions-fixed", res.corruptions_fixed), ("leaks-fixed", res.leaks_fixed),
                       ("allocated-clusters", res.allocated_clusters),
                       ("fragmented-clusters", res.fragmented_clusters),
                       ("compressed-clusters", res.compressed_clusters)):
        if value:
            out[key] = value
    messages = list(first.messages)
    if res is not first:
        messages += res.messages
    if repair is not None:
        out["repaired"] = {"leaks": first.leaks_fixed, "corruptions": first.corruptions_fixed}
    out["messages"] = messages
    if first.failed:
        out["failed"] = first.failed  # qemu-img: "Check failed: <reason>", exit 1, no figures
    if res.check_errors:
        out["exit-code"] = EXIT_ERROR
    elif res.corruptions:
        out["exit-code"] = EXIT_CORRUPT
    elif res.leaks:
        out["exit-code"] = EXIT_LEAKS
    else:
        out["exit-code"] = EXIT_CLEAN
    return out
