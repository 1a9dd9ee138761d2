#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_compare
short_description: Compare the guest-visible content of two disk images
version_added: 0.1.0
description:
  - Tell whether two raw or qcow2 images hold the same content as a guest sees it, like
    C(qemu-img compare), whatever their formats, cluster sizes or allocation.
  - Backing chains are read through. Ranges that read as zeros in both images count as equal,
    and an image larger than the other equals it when its tail reads as zeros, unless
    O(strict=true).
  - A difference is a result, not a failure. Never changes anything.
author:
  - qimg developers (@qimg)
extends_documentation_fragment:
  - qimg.disk.image.unsafe_backing
  - qimg.disk.image.info_module
  - ansible.builtin.action_common_attributes
requirements:
  - Python 3.9 or newer on the managed host.
options:
  passphrase1:
    description:
      - Passphrase of I(path1) when it is encrypted. Never shown in results, messages or logs.
    type: str
  passphrase2:
    description:
      - Passphrase of I(path2) when it is encrypted. Never shown in results, messages or logs.
    type: str
  path1:
    description:
      - Path of the first image on the managed host.
    type: path
    required: true
  format1:
    description:
      - Format of the first image. Probed when left out (qcow2 by its magic, anything else is
        raw). A file given as V(raw) is never probed as another format.
    type: str
    choices: [raw, qcow2]
  path2:
    description:
      - Path of the second image on the managed host.
    type: path
    required: true
  format2:
    description:
      - Format of the second image, probed like O(format1) when left out.
    type: str
    choices: [raw, qcow2]
  strict:
    description:
      - Also count as differences images of different virtual sizes, and ranges that are
        allocated in one image and unallocated or zero in the other, like C(qemu-img compare -s).
    type: bool
    default: false
  force_share:
    description:
      - Read the images even when another process (such as a running VM) holds a write lock on
        them, like C(qemu-img compare -U). The result may be wrong if they are being written.
    type: bool
    default: false
notes:
  - The disk image formats are implemented in pure Python inside this collection;
    the managed host needs neither C(qemu-img) nor C(qemu-utils).
seealso:
  - module: qimg.disk.qimg_convert
  - module: qimg.disk.qimg_info
"""

EXAMPLES = r"""
- name: Check that a converted copy holds the same content
  qimg.disk.qimg_compare:
    path1: /srv/disks/vm1.img
    format1: raw
    path2: /srv/disks/vm1.qcow2
  register: same

- name: Fail when the copy differs
  ansible.builtin.assert:
    that: same.identical
    fail_msg: "copy differs at offset {{ same.offset }} ({{ same.result }})"

- name: Compare strictly, sizes and allocation included
  qimg.disk.qimg_compare:
    path1: /srv/disks/a.qcow2
    path2: /srv/disks/b.qcow2
    strict: true
    force_share: true
  register: strict_result
"""

RETURN = r"""
identical:
  description: Whether the two images hold the same content.
  returned: success
  type: bool
  sample: false
result:
  description:
    - V(identical); V(content-mismatch) when the content differs; V(size-mismatch) when the
      virtual sizes differ (O(strict=true) only); V(block-status-mismatch) when one image
      allocates a range that the other does not (O(strict=true) only).
  returned: success
  type: str
  sample: content-mismatch
offset:
  description:
    - Guest offset of the first differing 512-byte sector, or of the first range whose
      allocation differs; V(null) when the images are identical or only their sizes differ.
  returned: success
  type: int
  sample: 1048576
size_mismatch:
  description: Whether the virtual sizes of the two images differ.
  returned: success
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import qimg_errors
from ansible_collections.qimg.disk.plugins.module_utils.compare import run_compare
from ansible_collections.qimg.disk.plugins.module_utils.passphrase import PASSPHRASE, key_paths


def main():
    module = AnsibleModule(
        argument_spec=dict(
            passphrase1=PASSPHRASE,
            passphrase2=PASSPHRASE,
            path1=dict(type="path", required=True),
            format1=dict(type="str", choices=["raw", "qcow2"]),
            path2=dict(type="path", required=True),
            format2=dict(type="str", choices=["raw", "qcow2"]),
            strict=dict(type="bool", default=False),
            force_share=dict(type="bool", default=False),
            allow_unsafe_backing=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    key_paths(module, (("path1", "passphrase1"), ("path2", "passphrase2")))
    with qimg_errors(module):
        result = run_compare(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
