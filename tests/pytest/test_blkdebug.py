# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""blkdebug: one rule engine, below a format (qcow2 over blkdebug over file) and above one
(blkdebug over qcow2); qemu-img is the oracle for the CLI outcomes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "plugins", "module_utils"))

from conftest import qimg  # noqa: E402
from helpers import qemu_img_create, qemu_io  # noqa: E402

from qimg.errors import BlockIOError, QimgError  # noqa: E402
from qimg.image import open_image  # noqa: E402
from qimg.protocols.blkdebug import Rules, parse_config  # noqa: E402
from qimg.spec import SpecError  # noqa: E402


def _conf(tmp_path, text):
    p = tmp_path / "bd.conf"
    p.write_text(text)
    return str(p)


def test_config_file_and_events(tmp_path):
    path = _conf(tmp_path, '# comment\n[inject-error]\nevent = "read_aio"\nerrno = "28"\nsector = "2"\n'
                           '[set-state]\nevent = "none"\nnew_state = "2"\n')
    assert parse_config(path) == [("inject-error", {"event": "read_aio", "errno": "28", "sector": "2"}),
                                  ("set-state", {"event": "none", "new_state": "2"})]
    r = Rules(path)
    r.check("read", 0, 4096)          # nothing armed yet
    r.event("read_aio")
    r.check("read", 0, 1024)          # sector 2 is byte 1024: outside [0, 1024)
    with pytest.raises(BlockIOError) as e:
        r.check("read", 1024, 512)
    assert e.value.errno == errno.ENOSPC and e.value.offset == 1024
    r.check("block-status", 1024, 512)   # not an iotype of the default set
    r.event("none")
    assert r.state == 2


def test_once_and_state():
    r = Rules(None, inject=[{"event": "none", "once": "on", "state": 1}], set_state=[
        {"event": "l2_load", "state": 1, "new_state": 3}])
    r.event("none")
    with pytest.raises(BlockIOError):
        r.check("write", 0, 1)
    r.check("write", 0, 1)            # once: gone
    r.event("l2_load")
    assert r.state == 3
    r.event("none")                   # the rule was for state 1 (and is gone anyway)
    r.check("read", 0, 1)


@pytest.mark.parametrize("text,message", [
    ('[bogus]\n', "There is no option group 'bogus'"),
    ('[inject-error]\nevent = read_aio\n', "parse error"),
    ('event = "x"\n', "parse error"),
    ('[inject-error]\nevent = "nope"\n', "invalid parameter value: nope"),
    ('[inject-error]\nerrno = "5"\n', "Missing event name for rule"),
    ('[inject-error]\nevent = "none"\nfoo = "1"\n', "Invalid parameter 'foo'"),
])
def test_bad_config_files(tmp_path, text, message):
    with pytest.raises(SpecError) as e:
        Rules(_conf(tmp_path, text))
    assert message in e.value.message


@pytest.fixture()
def img(tmp_path):
    p = tmp_path / "t.qcow2"
    qemu_img_create(p, "qcow2", "1M", options={"cluster_size": 4096})
    qemu_io(p, "write -P 102 512 512")
    return p


