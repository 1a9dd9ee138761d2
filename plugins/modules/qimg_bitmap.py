#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_bitmap
short_description: Manage persistent dirty bitmaps of a qcow2 disk image
version_added: 0.1.0
description:
  - Make sure a persistent dirty bitmap of a qcow2 image is present or absent, enabled or
    disabled, and holds the bits of other bitmaps, like C(qemu-img bitmap).
  - Changes are written crash-safe (new bitmap tables and directory first, then one header write).
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
      - Path of the qcow2 image (compat V(1.1): version 2 images cannot hold bitmaps).
    type: path
    required: true
  name:
    description:
      - Name of the bitmap.
    type: str
    required: true
  state:
    description:
      - V(present) creates the bitmap when it is missing; V(absent) removes it.
    type: str
    choices: [present, absent]
    default: present
  enabled:
    description:
      - Whether the bitmap records guest writes (the C(auto) flag). Left as it is when not given;
        a new bitmap is enabled unless this is V(false).
    type: bool
  granularity:
    description:
      - Bytes of guest data one bit covers, a power of two from 512 up (for example V(64k)).
      - Only used to create the bitmap (default - the cluster size within 4k..64k); an existing
        bitmap with another granularity fails the task.
    type: str
  merge_from:
    description:
      - Bitmaps whose bits are merged in (ORed), each only when the bitmap does not hold all of
        its bits already.
    type: list
    elements: dict
    default: []
    suboptions:
      bitmap:
        description:
          - Name of the source bitmap.
        type: str
        required: true
      source_file:
        description:
          - Image holding the source bitmap (opened read-only, without its backing chain);
            default - the image itself.
        type: path
      source_format:
        description:
          - Format of O(merge_from[].source_file); probed when left out.
        type: str
        choices: [qcow2, raw]
  clear:
    description:
      - Clear all bits of the bitmap (before the merges). Imperative - the task changes the image
        whenever the bitmap has bits set.
    type: bool
    default: false
  format:
    description:
      - Format of the image; probed when left out.
    type: str
    choices: [qcow2, raw]
notes:
  - An image that another process (such as a running VM) holds open for writing is not changed;
    the task fails instead.
  - A bitmap that is in use (inconsistent, for example after a crash of the VM that had it open)
    can only be removed.
seealso:
  - module: qimg.disk.qimg_info
  - module: qimg.disk.qimg_convert
"""

EXAMPLES = r"""
- name: Track changes of a VM disk from now on (for incremental backups)
  qimg.disk.qimg_bitmap:
    path: /var/lib/libvirt/images/vm1.qcow2
    name: backup-1

- name: Keep a frozen copy of what changed, and start a new period
  qimg.disk.qimg_bitmap:
    path: /var/lib/libvirt/images/vm1.qcow2
    name: frozen
    enabled: false
    merge_from:
      - bitmap: backup-1

- name: Remove a bitmap
  qimg.disk.qimg_bitmap:
    path: /var/lib/libvirt/images/vm1.qcow2
    name: backup-0
    state: absent
"""

RETURN = r"""
path:
  description: Path of the image.
  returned: always
  type: str
name:
  description: Name of the bitmap.
  returned: always
  type: str
bitmaps:
  description: The persistent bitmaps of the image after the task (in check mode, as predicted).
  returned: success
  type: list
  elements: dict
  contains:
    name:
      description: Name of the bitmap.
      type: str
    granularity:
      description: Bytes of guest data one bit covers.
      type: int
    enabled:
      description: Whether the bitmap records guest writes.
      type: bool
    in_use:
      description: Whether the bitmap is inconsistent (unusable).
      type: bool
bitmap:
  description: The bitmap the task is about (absent when it does not exist), with C(dirty_bytes),
    the guest bytes its set bits cover.
  returned: success, when the bitmap exists and the task is not in check mode
  type: dict
  sample: {"name": "backup-1", "granularity": 65536, "enabled": true, "in_use": false, "dirty_bytes": 1048576}
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.bitmap import argument_spec, run


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    run(module)


if __name__ == "__main__":
    main()
