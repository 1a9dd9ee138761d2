# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The decisions of qimg_amend: requested qcow2 options against the image's, check mode, diff.

The options have qimg_create's names and types. compat, refcount_bits and lazy_refcounts can
change in place; the others (cluster_size, extended_l2, compression_type) are accepted when the
image already has the value asked for, and otherwise fail the task as qemu-img does.
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
    target_options,
)
from ansible_collections.qimg.disk.plugins.module_utils.passphrase import KEYSLOT_SPEC, keyslot_change
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.amend import amend_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info

AMENDABLE = ("compat", "refcount_bits", "lazy_refcounts")
DIFF_KEYS = ("format", "virtual_size") + COMPARED_OPTIONS


def argument_spec():
    return dict(
        path=dict(type="path", required=True),
        passphrase=dict(type="str", no_log=True),
        options=_options_spec(),
        force=dict(type="bool", default=False),
    )


def _options_spec():
    spec = image_options_spec()
    spec["options"]["encrypt"] = KEYSLOT_SPEC
    return spec


def _shown(meta):
    return dict((k, meta.get(k)) for k in DIFF_KEYS if k in meta)


def run(module):
    params = module.params
    path = params["path"]
    result = dict(changed=False, path=str(path))
    encrypt = (params["options"] or {}).get("encrypt")
    if encrypt:
        # LUKS keyslots (luks files and LUKS qcow2 images): their own idempotent change
        refuse_in_use(module, path, "amend", result)
        with qimg_errors(module, **result):
            changed, before, after = keyslot_change(path, encrypt, module.check_mode, params["force"])
        result.update(changed=changed, keyslots=after, diff={"before": {"keyslots": before},
                                                             "after": {"keyslots": after}})
        module.exit_json(**result)
    options = target_options(module, "qcow2", dict((k, v) for k, v in (params["options"] or {}).items()
                                                   if k != "encrypt"), **result)
    with qimg_errors(module, **result):
        info = image_info(path, force_share=True)
    before = image_metadata(info)
    if before["format"] != "qcow2":
        module.fail_json(msg="Format driver '%s' does not support option amendment" % before["format"], **result)
    fixed = option_differences(before, dict((k, v) for k, v in options.items() if k not in AMENDABLE))
    if fixed:
        module.fail_json(msg="%s: these options can only be set when an image is created: %s"
                         % (path, "; ".join(fixed)), **result)
    wanted = dict((k, v) for k, v in options.items() if k in AMENDABLE)
    result["differences"] = option_differences(before, wanted)
    after = dict(before)
    after.update(wanted)
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
        with qimg_errors(module, **result):
            amend_image(path, engine_options(wanted), force=params["force"])
            after = image_metadata(image_info(path, force_share=True))
    result["options"] = _shown(after)
    result["diff"] = {"before": _shown(before), "after": _shown(after)}
    module.exit_json(**result)
