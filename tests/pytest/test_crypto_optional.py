# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Without the optional `cryptography` package: facts of encrypted images still work (as qemu-img
info needs no key), and anything that needs a cipher fails with one line naming the package."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import sys

import pytest

from qimg.errors import QimgError
from qimg.crypto import backend


@pytest.fixture
def no_cryptography(monkeypatch):
    monkeypatch.setattr(backend, "_NS", [])
    for name in list(sys.modules):
        if name == "cryptography" or name.startswith("cryptography."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "cryptography", None)
    yield
    backend._NS[:] = []


def test_missing_package_is_one_clear_line(tmp_path, no_cryptography):
    from qimg.crypto.secrets import SecretStore
    from qimg.ops.create import create_image
    store = SecretStore()
    store.add("s0", b"pw")
    for opts in ({"encryption": "on", "encrypt.key-secret": "s0"},
                 {"encrypt.format": "luks", "encrypt.key-secret": "s0", "encrypt.iter-time": "10"}):
        with pytest.raises(QimgError) as e:
            create_image(str(tmp_path / "x.qcow2"), "qcow2", "1M", opts, secrets=store)
        assert "'cryptography'" in str(e.value) and "\n" not in str(e.value)
    assert not backend.available()


def test_info_without_package(tmp_path, no_cryptography):
    from conftest import run
    from qimg.image import open_image
    from qimg.ops.info import device_info
    path = str(tmp_path / "a.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "--object", "secret,id=s0,data=pw", "-o",
         "encryption=on,encrypt.key-secret=s0", path, "1M"])
    with open_image(path) as dev:
        assert device_info(dev)["format-specific"]["data"]["encrypt"] == {"format": "aes"}
    from qimg.crypto.secrets import SecretStore
    store = SecretStore()
    store.add("s0", b"pw")
    with pytest.raises(QimgError, match="'cryptography'"):
        open_image(path, secrets=store, key_secret="s0")
