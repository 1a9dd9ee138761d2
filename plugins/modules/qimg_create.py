#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_create
short_description: Create or remove a raw or qcow2 disk image
version_added: 0.1.0
description:
  - Make sure a disk image exists with the requested format, virtual size, format options and
    backing file, like C(qemu-img create), or make sure it does not exist.
  - Idempotence is decided from the image's metadata, not its bytes. An existing image that matches
    is left alone. An existing image that differs is never overwritten unless O(force=true); without
    it the task fails and lists every difference.
  - Images are written to a temporary file in the destination directory and renamed into place, so
    a failure leaves any previous file untouched.
author:
  - qimg developers (@qimg)
extends_documentation_fragment:
  - qimg.disk.image
  - ansible.builtin.files
  - ansible.builtin.action_common_attributes
  - action_common_attributes.files
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
  safe_file_operations:
    support: full
  vault:
    support: none
options:
  format:
    description:
      - Format of the image.
      - When an existing file has another format, it differs from the request.
    type: str
    choices: [raw, qcow2]
    default: qcow2
  size:
    description:
      - Virtual size of the image (what the guest sees), in bytes, or with one of the binary
        suffixes C(k), C(M), C(G), C(T), C(P), C(E) (for example V(10G) or V(512M)).
      - Sizes are rounded up to a multiple of 512 bytes, as QEMU does.
      - Required when O(state=present), unless O(backing_file) is given; then the image takes the
        backing file's size, and the size of an existing image is not compared.
    type: str
  options:
    description:
      - Format options, as C(qemu-img create -o) takes them.
      - Only the options given are compared with an existing image; options left out are not.
      - O(options.preallocation) cannot be read back from an image, so it is used on creation only
        and never compared.
      - The raw format supports only O(options.preallocation).
    type: dict
    default: {}
    suboptions:
      cluster_size:
        description:
          - qcow2 cluster size, in bytes or with a suffix (for example V(64k)); a power of two from
            512 bytes to 2 MiB. QEMU's default is 64 KiB.
        type: str
      compat:
        description:
          - qcow2 version, V(1.1) (QEMU 1.1 and newer; also V(v3)) or V(0.10) (also V(v2)).
            Quote V("0.10") in YAML, otherwise it is read as the number 0.1 (which is accepted too).
          - QEMU's default is V(1.1).
        type: str
      refcount_bits:
        description:
          - Width of a qcow2 reference count, in bits. Anything but 16 needs O(options.compat=1.1).
        type: int
        choices: [1, 2, 4, 8, 16, 32, 64]
      lazy_refcounts:
        description:
          - Postpone qcow2 reference count updates (needs O(options.compat=1.1)).
        type: bool
      extended_l2:
        description:
          - Use qcow2 extended L2 entries (subcluster allocation; needs O(options.compat=1.1)).
        type: bool
      compression_type:
        description:
          - Compression method for compressed qcow2 clusters. V(zstd) needs O(options.compat=1.1).
        type: str
        choices: [zlib, zstd]
      preallocation:
        description:
          - Preallocation mode used when the image is created.
          - V(metadata) is for qcow2 only.
        type: str
        choices: ['off', metadata, falloc, full]
  backing_file:
    description:
      - Backing file of a qcow2 overlay, stored in the image as given. A relative name is relative
        to the directory of the image, as in QEMU.
      - Compared with the backing file name stored in an existing image, as strings.
      - When left out, the image must have no backing file.
    type: str
  backing_format:
    description:
      - Format of the backing file. Probed from the backing file when left out; compared with an
        existing image only when given.
    type: str
    choices: [raw, qcow2]
  state:
    description:
      - V(present) makes sure the image exists as requested; V(absent) removes the file.
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - Re-create an existing image whose format, size, options or backing file differ from the
        request. The image's content is lost.
      - Without it such a difference fails the task, with a message listing each difference.
      - The new image keeps the mode and owner of the file it replaces, unless O(mode), O(owner) or
        O(group) say otherwise.
    type: bool
    default: false
