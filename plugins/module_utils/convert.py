# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend of qimg_convert: the destination the task asks for against the one that exists.

``run_convert(module)`` returns the result; engine failures are raised (QimgError) for the
module's ``qimg_errors``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil
import tempfile

from ansible.module_utils.common.validation import check_type_path

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import (
    engine_options,
    finish_file,
    image_differences,
    image_metadata,
    in_context,
    keep_owner,
    plan_change,
    predicted_metadata,
    replace_existing,
    resolve_snapshot,
    snake_case_keys,
    target_options,
)
from ansible_collections.qimg.disk.plugins.module_utils.passphrase import encrypt_options, encryption_differences, keyed
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
        self.unsafe = params["allow_unsafe_backing"]
        self.backing_file = params["backing_file"]
        self.backing_format = params["backing_format"]
        fail = dict(dest=self.dest)
        self.sources = self._sources(module, params["src"], fail)

        given = dict(params["options"] or {})
        self.encrypt = given.pop("encrypt", None)
        self.encrypt_options = {}
        if self.encrypt:
            if self.format != "qcow2":
                module.fail_json(msg="options.encrypt needs format qcow2", **fail)
            self.encrypt_options = encrypt_options(self.encrypt)[0]
            # the destination carries its passphrase to the engine (convert, compare)
            self.dest = keyed(self.dest, self.encrypt["passphrase"])
        self.options = target_options(module, self.format, given, **fail)
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
            raise in_context("sparse_size %s" % params["sparse_size"], err)
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
            image_info(name, fmt=self.src_format, force_share=False, allow_unsafe_backing=self.unsafe)

    def source_sizes(self):
        """Virtual size of each source (of the snapshot when one is given)."""
        return [measure(filename=name, fmt=self.src_format, out_fmt="raw", snapshot=self.snapshot,
                        force_share=True, allow_unsafe_backing=self.unsafe)["required"]
                for name in self.sources]

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
                              options=opts, snapshot=self.snapshot, force_share=self.force_share,
                              allow_unsafe_backing=self.unsafe)
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
                          snapshot=self.snapshot, force_share=self.force_share,
                          allow_unsafe_backing=self.unsafe)
            aligned = (size + cluster - 1) // cluster * cluster
            required += one["required"] - one["fully-allocated"] + aligned
        return {"required": required, "fully_allocated": empty["fully-allocated"]}

    def convert(self):
        options = engine_options(self.options)
        options.update(self.encrypt_options)
        convert(self.sources, self.dest, src_fmt=self.src_format, out_fmt=self.format,
                options=options, compress=self.compress,
                sparse_size=self.sparse_size, snapshot=self.snapshot,
                backing_file=self.backing_file, backing_fmt=self.backing_format,
                force_share=self.force_share, allow_unsafe_backing=self.unsafe)

    def content_difference(self, dest_format):
        """Offset of the first differing sector between source(s) and dest, or None."""
        if len(self.sources) == 1 and not self.snapshot:
            result = compare_images(self.sources[0], self.dest, fmt1=self.src_format, fmt2=dest_format,
                                    force_share=True, allow_unsafe_backing=self.unsafe)
        else:
            # The engine compares two images: copy the source view (snapshot, concatenation) to a
            # temporary raw file next to dest (a hole stays a hole) and compare with that.
            tmpdir = tempfile.mkdtemp(prefix=".%s." % os.path.basename(self.dest), suffix=".qimg-cmp",
                                      dir=os.path.dirname(os.path.abspath(self.dest)))
            try:
                flat = os.path.join(tmpdir, "source.raw")
                convert(self.sources, flat, src_fmt=self.src_format, out_fmt="raw",
                        snapshot=self.snapshot, force_share=True, allow_unsafe_backing=self.unsafe)
                result = compare_images(flat, self.dest, fmt1="raw", fmt2=dest_format, force_share=True,
                                        allow_unsafe_backing=self.unsafe)
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
        return image_differences(current, self.format, self.options, self.backing_file,
                                 self.backing_format, size=target_size)

    def predicted_metadata(self, target_size):
        return predicted_metadata(self.format, target_size, self.options, self.backing_file,
                                  self.backing_format_written())


def read_dest(request):
    """(info, metadata) of the existing destination, read as the requested format when it is one.

    A raw destination holding the bytes of a qcow2 image (a qcow2 file converted as raw) probes as
    qcow2; it is read as raw when its raw content is what the task asks for.
    """
    info = image_info(request.dest, force_share=True, allow_unsafe_backing=request.unsafe)
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


def compare_existing(module, request, result, target_size):
    """(info, before) of the existing destination; result["differences"] lists what differs.

    An unreadable or incomparable destination fails the task without force; with force it is to
    be replaced, and the differences say why.
    """
    dest = request.dest
    force = module.params["force"]
    try:
        info, before = read_dest(request)
    except QimgError as err:
        if not force:
            raise in_context("cannot read %s to compare it" % dest, err)
        # An unreadable file is replaced with force; report why.
        result["differences"] = ["unreadable image: %s" % err]
        return None, {"state": "present"}
    result["differences"] = request.differences(before, target_size)
    if request.encrypt or (info.get("format-specific") or {}).get("data", {}).get("encrypt"):
        result["differences"] += encryption_differences(info, request.encrypt)
    try:
        offset = request.content_difference(before["format"])
    except QimgError as err:
        if not force:
            raise in_context("cannot compare %s with the source" % dest, err)
        result["differences"].append("content not comparable: %s" % err)
    else:
        if offset is not None:
            result["differences"].append("content differs from the source at offset %d" % offset)
    return info, before


def run_convert(module):
    """The whole task: returns the result dict (raises QimgError, fails on bad arguments)."""
    result = dict(changed=False, dest=module.params["dest"])
    request = ConvertRequest(module)
    dest = request.dest
    fail = dict(dest=dest)
    for name in request.sources:
        if _same_file(name, dest):
            module.fail_json(msg="source %s and dest %s are the same file" % (name, dest), **fail)
    exists = os.path.lexists(dest)
    if exists and os.path.isdir(dest):
        module.fail_json(msg="%s is a directory, not an image file" % dest, **fail)

    request.check_sources_unlocked()
    sizes = request.source_sizes()
    target_size = request.target_size(sizes)

    if exists:
        info, before = compare_existing(module, request, result, target_size)
        if not replace_existing(result, dest, before, module.params["force"], "replace"):
            return finish_file(module, result, dest, info, changed=False)
    else:
        before = {"state": "absent"}

    result["measure"] = request.measure(sizes)
    if not plan_change(module, result, before, request.predicted_metadata(target_size)):
        # Attributes of a file that is not written yet cannot be compared; report the plan only.
        return result

    old_stat = os.stat(dest) if exists and not os.path.islink(dest) else None
    request.convert()
    info = image_info(dest, fmt=request.format, force_share=True, allow_unsafe_backing=request.unsafe)
    if old_stat is not None:
        keep_owner(dest, old_stat)
    result["diff"]["after"] = image_metadata(info)
    return finish_file(module, result, dest, info, changed=True)
