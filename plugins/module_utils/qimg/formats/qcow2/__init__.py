# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The qcow2 format (QEMU docs/interop/qcow2.txt)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .create import create_qcow2  # noqa: F401
from .driver import Qcow2Image  # noqa: F401
from .header import MAGIC  # noqa: F401
