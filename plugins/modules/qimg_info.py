#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_info
short_description: Read the metadata of a raw or qcow2 disk image
version_added: 0.1.0
description:
  - Return the facts C(qemu-img info --output=json) gives about a disk image, with C(-) in key
    names replaced by C(_).
  - Optionally return the facts of every image in the backing chain.
  - Never changes anything.
author:
  - qimg developers (@qimg)
extends_documentation_fragment:
  - qimg.disk.image.unsafe_backing
  - qimg.disk.image
  - qimg.disk.image.info_module
  - ansible.builtin.action_common_attributes
options:
  format:
    description:
      - Format of the image. Probed when left out (qcow2 by its magic, anything else is raw).
      - A file given as V(raw) is never probed as another format.
    type: str
    choices: [raw, qcow2]
  backing_chain:
    description:
      - Also return the facts of every image in the backing chain, in RV(images).
    type: bool
    default: false
  force_share:
    description:
      - Read the image even when another process (such as a running VM) holds a write lock on it,
        like C(qemu-img info -U). The metadata read may be inconsistent if it is being changed.
    type: bool
    default: false
  checksum:
    description:
      - Also return RV(checksum), a digest of the guest-visible content made with this hash
        algorithm (any name of Python's C(hashlib) with a fixed digest length, such as V(sha256)).
      - The digest is blkhash's block hash (the one the C(blksum) tool prints), so the same content
        gives the same value in raw and qcow2, compressed or not, encrypted or through a backing
        chain. Unallocated and zero ranges are not read, but the data is, so this takes time on a
        large image with much data.
    type: str
seealso:
  - module: qimg.disk.qimg_create
"""

EXAMPLES = r"""
- name: Read an image's facts
  qimg.disk.qimg_info:
    path: /var/lib/libvirt/images/vm1.qcow2
  register: vm1

- name: Show its virtual size and qcow2 version
  ansible.builtin.debug:
    msg: "{{ vm1.virtual_size }} bytes, compat {{ vm1.format_specific.data.compat }}"

- name: Read the whole backing chain of a running VM's disk
  qimg.disk.qimg_info:
    path: /var/lib/libvirt/images/vm1-overlay.qcow2
    backing_chain: true
    force_share: true
  register: chain

- name: Record the content digest of a golden image
  qimg.disk.qimg_info:
    path: /srv/golden/debian-12.qcow2
    checksum: sha256
  register: golden

- name: List the files of the chain, top first
  ansible.builtin.debug:
    msg: "{{ chain.images | map(attribute='filename') | list }}"
"""

RETURN = r"""
images:
  description:
    - Facts of every image in the backing chain, top image first, each with the keys documented
      here for the top image.
  returned: when O(backing_chain=true)
  type: list
  elements: dict
  sample:
    - {"filename": "overlay.qcow2", "format": "qcow2", "virtual_size": 1073741824,
       "backing_filename": "base.qcow2"}
    - {"filename": "base.qcow2", "format": "qcow2", "virtual_size": 1073741824}
filename:
  description: File name of the image, as opened.
  returned: success
  type: str
  sample: /srv/disks/vm1.qcow2
format:
  description: Format of the image.
  returned: success
  type: str
  sample: qcow2
virtual_size:
  description: Virtual size of the image (what the guest sees), in bytes.
  returned: success
  type: int
  sample: 10737418240
actual_size:
  description: Bytes the image file occupies on disk.
  returned: success
  type: int
  sample: 200704
dirty_flag:
  description: Whether the image is marked dirty (open for writing, or lazy refcounts pending).
  returned: success
  type: bool
  sample: false
cluster_size:
  description: Cluster size of the image, in bytes.
  returned: when the image is qcow2
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
  sample:
    - {"id": "1", "name": "before-upgrade", "vm_state_size": 0, "date_sec": 1700000000,
       "date_nsec": 0, "vm_clock_sec": 0, "vm_clock_nsec": 0, "icount": 0}
checksum:
  description:
    - Hex digest of the image's guest-visible content with the algorithm O(checksum) names
      (blkhash's construction, as C(qimg checksum) and C(blksum) print it).
  returned: when O(checksum) is set
  type: str
  sample: 0afc4ddab3f8cc1e11794fc5d5763518cad87de51789200d01191b1474e4a765
format_specific:
  description: Format-specific information.
  returned: when the image is qcow2
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

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import qimg_errors
from ansible_collections.qimg.disk.plugins.module_utils.info import run_info


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            format=dict(type="str", choices=["raw", "qcow2"]),
            backing_chain=dict(type="bool", default=False),
            force_share=dict(type="bool", default=False),
            allow_unsafe_backing=dict(type="bool", default=False),
            checksum=dict(type="str"),
        ),
        supports_check_mode=True,
    )
    with qimg_errors(module):
        result = run_info(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
