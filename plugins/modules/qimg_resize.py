#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_resize
short_description: Grow or shrink a raw or qcow2 disk image
version_added: 0.1.0
description:
  - Make sure a disk image has the requested virtual size, like C(qemu-img resize), in place.
  - Nothing is written when the image already has that size.
  - The resize is crash-safe; a qcow2 shrink switches the size in the header first, then frees the
    clusters past the new end.
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
  passphrase:
    description:
      - Passphrase of an encrypted image (qcow2 with LUKS or legacy AES encryption, or a luks file),
        and of its encrypted backing files. Never shown in results, diffs, messages or logs.
    type: str
  path:
    description:
      - Path of the image.
    type: path
    required: true
  size:
    description:
      - The virtual size the image must have, in bytes or with one of the binary suffixes C(k),
        C(M), C(G), C(T), C(P), C(E) (for example V(20G)).
      - Relative sizes (V(+1G), V(-1G)) are refused, since they could not be idempotent.
      - qcow2 sizes must be a multiple of 512 bytes.
    type: str
    required: true
  shrink:
    description:
      - Allow making the image smaller. Data past the new end is lost.
      - Without it a smaller O(size) fails the task and changes nothing.
    type: bool
    default: false
  preallocation:
    description:
      - Preallocation of the added range, as C(qemu-img resize --preallocation). V(metadata) is
        for qcow2 only. Only for growing.
    type: str
    choices: ['off', metadata, falloc, full]
  format:
    description:
      - Format of the image; probed when left out.
    type: str
    choices: [raw, qcow2]
notes:
  - An image that another process (such as a running VM) holds open for writing is not resized;
    the task fails instead.
seealso:
  - module: qimg.disk.qimg_create
  - module: qimg.disk.qimg_amend
"""

EXAMPLES = r"""
- name: Grow a VM disk to 20 GiB
  qimg.disk.qimg_resize:
    path: /var/lib/libvirt/images/vm1.qcow2
    size: 20G

- name: Shrink a scratch image (data past 1 GiB is lost)
  qimg.disk.qimg_resize:
    path: /srv/disks/scratch.qcow2
    size: 1G
    shrink: true
"""

RETURN = r"""
path:
  description: Path of the image.
  returned: always
  type: str
format:
  description: Format of the image.
  returned: when the image could be read
  type: str
  sample: qcow2
old_virtual_size:
  description: Virtual size before the task, in bytes.
  returned: when the image could be read
  type: int
  sample: 10737418240
virtual_size:
  description: Virtual size after the task (in check mode, the size it would have), in bytes.
  returned: success
  type: int
  sample: 21474836480
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.resize import argument_spec, run
from ansible_collections.qimg.disk.plugins.module_utils.passphrase import key_paths


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    key_paths(module, (("path", "passphrase"),))
    run(module)


if __name__ == "__main__":
    main()
