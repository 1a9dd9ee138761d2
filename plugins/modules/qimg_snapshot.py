#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_snapshot
short_description: Create, delete and revert to internal snapshots of a qcow2 image
version_added: 0.1.0
description:
  - Manage the internal snapshots of a qcow2 image like C(qemu-img snapshot -c), C(-d) and C(-a).
  - With O(state=present) a snapshot called O(name) is created unless one of that name exists.
  - With O(state=absent) every snapshot called O(name) is deleted; nothing happens when there is none.
  - With O(state=applied) the active image is reverted to the snapshot called O(name), with its
    virtual size. Nothing changes when the active image already equals the snapshot (decided from
    the tables, and from the guest content when the tables differ). The task fails when there is no
    such snapshot.
  - Every change is crash-safe. New tables are written to free clusters and the image switches to
    them with a single header write, so a crash leaves the image as it was or as it should be,
    with leaked clusters at worst.
  - An image that another process (such as a running VM) holds open for writing is refused and
    left untouched.
author:
  - qimg developers (@qimg)
extends_documentation_fragment:
  - qimg.disk.image
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - Check mode makes the same decision as a real run and reports it in RV(ignore:changed) and
        the diff, without writing anything.
  diff_mode:
    support: full
    details:
      - The diff shows the snapshot list (C(ID NAME) lines) before and after and, for
        O(state=applied), that the active image reverts to the snapshot.
  platform:
    platforms: posix
options:
  passphrase:
    description:
      - Passphrase of an encrypted image (qcow2 with LUKS or legacy AES encryption, or a luks file),
        and of its encrypted backing files. Never shown in results, diffs, messages or logs.
    type: str
  name:
    description:
      - Name (tag) of the snapshot.
    type: str
    required: true
  state:
    description:
      - V(present) creates the snapshot when no snapshot of that name exists.
      - V(absent) deletes every snapshot of that name.
      - V(applied) reverts the active image to the (first) snapshot of that name.
    type: str
    choices: [present, absent, applied]
    default: present
notes:
  - Like C(qemu-img snapshot), only the disk state is saved or restored; a VM state stored in a
    snapshot by QEMU is kept but never loaded.
  - Reverting to a snapshot is refused for an image with persistent dirty bitmaps, as QEMU refuses it.
seealso:
  - module: qimg.disk.qimg_info
  - module: qimg.disk.qimg_convert
"""

EXAMPLES = r"""
- name: Freeze the runner's disk before the job
  qimg.disk.qimg_snapshot:
    path: /srv/runners/ci1.qcow2
    name: clean

- name: Go back to the frozen state after the job
  qimg.disk.qimg_snapshot:
    path: /srv/runners/ci1.qcow2
    name: clean
    state: applied

- name: Drop the snapshot
  qimg.disk.qimg_snapshot:
    path: /srv/runners/ci1.qcow2
    name: clean
    state: absent
"""

RETURN = r"""
snapshots:
  description: The image's snapshots after the task, as M(qimg.disk.qimg_info) lists them.
  returned: success
  type: list
  elements: dict
  sample:
    - id: "1"
      name: clean
      vm_state_size: 0
      date_sec: 1764590000
      date_nsec: 0
      vm_clock_sec: 0
      vm_clock_nsec: 0
      icount: 0
virtual_size:
  description: Virtual size of the image after the task (the other facts of M(qimg.disk.qimg_info) too).
  returned: success
  type: int
  sample: 10737418240
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.snapshot import STATES, run
from ansible_collections.qimg.disk.plugins.module_utils.passphrase import PASSPHRASE, key_paths


def main():
    module = AnsibleModule(
        argument_spec=dict(
            passphrase=PASSPHRASE,
            path=dict(type="path", required=True),
            name=dict(type="str", required=True),
            state=dict(type="str", choices=list(STATES), default="present"),
        ),
        supports_check_mode=True,
    )
    key_paths(module, (("path", "passphrase"),))
    run(module)


if __name__ == "__main__":
    main()
