# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`convert` into an encrypted target (qcow2 with encrypt.* / encryption=on, or a luks file).

The target is created next to its final name (with its key slot, as `create` makes it), opened
with its key and filled through the driver's encrypting write path, then renamed into place; a
failure removes it and leaves an existing file at the name untouched.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import tempfile

from ..errors import UnsupportedFeature

_QCOW2_KEYS = ("encryption", "encrypt.format", "encrypt.key-secret", "encrypt.cipher-alg", "encrypt.cipher-mode",
               "encrypt.ivgen-alg", "encrypt.ivgen-hash-alg", "encrypt.hash-alg", "encrypt.iter-time")
_OFF = ("off", "false", "no")


def encrypted_target(fmt, options):
    """True when convert's target (format, -o options as a dict) is encrypted."""
    if fmt == "luks":
        return True
    if fmt != "qcow2" or not options:
        return False
    for name in _QCOW2_KEYS:
        value = options.get(name)
        if value is None:
            continue
        if name == "encryption" and str(value).lower() in _OFF:
            continue
        return True
    return False


def check_target(dest, fmt, options, typed, compress=False):
    """What qemu-img convert refuses before it writes: compression, the option combination, a
    missing key-secret or secret ("DEST: error while converting FMT: ..."). options: the -o dict,
    typed: the same typed."""
    from ..errors import InvalidArgument, QimgError
    if compress:
        raise InvalidArgument("Compression and encryption not supported at the same time")
    key_name = "encrypt.key-secret" if fmt == "qcow2" else "key-secret"
    key = (options or {}).get(key_name)
    secrets = getattr(dest, "secrets", None)
    try:
        if fmt == "qcow2":
            from .create_opts import checked_format
            checked_format(typed)
        if not key:
            raise InvalidArgument("Parameter '%s' is required for cipher" % key_name)
        if secrets is None:
            from .secrets import SecretError
            raise SecretError("No secret with id '%s'" % key)
        secrets.lookup_passphrase(key)
    except QimgError as err:
        raise type(err)("%s: error while converting %s: %s" % (dest, fmt, err.message), hint=err.hint)


def convert_into_encrypted(dest, fmt, options, size, fill, backing_file=None, cache=None, warn=None):
    """Create the encrypted image `dest` of `size` bytes from the -o options (a dict of strings),
    then fill(dev, target_is_zero) writes the data into it. The secrets come with dest (a
    spec.ImageName from the command line or a module)."""
    from ..image import open_image
    from ..ops.create import create_image
    if backing_file:
        raise UnsupportedFeature("convert to an encrypted target with a backing file is not supported yet")
    secrets = getattr(dest, "secrets", None)
    opts = dict((k, v) for k, v in (options or {}).items() if k != "size")
    key = opts.get("encrypt.key-secret") if fmt == "qcow2" else opts.get("key-secret")
    directory = os.path.dirname(os.path.abspath(str(dest)))
    fd, tmp = tempfile.mkstemp(prefix=".%s." % os.path.basename(str(dest)), suffix=".qimg-tmp", dir=directory)
    os.close(fd)
    try:
        create_image(tmp, fmt, size, opts, secrets=secrets, cache=cache, warn=warn)
        with open_image(tmp, fmt, read_only=False, secrets=secrets, key_secret=key, cache=cache) as dev:
            # a fresh qcow2 reads as zeros; a fresh luks payload reads as whatever the cipher makes of
            # the file's zeros, so zeros are written there too (as qemu-img does)
            fill(dev, fmt == "qcow2")
            dev.flush()
        try:
            mode = os.stat(str(dest)).st_mode & 0o7777
            os.chmod(tmp, mode)
        except OSError:
            pass
        os.replace(tmp, str(dest))
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
