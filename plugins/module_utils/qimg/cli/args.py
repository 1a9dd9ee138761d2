# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu-img's argument conventions: sizes (cvtnum/qemu_strtosz), -o option lists, --output,
snapshot parameters, cache modes, and where a command-line image name becomes an image spec."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..sizes import strtosz  # qemu_strtosz(): in the engine, the -o size options need it too
from .errors import CommandError


# qemu-img's fixed texts.
SIZE_HINT = ("You may use k, M, G, T, P or E suffixes for",
             "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.")


INT64_MAX = (1 << 63) - 1


def cvtnum(name, value, warn=None):
    """qemu-img's cvtnum(): a size in [0, INT64_MAX] or CommandError with qemu's wording."""
    try:
        res, hexwarn = strtosz(value)
        if hexwarn and warn is not None:
            warn("Using a multiplier suffix on hex numbers is deprecated: %s" % value)
    except OverflowError:
        res = None
    except ValueError:
        raise CommandError(["Invalid %s specified. %s" % (name, SIZE_HINT[0]), SIZE_HINT[1]])
    if res is None or res > INT64_MAX:
        raise CommandError("Invalid %s specified. Must be between 0 and %d." % (name, INT64_MAX))
    return res


def split_opt_list(text):
    """qemu's get_opt_value() loop: items split at ',' with ',,' as a literal comma."""
    items, cur, i = [], [], 0
    while i < len(text):
        ch = text[i]
        if ch == ",":
            if text[i + 1:i + 2] == ",":
                cur.append(",")
                i += 2
                continue
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
        i += 1
    items.append("".join(cur))
    return items


def valid_option_list(text):
    if not text or text.startswith(","):
        return False
    trailing = len(text) - len(text.rstrip(","))
    return trailing % 2 == 0


def output_format(output):
    if output is None or output == "human":
        return "human"
    if output == "json":
        return "json"
    raise CommandError("--output must be used with human or json as argument.")


def progress_mode(arg):
    """--progress=human|json (convert, rebase, commit): the mode, or qemu-img's refusal."""
    if arg not in ("human", "json"):
        raise CommandError("--progress must be used with human or json as argument.")
    return arg


def add_option_list(options, arg):
    """Accumulate repeated -o arguments as qemu-img does ("a=1" then "b=2" -> "a=1,b=2")."""
    if not valid_option_list(arg):
        raise CommandError("Invalid option list: %s" % arg)
    return arg if options is None else "%s,%s" % (options, arg)


def snapshot_opts(text):
    """convert/measure -l: qemu parses "snapshot.*" params; returns the text (validated)."""
    if text.startswith("snapshot."):
        for item in split_opt_list(text):
            key = item.partition("=")[0]
            if key not in ("snapshot.id", "snapshot.name"):
                raise CommandError(["Invalid parameter '%s'" % key, "Failed in parsing snapshot param '%s'" % text])
    return text


# engine path -> the name as typed, for messages (see typed_message)
_TYPED = {}


def image_name(text, role="open", fmt=None, image_opts=False, objects=()):
    """A command-line image name as the engine's opener takes it.

    The one place a filename typed by the user becomes an image spec (names read from images never
    pass through this function). ``role`` is "open" (an image to open), "create" (the image create
    makes) or "target" (convert's output): qemu words an unknown protocol prefix differently for
    each. json: and protocol names go to the opener as they are; with --image-opts (``image_opts``)
    or --object texts (``objects``) the result is a spec.ImageName carrying them.
    """
    if image_opts and fmt:
        raise CommandError("--image-opts and --format are mutually exclusive")
    path = text if image_opts else _plain_name(text, role)
    if not image_opts and not objects:
        return path
    from ..spec import ImageName
    return ImageName(path, image_opts=image_opts, secrets=secret_store(objects))


def secret_store(objects):
    """The SecretStore of the --object texts given (None when there are none)."""
    if not objects:
        return None
    from ..crypto.secrets import store_from_objects
    return store_from_objects(objects)


def opts_target(text, fmt, objects=()):
    """--image-opts for the commands that edit an image in place (resize, amend, commit, rebase,
    snapshot): (the file name as a spec.ImageName carrying the secrets and the spec's key-secret id,
    the driver)."""
    from .cmd_resize import image_opts_target
    filename, driver = image_opts_target(text, fmt)
    key = backing_key = None
    for item in split_opt_list(text):
        name, _eq, value = item.partition("=")
        if name in ("encrypt.key-secret", "key-secret"):
            key = value
        elif name in ("backing.encrypt.key-secret", "backing.key-secret"):
            backing_key = value
    from ..spec import ImageName
    if key is not None:
        # qemu names the spec as typed when the opening fails (a missing or wrong secret)
        _TYPED[filename] = text
    name = ImageName(filename, secrets=secret_store(objects), key_secret=key)
    name.backing_key_secret = backing_key
    return name, driver


def edit_target(text, fmt, image_opts, objects):
    """The image an in-place command edits: (name, fmt) from a plain name or an --image-opts spec."""
    if image_opts:
        return opts_target(text, fmt, objects)
    return image_name(text, objects=objects), fmt


def _plain_name(text, role):
    path = strip_file_protocol(text)
    if path is text:
        colon = text.find(":")
        if colon > 0 and "/" not in text[:colon]:
            from ..errors import InvalidArgument
            from ..image import _PROTOCOLS
            prefix = text[:colon]
            if prefix not in _PROTOCOLS:
                message = "Unknown protocol '%s'" % prefix
                raise InvalidArgument(message if role != "open" else "Could not open '%s': %s" % (text, message))
    elif path != text:
        _TYPED[path] = text
    return path


def typed_message(message):
    """An engine message about a name given as ``file:NAME``: qemu names the typed name first."""
    for path, text in _TYPED.items():
        head = "Could not open '%s': " % path
        if message.startswith(head):
            return "Could not open '%s': %s" % (text, message[len(head):])
    return message


def strip_file_protocol(text):
    """``file:NAME`` names the local file NAME (QEMU's file protocol prefix, which is how a name with
    a colon is written unambiguously). The rest of a name that would itself read as a protocol
    prefix (a colon before any slash) gets "./", as QEMU shows it (``file:a:b`` -> ``./a:b``)."""
    if not text.startswith("file:"):
        return text
    name = text[5:]
    colon = name.find(":")
    if colon >= 0 and "/" not in name[:colon]:
        name = "./" + name
    return name


CACHE_MODES = ("none", "off", "writeback", "writethrough", "directsync", "unsafe")
