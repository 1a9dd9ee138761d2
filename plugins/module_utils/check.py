# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend of qimg_check: check an image, repair it when asked, predict a repair in check mode.

``run_check(module)`` returns the result; engine failures are raised (QimgError) for the
module's ``qimg_errors``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import (
    TaskError,
    open_chain,
    snake_key,
)
from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import QimgError
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.check import CheckNotSupported, check_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info

FIGURES = ("check-errors", "corruptions", "leaks", "corruptions-fixed", "leaks-fixed", "total-clusters",
           "allocated-clusters", "fragmented-clusters", "compressed-clusters", "image-end-offset")
COPIED_MESSAGE = "ERROR OFLAG_COPIED"


def header_flags(path, fmt):
    """(dirty, corrupt) bits of the image header; (False, False) when they cannot be read."""
    try:
        info = image_info(path, fmt=fmt, force_share=True)
    except QimgError:
        return False, False
    data = (info.get("format-specific") or {}).get("data") or {}
    return bool(info.get("dirty-flag")), bool(data.get("corrupt"))


def figures(report):
    """The result keys from a check_image report: every figure, 0 when qemu omits it."""
    out = dict((snake_key(key), int(report.get(key) or 0)) for key in FIGURES)
    out["filename"] = report.get("filename")
    out["format"] = report.get("format")
    out["messages"] = list(report.get("messages") or [])
    return out


def status_of(result):
    if result["check_errors"] or result["corruptions"]:
        return "corrupt"
    if result["leaks"]:
        return "leaks"
    return "clean"


def would_fix(result, repair, dirty, corrupt_bit):
    """Whether a repair would change the image (check mode), from a read-only check."""
    if repair == "all":
        return bool(result["leaks"] or result["corruptions"] or dirty or corrupt_bit)
    # -r leaks: leaked clusters, and COPIED flags when they are the only corruptions
    copied = len([m for m in result["messages"] if m.startswith(COPIED_MESSAGE)])
    only_copied = copied and result["corruptions"] == copied and not result["check_errors"]
    return bool(result["leaks"] or only_copied)


def open_backing_chain(path, fmt, allow_unsafe_backing):
    """qemu-img check opens the whole backing chain first: a chain it cannot open fails the check.

    An image that is not even readable is left to check_image, which reports it in its words.
    """
    try:
        image_info(path, fmt=fmt, force_share=True)
    except QimgError:
        return
    open_chain(path, fmt, allow_unsafe_backing=allow_unsafe_backing)


def run_check(module):
    """The whole task: returns the result dict (raises QimgError on failures)."""
    params = module.params
    path = params["path"]
    repair = None if params["repair"] == "none" else params["repair"]
    writes = repair is not None and not module.check_mode

    open_backing_chain(path, params["format"], params["allow_unsafe_backing"])
    before = header_flags(path, params["format"])
    try:
        report = check_image(path, fmt=params["format"], repair=repair if writes else None,
                             force_share=params["force_share"] and not writes)
    except CheckNotSupported as err:
        # qemu-img exits 63: a raw image has no metadata to check
        raise TaskError("%s: %s" % (path, err), dict(changed=False, format=params["format"] or "raw"))
    result = figures(report)
    if writes:
        after = header_flags(path, params["format"])
        result["changed"] = bool(result["leaks_fixed"] or result["corruptions_fixed"] or after != before)
    else:
        after = before
        result["changed"] = bool(repair and would_fix(result, repair, *before))
    result["dirty_flag"], result["corrupt_flag"] = after
    result["status"] = status_of(result)

    if result["status"] == "corrupt" and params["fail_on_corruption"]:
        if not (module.check_mode and repair == "all"):
            raise TaskError("%s is corrupt: %d corruptions, %d check errors%s"
                            % (path, result["corruptions"], result["check_errors"],
                               "" if repair == "all" else "; repair it with repair=all"), result)
    return result
