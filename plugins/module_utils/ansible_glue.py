# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue between the qimg engine and Ansible modules.

This is the one place that turns an engine failure (``QimgError``) into ``fail_json``,
and it holds the helpers every module shares: qemu-img's dashed fact names turned into
snake_case, and the image metadata that modules compare, diff and return.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import stat

from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import ImageInUse, QimgError
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info
from ansible_collections.qimg.disk.plugins.module_utils.qimg.sizes import parse_size

# Facts that a module must never return top-level under these names: Ansible adds file facts
# to any result holding ``path`` and would confuse ``size`` (bytes on disk) with ours.
_RESERVED_KEYS = frozenset(["size"])

# qcow2 options visible in ``qemu-img info`` and what they are when the header does not say
# (compat=0.10 images carry no lazy-refcounts / extended-l2 / compression-type fields).
QCOW2_INFO_DEFAULTS = {
    "compat": "0.10",
    "lazy_refcounts": False,
    "extended_l2": False,
    "refcount_bits": 16,
    "compression_type": "zlib",
}

# What qemu-img create gives a new qcow2 image for each option nobody asked for.
QCOW2_CREATE_DEFAULTS = {
    "cluster_size": 65536,
    "compat": "1.1",
    "lazy_refcounts": False,
    "extended_l2": False,
    "refcount_bits": 16,
    "compression_type": "zlib",
}

# Order of the keys in image metadata (diffs read better in a stable order).
METADATA_KEYS = (
    "state", "format", "virtual_size", "cluster_size", "compat", "refcount_bits",
    "lazy_refcounts", "extended_l2", "compression_type", "backing_file", "backing_format",
)


def snake_key(key):
    """``virtual-size`` -> ``virtual_size``."""
    if isinstance(key, str):
        return key.replace("-", "_")
    return key


def snake_case_keys(data):
    """Recursively turn qemu-img's dashed dict keys into snake_case; lists are walked too."""
    if isinstance(data, dict):
        return dict((snake_key(k), snake_case_keys(v)) for k, v in data.items())
    if isinstance(data, (list, tuple)):
        return [snake_case_keys(v) for v in data]
    return data


def image_facts(info):
    """Facts to return from an ``image_info`` dict: snake_case, no reserved keys."""
    facts = snake_case_keys(info)
    for key in _RESERVED_KEYS:
        facts.pop(key, None)
    return facts


def image_metadata(info):
    """The metadata modules compare and diff, from an ``image_info`` dict (dashed keys).

    Returns an ordered-by-METADATA_KEYS dict: state, format, virtual_size, the qcow2 options
    visible in info, backing_file and backing_format (None when the image has none).
    """
    meta = {
        "state": "present",
        "format": info.get("format"),
        "virtual_size": info.get("virtual-size"),
    }
    if info.get("format") == "qcow2":
        data = (info.get("format-specific") or {}).get("data") or {}
        meta["cluster_size"] = info.get("cluster-size")
        for key, default in QCOW2_INFO_DEFAULTS.items():
            meta[key] = data.get(key.replace("_", "-"), default)
    meta["backing_file"] = info.get("backing-filename")
    meta["backing_format"] = info.get("backing-filename-format")
    return ordered(meta)


def ordered(meta):
    """Return meta with keys in METADATA_KEYS order (unknown keys last)."""
    out = {}
    for key in METADATA_KEYS:
        if key in meta:
            out[key] = meta[key]
    for key in meta:
        if key not in out:
            out[key] = meta[key]
    return out


def fail_on_error(module, err, **kwargs):
    """Report one engine failure: its one-line message is the task's msg."""
    module.fail_json(msg=str(err), **kwargs)


@contextlib.contextmanager
def qimg_errors(module, **kwargs):
    """Run engine calls; any QimgError ends the module with fail_json(msg=str(err)).

    Extra keyword arguments are added to the failure result (for example ``path``).
    """
    try:
        yield
    except QimgError as err:
        fail_on_error(module, err, **kwargs)


# ---------------------------------------------------------------- target image options
# Shared by the modules that write or measure a new image from an ``options`` dict with
# qimg_create's suboptions (qimg_convert, qimg_measure).

# Accepted spellings of the qcow2 compat levels (YAML reads 0.10 as the float 0.1).
COMPAT_NAMES = {"0.10": "0.10", "0.1": "0.10", "v2": "0.10", "1.1": "1.1", "v3": "1.1"}

# Options that only qcow2 images have.
QCOW2_ONLY_OPTIONS = ("cluster_size", "compat", "refcount_bits", "lazy_refcounts", "extended_l2",
                      "compression_type")

# The qcow2 options that qemu-img info shows, in the order difference messages list them.
COMPARED_OPTIONS = ("cluster_size", "compat", "refcount_bits", "lazy_refcounts", "extended_l2",
                    "compression_type")


