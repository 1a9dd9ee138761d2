#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_create
short_description: Create or remove a raw or qcow2 disk image
version_added: 0.1.0
description:
  - Make sure a disk image exists with the requested format, virtual size, format options and
    backing file, like C(qemu-img create), or make sure it does not exist.
  - Idempotence is decided from the image's metadata, not its bytes. An existing image that matches
    is left alone. An existing image that differs is never overwritten unless O(force=true); without
    it the task fails and lists every difference.
  - Images are written to a temporary file in the destination directory and renamed into place, so
    a failure leaves any previous file untouched.
author:
  - qimg developers (@qimg)
extends_documentation_fragment:
  - qimg.disk.image.unsafe_backing
  - qimg.disk.image
  - ansible.builtin.files
  - ansible.builtin.action_common_attributes
  - action_common_attributes.files
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
  safe_file_operations:
    support: full
  vault:
    support: none
options:
  format:
    description:
      - Format of the image.
      - When an existing file has another format, it differs from the request.
    type: str
    choices: [raw, qcow2]
    default: qcow2
  size:
    description:
      - Virtual size of the image (what the guest sees), in bytes, or with one of the binary
        suffixes C(k), C(M), C(G), C(T), C(P), C(E) (for example V(10G) or V(512M)).
      - Sizes are rounded up to a multiple of 512 bytes, as QEMU does.
      - Required when O(state=present), unless O(backing_file) is given; then the image takes the
        backing file's size, and the size of an existing image is not compared.
    type: str
  options:
    description:
      - Format options, as C(qemu-img create -o) takes them.
      - Only the options given are compared with an existing image; options left out are not.
      - O(options.preallocation) cannot be read back from an image, so it is used on creation only
        and never compared.
      - The raw format supports only O(options.preallocation).
    type: dict
    default: {}
    suboptions:
      cluster_size:
        description:
          - qcow2 cluster size, in bytes or with a suffix (for example V(64k)); a power of two from
            512 bytes to 2 MiB. QEMU's default is 64 KiB.
        type: str
      compat:
        description:
          - qcow2 version, V(1.1) (QEMU 1.1 and newer; also V(v3)) or V(0.10) (also V(v2)).
            Quote V("0.10") in YAML, otherwise it is read as the number 0.1 (which is accepted too).
          - QEMU's default is V(1.1).
        type: str
      refcount_bits:
        description:
          - Width of a qcow2 reference count, in bits. Anything but 16 needs O(options.compat=1.1).
        type: int
        choices: [1, 2, 4, 8, 16, 32, 64]
      lazy_refcounts:
        description:
          - Postpone qcow2 reference count updates (needs O(options.compat=1.1)).
        type: bool
      extended_l2:
        description:
          - Use qcow2 extended L2 entries (subcluster allocation; needs O(options.compat=1.1)).
        type: bool
      compression_type:
        description:
          - Compression method for compressed qcow2 clusters. V(zstd) needs O(options.compat=1.1).
        type: str
        choices: [zlib, zstd]
      encrypt:
        description:
          - Encrypt the new qcow2 image (C(qemu-img create -o encrypt.format=...)) with
            O(options.encrypt.passphrase), with QEMU's defaults for what is left out
            (aes-256, xts, plain64, sha256, 2000 ms of PBKDF2).
          - An existing image is compared on what C(qemu-img info) shows (format, algorithms,
            never the key); a difference is reported and needs O(force) to re-create the image.
        type: dict
        suboptions:
          format:
            description: V(luks), or the legacy V(aes) (weak; for old images only).
            type: str
            choices: [luks, aes]
            default: luks
          passphrase:
            description: The passphrase (never shown in results, diffs or logs).
            type: str
            required: true
          cipher_alg:
            description: Cipher algorithm (C(encrypt.cipher-alg)), for example V(aes-128).
            type: str
          cipher_mode:
            description: Cipher mode (C(encrypt.cipher-mode)), V(xts), V(cbc), V(ecb) or V(ctr).
            type: str
          ivgen_alg:
            description: IV generator (C(encrypt.ivgen-alg)), V(plain64), V(plain) or V(essiv).
            type: str
          ivgen_hash_alg:
            description: Hash of the essiv IV generator (C(encrypt.ivgen-hash-alg)).
            type: str
          hash_alg:
            description: PBKDF2 hash (C(encrypt.hash-alg)).
            type: str
          iter_time:
            description: Time for PBKDF2, in milliseconds (C(encrypt.iter-time)).
            type: int
      preallocation:
        description:
          - Preallocation mode used when the image is created.
          - V(metadata) is for qcow2 only.
        type: str
        choices: ['off', metadata, falloc, full]
  backing_file:
    description:
      - Backing file of a qcow2 overlay, stored in the image as given. A relative name is relative
        to the directory of the image, as in QEMU.
      - Compared with the backing file name stored in an existing image, as strings.
      - When left out, the image must have no backing file.
    type: str
  backing_format:
    description:
      - Format of the backing file. Probed from the backing file when left out; compared with an
        existing image only when given.
    type: str
    choices: [raw, qcow2]
  state:
    description:
      - V(present) makes sure the image exists as requested; V(absent) removes the file.
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - Re-create an existing image whose format, size, options or backing file differ from the
        request. The image's content is lost.
      - Without it such a difference fails the task, with a message listing each difference.
      - The new image keeps the mode and owner of the file it replaces, unless O(mode), O(owner) or
        O(group) say otherwise.
    type: bool
    default: false
