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

from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import QimgError

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
