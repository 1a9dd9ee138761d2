#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_measure
short_description: Compute the file size a raw or qcow2 image needs
version_added: 0.1.0
description:
  - Compute how many bytes an image file of the target format needs, like
    C(qemu-img measure --output=json), either for the content of an existing image (what a
    conversion of it would need) or for a new empty image of a given virtual size.
  - Never changes anything.
author:
  - qimg developers (@qimg)
extends_documentation_fragment:
  - qimg.disk.image.unsafe_backing
  - qimg.disk.image.info_module
  - ansible.builtin.action_common_attributes
requirements:
  - Python 3.9 or newer on the managed host.
options:
  passphrase:
    description:
      - Passphrase of an encrypted image (qcow2 with LUKS or legacy AES encryption, or a luks file),
        and of its encrypted backing files. Never shown in results, diffs, messages or logs.
    type: str
  path:
    description:
      - Path of an existing image on the managed host whose content is measured.
      - Exactly one of O(path) and O(size) is required.
    type: path
  size:
    description:
      - Virtual size of a new empty image to measure, in bytes, or with one of the binary
        suffixes C(k), C(M), C(G), C(T), C(P), C(E) (for example V(10G)).
      - Exactly one of O(path) and O(size) is required.
    type: str
  format:
    description:
      - Format of the image at O(path). Probed when left out (qcow2 by its magic, anything else is
        raw). A file given as V(raw) is never probed as another format.
    type: str
    choices: [raw, qcow2]
  target_format:
    description:
      - Format of the image to measure for.
    type: str
    choices: [raw, qcow2]
    default: qcow2
  options:
    description:
      - Format options of the target image, as C(qemu-img measure -o) takes them.
      - The raw format takes none of them.
    type: dict
    default: {}
    suboptions:
      cluster_size:
        description:
          - qcow2 cluster size, in bytes or with a suffix (for example V(64k)). QEMU's default is
            64 KiB.
        type: str
      compat:
        description:
          - qcow2 version, V(1.1) (also V(v3)) or V(0.10) (also V(v2)). Quote V("0.10") in YAML.
          - Persistent dirty bitmaps (RV(bitmaps)) need V(1.1).
        type: str
      refcount_bits:
        description:
          - Width of a qcow2 reference count, in bits.
        type: int
        choices: [1, 2, 4, 8, 16, 32, 64]
      lazy_refcounts:
        description:
          - Postpone qcow2 reference count updates.
        type: bool
      extended_l2:
        description:
          - Use qcow2 extended L2 entries (subcluster allocation).
        type: bool
      compression_type:
        description:
          - Compression method for compressed qcow2 clusters.
        type: str
        choices: [zlib, zstd]
  snapshot:
    description:
      - Measure this internal snapshot of the image at O(path) instead of its current state, like
        C(qemu-img measure -l). A snapshot ID or name (an ID is looked up first), or
        C(snapshot.id=ID) / C(snapshot.name=NAME).
    type: str
  force_share:
    description:
      - Read the image even when another process (such as a running VM) holds a write lock on it,
        like C(qemu-img measure -U). The figures may be inaccurate if it is being written.
    type: bool
    default: false
notes:
  - The disk image formats are implemented in pure Python inside this collection;
    the managed host needs neither C(qemu-img) nor C(qemu-utils).
  - Results use the names of C(qemu-img measure --output=json) with C(-) replaced by C(_).
seealso:
  - module: qimg.disk.qimg_convert
  - module: qimg.disk.qimg_create
"""

EXAMPLES = r"""
- name: How much space would a 1 GiB qcow2 image need?
  qimg.disk.qimg_measure:
    size: 1G
  register: empty

- name: Show it
  ansible.builtin.debug:
    msg: "{{ empty.required }} bytes now, {{ empty.fully_allocated }} when full"

- name: Space a qcow2 copy of a raw disk would need
  qimg.disk.qimg_measure:
    path: /srv/disks/vm1.img
    format: raw
    target_format: qcow2
    options:
      cluster_size: 2M
  register: needed

- name: Space a raw export of a snapshot would need
  qimg.disk.qimg_measure:
    path: /var/lib/libvirt/images/vm1.qcow2
    snapshot: before-upgrade
    target_format: raw
    force_share: true
"""

RETURN = r"""
required:
  description: Bytes the target file needs for the content (metadata included).
  returned: success
  type: int
  sample: 393216
fully_allocated:
  description: Bytes the target file would need with every cluster allocated.
  returned: success
  type: int
  sample: 1074135040
bitmaps:
  description: Bytes of the persistent dirty bitmaps a qcow2 target would need.
  returned: when O(path) is a qcow2 image and the target is qcow2 with O(options.compat=1.1)
  type: int
  sample: 0
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import image_options_spec, qimg_errors
from ansible_collections.qimg.disk.plugins.module_utils.measure import run_measure
from ansible_collections.qimg.disk.plugins.module_utils.passphrase import PASSPHRASE, key_paths


def main():
    module = AnsibleModule(
        argument_spec=dict(
            passphrase=PASSPHRASE,
            path=dict(type="path"),
            size=dict(type="str"),
            format=dict(type="str", choices=["raw", "qcow2"]),
            target_format=dict(type="str", choices=["raw", "qcow2"], default="qcow2"),
            options=image_options_spec(),
            snapshot=dict(type="str"),
            force_share=dict(type="bool", default=False),
            allow_unsafe_backing=dict(type="bool", default=False),
        ),
        mutually_exclusive=[("path", "size")],
        required_one_of=[("path", "size")],
        required_by={"snapshot": "path", "format": "path"},
        supports_check_mode=True,
    )
    key_paths(module, (("path", "passphrase"),))
    with qimg_errors(module):
        result = run_measure(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
