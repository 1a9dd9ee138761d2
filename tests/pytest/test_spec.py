# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Image specifications: json:{...}, --image-opts, protocol names; qemu-img is the oracle for the
names `info` prints and for the error texts."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "plugins", "module_utils"))

from conftest import qimg  # noqa: E402
from helpers import qemu_img_create, qemu_io  # noqa: E402

from qimg import spec as S  # noqa: E402
from qimg.errors import InvalidArgument, QimgError, UnsafeImage  # noqa: E402
from qimg.image import open_image  # noqa: E402


def test_json_single_quotes_and_types():
    assert S.parse_json("{'a': 'b\\'c', \"d\": [1, -2, 0.5, true, false, null]}") == {
        "a": "b'c", "d": [1, -2, 0.5, True, False, None]}


@pytest.mark.parametrize("text,message", [
    ("", "Expecting a JSON value"),
    ("{", "JSON parse error, premature EOI"),
    ('{"a"}', "JSON parse error, missing : in object pair"),
    ('{"a":}', "JSON parse error, expecting value"),
    ('{"a":1} x', "Expecting at most one JSON value"),
    ('{"a":tru}', "JSON parse error, invalid keyword 'tru'"),
    ("{'a':1,'a':2}", "JSON parse error, duplicate key"),
    ("[" * 200 + "]" * 200, "too deeply nested"),
])
def test_json_errors(text, message):
    with pytest.raises(S.SpecError) as e:
        S.parse_json(text)
    assert message in e.value.message


def test_flatten_crumple_round_trip():
    nested = {"driver": "qcow2", "file": {"driver": "file", "filename": "x"}, "rules": [{"a": 1}, {"b": 2}]}
    flat = S.flatten(nested)
    assert flat == {"driver": "qcow2", "file.driver": "file", "file.filename": "x", "rules.0.a": 1, "rules.1.b": 2}
    assert S.crumple(flat) == nested


def test_image_opts_syntax():
    assert S.parse_image_opts("driver=qcow2,file.filename=a,,b,backing=") == {
        "driver": "qcow2", "file.filename": "a,b", "backing": ""}
    assert S.parse_image_opts("img.qcow2,ro") == {"file": "img.qcow2", "ro": "on"}
    assert S.image_spec("driver=qcow2,file.driver=file,file.filename=x", image_opts=True) == {
        "driver": "qcow2", "file": {"driver": "file", "filename": "x"}}


def test_json_and_dotted_keys_are_one_structure():
    a = S.image_spec('json:{"driver": "qcow2", "file.filename": "x"}')
    b = S.image_spec("json:{'driver': 'qcow2', 'file': {'filename': 'x'}}")
    c = S.image_spec("driver=qcow2,file.filename=x", image_opts=True)
    assert a == b == c == {"driver": "qcow2", "file": {"filename": "x"}}


def test_protocol_names():
    assert S.protocol_options("nbd", "nbd://127.0.0.1:1234/exp") == {
        "export": "exp", "server": {"type": "inet", "host": "127.0.0.1", "port": "1234"}}
    assert S.protocol_options("nbd", "nbd+unix:///e?socket=/tmp/s") == {
        "export": "e", "server": {"type": "unix", "path": "/tmp/s"}}
    assert S.protocol_options("blkdebug", "blkdebug:conf:img") == {"config": "conf", "x-image": "img"}
    assert S.protocol_options("file", "file:a:b") == {"filename": "./a:b"}  # as QEMU: not a protocol again


def test_tree_backing_null_and_children():
    t = S.build_tree(S.image_spec("json:{'driver': 'qcow2', 'file.filename': 'x', 'backing': null, "
                                  "'encrypt.key-secret': 's0', 'data-file': {'driver': 'file', 'filename': 'd'}}"))
    assert t.driver == "qcow2" and t.children["backing"] is None
    assert t.children["file"].driver == "file" and t.children["data-file"].str("filename") == "d"
    assert t.str("encrypt.key-secret") == "s0"


@pytest.fixture()
def images(tmp_path):
    qemu_img_create(tmp_path / "a.qcow2", "qcow2", "1M")
    qemu_img_create(tmp_path / "o.qcow2", "qcow2", "1M", backing="a.qcow2", backing_fmt="qcow2")
    qemu_img_create(tmp_path / "r.raw", "raw", "1M")
    qemu_io(tmp_path / "a.qcow2", "write -P 7 0 64k")
    return tmp_path


