# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The decisions of qimg_rebase: the backing file and format the header names against the request.

Changed exactly when the header names another backing file (compared as the names are written,
as qimg_create compares them) or format. Safe mode copies what the old and the new chain read
differently first (``copied_bytes``; check mode counts it by comparing the chains without
writing); unsafe mode rewrites the header only.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import (
    TaskError,
    check_not_in_use,
    image_facts,
    in_context,
    plan_change,
    read_image,
    unchanged,
)
from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import QimgError
from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import full_backing_path
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.rebase import rebase_image


def argument_spec():
    return dict(
        path=dict(type="path", required=True),
        backing_file=dict(type="str"),
        backing_format=dict(type="str"),
        safe=dict(type="bool", default=True),
        allow_unsafe_backing=dict(type="bool", default=False),
    )


def backing_of(meta):
    return {"backing_file": meta.get("backing_file"), "backing_format": meta.get("backing_format")}


def _backing_format(path, backing_file, unsafe_names):
    """The format of the new backing file, probed as qemu-img would (a task without backing_format)."""
    target = full_backing_path(os.path.abspath(path), backing_file)
    try:
        return image_info(target, force_share=True, allow_unsafe_backing=unsafe_names)["format"]
    except QimgError as err:
        raise in_context("backing_format is needed when the new backing file %s cannot be read" % backing_file,
                         err, {"path": path})


def _identity(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def refuse_loop(path, backing_file, unsafe_names):
    """Fail when the new backing file's chain leads back to the image (safe or not)."""
    target = full_backing_path(os.path.abspath(path), backing_file)
    me = _identity(path)
    if _identity(target) == me:
        raise TaskError("refusing to rebase %s onto itself" % path, {"path": path})
    try:
        layers = image_info(target, backing_chain=True, force_share=True, allow_unsafe_backing=unsafe_names)
    except QimgError:
        return   # unreadable: safe mode reports it, unsafe mode does not open it
    for layer in layers[1:]:
        if _identity(layer.get("filename", "")) == me:
            raise TaskError("refusing to rebase %s onto %s: its backing chain leads back to the image, "
                            "which would make a loop" % (path, backing_file), {"path": path})


def wanted_backing(params, before):
    """(backing_file, backing_format) the task asks for; None, None to remove the backing file."""
    path = params["path"]
    name = params["backing_file"] or None
    fmt = params["backing_format"] or None
    if name is None:
        if fmt is not None:
            raise TaskError("backing_format needs backing_file", {"path": path})
        return None, None
    if fmt is None:
        if before["backing_file"] == name and before["backing_format"] is not None:
            fmt = before["backing_format"]
        else:
            fmt = _backing_format(path, name, params["allow_unsafe_backing"])
    return name, fmt


def run(module):
    """The whole task; returns the result dict (raises QimgError for the module's qimg_errors)."""
    params = module.params
    path = params["path"]
    unsafe_names = params["allow_unsafe_backing"]
    result = dict(changed=False, path=path, copied_bytes=0)
    info, meta = read_image(path, allow_unsafe_backing=unsafe_names)
    before = backing_of(meta)
    name, fmt = wanted_backing(params, before)
    after = {"backing_file": name, "backing_format": fmt}
    result.update(after)
    if before == after:
        unchanged(result, before)
    else:
        if meta["format"] != "qcow2":
            raise TaskError("%s is a %s image: only qcow2 images name a backing file" % (path, meta["format"]),
                            result)
        if name is not None:
            refuse_loop(path, name, unsafe_names)
        check_not_in_use(path, "rebase", result)
        if plan_change(module, result, before, after):
            done = rebase_image(path, name, fmt, unsafe=not params["safe"], allow_unsafe_backing=unsafe_names)
            result["copied_bytes"] = done["copied-bytes"]
            info, meta = read_image(path, allow_unsafe_backing=unsafe_names)
            result["diff"]["after"] = backing_of(meta)
        elif params["safe"]:
            plan = rebase_image(path, name, fmt, force_share=True, check_mode=True, allow_unsafe_backing=unsafe_names)
            result["copied_bytes"] = plan["copied-bytes"]
    facts = image_facts(info)
    facts.pop("path", None)
    for key in facts:
        result.setdefault(key, facts[key])
    return result