notes:
  - An existing image is read with shared locks waived (like C(qemu-img info -U)) to compare its
    metadata, so an image in use by a running VM can still be checked for idempotence.
  - An image that another process (such as a running VM) holds open for writing is never
    re-created (even with O(force=true)) or removed; the task fails instead.
seealso:
  - module: qimg.disk.qimg_info
"""

EXAMPLES = r"""
- name: Create a 10 GiB qcow2 image
  qimg.disk.qimg_create:
    path: /var/lib/libvirt/images/vm1.qcow2
    size: 10G
    mode: "0640"

- name: Create a raw image, fully allocated
  qimg.disk.qimg_create:
    path: /srv/disks/data.img
    format: raw
    size: 2G
    options:
      preallocation: full

- name: Create a qcow2 image with small clusters and lazy refcounts
  qimg.disk.qimg_create:
    path: /srv/disks/small.qcow2
    size: 1G
    options:
      cluster_size: 4k
      lazy_refcounts: true

- name: Create an overlay on top of a base image (size taken from the base)
  qimg.disk.qimg_create:
    path: /srv/disks/vm1-overlay.qcow2
    backing_file: base.qcow2
    backing_format: qcow2

- name: Grow by re-creating the image when its size differs (content is lost)
  qimg.disk.qimg_create:
    path: /srv/disks/scratch.qcow2
    size: 20G
    force: true

- name: Remove an image
  qimg.disk.qimg_create:
    path: /srv/disks/scratch.qcow2
    state: absent
"""

RETURN = r"""
path:
  description: Path of the image.
  returned: always
  type: str
  sample: /srv/disks/vm1.qcow2
differences:
  description:
    - What differs between the existing image and the request, one entry per difference, worded
      C(<what> <current> != <requested>).
  returned: when an existing image differs from the request
  type: list
  elements: str
  sample: ["virtual size 1073741824 != 2147483648", "cluster_size 65536 != 4096"]
filename:
  description: File name of the image, as opened.
  returned: when O(state=present) and the image exists after the task (not in check mode when it would be created)
  type: str
  sample: /srv/disks/vm1.qcow2
format:
  description: Format of the image.
  returned: when O(state=present) and the image exists after the task (not in check mode when it would be created)
  type: str
  sample: qcow2
virtual_size:
  description: Virtual size of the image (what the guest sees), in bytes.
  returned: when O(state=present) and the image exists after the task (not in check mode when it would be created)
  type: int
  sample: 10737418240
actual_size:
  description: Bytes the image file occupies on disk.
  returned: when O(state=present) and the image exists after the task (not in check mode when it would be created)
  type: int
  sample: 200704
dirty_flag:
  description: Whether the image is marked dirty (open for writing, or lazy refcounts pending).
  returned: when O(state=present) and the image exists after the task (not in check mode when it would be created)
  type: bool
  sample: false
cluster_size:
  description: Cluster size of the image, in bytes.
  returned: when the image is qcow2 and exists after the task
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
format_specific:
  description: Format-specific information.
  returned: when the image is qcow2 and exists after the task
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

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import image_options_spec, qimg_errors
from ansible_collections.qimg.disk.plugins.module_utils.create import run_create
from ansible_collections.qimg.disk.plugins.module_utils.passphrase import ENCRYPT_SPEC


def create_options_spec():
    spec = image_options_spec(("off", "metadata", "falloc", "full"))
    spec["options"]["encrypt"] = ENCRYPT_SPEC
    return spec


def main():
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            format=dict(type="str", choices=["raw", "qcow2"], default="qcow2"),
            size=dict(type="str"),
            options=create_options_spec(),
            backing_file=dict(type="str"),
            backing_format=dict(type="str", choices=["raw", "qcow2"]),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            force=dict(type="bool", default=False),
            allow_unsafe_backing=dict(type="bool", default=False),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    with qimg_errors(module, path=module.params["path"]):
        result = run_create(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
