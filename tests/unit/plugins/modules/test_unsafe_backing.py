# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""allow_unsafe_backing: backing names with json: or a protocol prefix, read from an image.

Every module that opens an image with its backing chain refuses such a name by default, with
the engine's message, and opens it when the task sets allow_unsafe_backing=true.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import subprocess

import pytest

from ansible_collections.qimg.disk.plugins.modules.qimg_check import main as check_main
from ansible_collections.qimg.disk.plugins.modules.qimg_compare import main as compare_main
from ansible_collections.qimg.disk.plugins.modules.qimg_convert import main as convert_main
from ansible_collections.qimg.disk.plugins.modules.qimg_create import main as create_main
from ansible_collections.qimg.disk.plugins.modules.qimg_info import main as info_main
from ansible_collections.qimg.disk.plugins.modules.qimg_measure import main as measure_main

MiB = 1 << 20
REFUSED = "pseudo-filename syntax, which is refused"


def _tool(name):
    path = shutil.which(name)
    if path is None:
        pytest.skip("%s not installed" % name)
    return path


class Images(object):
    """base.qcow2 (data at 0) and overlays whose stored backing name points at it."""

    def __init__(self, tmp_path):
        qemu_img, qemu_io = _tool("qemu-img"), _tool("qemu-io")
        self.dir = tmp_path
        self.base = str(tmp_path / "base.qcow2")
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", self.base, "1M"], check=True)
        subprocess.run([qemu_io, "-f", "qcow2", "-c", "write -P 0x5a 0 64k", self.base], check=True,
                       stdout=subprocess.DEVNULL)
        self.names = {
            "json": 'json:{"driver":"file","filename":"%s"}' % self.base,
            "file": "file:base.qcow2",
        }
        self.tops = {}
        for kind, name in self.names.items():
            top = str(tmp_path / ("%s-top.qcow2" % kind))
            subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", name, "-F", "qcow2", "-u", top,
                            "1M"], check=True)
            self.tops[kind] = top
        # The engine has no protocol drivers: when allowed, "file:base.qcow2" is opened as the
        # local name it spells next to the overlay. QEMU's file protocol opens base.qcow2 from the
        # working directory. The link and the chdir (in the fixture) make both read base.qcow2.
        os.symlink("base.qcow2", str(tmp_path / "file:base.qcow2"))


@pytest.fixture
def images(tmp_path, monkeypatch):
    monkeypatch.chdir(str(tmp_path))
    return Images(tmp_path)


def _same_content(a, b):
    qemu_img = _tool("qemu-img")
    return subprocess.run([qemu_img, "compare", "-q", a, b], check=False).returncode == 0


# Each case: the module's main, its arguments for an overlay (top), and the check of an accepted run.

def _info(images, top):
    return info_main, dict(path=top, backing_chain=True)


def _info_ok(images, top, res):
    assert [os.path.basename(i["filename"]) for i in res["images"]][0] == os.path.basename(top)
    assert len(res["images"]) == 2
    assert res["images"][1]["format"] == "qcow2"


def _compare(images, top):
    return compare_main, dict(path1=top, path2=images.base)


def _compare_ok(images, top, res):
    assert res["identical"] is True


def _measure(images, top):
    return measure_main, dict(path=top, target_format="qcow2")


def _measure_ok(images, top, res):
    # the overlay's content is the base's 64 KiB of data: one data cluster more than an empty image
    assert res["required"] >= 64 * 1024 + 3 * 65536


def _convert(images, top):
    return convert_main, dict(src=top, dest=str(images.dir / "flat.raw"), format="raw")


def _convert_ok(images, top, res):
    assert res["changed"] is True
    assert _same_content(str(images.dir / "flat.raw"), images.base)


def _check(images, top):
    return check_main, dict(path=top)


def _check_ok(images, top, res):
    assert res["status"] == "clean"


def _create(images, top):
    return create_main, dict(path=str(images.dir / "new.qcow2"), backing_file=os.path.basename(top),
                             backing_format="qcow2")


def _create_ok(images, top, res):
    assert res["changed"] is True
    assert res["virtual_size"] == MiB
    assert res["backing_filename"] == os.path.basename(top)


CASES = {
    "info": (_info, _info_ok, None),
    "compare": (_compare, _compare_ok, None),
    "measure": (_measure, _measure_ok, None),
    "convert": (_convert, _convert_ok, "flat.raw"),
    "check": (_check, _check_ok, None),
    "create": (_create, _create_ok, "new.qcow2"),
}


@pytest.mark.parametrize("kind", ["json", "file"])
@pytest.mark.parametrize("module", sorted(CASES))
def test_refused_by_default(images, run, module, kind):
    make, dummy, output = CASES[module]
    main, args = make(images, images.tops[kind])
    res = run.fail(main, args)
    prefix = kind + ":"
    assert "Backing file name '%s' uses the '%s' %s" % (images.names[kind], prefix, REFUSED) in res["msg"]
    assert "\n" not in res["msg"]
    if output:
        assert not os.path.lexists(str(images.dir / output))
    # the explicit default is the same
    res = run.fail(main, dict(args, allow_unsafe_backing=False))
    assert REFUSED in res["msg"]


@pytest.mark.parametrize("module", sorted(CASES))
def test_protocol_prefix_accepted_when_allowed(images, run, module):
    make, accepted, dummy = CASES[module]
    top = images.tops["file"]
    main, args = make(images, top)
    res = run.ok(main, dict(args, allow_unsafe_backing=True))
    accepted(images, top, res)


@pytest.mark.parametrize("module", sorted(CASES))
def test_json_accepted_when_allowed(images, run, module):
    make, accepted, dummy = CASES[module]
    top = images.tops["json"]
    main, args = make(images, top)
    res, failed = run(main, dict(args, allow_unsafe_backing=True))
    assert REFUSED not in res.get("msg", "")
    if failed:
        # Not refused: the engine opened the name as a local file name. Reading json: specs
        # ({"driver": "file", "filename": ...}) is the opener's image-spec work (issue 8, point 2).
        assert "Could not open" in res["msg"], res
        pytest.xfail("the engine does not parse json: backing names yet: %s" % res["msg"])
    accepted(images, top, res)


def test_info_without_chain_reports_the_name_as_stored(images, run):
    # qemu-img info does not open the backing file: neither refusal nor option applies
    res = run.ok(info_main, dict(path=images.tops["json"]))
    assert res["backing_filename"] == images.names["json"]
    assert res["backing_filename_format"] == "qcow2"


def test_check_fails_like_qemu_img_on_a_missing_backing_file(tmp_path, run):
    qemu_img = _tool("qemu-img")
    top = str(tmp_path / "top.qcow2")
    subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-b", "gone.qcow2", "-F", "qcow2", "-u", top, "1M"],
                   check=True)
    want = subprocess.run([qemu_img, "check", "--output=json", top], capture_output=True, text=True, check=False)
    assert want.returncode == 1 and "gone.qcow2" in want.stderr
    res = run.fail(check_main, dict(path=top))
    assert "Could not open backing file" in res["msg"] and "gone.qcow2" in res["msg"]
    assert res["changed"] is False


def test_json_backing_matches_qemu_img_info(images, run):
    qemu_img = _tool("qemu-img")
    want = json.loads(subprocess.run([qemu_img, "info", "--output=json", images.tops["json"]],
                                     capture_output=True, text=True, check=True).stdout)
    res = run.ok(info_main, dict(path=images.tops["json"], allow_unsafe_backing=True))
    assert res["backing_filename"] == want["backing-filename"]
