# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The decisions of qimg_resize: desired virtual size against the image's, check mode, diff."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import qimg_errors, refuse_in_use
from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import QimgError
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.resize import ShrinkRefused, resize_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.sizes import parse_size

SECTOR = 512


def argument_spec():
    return dict(
        path=dict(type="path", required=True),
        passphrase=dict(type="str", no_log=True),
        size=dict(type="str", required=True),
        shrink=dict(type="bool", default=False),
        preallocation=dict(type="str", choices=["off", "metadata", "falloc", "full"]),
        format=dict(type="str", choices=["raw", "qcow2"]),
    )


def requested_size(module, result):
    """The absolute size asked for, in bytes; relative sizes cannot be idempotent."""
    text = str(module.params["size"]).strip()
    if text[:1] in ("+", "-"):
        module.fail_json(msg="size must be absolute: a relative size (%s) would grow or shrink the image "
                             "on every run" % text, **result)
    with qimg_errors(module, **result):
        return parse_size(text)


def same_size(fmt, current, wanted):
    """A raw image's virtual size is its length rounded up to whole sectors, as QEMU sees it."""
    if fmt == "raw":
        return current == (wanted + SECTOR - 1) // SECTOR * SECTOR
    return current == wanted


def run(module):
    params = module.params
    path = params["path"]
    result = dict(changed=False, path=path)
    wanted = requested_size(module, result)
    with qimg_errors(module, **result):
        info = image_info(path, fmt=params["format"], force_share=True)
    fmt = info["format"]
    current = info["virtual-size"]
    result["format"] = fmt
    result["old_virtual_size"] = current
    if same_size(fmt, current, wanted):
        result["virtual_size"] = current
        result["diff"] = {"before": {"virtual_size": current}, "after": {"virtual_size": current}}
        module.exit_json(**result)
    try:
        # the same validation as the real run (qemu-img's refusals), without writing
        resize_image(path, wanted, fmt=fmt, shrink=params["shrink"], preallocation=params["preallocation"],
                     check_mode=True)
    except ShrinkRefused as err:
        module.fail_json(msg="%s is %d bytes: shrinking it to %d bytes needs shrink=true (%s)"
                         % (path, current, wanted, err.warning), **result)
    except QimgError as err:
        module.fail_json(msg=str(err), **result)
    refuse_in_use(module, path, "resize", result)
    result["changed"] = True
    if not module.check_mode:
        with qimg_errors(module, **result):
            resize_image(path, wanted, fmt=fmt, shrink=params["shrink"], preallocation=params["preallocation"])
            after = image_info(path, fmt=fmt, force_share=True)["virtual-size"]
    else:
        after = wanted if fmt != "raw" else (wanted + SECTOR - 1) // SECTOR * SECTOR
    result["virtual_size"] = after
    result["diff"] = {"before": {"virtual_size": current}, "after": {"virtual_size": after}}
    module.exit_json(**result)
