#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: qimg_convert
short_description: Convert a disk image to raw or qcow2
version_added: 0.1.0
description:
  - Copy the guest-visible content of a disk image (or of several, concatenated) into a new raw
    or qcow2 image, like C(qemu-img convert).
  - Idempotence is decided from the destination's metadata and content. An existing destination
    with the requested format, options and backing file, and the same guest-visible content as
    the source (as C(qemu-img compare) sees it), is left alone.
  - An existing destination that differs is never overwritten unless O(force=true); without it
    the task fails and lists every difference, including the first offset where the content
    differs.
  - The image is written to a temporary file in the destination directory and renamed into
    place, so a failure leaves any previous file untouched.
author:
  - qimg developers (@qimg)
extends_documentation_fragment:
  - qimg.disk.image.unsafe_backing
  - ansible.builtin.files
  - ansible.builtin.action_common_attributes
  - action_common_attributes.files
attributes:
  check_mode:
    support: full
    details:
      - Check mode reads the source and any existing destination to decide exactly whether the
        task would change anything, and returns RV(measure).
  diff_mode:
    support: full
    details:
      - The diff shows the destination's metadata, not its content.
  platform:
    platforms: posix
  safe_file_operations:
    support: full
  vault:
    support: none
requirements:
  - Python 3.9 or newer on the managed host.
options:
  src_passphrase:
    description:
      - Passphrase of encrypted source images (qcow2 with LUKS or legacy AES encryption, or luks files).
        Never shown in results, diffs, messages or logs.
    type: str
  src:
    description:
      - Path of the source image on the managed host.
      - A list of paths converts the concatenation of the images, in order, into one image (its
        virtual size is the sum of theirs), like C(qemu-img convert a b c dest).
    type: raw
    required: true
  src_format:
    description:
      - Format of the source image(s). Probed when left out (qcow2 by its magic, anything else is
        raw). A file given as V(raw) is never probed as another format.
    type: str
    choices: [raw, qcow2]
  dest:
    description:
      - Path of the image to write.
      - Must not be one of the source files.
    type: path
    required: true
  format:
    description:
      - Format of the destination image.
    type: str
    choices: [raw, qcow2]
    default: qcow2
  options:
    description:
      - Format options of the destination image, as C(qemu-img convert -o) takes them.
      - Only the options given are compared with an existing destination; options left out are
        not.
      - O(options.preallocation) cannot be read back from an image, so it is used when the image
        is written and never compared.
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
          - Same as O(compression_type); give one or the other.
        type: str
        choices: [zlib, zstd]
      encrypt:
        description:
          - Encrypt the new qcow2 image, with the suboptions of M(qimg.disk.qimg_create)'s
            O(qimg.disk.qimg_create#module:options.encrypt) (the passphrase is never shown in results,
            diffs or logs). An existing destination is compared on what C(qemu-img info) shows and
            on its content, read with that passphrase.
        type: dict
        suboptions:
          format:
            description: V(luks), or the legacy V(aes).
            type: str
            choices: [luks, aes]
            default: luks
          passphrase:
            description: The passphrase of the new image.
            type: str
            required: true
          cipher_alg:
            description: Cipher algorithm.
            type: str
          cipher_mode:
            description: Cipher mode.
            type: str
          ivgen_alg:
            description: IV generator.
            type: str
          ivgen_hash_alg:
            description: Hash of the essiv IV generator.
            type: str
          hash_alg:
            description: PBKDF2 hash.
            type: str
          iter_time:
            description: Time for PBKDF2, in milliseconds.
            type: int
      preallocation:
        description:
          - Preallocation of a raw destination. qcow2 destinations support only V(off).
        type: str
        choices: ['off', falloc, full]
  compress:
    description:
      - Write the data clusters compressed (qcow2 only), like C(qemu-img convert -c).
      - The compression of an existing destination cannot be read back cheaply, so it is not
        compared; a destination with the same content is left alone.
    type: bool
    default: false
  compression_type:
    description:
      - Compression method of the destination, like O(options.compression_type). V(zstd) needs
        the C(zstandard) or C(pyzstd) Python package on the managed host when data is compressed.
    type: str
    choices: [zlib, zstd]
  sparse_size:
    description:
      - Runs of zeros at least this long (and aligned to it) in the source are not written to
        the destination but left as holes or unallocated clusters, like C(qemu-img convert -S).
      - In bytes or with a suffix (for example V(4k)); a multiple of 512. V(0) writes every
        byte (a fully allocated destination).
      - Not compared with an existing destination.
    type: str
    default: 4k
  snapshot:
    description:
      - Convert this internal snapshot of the source instead of its current state, like
        C(qemu-img convert -l). A snapshot ID or name (an ID is looked up first), or
        C(snapshot.id=ID) / C(snapshot.name=NAME).
      - Only qcow2 sources have snapshots.
    type: str
  backing_file:
    description:
      - Backing file of the qcow2 destination, stored in the image as given. A relative name is
        relative to the directory of O(dest), as in QEMU. Only clusters whose content differs from
        the backing file are written, like C(qemu-img convert -B).
      - Compared with the backing file name stored in an existing destination, as strings. When
        left out, the destination must have no backing file.
    type: str
  backing_format:
    description:
      - Format of O(backing_file). Probed from the backing file when left out; compared with an
        existing destination only when given.
    type: str
    choices: [raw, qcow2]
  force:
    description:
      - Replace an existing destination whose format, options, backing file or content differ.
        Its old content is lost.
      - Without it such a difference fails the task, with a message listing each difference.
      - The new image keeps the mode and owner of the file it replaces, unless O(mode), O(owner)
        or O(group) say otherwise.
    type: bool
    default: false
  force_share:
    description:
      - Read the source even when another process (such as a running VM) holds a write lock on
        it, like C(qemu-img convert -U). The copy may be inconsistent if the source is being
        written.
    type: bool
    default: false