def test_below_a_format_compare_like_qemu_img(tmp_path, img):
    """iotest 074: an error armed by the first data read fails compare with qemu-img's message."""
    other = tmp_path / "u.qcow2"
    qemu_img_create(other, "qcow2", "1M", options={"cluster_size": 4096})
    conf = _conf(tmp_path, '[inject-error]\nevent = "read_aio"\nerrno = "5"\nonce ="off"\n')
    name = "blkdebug:%s:%s" % (conf, img)
    theirs = subprocess.run(["qemu-img", "compare", name, str(other)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            universal_newlines=True, check=False)
    ours = qimg("compare", name, str(other), check=False)
    assert (ours.returncode, ours.stdout) == (theirs.returncode, theirs.stdout) == (4, "")
    assert ours.stderr.replace("qimg:", "qemu-img:") == theirs.stderr


def test_above_a_format_sector_rules(img):
    spec = {"driver": "blkdebug", "image": {"driver": "qcow2", "file": {"filename": str(img)}},
            "inject-error": [{"event": "none", "iotype": "read", "errno": 5, "sector": 3},
                             {"event": "none", "iotype": "block-status", "errno": 5, "sector": 8}]}
    with open_image(spec) as dev:
        assert dev.format_name == "blkdebug" and dev.size == 1 << 20
        assert dev.read(512, 512) == b"\x66" * 512      # sector 1
        with pytest.raises(BlockIOError):
            dev.read(1024, 1024)                         # covers sector 3
        dev.block_status(0, 4096)
        with pytest.raises(BlockIOError):
            dev.block_status(4096, 4096)                 # covers sector 8
        assert dev.map_filename == str(img)


def test_filter_map_and_info_like_qemu_img(tmp_path, img):
    base = tmp_path / "b.qcow2"
    qemu_img_create(base, "qcow2", "1M")
    qemu_io(base, "write -P 1 64k 64k")
    subprocess.run(["qemu-img", "rebase", "-u", "-b", str(base), "-F", "qcow2", str(img)], check=True)
    opts = "driver=blkdebug,image.driver=qcow2,image.file.driver=file,image.file.filename=%s,align=4k" % img
    for cmd in (["map"], ["info"]):
        theirs = subprocess.run(["qemu-img"] + cmd + ["--image-opts", opts], stdout=subprocess.PIPE,
                                universal_newlines=True, check=True)
        ours = qimg(*(cmd + ["--image-opts", opts]), check=False)
        assert (ours.returncode, ours.stdout) == (0, theirs.stdout), ours.stderr


def test_bad_limits_and_missing_image(tmp_path, img):
    for opts, message in [("driver=blkdebug,image.driver=null-co,align=3", "Cannot meet constraints with align 3"),
                          ("driver=blkdebug,image.driver=null-co,align=4k,max-transfer=6k",
                           "Cannot meet constraints with max-transfer 6144"),
                          ("driver=blkdebug", 'A block device must be specified for "image"')]:
        proc = qimg("info", "--image-opts", opts, check=False)
        assert proc.returncode == 1 and proc.stderr == "qimg: Could not open '%s': %s\n" % (opts, message)
    with pytest.raises(QimgError):
        open_image("blkdebug:%s:%s" % (tmp_path / "missing.conf", img))


def test_convert_salvage_like_qemu_img(tmp_path):
    """iotest 251 in small: --salvage warns per failing block status query and per unreadable
    sector, in qemu-img's order, and writes those sectors as zeros."""
    src = tmp_path / "s.qcow2"
    qemu_img_create(src, "qcow2", "8M")
    qemu_io(src, "write -P 42 0 8M")
    rules = [("block-status", 4100), ("read", 2000), ("read", 4100), ("read", 6000), ("read", 6001)]
    rule = "{'event': 'none', 'iotype': '%s', 'errno': 5, 'sector': %d}"
    name = ("json:{'driver': 'blkdebug', 'image': {'driver': 'qcow2', 'file': {'driver': 'file', 'filename': '%s'}},"
            " 'inject-error': [%s]}" % (src, ", ".join(rule % r for r in rules)))
    outs = []
    for tool, out in (("qemu-img", tmp_path / "theirs.raw"), ("ours", tmp_path / "ours.raw")):
        cmd = ["convert", "--salvage", "-O", "raw", name, str(out)]
        proc = subprocess.run(["qemu-img"] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, check=False) if tool == "qemu-img" else qimg(*cmd, check=False)
        # (qemu-img's parallel requests may finish in another order: the set of warnings counts)
        outs.append((proc.returncode, sorted(proc.stderr.replace("qimg:", "qemu-img:").splitlines())))
    assert outs[0] == outs[1]
    assert "qemu-img: warning: error while reading offset 3072000: Input/output error" in outs[1][1]
    ours = (tmp_path / "ours.raw").read_bytes()
    assert ours == (tmp_path / "theirs.raw").read_bytes()
    assert ours[2000 * 512:2001 * 512] == bytes(512) and ours[4100 * 512:4101 * 512] == bytes(512)
