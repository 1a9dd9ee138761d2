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

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.common.text.converters import to_native
from ansible.module_utils.common.validation import check_type_path

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import (
    image_options_spec,
    engine_options,
    image_facts,
    image_metadata,
    keep_owner,
    option_differences,
    ordered,
    predicted_qcow2_options,
    qimg_errors,
    resolve_snapshot,
    refuse_in_use,
    show_value,
    snake_case_keys,
    target_options,
)
from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import QimgError
from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import full_backing_path
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.compare import IDENTICAL, compare_images
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.convert import convert
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.measure import measure
from ansible_collections.qimg.disk.plugins.module_utils.qimg.sizes import parse_size

SECTOR = 512


class ConvertRequest(object):
    """What the task asks for, validated and normalised."""

    def __init__(self, module):
        params = module.params
        self.module = module
        self.dest = params["dest"]
        self.format = params["format"]
        self.src_format = params["src_format"]
        self.compress = params["compress"]
        self.force_share = params["force_share"]
        self.backing_file = params["backing_file"]
        self.backing_format = params["backing_format"]
        fail = dict(dest=self.dest)
        self.sources = self._sources(module, params["src"], fail)

        self.options = target_options(module, self.format, params["options"], **fail)
        ctype = params["compression_type"]
        if ctype is not None:
            if self.options.get("compression_type", ctype) != ctype:
                module.fail_json(msg="compression_type %s and options.compression_type %s differ"
                                 % (ctype, self.options["compression_type"]), **fail)
            if self.format == "raw":
                module.fail_json(msg="compression_type is not supported by format raw", **fail)
            self.options["compression_type"] = ctype
        prealloc = self.options.get("preallocation", "off")
        if self.format == "qcow2" and prealloc != "off":
            module.fail_json(msg="preallocation=%s is not supported when converting to qcow2" % prealloc,
                             **fail)
        if self.format == "raw":
            if self.compress:
                module.fail_json(msg="compress is not supported by format raw", **fail)
            if self.backing_file is not None:
                module.fail_json(msg="format raw does not support a backing file", **fail)
        if self.backing_format is not None and self.backing_file is None:
            module.fail_json(msg="backing_format needs backing_file", **fail)

        try:
            self.sparse_size = parse_size(params["sparse_size"])
        except QimgError as err:
            module.fail_json(msg="sparse_size %s: %s" % (params["sparse_size"], to_native(err)), **fail)
        if self.sparse_size % SECTOR:
            module.fail_json(msg="sparse_size must be a multiple of 512, got: %s" % params["sparse_size"],
                             **fail)

        self.snapshot = params["snapshot"]
        if self.snapshot is not None:
            self.snapshot = resolve_snapshot(self.sources[0], self.src_format, self.snapshot)

    @staticmethod
    def _sources(module, src, fail):
        if isinstance(src, (list, tuple)):
            names = list(src)
        else:
            names = [src]
        if not names:
            module.fail_json(msg="src must name at least one image", **fail)
        out = []
        for name in names:
            if not isinstance(name, str) or not name:
                module.fail_json(msg="src must be a path or a list of paths, got: %r" % (name,), **fail)
            out.append(check_type_path(name))  # what type=path does to each name
        return out

    # ------------------------------------------------------------ engine calls

    def check_sources_unlocked(self):
        """Fail like the conversion would when a source is locked and force_share is false."""
        if self.force_share:
            return
        for name in self.sources:
            image_info(name, fmt=self.src_format, force_share=False)

    def source_sizes(self):
        """Virtual size of each source (of the snapshot when one is given)."""
        return [measure(filename=name, fmt=self.src_format, out_fmt="raw", snapshot=self.snapshot,
                        force_share=True)["required"] for name in self.sources]

    def target_size(self, sizes):
        total = sum(sizes)
        if self.format == "qcow2":
            total = (total + SECTOR - 1) // SECTOR * SECTOR
        return total

    def measure(self, sizes):
        """qemu-img measure figures for the destination (snake_case keys)."""
        opts = engine_options(dict((k, v) for k, v in self.options.items() if k != "preallocation"))
        if len(self.sources) == 1:
            figures = measure(filename=self.sources[0], fmt=self.src_format, out_fmt=self.format,
                              options=opts, snapshot=self.snapshot, force_share=self.force_share)
            return snake_case_keys(figures)
        total = sum(sizes)
        if self.format == "raw":
            return {"required": total, "fully_allocated": total}
        # Concatenation: metadata of one image of the total size plus each source's data clusters.
        cluster = self.options.get("cluster_size", 65536)
        empty = measure(size=total, out_fmt="qcow2", options=opts)
        required = empty["required"]
        for name, size in zip(self.sources, sizes):
            one = measure(filename=name, fmt=self.src_format, out_fmt="qcow2", options=opts,
                          snapshot=self.snapshot, force_share=self.force_share)
            aligned = (size + cluster - 1) // cluster * cluster
            required += one["required"] - one["fully-allocated"] + aligned
        return {"required": required, "fully_allocated": empty["fully-allocated"]}

    def convert(self):
        convert(self.sources, self.dest, src_fmt=self.src_format, out_fmt=self.format,
                options=engine_options(self.options), compress=self.compress,
                sparse_size=self.sparse_size, snapshot=self.snapshot,
                backing_file=self.backing_file, backing_fmt=self.backing_format,
                force_share=self.force_share)

    def content_difference(self, dest_format):
        """Offset of the first differing sector between source(s) and dest, or None."""
        if len(self.sources) == 1 and not self.snapshot:
            result = compare_images(self.sources[0], self.dest, fmt1=self.src_format, fmt2=dest_format,
                                    force_share=True)
        else:
            # The engine compares two images: copy the source view (snapshot, concatenation) to a
            # temporary raw file next to dest (a hole stays a hole) and compare with that.
            tmpdir = tempfile.mkdtemp(prefix=".%s." % os.path.basename(self.dest), suffix=".qimg-cmp",
                                      dir=os.path.dirname(os.path.abspath(self.dest)))
            try:
                flat = os.path.join(tmpdir, "source.raw")
                convert(self.sources, flat, src_fmt=self.src_format, out_fmt="raw",
                        snapshot=self.snapshot, force_share=True)
                result = compare_images(flat, self.dest, fmt1="raw", fmt2=dest_format, force_share=True)
            finally:
                shutil.rmtree(tmpdir, ignore_errors=True)
        if result["result"] == IDENTICAL:
            return None
        return result["offset"]

    # ------------------------------------------------------------ decisions

    def backing_format_written(self):
        """The backing format the engine records (probed from the backing file when not given)."""
        if self.backing_file is None or self.backing_format is not None:
            return self.backing_format
        try:
            info = image_info(full_backing_path(self.dest, self.backing_file), force_share=True)
        except QimgError:
            return None
        return info.get("format")

    def differences(self, current, target_size):
        diffs = []
        if current.get("format") != self.format:
            diffs.append("format %s != %s" % (current.get("format"), self.format))
        if current.get("virtual_size") != target_size:
            diffs.append("virtual size %s != %s" % (current.get("virtual_size"), target_size))
        if current.get("format") == self.format == "qcow2":
            diffs.extend(option_differences(current, self.options))
        if current.get("backing_file") != self.backing_file:
            diffs.append("backing file %s != %s" % (show_value(current.get("backing_file")),
                                                    show_value(self.backing_file)))
        elif self.backing_format is not None and current.get("backing_format") != self.backing_format:
            diffs.append("backing format %s != %s" % (show_value(current.get("backing_format")),
                                                      show_value(self.backing_format)))
        return diffs

    def predicted_metadata(self, target_size):
        meta = {"state": "present", "format": self.format, "virtual_size": target_size}
        if self.format == "qcow2":
            meta.update(predicted_qcow2_options(self.options))
        meta["backing_file"] = self.backing_file
        meta["backing_format"] = self.backing_format_written()
        return ordered(meta)


