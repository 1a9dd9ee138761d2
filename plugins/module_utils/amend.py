# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The decisions of qimg_amend: requested qcow2 options against the image's, check mode, diff.

The options have qimg_create's names and types. compat, refcount_bits and lazy_refcounts can
change in place; the others (cluster_size, extended_l2, compression_type) are accepted when the
image already has the value asked for, and otherwise fail the task as qemu-img does. Two more,
amend's own, concern images with an external data file: data_file (its name in the header; empty
removes it) and data_file_raw (can be turned off, never on), as qemu-img amend allows them.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import (
    COMPARED_OPTIONS,
    engine_options,
    image_metadata,
    image_options_spec,
    option_differences,
    qimg_errors,
    refuse_in_use,
    show_value,
    target_options,
)
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.amend import amend_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info

AMENDABLE = ("compat", "refcount_bits", "lazy_refcounts")
DATA_FILE_OPTIONS = ("data_file", "data_file_raw")
DIFF_KEYS = ("format", "virtual_size") + COMPARED_OPTIONS + DATA_FILE_OPTIONS


def argument_spec():
    options = image_options_spec()
    options["options"]["data_file"] = dict(type="str")
    options["options"]["data_file_raw"] = dict(type="bool")
    return dict(
        path=dict(type="path", required=True),
        options=options,
        force=dict(type="bool", default=False),
    )


def _shown(meta):
    return dict((k, meta.get(k)) for k in DIFF_KEYS if k in meta)


def _data_file_meta(info, meta):
    """The external data file's name and data_file_raw into meta, for images that have one."""
    data = (info.get("format-specific") or {}).get("data") or {}
    if "data-file-raw" in data:
        meta["data_file"] = data.get("data-file")
        meta["data_file_raw"] = data["data-file-raw"]
    return meta


def data_file_differences(module, current, options, **fail_kwargs):
    """(['name current != requested'], wanted engine options) for data_file / data_file_raw;
    what qemu-img amend refuses fails the task before anything is written."""
    diffs, wanted = [], {}
    has = "data_file_raw" in current
    if options.get("data_file") is not None:
        if not has:
            module.fail_json(msg="data-file can only be set for images that use an external data file",
                             **fail_kwargs)
        name = options["data_file"] or None
        if name != current.get("data_file"):
            diffs.append("data_file %s != %s" % (show_value(current.get("data_file")), show_value(name)))
            wanted["data_file"] = options["data_file"]
    if options.get("data_file_raw") is not None:
        raw = bool(current.get("data_file_raw"))
        if options["data_file_raw"] and not raw:
            module.fail_json(msg="data-file-raw cannot be set on existing images", **fail_kwargs)
        if raw != options["data_file_raw"]:
            diffs.append("data_file_raw %s != %s" % (show_value(raw), show_value(options["data_file_raw"])))
            wanted["data_file_raw"] = options["data_file_raw"]
    return diffs, wanted


def run(module):
    params = module.params
    path = params["path"]
    result = dict(changed=False, path=path)
    options = target_options(module, "qcow2", params["options"], **result)
    with qimg_errors(module, **result):
        info = image_info(path, force_share=True)
    before = _data_file_meta(info, image_metadata(info))
    if before["format"] != "qcow2":
        module.fail_json(msg="Format driver '%s' does not support option amendment" % before["format"], **result)
    file_options = dict((k, options.pop(k)) for k in DATA_FILE_OPTIONS if k in options)
    fixed = option_differences(before, dict((k, v) for k, v in options.items() if k not in AMENDABLE))
    if fixed:
        module.fail_json(msg="%s: these options can only be set when an image is created: %s"
                         % (path, "; ".join(fixed)), **result)
    wanted = dict((k, v) for k, v in options.items() if k in AMENDABLE)
    file_diffs, file_wanted = data_file_differences(module, before, file_options, **result)
    result["differences"] = option_differences(before, wanted) + file_diffs
    after = dict(before)
    after.update(wanted)
    after.update((k, v or None) if k == "data_file" else (k, v) for k, v in file_wanted.items())
    if not result["differences"]:
        result.pop("differences")
        result["options"] = _shown(before)
        result["diff"] = {"before": _shown(before), "after": _shown(before)}
        module.exit_json(**result)
    if after.get("compat") == "0.10":
        # what qemu-img refuses before writing anything, so check mode says it too
        if after.get("refcount_bits") != 16:
            module.fail_json(msg="Refcount widths other than 16 bits require compatibility level 1.1 or above "
                                 "(use compat=1.1 or greater)", **result)
        if wanted.get("lazy_refcounts"):
            module.fail_json(msg="Lazy refcounts only supported with compatibility level 1.1 and above "
                                 "(use compat=1.1 or greater)", **result)
        after["lazy_refcounts"] = False
    refuse_in_use(module, path, "amend", result)
    result["changed"] = True
    if not module.check_mode:
        wanted.update(file_wanted)
        with qimg_errors(module, **result):
            amend_image(path, engine_options(wanted), force=params["force"])
            info = image_info(path, force_share=True)
            after = _data_file_meta(info, image_metadata(info))
    result["options"] = _shown(after)
    result["diff"] = {"before": _shown(before), "after": _shown(after)}
    module.exit_json(**result)
