#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_check
short_description: Check a qcow2 disk image for consistency and optionally repair it
version_added: 0.1.0
description:
  - Check the metadata of a qcow2 image like C(qemu-img check), and return its figures (errors,
    corruptions, leaked clusters, allocation and fragmentation) with C(-) in their names replaced
    by C(_).
  - With O(repair=leaks) or O(repair=all), repair the image in place like C(qemu-img check -r leaks)
    or C(qemu-img check -r all). The repair is crash-safe, an interrupted repair leaves leaked
    clusters at worst, never a corruption.
  - Without O(repair) (or with O(repair=none)) the image is only read and never changed.
  - A task fails when the image is corrupt after the check or repair, unless
    O(fail_on_corruption=false); the figures are in the result either way.
  - Raw images have no metadata to check; the task fails for them with
    C(This image format does not support checks), as C(qemu-img check) does (exit code 63).
author:
  - qimg developers (@qimg)
extends_documentation_fragment:
  - qimg.disk.image.unsafe_backing
  - qimg.disk.image
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details:
      - In check mode the image is checked read-only and nothing is written. RV(ignore:changed)
        tells whether a repair would fix something; the figures describe the image as it is.
  diff_mode:
    support: none
  platform:
    platforms: posix
options:
  passphrase:
    description:
      - Passphrase of an encrypted image (qcow2 with LUKS or legacy AES encryption, or a luks file),
        and of its encrypted backing files. Never shown in results, diffs, messages or logs.
    type: str
  format:
    description:
      - Format of the image. Probed when left out (qcow2 by its magic, anything else is raw).
    type: str
    choices: [raw, qcow2]
  repair:
    description:
      - What to repair.
      - V(none) only checks the image.
      - V(leaks) lowers the reference counts of leaked clusters (clusters counted as used that
        nothing references), which only wastes space. It also fixes wrong C(COPIED) flags when
        the reference counts are otherwise right. It never fixes corruptions.
      - V(all) also fixes corruptions. The reference counts are rebuilt from the tables that
        reference clusters, written past the end of the image, and switched to with a single header
        write. It also clears the header's dirty bit (pending lazy reference counts) and corrupt bit
        once the image is consistent. Data a corrupt table pointed to may be lost.
      - A repair needs write access to the image, so an image that another process (such as a
        running VM) holds open for writing is refused.
    type: str
    choices: [none, leaks, all]
    default: none
  force_share:
    description:
      - Check the image even when another process (such as a running VM) holds a write lock on it,
        like C(qemu-img check -U). The figures may be wrong if the image is being changed.
      - Only for checks without a repair (or a repair in check mode); a repair always needs write
        access.
    type: bool
    default: false
  fail_on_corruption:
    description:
      - Fail the task when the image is corrupt (RV(status=corrupt)) after the check or repair.
      - With V(false) the task succeeds and the caller decides from RV(status) and the figures.
      - In check mode with O(repair=all), a corrupt image does not fail the task, since the
        real run would repair it.
    type: bool
    default: true
notes:
  - C(qemu-img check) exit codes map to RV(status) like this. C(0) is V(clean), C(3) (leaks only)
    is V(leaks), C(1) (check errors) and C(2) (corruptions) are V(corrupt), and C(63) (format without
    checks) fails the task.
  - Run a repair on an image no VM is using. The image is locked for writing like QEMU does, so a
    running VM's disk is refused.
seealso:
  - module: qimg.disk.qimg_info
  - module: qimg.disk.qimg_create
"""

EXAMPLES = r"""
- name: Check an image
  qimg.disk.qimg_check:
    path: /var/lib/libvirt/images/vm1.qcow2
  register: vm1_check

- name: Report its state
  ansible.builtin.debug:
    msg: "{{ vm1_check.status }}: {{ vm1_check.leaks }} leaked clusters, {{ vm1_check.corruptions }} corruptions"

- name: Check the disk of a running VM without taking its lock
  qimg.disk.qimg_check:
    path: /var/lib/libvirt/images/vm2.qcow2
    force_share: true

