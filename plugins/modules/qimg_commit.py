#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_commit
short_description: Fold a qcow2 overlay's data into its backing image
version_added: 0.1.0
description:
  - Write the guest data a qcow2 overlay allocates into its backing file, like C(qemu-img commit),
    then empty the overlay (so it reads its backing file everywhere again), unless O(drop=true).
  - The base is grown when it is smaller than the overlay, never shrunk. Snapshots in a qcow2 base
    are kept. The overlay's guest view never changes.
  - With O(base) an image deeper in the backing chain takes what every image above it allocates.
    The overlay and the images between are then left as they are (C(qemu-img commit -b) implies
    C(-d)).
  - Changed when the overlay holds guest data (it is emptied), or when the commit would change the
    base's guest content or size. A second run reports no change.
  - A qcow2 base switches from its old to its new content as a whole, so after a crash it holds
    one or the other (at worst with leaked clusters). A raw base is written in place; after a
    crash each of its ranges holds old or new data.
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
      - Check mode makes the same decision (reading the overlay and the base) and predicts
        RV(committed_bytes), without writing.
  diff_mode:
    support: full
    details:
      - The diff shows the base, its virtual size and the bytes the overlay allocates before and
        after, and the bytes committed.
  platform:
    platforms: posix
options:
  path:
    description:
      - Path of the overlay, the image whose data is committed.
    type: path
    required: true
  base:
    description:
      - The image in the overlay's backing chain to commit into; by default its backing file.
      - A relative path is relative to the directory of the image whose backing file it is, as
        QEMU finds it. The task fails when it is not in the chain.
    type: str
  drop:
    description:
      - V(true) leaves the overlay as it is (C(qemu-img commit -d)); V(false) empties it.
      - Implied when O(base) is deeper than the backing file.
    type: bool
    default: false
notes:
  - An overlay or base that another process (such as a running VM) holds open for writing is not
    committed; the task fails instead.
seealso:
  - module: qimg.disk.qimg_rebase
  - module: qimg.disk.qimg_create
"""

EXAMPLES = r"""
- name: Fold a runner's changes into the golden image and empty its overlay
  qimg.disk.qimg_commit:
    path: /srv/runners/ci1.qcow2

- name: Commit two levels down, leaving the overlays as they are
  qimg.disk.qimg_commit:
    path: /srv/runners/ci1.qcow2
    base: /srv/golden/debian.qcow2
"""

RETURN = r"""
path:
  description: Path of the overlay.
  returned: always
  type: str
base:
  description: The image committed into, as opened.
  returned: success
  type: str
  sample: /srv/golden/debian.qcow2
base_format:
  description: Format of the base.
  returned: success
  type: str
  sample: qcow2
drop:
  description: Whether the overlay is left as it is (O(drop), or a deeper O(base)).
  returned: success
  type: bool
committed_bytes:
  description: Bytes of guest data written into the base (in check mode, that would be); 0 when nothing changes.
  returned: success
  type: int
  sample: 1048576
virtual_size:
  description:
    - Virtual size of the overlay (the other facts of M(qimg.disk.qimg_info) about it too).
    - In check mode the facts describe the overlay as it is.
  returned: success
  type: int
  sample: 10737418240
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import qimg_errors
from ansible_collections.qimg.disk.plugins.module_utils.commit import argument_spec, run


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    with qimg_errors(module, changed=False, path=module.params["path"]):
        result = run(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