# each a name qemu-img info accepts; the "image:" line and the format must be the same
NAMES = [
    'json:{"driver":"qcow2","file.filename":"a.qcow2"}',
    "json:{'driver':'qcow2','file':{'driver':'file','filename':'o.qcow2'}}",
    'json:{"file.filename":"a.qcow2"}',
    'json:{"driver":"raw","file.filename":"r.raw","offset":4096,"size":8192}',
    'json:{"driver":"raw","file":{"driver":"null-co","size":4096}}',
    'json:{"driver":"null-co","size":1048576,"read-zeroes":true}',
    'json:{"driver":"null-co"}',
    "null-co://",
    "file:a.qcow2",
    'json:{"driver":"blkdebug","image.filename":"a.qcow2"}',
    "blkdebug::a.qcow2",
    'json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2"},"encrypt.key-secret":"s"}',
    'json:{"driver":"qcow2","file.filename":"a.qcow2","file.locking":"off"}',
    'json:{"driver":"qcow2","file.filename":"o.qcow2","backing":null}',
]


def _info_lines(proc):
    return [line for line in proc.stdout.splitlines() if line.startswith(("image:", "file format:", "virtual size:",
                                                                          "backing file:"))]


@pytest.mark.parametrize("name", NAMES)
def test_info_names_like_qemu_img(qemu_img, images, name):
    theirs = subprocess.run(["qemu-img", "info", name], cwd=str(images), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, check=True)
    ours = qimg("info", name, cwd=str(images), check=False)
    assert ours.returncode == 0, ours.stderr
    assert _info_lines(ours) == _info_lines(theirs)


IMAGE_OPTS = [
    "driver=qcow2,file.driver=file,file.filename=o.qcow2",
    "driver=raw,file.driver=null-co,file.size=4096,file.read-zeroes=on,offset=512",
    "driver=null-co,size=64k",
    "driver=blkdebug,image.driver=qcow2,image.file.filename=a.qcow2",
]


@pytest.mark.parametrize("opts", IMAGE_OPTS)
def test_image_opts_like_qemu_img(qemu_img, images, opts):
    for cmd in (["info"], ["map", "--output=json"]):
        theirs = subprocess.run(["qemu-img"] + cmd + ["--image-opts", opts], cwd=str(images), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, universal_newlines=True, check=True)
        ours = qimg(*(cmd + ["--image-opts", opts]), cwd=str(images), check=False)
        assert ours.returncode == 0, ours.stderr
        if cmd == ["info"]:
            assert _info_lines(ours) == _info_lines(theirs)
        else:
            strip = [dict((k, v) for k, v in e.items() if k != "offset") for e in json.loads(theirs.stdout)]
            assert [dict((k, v) for k, v in e.items() if k != "offset") for e in json.loads(ours.stdout)] == strip


BAD = [
    'json:{"driver":"foo"}',
    "json:{",
    "json:[1]",
    'json:{"driver":"qcow2","file.filename":"a.qcow2","foo":1}',
    'json:{"driver":"qcow2","file":{"driver":"file","filename":"a.qcow2","bar":1}}',
    'json:{"driver":"qcow2"}',
    'json:{"driver":"file"}',
    'json:{"driver":"file","filename":"nonexist"}',
    'json:{"driver":"qcow2","file":"a.qcow2"}',
    'json:{"driver":"null-co","x":{"y":1}}',
    'json:{"driver":5}',
    'json:{"driver":"raw","file":{"driver":"null-co","size":4096},"offset":512,"size":4096}',
    'json:{"driver":"raw","file":{"driver":"null-co","size":4096},"size":100}',
    'json:{"driver":"raw","file.filename":"r.raw","offset":2000000}',
    'json:{"driver":"qcow2","file.filename":"a.qcow2","file.locking":"maybe"}',
    'json:{"driver":"qcow2","file.filename":"a.qcow2","file.aio":"native"}',
    'json:{"driver":"blkdebug","image.driver":"null-co","inject-error":[{"event":"nonex"}]}',
    'json:{"driver":"blkdebug","image.driver":"null-co","inject-error":[{"iotype":"read"}]}',
    "blkdebug:nonexist:a.qcow2",
    "blkdebug:a.qcow2",
    'json:{"driver":"qcow2","file.filename":"a.qcow2","backing":"r.raw"}',
    'json:{"driver":"qcow2","file":{"driver":"blkdebug","image.filename":"a.qcow2","inject-error":[{"event":"none"}]}}',
    'json:{"file":{"driver":"blkdebug","image.filename":"a.qcow2","inject-error":[{"event":"none"}]}}',
]


