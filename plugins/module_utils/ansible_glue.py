# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue between the qimg engine and Ansible modules.

This is the one place that turns an engine failure (``QimgError``) into ``fail_json``
(``qimg_errors``), and it holds the helpers every module backend shares:

- facts: qemu-img's dashed fact names turned into snake_case (``image_facts``), and the image
  metadata that modules compare, diff and return (``image_metadata``, ``read_image``);
- the options of a new image (``target_options``, ``engine_options``) and the differences between
  an existing image and the request (``image_differences``), with the metadata a new image will
  have (``predicted_metadata``, for check mode and the diff);
- the idempotence ladder: ``unchanged`` (nothing to do), ``plan_change`` (changed, the diff and the
  check-mode stop), ``check_not_in_use`` / ``refuse_in_use`` (never change an image another
  process has open for writing); for whole-file outputs ``replace_existing`` (an existing file
  that differs: fail without force), ``keep_owner`` and ``finish_file`` (file attributes and
  facts); for in-place changes ``change_in_place`` (the whole ladder around one action).

A module backend (``module_utils/<command>.py``) takes the AnsibleModule and returns the result
dict; the module's ``main()`` builds the AnsibleModule, calls the backend inside ``qimg_errors``
and exits with the result. A backend fails either with ``module.fail_json`` (a bad argument) or
by raising a QimgError; ``TaskError`` is the QimgError a backend raises for a failure in its own
words, carrying the result keys to report with it.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import contextlib
import os
import stat

from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import ImageInUse, QimgError
from ansible_collections.qimg.disk.plugins.module_utils.qimg.image import open_image
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


class TaskError(QimgError):
    """A failure a module backend reports in its own words (often an engine error in context).

    result: keys added to the failure result (they override those given to ``qimg_errors``).
    """

    def __init__(self, message, result=None):
        super(TaskError, self).__init__(message)
        self.result = dict(result or {})


def fail_on_error(module, err, **kwargs):
    """Report one engine failure: its one-line message is the task's msg."""
    kwargs.update(getattr(err, "result", None) or {})
    module.fail_json(msg=str(err), **kwargs)


@contextlib.contextmanager
def qimg_errors(module, **kwargs):
    """Run engine calls; any QimgError ends the module with fail_json(msg=str(err)).

    Extra keyword arguments are added to the failure result (for example ``path``); a
    ``TaskError`` adds its own result keys.
    """
    try:
        yield
    except QimgError as err:
        fail_on_error(module, err, **kwargs)


def in_context(context, err, result=None):
    """A TaskError ``<context>: <engine message>``."""
    return TaskError("%s: %s" % (context, err), result)


# ---------------------------------------------------------------- reading images

def read_image(path, fmt=None, allow_unsafe_backing=False):
    """(info, metadata) of an existing image, read with locks waived (as to compare it)."""
    info = image_info(path, fmt=fmt, force_share=True, allow_unsafe_backing=allow_unsafe_backing)
    return info, image_metadata(info)


def open_chain(path, fmt=None, allow_unsafe_backing=False):
    """Open an image with its whole backing chain and close it again; returns its format.

    Fails (QimgError) like qemu-img when a backing file is missing, unreadable or refused.
    """
    with open_image(path, fmt, read_only=True, force_share=True,
                    allow_unsafe_backing=allow_unsafe_backing) as dev:
        return dev.format_name


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


def check_not_in_use(path, action, result=None):
    """Raise TaskError when another process (a running VM, qemu-nbd) holds a write lock on path.

    Metadata is compared with locks waived, but an image is never replaced or changed under a
    process that has it open for writing: that process would keep the old file (or see its
    metadata change under it). result: the keys to report with the failure.
    """
    try:
        image_info(path, force_share=False)
    except ImageInUse as err:
        raise in_context("refusing to %s %s" % (action, path), err, result)
    except QimgError:
        pass  # not an image we can read: nobody can be using it as one


def refuse_in_use(module, path, action, result):
    """check_not_in_use, failing the task itself (callable inside or outside qimg_errors)."""
    with qimg_errors(module):
        check_not_in_use(path, action, result)


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


# ---------------------------------------------------------------- desired versus current

