# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The optional `cryptography` package, imported on first use.

require() returns a small namespace of the primitives the crypto package uses, or raises one
clear QimgError naming the package to install.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import UnsupportedFeature

INSTALL_HINT = ("encrypted images need the Python package 'cryptography' (pip install cryptography, "
                "or the distribution's python3-cryptography)")

_NS = []


class _Primitives(object):
    pass


def available():
    try:
        require()
        return True
    except UnsupportedFeature:
        return False


def require():
    if _NS:
        return _NS[0]
    try:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC
    except ImportError:
        raise UnsupportedFeature(INSTALL_HINT)
    ns = _Primitives()
    ns.Cipher = Cipher
    ns.algorithms = algorithms
    ns.modes = modes
    ns.hashes = hashes
    ns.PBKDF2HMAC = PBKDF2HMAC
    try:
        from cryptography.hazmat.decrepit.ciphers.algorithms import CAST5
    except ImportError:
        CAST5 = getattr(algorithms, "CAST5", None)
    ns.CAST5 = CAST5
    _NS.append(ns)
    return ns