@pytest.mark.parametrize("name", BAD)
def test_bad_specs_give_qemu_img_errors(qemu_img, images, name):
    theirs = subprocess.run(["qemu-img", "info", name], cwd=str(images), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, check=False)
    ours = qimg("info", name, cwd=str(images), check=False)
    assert ours.returncode == 1 and "Traceback" not in ours.stderr, ours.stderr
    assert ours.stderr.splitlines()[0].replace("qimg:", "qemu-img:") == theirs.stderr.splitlines()[0]


def test_image_opts_and_format_exclusive(images):
    ours = qimg("info", "-f", "qcow2", "--image-opts", "driver=qcow2,file.filename=a.qcow2", cwd=str(images),
                check=False)
    assert ours.returncode == 1 and "--image-opts and --format are mutually exclusive" in ours.stderr


def test_backing_null_cuts_the_chain(images):
    name = "json:{'driver':'qcow2','file.filename':'%s','backing':null}" % (images / "o.qcow2")
    with open_image(name) as dev:
        assert dev.backing is None and dev.read(0, 4) == b"\0" * 4
    with open_image(str(images / "o.qcow2")) as dev:
        assert dev.read(0, 4) == b"\x07" * 4


def test_backing_given_in_the_spec(images):
    spec = {"driver": "qcow2", "file": {"filename": str(images / "o.qcow2")},
            "backing": {"driver": "raw", "file": {"filename": str(images / "r.raw")}}}
    with open_image(spec) as dev:
        assert dev.backing.format_name == "raw" and dev.read(0, 4) == b"\0" * 4


@pytest.mark.parametrize("name", ['json:{"driver": "raw", "file": {"driver": "file", "filename": "/etc/hostname"}}',
                                  "null-co://", "blkdebug::/etc/hostname"])
def test_backing_names_from_images_stay_refused(qemu_img, tmp_path, name):
    top = tmp_path / "top.qcow2"
    qemu_img_create(top, "qcow2", "1M", backing=name, backing_fmt="raw", unsafe=True)
    with pytest.raises(UnsafeImage):
        open_image(str(top))
    with open_image(str(top), allow_unsafe_backing=True) as dev:
        assert dev.backing is not None


