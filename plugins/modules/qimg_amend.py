#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_amend
short_description: Change the options of an existing qcow2 image in place
version_added: 0.1.0
description:
  - Make sure a qcow2 image has the requested format options, like C(qemu-img amend), without
    re-creating it.
  - Nothing is written when the image already has every requested value.
  - The change is crash-safe; new metadata is written beside the old and switched in the header.
author:
  - qimg developers (@qimg)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  path:
    description:
      - Path of the qcow2 image.
    type: path
    required: true
  options:
    description:
      - The format options, with the names and types of M(qimg.disk.qimg_create)'s O(qimg.disk.qimg_create#module:options).
      - O(options.compat), O(options.refcount_bits), O(options.lazy_refcounts), O(options.data_file)
        and O(options.data_file_raw) can be changed.
        The others can only be set when an image is created; they are accepted when the image
        already has the value asked for, and fail the task otherwise.
    type: dict
    default: {}
    suboptions:
      cluster_size:
        description:
          - qcow2 cluster size (cannot be changed).
        type: str
      compat:
        description:
          - qcow2 version, V(1.1) (also V(v3)) or V(0.10) (also V(v2)). Quote V("0.10") in YAML.
          - Going to V(0.10) needs O(options.refcount_bits=16) and no extended L2 entries.
        type: str
      refcount_bits:
        description:
          - Width of a reference count, in bits. Anything but 16 needs O(options.compat=1.1).
        type: int
        choices: [1, 2, 4, 8, 16, 32, 64]
      lazy_refcounts:
        description:
          - Postpone reference count updates (needs O(options.compat=1.1)).
        type: bool
      extended_l2:
        description:
          - Extended L2 entries (cannot be changed).
        type: bool
      compression_type:
        description:
          - Compression method (cannot be changed).
        type: str
        choices: [zlib, zstd]
      data_file:
        description:
          - The name of the external data file recorded in the image (qemu-img amend's C(data_file)).
            Only images created with an external data file have one; the data file itself is not
            touched, moved or opened under its new name.
          - An empty string removes the name; the image then needs the data file given when it is opened.
        type: str
      data_file_raw:
        description:
          - Whether the external data file stays a valid raw image (qemu-img amend's C(data_file_raw)).
          - It can be turned off; turning it on fails unless it is on already, as in qemu-img.
        type: bool
  force:
    description:
      - qemu-img amend's C(--force) (for changes a driver only makes when forced).
    type: bool
    default: false
notes:
  - An image that another process (such as a running VM) holds open for writing is not amended;
    the task fails instead.
seealso:
  - module: qimg.disk.qimg_create
  - module: qimg.disk.qimg_resize
"""

EXAMPLES = r"""
- name: Make an image readable by an old QEMU
  qimg.disk.qimg_amend:
    path: /srv/disks/vm1.qcow2
    options:
      compat: "0.10"

- name: Record the new name of a moved external data file
  qimg.disk.qimg_amend:
    path: /srv/disks/vm2.qcow2
    options:
      data_file: /srv/data/vm2.raw

- name: Use 64-bit reference counts
  qimg.disk.qimg_amend:
    path: /srv/disks/vm1.qcow2
    options:
      refcount_bits: 64
"""

RETURN = r"""
path:
  description: Path of the image.
  returned: always
  type: str
differences:
  description: What differed from the request, worded C(<option> <current> != <requested>).
  returned: when the image was (or in check mode would be) changed
  type: list
  elements: str
  sample: ["compat 1.1 != 0.10"]
options:
  description: The image's format, virtual size and qcow2 options after the task.
  returned: success
  type: dict
  sample: {"format": "qcow2", "virtual_size": 1073741824, "cluster_size": 65536, "compat": "0.10",
           "refcount_bits": 16, "lazy_refcounts": false, "extended_l2": false, "compression_type": "zlib"}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.amend import argument_spec, run


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run(module)


if __name__ == "__main__":
    main()
