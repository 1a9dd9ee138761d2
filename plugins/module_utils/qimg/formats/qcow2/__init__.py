# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The qcow2 format (QEMU docs/interop/qcow2.txt)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .driver import Qcow2Image  # noqa: F401
from .header import MAGIC  # noqa: F401


def __getattr__(name):
    # create_qcow2 on first use: opening an image (every CLI start) does not need the creator
    if name == "create_qcow2":
        from .create import create_qcow2
        return create_qcow2
    raise AttributeError("module %r has no attribute %r" % (__name__, name))