notes:
  - The disk image formats are implemented in pure Python inside this collection;
    the managed host needs neither C(qemu-img) nor C(qemu-utils).
  - Facts use the names of C(qemu-img info --output=json) with C(-) replaced by C(_),
    for example C(virtual-size) becomes C(virtual_size).
  - An existing destination is read with shared locks waived (like C(qemu-img compare -U)) to
    compare it, but an image that another process holds open for writing is never replaced
    (even with O(force=true)); the task fails instead.
  - To compare an existing destination with a snapshot of the source, or with several
    concatenated sources, the source content is first copied to a temporary raw file in the
    destination directory (holes stay holes), which is removed afterwards, in check mode too.
  - A long conversion can run with C(async); the module prints nothing while it works.
seealso:
  - module: qimg.disk.qimg_compare
  - module: qimg.disk.qimg_measure
  - module: qimg.disk.qimg_create
  - module: qimg.disk.qimg_info
"""

EXAMPLES = r"""
- name: Convert a raw disk to qcow2
  qimg.disk.qimg_convert:
    src: /srv/disks/vm1.img
    dest: /var/lib/libvirt/images/vm1.qcow2
    mode: "0640"

- name: Make a compressed qcow2 copy for distribution
  qimg.disk.qimg_convert:
    src: /var/lib/libvirt/images/base.qcow2
    dest: /srv/export/base-compressed.qcow2
    compress: true
    options:
      cluster_size: 64k

- name: Flatten an overlay and its backing chain into a raw image
  qimg.disk.qimg_convert:
    src: /var/lib/libvirt/images/vm1-overlay.qcow2
    dest: /srv/export/vm1.img
    format: raw

- name: Export the state of an internal snapshot
  qimg.disk.qimg_convert:
    src: /var/lib/libvirt/images/vm1.qcow2
    snapshot: before-upgrade
    dest: /srv/export/vm1-before-upgrade.qcow2

- name: Copy a running VM's disk, replacing an older copy
  qimg.disk.qimg_convert:
    src: /var/lib/libvirt/images/vm1.qcow2
    dest: /backup/vm1.qcow2
    force_share: true
    force: true
  async: 3600
  poll: 15

- name: See what a conversion would need (check mode)
  qimg.disk.qimg_convert:
    src: /srv/disks/vm1.img
    dest: /srv/disks/vm1.qcow2
  check_mode: true
  register: planned

