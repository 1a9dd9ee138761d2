# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The decisions of qimg_bitmap: a persistent dirty bitmap of a qcow2 image against the task
(presence, enabled state, granularity, bits to merge in, an imperative clear), check mode, diff."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import (TaskError, check_not_in_use, in_context,
                                                                             plan_change, qimg_errors, unchanged)
from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import QimgError
from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import open_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops import bitmap as ops_bitmap
from ansible_collections.qimg.disk.plugins.module_utils.qimg.sizes import parse_size


def argument_spec():
    return dict(
        path=dict(type="path", required=True),
        name=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        enabled=dict(type="bool"),
        granularity=dict(type="str"),
        merge_from=dict(type="list", elements="dict", default=[], options=dict(
            bitmap=dict(type="str", required=True),
            source_file=dict(type="path"),
            source_format=dict(type="str", choices=["qcow2", "raw"]),
        )),
        clear=dict(type="bool", default=False),
        format=dict(type="str", choices=["qcow2", "raw"]),
    )


def _entry(b):
    """One bitmap as the diff and the facts show it."""
    return {"name": b["name"], "granularity": b["granularity"], "enabled": "auto" in b["flags"],
            "in_use": "in-use" in b["flags"]}


def _granularity(params):
    if params["granularity"] is None:
        return None
    text = str(params["granularity"]).strip()
    try:
        return parse_size(text)
    except QimgError as err:
        raise TaskError("invalid granularity %r: %s" % (text, err))


def plan(dev, params, open_source):
    """(steps, predicted bitmap list): the qemu-img bitmap actions the task needs, as
    [(merge_from item or None, [(action, argument)])], and the bitmap list after them.

    Each step is also run on the bitmaps of dev in memory (dev is open read-only: nothing is
    stored), so that the next decision sees its effect and qemu-img's refusals come out here,
    in check mode too."""
    name = params["name"]
    listed = [_entry(b) for b in ops_bitmap.bitmap_list(dev, counts=False)]
    current = [b for b in listed if b["name"] == name]
    if params["state"] == "absent":
        if not current:
            return [], listed
        return [(None, [("remove", None)])], [b for b in listed if b["name"] != name]
    if dev.format_name != "qcow2":
        raise TaskError("%s is a %s image: only qcow2 images have persistent bitmaps"
                        % (params["path"], dev.format_name))
    gran = _granularity(params)
    steps = []

    def step(item, acts, source=None):
        ops_bitmap.run_actions(dev, name, acts, gran, source)
        steps.append((item, acts))

    if not current:
        step(None, [("add", None)] + ([("disable", None)] if params["enabled"] is False else []))
    else:
        mine = current[0]
        if gran is not None and gran != mine["granularity"]:
            raise TaskError("bitmap %s of %s has a granularity of %d bytes, not %d: remove it first (state=absent) "
                            "to recreate it" % (name, params["path"], mine["granularity"], gran))
        if params["enabled"] is not None and params["enabled"] != mine["enabled"]:
            step(None, [("enable" if params["enabled"] else "disable", None)])
        if params["clear"] and ops_bitmap.has_bits(dev, name):
            step(None, [("clear", None)])
    for item in params["merge_from"]:
        source = open_source(item)
        if ops_bitmap.merge_needed(dev, name, source or dev, item["bitmap"]):
            step(item, [("merge", item["bitmap"])], source)
    after = [_entry(b) for b in ops_bitmap.bitmap_list(dev, counts=False)]
    return steps, after


def run(module):
    params = module.params
    path = params["path"]
    name = params["name"]
    result = dict(changed=False, path=path, name=name)
    sources = {}

    def open_source(item):
        if not item.get("source_file"):
            return None
        key = (item["source_file"], item.get("source_format"))
        if key not in sources:
            sources[key] = open_image(item["source_file"], item.get("source_format"), read_only=True,
                                      force_share=True, open_backing=False)
        return sources[key]

    try:
        with qimg_errors(module, **result):
            with open_image(path, params["format"], read_only=True, force_share=True, open_backing=False) as dev:
                before = [_entry(b) for b in ops_bitmap.bitmap_list(dev, counts=False)]
                try:
                    steps, after = plan(dev, params, open_source)
                except QimgError as err:
                    raise in_context("%s" % path, err, result)
            if not steps:
                unchanged(result, {"bitmaps": before})
                _facts(module, result, path, params)
                module.exit_json(**result)
            check_not_in_use(path, "change the bitmaps of", result)
            if not plan_change(module, result, {"bitmaps": before}, {"bitmaps": after}):
                result["bitmaps"] = after
                module.exit_json(**result)
            with open_image(path, params["format"], read_only=False, open_backing=False) as dev:
                gran = _granularity(params)
                for item, acts in steps:  # (as planned: the image is the same, nobody has it open)
                    source = open_source(item) if item is not None else None
                    ops_bitmap.run_actions(dev, name, acts, gran, source)
            _facts(module, result, path, params)
            result["diff"]["after"] = {"bitmaps": result["bitmaps"]}
    finally:
        for dev in sources.values():
            dev.close()
    module.exit_json(**result)


def _facts(module, result, path, params):
    with qimg_errors(module, **result):
        with open_image(path, params["format"], read_only=True, force_share=True, open_backing=False) as dev:
            listed = ops_bitmap.bitmap_list(dev)
    result["bitmaps"] = [_entry(b) for b in listed]
    for b in listed:
        if b["name"] == params["name"]:
            result["bitmap"] = dict(_entry(b), dirty_bytes=b["count"])