def image_differences(current, fmt, options, backing_file=None, backing_format=None, size=None,
                      size_key=None):
    """['<what> <current> != <requested>'] between an image's metadata and a request.

    fmt, options (typed, from target_options), backing_file and backing_format as requested;
    the qcow2 options are compared only when both are qcow2 and only those given, the backing
    format only when given. size: the requested virtual size, compared when not None, with
    size_key(current virtual size) when size_key is given (e.g. rounding to sectors).
    """
    diffs = []
    if current.get("format") != fmt:
        diffs.append("format %s != %s" % (current.get("format"), fmt))
    if size is not None:
        have = current.get("virtual_size")
        if (size_key(have) if size_key is not None else have) != size:
            diffs.append("virtual size %s != %s" % (have, size))
    if current.get("format") == fmt == "qcow2":
        diffs.extend(option_differences(current, options))
    if current.get("backing_file") != backing_file:
        diffs.append("backing file %s != %s" % (show_value(current.get("backing_file")),
                                                show_value(backing_file)))
    elif backing_format is not None and current.get("backing_format") != backing_format:
        diffs.append("backing format %s != %s" % (show_value(current.get("backing_format")),
                                                  show_value(backing_format)))
    return diffs


def predicted_metadata(fmt, virtual_size, options, backing_file=None, backing_format=None):
    """The metadata a new image will have (check mode and the diff's ``after``)."""
    meta = {"state": "present", "format": fmt, "virtual_size": virtual_size}
    if fmt == "qcow2":
        meta.update(predicted_qcow2_options(options))
    meta["backing_file"] = backing_file
    meta["backing_format"] = backing_format
    return ordered(meta)


# ---------------------------------------------------------------- the idempotence ladder
# A state-changing backend: read the current state (``before``), compare it with the request,
# then either ``unchanged`` or ``plan_change`` (which stops in check mode), act, read the state
# again for the diff's ``after`` and the facts.

def unchanged(result, before):
    """Nothing to do: changed stays false, the diff shows before == after."""
    result.pop("differences", None)
    result["changed"] = False
    result["diff"] = {"before": before, "after": dict(before)}
    return result


def plan_change(module, result, before, after):
    """A change is due: changed, and the diff from before to the predicted after.

    Returns False in check mode (the backend stops there and returns the plan), True when the
    backend is to act.
    """
    result["changed"] = True
    result["diff"] = {"before": before, "after": after}
    return not module.check_mode


def replace_existing(result, path, before, force, action):
    """The decision for an existing file against a request (differences in result["differences"]).

    Returns False when nothing differs (``unchanged`` is applied). A difference fails the task
    without force, listing every difference; with force the file is to be replaced (True), unless
    another process has it open for writing.
    """
    if not result.get("differences"):
        unchanged(result, before)
        return False
    if not force:
        raise TaskError("%s differs from the requested image and force is false: %s"
                        % (path, "; ".join(result["differences"])), result)
    check_not_in_use(path, action, result)
    return True


def change_in_place(module, result, path, before, after, action, act, state_of=image_metadata, fmt=None,
                    allow_unsafe_backing=False):
    """The whole ladder of an in-place change (snapshot, resize, amend, bitmap ...).

    before: the image's current state as the module compares it, ``state_of(info)`` for the
    image_info dict it read (image_metadata by default; a module with more state, such as the
    snapshot list, passes its own function). after: the state the task asks for, in the same shape.
    Equal: nothing to do. Otherwise: refuse an image another process has open for writing, record
    the change and the predicted diff, stop in check mode, else call act() and read the image again
    (the diff's after becomes ``state_of`` of what is there now, and the facts are added).
    Returns the image_info dict read after act(), or None when act() did not run.
    """
    if before == after:
        unchanged(result, before)
        return None
    check_not_in_use(path, action, result)
    if not plan_change(module, result, before, after):
        return None
    act()
    info = image_info(path, fmt=fmt, force_share=True, allow_unsafe_backing=allow_unsafe_backing)
    result["diff"]["after"] = state_of(info)
    result.update(image_facts(info))
    return info


def finish_file(module, result, path, info, changed):
    """Apply the file attributes (mode, owner ...) of the task to path and add the image facts.

    changed: whether the image itself changed; the attributes may change it too. Returns result.
    """
    file_args = module.load_file_common_arguments(module.params, path=path)
    result["changed"] = module.set_fs_attributes_if_different(file_args, changed,
                                                              diff=result.get("diff"))
    if info is not None:
        result.update(image_facts(info))
    return result