- name: Show the space needed
  ansible.builtin.debug:
    msg: "needs {{ planned.measure.required }} bytes"
"""

RETURN = r"""
dest:
  description: Path of the destination image.
  returned: always
  type: str
  sample: /srv/disks/vm1.qcow2
differences:
  description:
    - What differs between an existing destination and the request, one entry per difference,
      worded C(<what> <current> != <requested>), and C(content differs from the source at
      offset <n>) for the first differing 512-byte sector.
  returned: when an existing destination differs from the request
  type: list
  elements: str
  sample: ["format raw != qcow2", "content differs from the source at offset 1048576"]
measure:
  description:
    - The space the destination needs, computed like C(qemu-img measure) before it is written.
      For several sources the qcow2 figure is an estimate.
  returned: when the destination is (or in check mode would be) written
  type: dict
  contains:
    required:
      description: Bytes the destination file needs for the source's content.
      type: int
      sample: 393216
    fully_allocated:
      description: Bytes the destination file would need with every cluster allocated.
      type: int
      sample: 1074135040
    bitmaps:
      description: Bytes of persistent dirty bitmaps (qcow2 source and destination only).
      type: int
      sample: 0
filename:
  description: File name of the destination image, as opened.
  returned: when the destination exists after the task (not in check mode when it would be written)
  type: str
  sample: /srv/disks/vm1.qcow2
format:
  description: Format of the destination image.
  returned: when the destination exists after the task (not in check mode when it would be written)
  type: str
  sample: qcow2
virtual_size:
  description: Virtual size of the destination image (what the guest sees), in bytes.
  returned: when the destination exists after the task (not in check mode when it would be written)
  type: int
  sample: 10737418240
actual_size:
  description: Bytes the destination image file occupies on disk.
  returned: when the destination exists after the task (not in check mode when it would be written)
  type: int
  sample: 200704
dirty_flag:
  description: Whether the destination image is marked dirty.
  returned: when the destination exists after the task (not in check mode when it would be written)
  type: bool
  sample: false
cluster_size:
  description: Cluster size of the destination image, in bytes.
  returned: when the destination is qcow2 and exists after the task
  type: int
  sample: 65536
backing_filename:
  description: Backing file name as stored in the destination image.
  returned: when the destination has a backing file
  type: str
  sample: base.qcow2
full_backing_filename:
  description: Backing file name, resolved relative to the destination image's directory.
  returned: when the destination has a backing file
  type: str
  sample: /srv/disks/base.qcow2
backing_filename_format:
  description: Backing file format as stored in the destination image.
  returned: when the destination records a backing file format
  type: str
  sample: qcow2
format_specific:
  description: Format-specific information.
  returned: when the destination is qcow2 and exists after the task
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
from ansible_collections.qimg.disk.plugins.module_utils.convert import run_convert
from ansible_collections.qimg.disk.plugins.module_utils.passphrase import ENCRYPT_SPEC, PASSPHRASE, key_paths


def convert_options_spec():
    spec = image_options_spec(("off", "falloc", "full"))
    spec["options"]["encrypt"] = ENCRYPT_SPEC
    return spec


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src_passphrase=PASSPHRASE,
            src=dict(type="raw", required=True),
            src_format=dict(type="str", choices=["raw", "qcow2"]),
            dest=dict(type="path", required=True),
            format=dict(type="str", choices=["raw", "qcow2"], default="qcow2"),
            options=convert_options_spec(),
            compress=dict(type="bool", default=False),
            compression_type=dict(type="str", choices=["zlib", "zstd"]),
            sparse_size=dict(type="str", default="4k"),
            snapshot=dict(type="str"),
            backing_file=dict(type="str"),
            backing_format=dict(type="str", choices=["raw", "qcow2"]),
            force=dict(type="bool", default=False),
            force_share=dict(type="bool", default=False),
            allow_unsafe_backing=dict(type="bool", default=False),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    key_paths(module, (("src", "src_passphrase"),))
    with qimg_errors(module, dest=module.params["dest"]):
        result = run_convert(module)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