def test_object_secret_passed_through(images):
    proc = qimg("info", "--object", "secret,id=s0,data=pw", "--image-opts",
                "driver=qcow2,file.filename=a.qcow2,encrypt.key-secret=s0", cwd=str(images), check=False)
    assert proc.returncode == 0, proc.stderr
    proc = qimg("info", "--object", "secret,id=s0", "a.qcow2", cwd=str(images), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr


def test_spec_errors_are_qimg_errors():
    for text in ("json:{", 'json:{"driver": "nbd"}', 'json:{"driver": "blkdebug"}', "json:{'driver': 'raw'}"):
        with pytest.raises(QimgError) as e:
            open_image(text)
        assert isinstance(e.value, InvalidArgument) and "\n" not in str(e.value)


@pytest.mark.parametrize("args,message", [
    (['json:{"driver": "ssh", "host": "localhost", "port": "0", "path": "/foo"}'],
     "Failed to connect to 'localhost:0': Connection refused"),
    (["--image-opts", "driver=ssh,host=localhost,port=0,path=/foo"],
     "Failed to connect to 'localhost:0': Connection refused"),
    (['json:{"driver": "ssh", "host": "localhost", "port": 0.42, "path": "/foo"}'],
     "Parameter 'port' expects a number"),
    (["--image-opts", "driver=ssh,host=localhost,port=0.42,path=/foo"], "Parameter 'port' expects a number"),
])
def test_ssh_errors(args, message):
    """As iotest 162: typed parameters, and a clear error from the connection (loopback only)."""
    proc = qimg("info", *args, check=False)
    assert proc.returncode == 1
    assert proc.stderr == "qimg: Could not open '%s': %s\n" % (args[-1], message)


def test_ssh_reachable_server_is_not_supported(tmp_path):
    import socket
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    try:
        port = srv.getsockname()[1]
        proc = qimg("info", "--image-opts", "driver=ssh,host=127.0.0.1,port=%d,path=/x" % port, check=False)
    finally:
        srv.close()
    assert proc.returncode == 1 and "'ssh' protocol is not supported" in proc.stderr


def test_cache_direct_on_a_file_node(qemu_img, tmp_path):
    """cache.direct=on: O_DIRECT through the cache-mode support of the file node (data extents at
    EOF in whole alignment blocks, as iotest 253); a build without it says so cleanly."""
    img = tmp_path / "u.raw"
    qemu_img_create(img, "raw", str((1 << 20) - 1))
    qemu_io(img, "write 983040 65535", fmt="raw")
    opts = "driver=raw,file.driver=file,file.filename=%s,cache.direct=on" % img
    theirs = subprocess.run(["qemu-img", "map", "--output=json", "--image-opts", opts], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True, check=False)
    ours = qimg("map", "--output=json", "--image-opts", opts, check=False)
    assert "Traceback" not in ours.stderr
    if "not supported by this build" in ours.stderr:
        pytest.skip("the file node has no cache modes yet")
    assert ours.returncode == theirs.returncode
    if theirs.returncode == 0:
        assert json.loads(ours.stdout) == json.loads(theirs.stdout)


def test_quorum_like_qemu_img(qemu_img, images):
    """iotest 110: qcow2 over quorum: a json: name, and no directory for relative backing names."""
    import shutil
    shutil.copy(str(images / "o.qcow2"), str(images / "o2.qcow2"))
    name = ("json:{'driver':'qcow2','file':{'driver':'quorum','vote-threshold':1,'children':["
            "{'driver':'file','filename':'o.qcow2'},{'driver':'file','filename':'o2.qcow2'}]}}")
    theirs = subprocess.run(["qemu-img", "info", name], cwd=str(images), stdout=subprocess.PIPE,
                            universal_newlines=True, check=True)
    ours = qimg("info", name, cwd=str(images), check=False)
    assert ours.returncode == 0, ours.stderr
    assert _info_lines(ours) == _info_lines(theirs)
    assert "(cannot determine actual path)" in ours.stdout
    for bad, message in [("'vote-threshold':3", "threshold may not exceed children count"),
                         ("'vote-threshold':0", "Parameter 'vote-threshold' expects a value >= 1")]:
        proc = qimg("info", name.replace("'vote-threshold':1", bad), cwd=str(images), check=False)
        assert proc.returncode == 1 and message in proc.stderr


def test_file_prefix_with_colons(qemu_img, tmp_path):
    """iotest 126: file:NAME is the file protocol; a rest that looks like a protocol gets ./"""
    assert S.file_path("file:image:top.qcow2") == "./image:top.qcow2"
    assert S.file_path("file:/x/a:b.qcow2") == "/x/a:b.qcow2"
    qimg("create", "-f", "qcow2", "base.qcow2", "1M", cwd=str(tmp_path))
    proc = qimg("create", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "file:image:top.qcow2", cwd=str(tmp_path))
    assert (tmp_path / "image:top.qcow2").exists(), proc.stderr
    ours = qimg("info", "file:image:top.qcow2", cwd=str(tmp_path))
    theirs = subprocess.run(["qemu-img", "info", "file:image:top.qcow2"], cwd=str(tmp_path), stdout=subprocess.PIPE,
                            universal_newlines=True, check=True)
    assert _info_lines(ours) == _info_lines(theirs)
    assert "image: ./image:top.qcow2" in ours.stdout and "(actual path: ./base.qcow2)" in ours.stdout


def test_direct_extents_round_data_up_at_eof():
    """O_DIRECT block status: a data extent ending in a partial alignment block is rounded up."""
    from qimg.image import DirectExtents

    class Node(object):
        fd = None

        @staticmethod
        def extents(offset, n):
            return [(0, 983040, False), (983040, 65535, True), (1048575, 1, False)]
    assert DirectExtents(Node(), 4096).extents(0, 1 << 20) == [(0, 983040, False), (983040, 65536, True)]


def test_convert_target_image_opts(qemu_img, images):
    """convert -n --target-image-opts: the target is a spec (its driver, no -O), as qemu-img."""
    qemu_img_create(images / "t.qcow2", "qcow2", "1M")
    proc = qimg("convert", "-n", "--target-image-opts", "a.qcow2", "driver=qcow2,file.filename=t.qcow2",
                cwd=str(images), check=False)
    assert proc.returncode == 0, proc.stderr
    assert subprocess.run(["qemu-img", "compare", "a.qcow2", "t.qcow2"], cwd=str(images), check=False).returncode == 0
    for args in (["-n", "-O", "qcow2", "--target-image-opts"], ["--target-image-opts"]):
        theirs = subprocess.run(["qemu-img", "convert"] + args + ["a.qcow2", "driver=qcow2,file.filename=t.qcow2"],
                                cwd=str(images), stderr=subprocess.PIPE, universal_newlines=True, check=False)
        ours = qimg(*(["convert"] + args + ["a.qcow2", "driver=qcow2,file.filename=t.qcow2"]), cwd=str(images),
                    check=False)
        assert (ours.returncode, ours.stderr.replace("qimg:", "qemu-img:")) == (theirs.returncode, theirs.stderr)
