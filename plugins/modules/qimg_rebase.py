#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_rebase
short_description: Give a qcow2 overlay another backing file, or none
version_added: 0.1.0
description:
  - Make sure a qcow2 image names the requested backing file and format, like C(qemu-img rebase).
  - In safe mode (the default) the guest view of the image stays the same. Every range the image
    does not allocate itself, and where the old and the new backing chain read differently, is
    copied into the image first. Only then does the header name the new backing file.
  - With O(safe=false) only the header is rewritten, like C(qemu-img rebase -u). Use it when the
    backing file was moved or renamed, or when the new one is known to hold the same data. The
    old backing file is not opened and may be missing.
  - Without O(backing_file) (or with an empty string) the backing file is removed. In safe mode
    everything the old chain provides is copied in, so the image becomes standalone.
  - Nothing is written when the header already names that backing file and format. Names are
    compared as they are written in the header (V(base.qcow2) and V(/srv/base.qcow2) differ).
  - The rebase is crash-safe. The copied clusters and their tables are written first and the
    header last, so after a crash the image reads the same as before through whichever backing
    file its header names.
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
      - Check mode makes the same decision and, in safe mode, counts RV(copied_bytes) exactly by
        comparing the old and the new chain, without writing.
  diff_mode:
    support: full
    details:
      - The diff shows the backing file and backing format before and after.
  platform:
    platforms: posix
options:
  backing_file:
    description:
      - The backing file the image is to name, as it is written in the header. A relative name
        is relative to the directory of the image, as QEMU reads it.
      - Leave it out, or set it to an empty string, to remove the backing file.
    type: str
  backing_format:
    description:
      - Format of the new backing file (for example V(qcow2) or V(raw)).
      - When left out, the format the header already names is kept for the same backing file;
        for another backing file its format is probed, and the task fails when it cannot be read.
    type: str
  safe:
    description:
      - V(true) keeps the guest view by copying what the chains read differently.
      - V(false) rewrites the header only, like C(qemu-img rebase -u).
    type: bool
    default: true
notes:
  - An image that another process (such as a running VM) holds open for writing is not rebased;
    the task fails instead.
  - Only qcow2 images name a backing file.
seealso:
  - module: qimg.disk.qimg_commit
  - module: qimg.disk.qimg_create
"""

EXAMPLES = r"""
- name: Move a runner's overlay onto the new golden image (the runner's disk reads the same)
  qimg.disk.qimg_rebase:
    path: /srv/runners/ci1.qcow2
    backing_file: /srv/golden/debian-2026-12.qcow2
    backing_format: qcow2

- name: The golden image was renamed; only fix the name in the header
  qimg.disk.qimg_rebase:
    path: /srv/runners/ci1.qcow2
    backing_file: /srv/golden/debian.qcow2
    backing_format: qcow2
    safe: false

- name: Make the overlay a standalone image
  qimg.disk.qimg_rebase:
    path: /srv/runners/ci1.qcow2
    backing_file: ""
"""

RETURN = r"""
path:
  description: Path of the image.
  returned: always
  type: str
backing_file:
  description: The backing file the header names after the task (in check mode, would name); null for none.
  returned: success
  type: str
  sample: /srv/golden/debian-2026-12.qcow2
backing_format:
  description: The backing format the header names after the task; null for none.
  returned: success
  type: str
  sample: qcow2
copied_bytes:
  description:
    - Bytes safe mode wrote into the image (in check mode, would write); 0 in unsafe mode and
      when nothing changes.
  returned: success
  type: int
  sample: 1048576
format:
  description: Format of the image.
  returned: success
  type: str
  sample: qcow2
virtual_size:
  description:
    - Virtual size of the image (the other facts of M(qimg.disk.qimg_info) too, such as
      RV(ignore:backing_filename) and RV(ignore:actual_size)).
    - In check mode the facts describe the image as it is.
  returned: success
  type: int
  sample: 10737418240
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import qimg_errors
from ansible_collections.qimg.disk.plugins.module_utils.rebase import argument_spec, run


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    with qimg_errors(module, changed=False, path=module.params["path"]):
        result = run(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