def image_options_spec(preallocation=None):
    """argument_spec of the ``options`` dict (qemu-img's -o create options) shared by the modules;
    preallocation: the allowed preallocation modes, or None when the module takes none."""
    spec = dict(
        cluster_size=dict(type="str"),
        compat=dict(type="str"),
        refcount_bits=dict(type="int", choices=[1, 2, 4, 8, 16, 32, 64]),
        lazy_refcounts=dict(type="bool"),
        extended_l2=dict(type="bool"),
        compression_type=dict(type="str", choices=["zlib", "zstd"]),
    )
    if preallocation:
        spec["preallocation"] = dict(type="str", choices=list(preallocation))
    return dict(type="dict", default={}, options=spec)


def bool_word(value):
    """qemu's spelling of a boolean option value."""
    return "on" if value else "off"


def show_value(value):
    """A metadata value as difference messages show it."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return bool_word(value)
    return str(value)


def target_options(module, fmt, options, **fail_kwargs):
    """Validate an ``options`` dict (qimg_create's suboptions) for a new image of format fmt.

    Returns a dict of the options given (None values dropped), with ``cluster_size`` in bytes
    (int) and ``compat`` as ``0.10`` or ``1.1``. Invalid values fail the task; extra keyword
    arguments are added to the failure result.
    """
    out = dict((k, v) for k, v in (options or {}).items() if v is not None)
    if "cluster_size" in out:
        with qimg_errors(module, **fail_kwargs):
            out["cluster_size"] = parse_size(out["cluster_size"])
    if "compat" in out:
        compat = COMPAT_NAMES.get(str(out["compat"]).strip())
        if compat is None:
            module.fail_json(msg="options.compat must be one of 0.10, 1.1, v2, v3, got: %s"
                             % out["compat"], **fail_kwargs)
        out["compat"] = compat
    if fmt == "raw":
        bad = [name for name in QCOW2_ONLY_OPTIONS if name in out]
        if bad:
            module.fail_json(msg="option(s) not supported by format raw: %s" % ", ".join(bad),
                             **fail_kwargs)
    return out


def engine_options(options):
    """Typed options (from target_options) as the engine's ``-o`` strings."""
    out = {}
    for name, value in options.items():
        if isinstance(value, bool):
            value = bool_word(value)
        elif isinstance(value, int):
            value = str(value)
        out[name] = value
    return out


def option_differences(current, options):
    """['name current != requested'] for the qcow2 options given, against image metadata."""
    diffs = []
    for name in COMPARED_OPTIONS:
        if name in options and current.get(name) != options[name]:
            diffs.append("%s %s != %s" % (name, show_value(current.get(name)),
                                          show_value(options[name])))
    return diffs


def predicted_qcow2_options(options):
    """The visible qcow2 options a new image gets: qemu's defaults, then those requested."""
    meta = dict(QCOW2_CREATE_DEFAULTS)
    for name in COMPARED_OPTIONS:
        if name in options:
            meta[name] = options[name]
    return meta


def refuse_in_use(module, path, action, result):
    """Fail when another process (a running VM, qemu-nbd) holds a write lock on path.

    Metadata is compared with locks waived, but an image is never replaced under a process
    that has it open for writing: that process would keep the old file.
    """
    try:
        image_info(path, force_share=False)
    except ImageInUse as err:
        module.fail_json(msg="refusing to %s %s: %s" % (action, path, err), **result)
    except QimgError:
        pass  # not an image we can read: nobody can be using it as one


def keep_owner(path, old_stat):
    """A replaced file keeps the old file's mode and owner (file options still apply after)."""
    try:
        os.chmod(path, stat.S_IMODE(old_stat.st_mode))
        st = os.stat(path)
        if (st.st_uid, st.st_gid) != (old_stat.st_uid, old_stat.st_gid):
            os.chown(path, old_stat.st_uid, old_stat.st_gid)
    except OSError:
        pass  # not permitted: the new file keeps its own attributes


def resolve_snapshot(filename, fmt, snapshot):
    """A bare snapshot ID-or-name as explicit ``snapshot.id=`` / ``snapshot.name=`` text.

    QEMU looks a bare ``-l``/``-s`` value up as an ID first, then as a name. Explicit text, and a
    value that names no snapshot (the engine then reports it), are returned as given.
    """
    if not snapshot or "=" in snapshot:
        return snapshot
    try:
        info = image_info(filename, fmt=fmt, force_share=True)
    except QimgError:
        return snapshot
    snapshots = info.get("snapshots") or []
    if any(s.get("id") == snapshot for s in snapshots):
        return "snapshot.id=%s" % snapshot
    if any(s.get("name") == snapshot for s in snapshots):
        return "snapshot.name=%s" % snapshot
    return snapshot
