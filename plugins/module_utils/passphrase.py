# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Passphrases of encrypted images in the modules.

A module takes a passphrase as a ``no_log`` option (``passphrase``; ``src_passphrase`` for
qimg_convert's sources, ``passphrase1`` / ``passphrase2`` for qimg_compare). ``key_paths()``
replaces the image path in ``module.params`` by a name that carries the passphrase to the engine
(a spec.ImageName with a one-secret store, the key-secret of the image and of its encrypted
backing files): every engine call made with that path can open the encrypted image, and nothing
else ever sees the passphrase. Ansible masks no_log values in results and logs besides.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.qimg.disk.plugins.module_utils.qimg.crypto.secrets import SecretStore
from ansible_collections.qimg.disk.plugins.module_utils.qimg.spec import ImageName

SECRET_ID = "passphrase"

# the argument_spec entry of a passphrase option
PASSPHRASE = dict(type="str", no_log=True)


def keyed(path, passphrase):
    """`path` carrying `passphrase` for the engine (the path itself without one)."""
    if passphrase is None or path is None:
        return path
    store = SecretStore()
    store.add(SECRET_ID, passphrase.encode("utf-8") if not isinstance(passphrase, bytes) else passphrase)
    return ImageName(str(path), secrets=store, key_secret=SECRET_ID)


def key_paths(module, pairs=(("path", "passphrase"),)):
    """For each (path option, passphrase option): module.params[path] carries the passphrase.
    A list-valued path option (qimg_convert's src) gets each of its names keyed."""
    params = module.params
    for path_key, pw_key in pairs:
        passphrase = params.get(pw_key)
        value = params.get(path_key)
        if passphrase is None or value is None:
            continue
        if isinstance(value, list):
            params[path_key] = [keyed(v, passphrase) for v in value]
        else:
            params[path_key] = keyed(value, passphrase)