def read_dest(request):
    """(info, metadata) of the existing destination, read as the requested format when it is one.

    A raw destination holding the bytes of a qcow2 image (a qcow2 file converted as raw) probes as
    qcow2; it is read as raw when its raw content is what the task asks for.
    """
    info = image_info(request.dest, force_share=True)
    if info.get("format") != request.format and request.format == "raw":
        raw_info = image_info(request.dest, fmt="raw", force_share=True)
        try:
            same = request.content_difference("raw") is None
        except QimgError:
            same = False
        if same:
            info = raw_info
    return info, image_metadata(info)


def _same_file(a, b):
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def run_convert(module, result):
    request = ConvertRequest(module)
    dest = request.dest
    fail = dict(dest=dest)
    for name in request.sources:
        if _same_file(name, dest):
            module.fail_json(msg="source %s and dest %s are the same file" % (name, dest), **fail)
    exists = os.path.lexists(dest)
    if exists and os.path.isdir(dest):
        module.fail_json(msg="%s is a directory, not an image file" % dest, **fail)

    with qimg_errors(module, **fail):
        request.check_sources_unlocked()
        sizes = request.source_sizes()
    target_size = request.target_size(sizes)

    info = None
    if exists:
        try:
            info, before = read_dest(request)
        except QimgError as err:
            if not module.params["force"]:
                module.fail_json(msg="cannot read %s to compare it: %s" % (dest, to_native(err)),
                                 **fail)
            # An unreadable file is replaced with force; report why.
            result["differences"] = ["unreadable image: %s" % to_native(err)]
            before = {"state": "present"}
        else:
            result["differences"] = request.differences(before, target_size)
            try:
                offset = request.content_difference(before["format"])
            except QimgError as err:
                if not module.params["force"]:
                    module.fail_json(msg="cannot compare %s with the source: %s" % (dest, to_native(err)),
                                     **fail)
                result["differences"].append("content not comparable: %s" % to_native(err))
            else:
                if offset is not None:
                    result["differences"].append("content differs from the source at offset %d" % offset)
        if not result["differences"]:
            result.pop("differences")
            result["diff"] = {"before": before, "after": dict(before)}
            _finish(module, result, info, changed=False)
        if not module.params["force"]:
            module.fail_json(
                msg="%s differs from the requested image and force is false: %s"
                    % (dest, "; ".join(result["differences"])),
                **result)
        refuse_in_use(module, dest, "replace", result)
    else:
        before = {"state": "absent"}

    result["changed"] = True
    with qimg_errors(module, **fail):
        result["measure"] = request.measure(sizes)
        result["diff"] = {"before": before, "after": request.predicted_metadata(target_size)}
    if module.check_mode:
        # Attributes of a file that is not written yet cannot be compared; report the plan only.
        module.exit_json(**result)

    old_stat = os.stat(dest) if exists and not os.path.islink(dest) else None
    with qimg_errors(module, **fail):
        request.convert()
        info = image_info(dest, fmt=request.format, force_share=True)
    if old_stat is not None:
        keep_owner(dest, old_stat)
    result["diff"]["after"] = image_metadata(info)
    _finish(module, result, info, changed=True)


def _finish(module, result, info, changed):
    """Apply file attributes, add the destination's facts and exit."""
    file_args = module.load_file_common_arguments(module.params, path=module.params["dest"])
    result["changed"] = module.set_fs_attributes_if_different(file_args, changed,
                                                              diff=result.get("diff"))
    if info is not None:
        result.update(image_facts(info))
    module.exit_json(**result)


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="raw", required=True),
            src_format=dict(type="str", choices=["raw", "qcow2"]),
            dest=dict(type="path", required=True),
            format=dict(type="str", choices=["raw", "qcow2"], default="qcow2"),
            options=image_options_spec(("off", "falloc", "full")),
            compress=dict(type="bool", default=False),
            compression_type=dict(type="str", choices=["zlib", "zstd"]),
            sparse_size=dict(type="str", default="4k"),
            snapshot=dict(type="str"),
            backing_file=dict(type="str"),
            backing_format=dict(type="str", choices=["raw", "qcow2"]),
            force=dict(type="bool", default=False),
            force_share=dict(type="bool", default=False),
        ),
        add_file_common_args=True,
        supports_check_mode=True,
    )
    result = dict(changed=False, dest=module.params["dest"])
    run_convert(module, result)


if __name__ == "__main__":
    main()