notes:
  - An existing image is read with shared locks waived (like C(qemu-img info -U)) to compare its
    metadata, so an image in use by a running VM can still be checked for idempotence.
  - An image that another process (such as a running VM) holds open for writing is never
    re-created (even with O(force=true)) or removed; the task fails instead.
seealso:
  - module: qimg.disk.qimg_info
"""

EXAMPLES = r"""
- name: Create a 10 GiB qcow2 image
  qimg.disk.qimg_create:
    path: /var/lib/libvirt/images/vm1.qcow2
    size: 10G
    mode: "0640"

- name: Create a raw image, fully allocated
  qimg.disk.qimg_create:
    path: /srv/disks/data.img
    format: raw
    size: 2G
    options:
      preallocation: full

- name: Create a qcow2 image with small clusters and lazy refcounts
  qimg.disk.qimg_create:
    path: /srv/disks/small.qcow2
    size: 1G
    options:
      cluster_size: 4k
      lazy_refcounts: true

- name: Create an overlay on top of a base image (size taken from the base)
  qimg.disk.qimg_create:
    path: /srv/disks/vm1-overlay.qcow2
    backing_file: base.qcow2
    backing_format: qcow2

- name: Grow by re-creating the image when its size differs (content is lost)
  qimg.disk.qimg_create:
    path: /srv/disks/scratch.qcow2
    size: 20G
    force: true

- name: Remove an image
  qimg.disk.qimg_create:
    path: /srv/disks/scratch.qcow2
    state: absent
"""

RETURN = r"""
path:
  description: Path of the image.
  returned: always
  type: str
  sample: /srv/disks/vm1.qcow2
differences:
  description:
    - What differs between the existing image and the request, one entry per difference, worded
      C(<what> <current> != <requested>).
  returned: when an existing image differs from the request
  type: list
  elements: str
  sample: ["virtual size 1073741824 != 2147483648", "cluster_size 65536 != 4096"]
filename:
  description: File name of the image, as opened.
  returned: when O(state=present) and the image exists after the task (not in check mode when it would be created)
  type: str
  sample: /srv/disks/vm1.qcow2
format:
  description: Format of the image.
  returned: when O(state=present) and the image exists after the task (not in check mode when it would be created)
  type: str
  sample: qcow2
virtual_size:
  description: Virtual size of the image (what the guest sees), in bytes.
  returned: when O(state=present) and the image exists after the task (not in check mode when it would be created)
  type: int
  sample: 10737418240
actual_size:
  description: Bytes the image file occupies on disk.
  returned: when O(state=present) and the image exists after the task (not in check mode when it would be created)
  type: int
  sample: 200704
dirty_flag:
  description: Whether the image is marked dirty (open for writing, or lazy refcounts pending).
  returned: when O(state=present) and the image exists after the task (not in check mode when it would be created)
  type: bool
  sample: false
cluster_size:
  description: Cluster size of the image, in bytes.
  returned: when the image is qcow2 and exists after the task
  type: int
  sample: 65536
backing_filename:
  description: Backing file name as stored in the image.
  returned: when the image has a backing file
  type: str
  sample: base.qcow2
full_backing_filename:
  description: Backing file name, resolved relative to the image's directory.
  returned: when the image has a backing file
  type: str
  sample: /srv/disks/base.qcow2
backing_filename_format:
  description: Backing file format as stored in the image.
  returned: when the image records a backing file format
  type: str
  sample: qcow2
snapshots:
  description: Internal snapshots of the image, in the shape of C(qemu-img info) with snake_case keys.
  returned: when the image has internal snapshots
  type: list
  elements: dict
format_specific:
  description: Format-specific information.
  returned: when the image is qcow2 and exists after the task
  type: dict
  contains:
    type:
      description: Format name.
      type: str
      sample: qcow2
    data:
      description:
        - Format-specific data; for qcow2 C(compat), C(compression_type), C(lazy_refcounts),
          C(refcount_bits), C(corrupt), C(extended_l2) and more.
      type: dict
      sample: {"compat": "1.1", "compression_type": "zlib", "lazy_refcounts": false,
               "refcount_bits": 16, "corrupt": false, "extended_l2": false}