# After a host crash: look first, then repair only the images that need it.
- name: Check the disks after a crash
  qimg.disk.qimg_check:
    path: "{{ item }}"
    fail_on_corruption: false
  loop: "{{ vm_disks }}"
  register: crash_check

- name: Repair the disks that are not clean
  qimg.disk.qimg_check:
    path: "{{ item.item }}"
    repair: all
  loop: "{{ crash_check.results }}"
  loop_control:
    label: "{{ item.item }}"
  when: item.status != 'clean' or item.dirty_flag or item.corrupt_flag

- name: Reclaim leaked clusters only (never touches a corrupt image's reference counts)
  qimg.disk.qimg_check:
    path: /srv/disks/build.qcow2
    repair: leaks
  register: leak_repair

- name: Show what the repair did
  ansible.builtin.debug:
    msg: "{{ leak_repair.leaks_fixed }} leaked clusters freed, image is {{ leak_repair.status }}"
"""

RETURN = r"""
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
status:
  description:
    - V(clean) when the image has no errors, corruptions or leaks.
    - V(leaks) when it has leaked clusters only (wasted space, no risk to data).
    - V(corrupt) when it has corruptions or check errors.
    - After a repair (not in check mode), the status of the repaired image.
  returned: always
  type: str
  sample: clean
check_errors:
  description: Errors that stopped parts of the check (qemu-img's C(check-errors)).
  returned: always
  type: int
  sample: 0
corruptions:
  description: Corruptions found (clusters referenced more often than their reference count says, bad tables).
  returned: always
  type: int
  sample: 0
leaks:
  description: Leaked clusters (reference count higher than the references found).
  returned: always
  type: int
  sample: 0
corruptions_fixed:
  description: Corruptions the repair fixed.
  returned: always
  type: int
  sample: 0
leaks_fixed:
  description: Leaked clusters the repair fixed.
  returned: always
  type: int
  sample: 0
total_clusters:
  description: Clusters of the virtual disk.
  returned: always
  type: int
  sample: 16384
allocated_clusters:
  description: Virtual-disk clusters allocated in the image.
  returned: always
  type: int
  sample: 512
fragmented_clusters:
  description: Allocated clusters not stored right after the previous one.
  returned: always
  type: int
  sample: 3
compressed_clusters:
  description: Compressed clusters.
  returned: always
  type: int
  sample: 0
image_end_offset:
  description: Offset of the end of the last cluster in use in the image file, in bytes.
  returned: always
  type: int
  sample: 33816576
messages:
  description:
    - What C(qemu-img check) prints about each problem, one line each, for example
      C(Leaked cluster 10 refcount=1 reference=0) or C(ERROR cluster 3 refcount=0 reference=1).
    - After a repair, the lines of the first check and then those of the check of the repaired image.
  returned: always
  type: list
  elements: str
  sample: ["Leaked cluster 10 refcount=1 reference=0"]
dirty_flag:
  description: Whether the image header is marked dirty (lazy reference counts pending), after the operation.
  returned: always
  type: bool
  sample: false
corrupt_flag:
  description: Whether the image header is marked corrupt, after the operation.
  returned: always
  type: bool
  sample: false
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import qimg_errors
from ansible_collections.qimg.disk.plugins.module_utils.check import run_check
from ansible_collections.qimg.disk.plugins.module_utils.passphrase import PASSPHRASE, key_paths


def main():
    module = AnsibleModule(
        argument_spec=dict(
            passphrase=PASSPHRASE,
            path=dict(type="path", required=True),
            format=dict(type="str", choices=["raw", "qcow2"]),
            repair=dict(type="str", choices=["none", "leaks", "all"], default="none"),
            force_share=dict(type="bool", default=False),
            fail_on_corruption=dict(type="bool", default=True),
            allow_unsafe_backing=dict(type="bool", default=False),
        ),
        supports_check_mode=True,
    )
    key_paths(module, (("path", "passphrase"),))
    with qimg_errors(module, changed=False):
        result = run_check(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
