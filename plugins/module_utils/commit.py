# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The decisions of qimg_commit: what the overlay holds against what its base already reads.

A commit changes something when the overlay allocates guest data (it is emptied afterwards,
unless drop), or when writing what the images above the base allocate would change the base's
guest content or size. So a second run reports no change: the first one emptied the overlay
(or, with drop, left a base that already holds it all). Check mode makes the same decision
without writing.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import (
    check_not_in_use,
    image_facts,
    plan_change,
    read_image,
    unchanged,
)
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.commit import commit_image, commit_plan


def argument_spec():
    return dict(
        path=dict(type="path", required=True),
        base=dict(type="str"),
        drop=dict(type="bool", default=False),
        allow_unsafe_backing=dict(type="bool", default=False),
    )


def run(module):
    """The whole task; returns the result dict (raises QimgError for the module's qimg_errors)."""
    params = module.params
    path = params["path"]
    unsafe_names = params["allow_unsafe_backing"]
    result = dict(changed=False, path=path, committed_bytes=0)
    plan = commit_plan(path, base=params["base"], compare=True, allow_unsafe_backing=unsafe_names)
    # the direct backing file named as base is the default commit; deeper ones leave the overlay
    # (and the images between) as they are, as qemu-img commit -b does
    deeper = plan["depth"] > 1
    drop = params["drop"] or deeper
    result.update(base=plan["base"], base_format=plan["base-format"], drop=drop)
    top = plan["top-bytes"]
    empties = top > 0 and not drop
    before = {"base": plan["base"], "base_virtual_size": plan["base-size"], "overlay_allocated_bytes": top}
    after = dict(before, base_virtual_size=plan["new-base-size"], overlay_allocated_bytes=0 if empties else top)
    if not (empties or plan["base-changes"]):
        unchanged(result, before)
    else:
        if empties:
            check_not_in_use(path, "commit", result)
        check_not_in_use(plan["base"], "commit into", result)
        after["committed_bytes"] = plan["committed-bytes"]
        result["committed_bytes"] = plan["committed-bytes"]
        if plan_change(module, result, before, after):
            base = os.path.abspath(plan["base"]) if deeper else None
            done = commit_image(path, base=base, drop=drop, allow_unsafe_backing=unsafe_names)
            result["committed_bytes"] = done["committed-bytes"]
            again = commit_plan(path, base=base, allow_unsafe_backing=unsafe_names)
            result["diff"]["after"] = dict(base=again["base"], base_virtual_size=again["base-size"],
                                           overlay_allocated_bytes=again["top-bytes"],
                                           committed_bytes=done["committed-bytes"])
    info = read_image(path, allow_unsafe_backing=unsafe_names)[0]
    facts = image_facts(info)
    facts.pop("path", None)
    for key in facts:
        result.setdefault(key, facts[key])
    return result
