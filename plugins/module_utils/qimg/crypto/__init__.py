# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Encryption: QEMU secret objects, sector ciphers, LUKS1 and legacy qcow2 AES.

Every primitive (AES modes, PBKDF2, hashes, random numbers) comes from the optional
`cryptography` package; `backend.require()` turns its absence into one clear error line.
Only the LUKS structures and the anti-forensic split/merge are written here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type
