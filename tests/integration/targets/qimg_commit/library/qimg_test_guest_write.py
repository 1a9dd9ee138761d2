#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_test_guest_write
short_description: Test helper, write a byte pattern into a qcow2 image's guest content
description:
  - Only for the qimg_commit integration target. Writes O(length) bytes of value O(pattern) at
    guest offset O(offset), through the engine (copy-on-write under snapshots).
options:
  path:
    description: Image file.
    type: path
    required: true
  offset:
    description: Guest offset.
    type: int
    default: 0
  length:
    description: Bytes to write.
    type: int
    default: 65536
  pattern:
    description: Byte value.
    type: int
    default: 1
author:
  - qimg developers (@qimg)
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import open_image


def main():
    module = AnsibleModule(argument_spec=dict(path=dict(type="path", required=True),
                                              offset=dict(type="int", default=0),
                                              length=dict(type="int", default=65536),
                                              pattern=dict(type="int", default=1)))
    p = module.params
    with open_image(p["path"], fmt="qcow2", read_only=False) as dev:
        dev.write(p["offset"], bytes([p["pattern"]]) * p["length"])
    module.exit_json(changed=True)


if __name__ == "__main__":
    main()
