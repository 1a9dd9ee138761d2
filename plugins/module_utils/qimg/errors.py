# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One error root for the engine.

Every failure the engine expects (bad arguments, missing files, corrupt or hostile images,
unsupported features) is a QimgError whose str() is one line, worded like qemu-img's message
where qemu-img has one, and naming the file concerned. The CLI prints "<prog>: <message>";
modules pass it to fail_json. Anything else escaping the engine is a bug.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class QimgError(Exception):
    """Root of every expected engine failure."""

    def __init__(self, message, hint=None):
        # Keep messages on one line whatever the source (file names may hold newlines).
        # hint: qemu-img's extra explanation lines, printed by the CLI after the message.
        message = " ".join(str(message).splitlines())
        self.message = message
        self.hint = list(hint or [])
        super(QimgError, self).__init__(" ".join([message] + self.hint))


class InvalidArgument(QimgError):
    """A caller passed an option, size or combination that makes no sense."""


class ImageNotFound(QimgError):
    """The file could not be opened (missing, permission denied, not a regular file...)."""


class ImageExists(QimgError):
    """A create or convert would overwrite an existing file without force."""


class ImageCorrupt(QimgError):
    """The image's metadata is inconsistent or out of bounds."""


class UnsupportedFeature(QimgError):
    """The image uses a feature this engine does not implement (yet)."""


class UnsafeImage(QimgError):
    """The image asks for something we refuse by policy (json: names, protocols, loops)."""


class ImageInUse(QimgError):
    """Another process (typically QEMU) holds a conflicting lock on the image."""


class ReadOnlyImage(QimgError):
    """A write was attempted on an image opened read-only or marked corrupt."""


class BlockIOError(QimgError):
    """A node failed a read, write or block-status request (an NBD server's error, an injected
    blkdebug error): .errno and .offset say which; the message is the errno's text."""

    def __init__(self, errno_value, offset=None, message=None, hint=None):
        import errno
        import os
        if not isinstance(errno_value, int):
            # built like any QimgError, (message, hint=...), e.g. when a caller re-words it
            message, errno_value = str(errno_value), errno.EIO
        self.errno = errno_value
        self.offset = offset
        super(BlockIOError, self).__init__(message or os.strerror(errno_value), hint=hint)