"""

import os
import stat

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import (
    image_options_spec,
    COMPARED_OPTIONS,
    COMPAT_NAMES,
    QCOW2_CREATE_DEFAULTS,
    QCOW2_ONLY_OPTIONS as QCOW2_ONLY,
    engine_options,
    image_facts,
    image_metadata,
    ordered,
    qimg_errors,
    refuse_in_use,
    show_value,
)
from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import QimgError
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info
from ansible_collections.qimg.disk.plugins.module_utils.qimg.sizes import parse_size

SECTOR = 512


def round_up(value, align=SECTOR):
    if value is None:
        return None
    return (value + align - 1) // align * align


class ImageRequest(object):
    """What the task asks for, validated and normalised."""

    def __init__(self, module):
        params = module.params
        self.module = module
        self.path = params["path"]
        self.format = params["format"]
        self.backing_file = params["backing_file"]
        self.backing_format = params["backing_format"]
        self.options = dict((k, v) for k, v in (params["options"] or {}).items() if v is not None)
        self.size = None
        self.cluster_size = None

        with qimg_errors(module, path=self.path):
            if params["size"] is not None:
                self.size = parse_size(params["size"])
            if "cluster_size" in self.options:
                self.cluster_size = parse_size(self.options["cluster_size"])
        if "compat" in self.options:
            compat = COMPAT_NAMES.get(str(self.options["compat"]).strip())
            if compat is None:
                module.fail_json(msg="options.compat must be one of 0.10, 1.1, v2, v3, got: %s"
                                 % self.options["compat"], path=self.path)
            self.options["compat"] = compat

        if self.format == "raw":
            bad = [name for name in QCOW2_ONLY if name in self.options]
            if bad:
                module.fail_json(msg="option(s) not supported by format raw: %s" % ", ".join(bad),
                                 path=self.path)
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

    def engine_options(self):
        """The -o options to pass to create_image."""
        out = engine_options(self.options)
        if "cluster_size" in out:
            out["cluster_size"] = str(self.cluster_size)
        return out

    def differences(self, current):
        """List of 'what current != requested' for an existing image's metadata."""
        diffs = []
        if current.get("format") != self.format:
            diffs.append("format %s != %s" % (current.get("format"), self.format))
            # Other fields of a different format compare meaninglessly; size still matters.
        if self.size is not None and round_up(current.get("virtual_size")) != round_up(self.size):
            diffs.append("virtual size %s != %s" % (current.get("virtual_size"), round_up(self.size)))
        if current.get("format") == self.format == "qcow2":
            for name in COMPARED_OPTIONS:
                if name not in self.options:
                    continue
                wanted = self.cluster_size if name == "cluster_size" else self.options[name]
                have = current.get(name)
                if have != wanted:
                    diffs.append("%s %s != %s" % (name, show_value(have), show_value(wanted)))
        if current.get("backing_file") != self.backing_file:
            diffs.append("backing file %s != %s" % (show_value(current.get("backing_file")),
                                                    show_value(self.backing_file)))
        elif self.backing_format is not None and current.get("backing_format") != self.backing_format:
            diffs.append("backing format %s != %s" % (show_value(current.get("backing_format")),
                                                      show_value(self.backing_format)))
        return diffs

    def predicted_metadata(self):
        """Metadata the new image will have (for check mode and the diff)."""
        meta = {"state": "present", "format": self.format, "virtual_size": round_up(self.size)}
        if self.size is None and self.backing_file is not None:
            meta["virtual_size"] = self._backing_size()
        if self.format == "qcow2":
            for name, default in QCOW2_CREATE_DEFAULTS.items():
                meta[name] = default
            for name in COMPARED_OPTIONS:
                if name in self.options:
                    meta[name] = self.cluster_size if name == "cluster_size" else self.options[name]
        meta["backing_file"] = self.backing_file
        meta["backing_format"] = self.backing_format
        return ordered(meta)

    def _backing_size(self):
        backing = self.backing_file
        if not os.path.isabs(backing):
            backing = os.path.join(os.path.dirname(os.path.abspath(self.path)), backing)
        try:
            info = image_info(backing, fmt=self.backing_format, force_share=True)
        except QimgError:
            return None
        return info.get("virtual-size")


