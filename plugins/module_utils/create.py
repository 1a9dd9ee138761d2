# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend of qimg_create: the image the task asks for (or its absence) against the file there.

``run_create(module)`` returns the result; engine failures are raised (QimgError) for the
module's ``qimg_errors``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import (
    engine_options,
    finish_file,
    image_differences,
    image_metadata,
    keep_owner,
    plan_change,
    predicted_metadata,
    read_image,
    check_not_in_use,
    replace_existing,
    target_options,
)
from ansible_collections.qimg.disk.plugins.module_utils.passphrase import encrypt_options, encryption_differences
from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import QimgError
from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import full_backing_path
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info
from ansible_collections.qimg.disk.plugins.module_utils.qimg.sizes import parse_size

SECTOR = 512


def round_up(value, align=SECTOR):
    if value is None:
        return None
    return (value + align - 1) // align * align


class CreateRequest(object):
    """What the task asks for, validated and normalised."""

    def __init__(self, module):
        params = module.params
        self.module = module
        self.path = params["path"]
        self.format = params["format"]
        self.backing_file = params["backing_file"]
        self.backing_format = params["backing_format"]
        self.unsafe = params["allow_unsafe_backing"]
        self.size = None
        if params["size"] is not None:
            self.size = parse_size(params["size"])
        given = dict(params["options"] or {})
        self.encrypt = given.pop("encrypt", None)
        self.options = target_options(module, self.format, given, path=self.path)
        if self.encrypt and self.format != "qcow2":
            module.fail_json(msg="options.encrypt needs format qcow2", path=self.path)

        if self.format == "raw":
            if self.options.get("preallocation") == "metadata":
                module.fail_json(msg="preallocation=metadata is not supported by format raw",
                                 path=self.path)
            if self.backing_file is not None:
                module.fail_json(msg="format raw does not support a backing file", path=self.path)
        if self.backing_format is not None and self.backing_file is None:
            module.fail_json(msg="backing_format needs backing_file", path=self.path)
        if self.size is None and self.backing_file is None and params["state"] == "present":
            module.fail_json(msg="size is required when state is present and backing_file is not given",
                             path=self.path)

    def differences(self, current):
        """List of 'what current != requested' for an existing image's metadata."""
        return image_differences(current, self.format, self.options, self.backing_file,
                                 self.backing_format, size=round_up(self.size), size_key=round_up)

    def predicted_metadata(self):
        """Metadata the new image will have (for check mode and the diff)."""
        size = round_up(self.size)
        if self.size is None and self.backing_file is not None:
            size = self._backing_size()
        return predicted_metadata(self.format, size, self.options, self.backing_file, self.backing_format)

    def _backing_size(self):
        backing = full_backing_path(os.path.abspath(self.path), self.backing_file)
        try:
            info = image_info(backing, fmt=self.backing_format, force_share=True)
        except QimgError:
            return None
        return info.get("virtual-size")

    def create(self, overwrite):
        options, secrets = engine_options(self.options), None
        if self.encrypt:
            extra, secrets = encrypt_options(self.encrypt)
            options.update(extra)
        create_image(self.path, self.format, size=self.size, options=options,
                     backing_file=self.backing_file, backing_fmt=self.backing_format,
                     overwrite=overwrite, allow_unsafe_backing=self.unsafe, secrets=secrets)


def state_absent(module, result):
    path = module.params["path"]
    if not os.path.lexists(path):
        result["diff"] = {"before": {"state": "absent"}, "after": {"state": "absent"}}
        return result
    if os.path.isdir(path) and not os.path.islink(path):
        module.fail_json(msg="%s is a directory, not an image file" % path, path=path)
    try:
        before = read_image(path)[1]
    except QimgError:
        before = {"state": "present"}
    check_not_in_use(path, "remove", result)
    if plan_change(module, result, before, {"state": "absent"}):
        try:
            os.unlink(path)
        except OSError as err:
            module.fail_json(msg="could not remove %s: %s" % (path, err), path=path)
    return result


def state_present(module, result):
    request = CreateRequest(module)
    path = request.path
    force = module.params["force"]
    exists = os.path.lexists(path)
    info = None
    if exists:
        if os.path.isdir(path):
            module.fail_json(msg="%s is a directory, not an image file" % path, path=path)
        try:
            info, before = read_image(path)
        except QimgError as err:
            if not force:
                raise
            # An unreadable file is recreated with force; report why.
            result["differences"] = ["unreadable image: %s" % err]
            before = {"state": "present"}
        else:
            result["differences"] = request.differences(before) + encryption_differences(info, request.encrypt)
        if not replace_existing(result, path, before, force, "re-create"):
            return finish_file(module, result, path, info, changed=False)
    else:
        before = {"state": "absent"}

    if not plan_change(module, result, before, request.predicted_metadata()):
        # Attributes of a file that does not exist yet cannot be compared; report the plan only.
        return result

    old_stat = os.stat(path) if exists and not os.path.islink(path) else None
    request.create(overwrite=exists)
    info = image_info(path, force_share=True)
    if old_stat is not None:
        keep_owner(path, old_stat)
    result["diff"]["after"] = image_metadata(info)
    return finish_file(module, result, path, info, changed=True)


def run_create(module):
    """The whole task: returns the result dict (raises QimgError, fails on bad arguments)."""
    result = dict(changed=False, path=module.params["path"])
    if module.params["state"] == "absent":
        return state_absent(module, result)
    return state_present(module, result)