def read_existing(module, path):
    """(info, metadata) of the existing image at path; fails the task on engine errors."""
    with qimg_errors(module, path=path):
        info = image_info(path, force_share=True)
    return info, image_metadata(info)


def state_absent(module, result):
    path = module.params["path"]
    if not os.path.lexists(path):
        result["diff"] = {"before": {"state": "absent"}, "after": {"state": "absent"}}
        module.exit_json(**result)
    if os.path.isdir(path) and not os.path.islink(path):
        module.fail_json(msg="%s is a directory, not an image file" % path, path=path)
    try:
        before = image_metadata(image_info(path, force_share=True))
    except QimgError:
        before = {"state": "present"}
    refuse_in_use(module, path, "remove", result)
    result["changed"] = True
    result["diff"] = {"before": before, "after": {"state": "absent"}}
    if not module.check_mode:
        try:
            os.unlink(path)
        except OSError as err:
            module.fail_json(msg="could not remove %s: %s" % (path, err), path=path)
    module.exit_json(**result)


def state_present(module, result):
    request = ImageRequest(module)
    path = request.path
    exists = os.path.lexists(path)
    info = None
    if exists:
        if os.path.isdir(path):
            module.fail_json(msg="%s is a directory, not an image file" % path, path=path)
        if module.params["force"]:
            try:
                info = image_info(path, force_share=True)
            except QimgError as err:
                # An unreadable file is recreated with force; report why.
                result["differences"] = ["unreadable image: %s" % err]
                before = {"state": "present"}
            else:
                before = image_metadata(info)
                result["differences"] = request.differences(before)
        else:
            info, before = read_existing(module, path)
            result["differences"] = request.differences(before)
        if not result["differences"]:
            result.pop("differences")
            result["diff"] = {"before": before, "after": dict(before)}
            _finish(module, result, info, changed=False)
        if not module.params["force"]:
            module.fail_json(
                msg="%s differs from the requested image and force is false: %s"
                    % (path, "; ".join(result["differences"])),
                **result)
        refuse_in_use(module, path, "re-create", result)
    else:
        before = {"state": "absent"}

    result["changed"] = True
    result["diff"] = {"before": before, "after": request.predicted_metadata()}
    if module.check_mode:
        # Attributes of a file that does not exist yet cannot be compared; report the plan only.
        module.exit_json(**result)

    old_stat = os.stat(path) if exists and not os.path.islink(path) else None
    with qimg_errors(module, path=path):
        create_image(path, request.format, size=request.size, options=request.engine_options(),
                     backing_file=request.backing_file, backing_fmt=request.backing_format,
                     overwrite=exists)
        info = image_info(path, force_share=True)
    if old_stat is not None:
        keep_attributes(path, old_stat)
    result["diff"]["after"] = image_metadata(info)
    _finish(module, result, info, changed=True)


def keep_attributes(path, old_stat):
    """A re-created image keeps the replaced file's mode and owner (file options still apply after)."""
    try:
        os.chmod(path, stat.S_IMODE(old_stat.st_mode))
        st = os.stat(path)
        if (st.st_uid, st.st_gid) != (old_stat.st_uid, old_stat.st_gid):
            os.chown(path, old_stat.st_uid, old_stat.st_gid)
    except OSError:
        pass  # not permitted: the new file keeps its own attributes


def _finish(module, result, info, changed):
    """Apply file attributes, add the image facts and exit."""
    file_args = module.load_file_common_arguments(module.params)
    result["changed"] = module.set_fs_attributes_if_different(file_args, changed,
                                                              diff=result.get("diff"))
    if info is not None:
        result.update(image_facts(info))
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            format=dict(type="str", choices=["raw", "qcow2"], default="qcow2"),
            size=dict(type="str"),
            options=image_options_spec(("off", "metadata", "falloc", "full")),
            backing_file=dict(type="str"),
            backing_format=dict(type="str", choices=["raw", "qcow2"]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            force=dict(type="bool", default=False),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    result = dict(changed=False, path=module.params["path"])
    if module.params["state"] == "absent":
        state_absent(module, result)
    else:
        state_present(module, result)


if __name__ == "__main__":
    main()
