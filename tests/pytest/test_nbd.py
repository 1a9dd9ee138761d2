# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The NBD client against the real qemu-nbd (unix socket and 127.0.0.1 only)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), "plugins", "module_utils"))

from conftest import qimg  # noqa: E402
from helpers import qemu_img_create, qemu_io  # noqa: E402

from qimg.errors import QimgError  # noqa: E402
from qimg.image import open_image  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("qemu-nbd") is None, reason="qemu-nbd missing")


class Server(object):
    def __init__(self, args, sock=None, port=None):
        self.sock, self.port = sock, port
        where = ["-k", sock] if sock else ["-b", "127.0.0.1", "-p", str(port)]
        self.proc = subprocess.Popen(["qemu-nbd", "-t"] + where + args, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        deadline = time.time() + 10
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("qemu-nbd failed: %s" % self.proc.stderr.read())
            if sock and os.path.exists(sock):
                return
            if port:
                try:
                    socket.create_connection(("127.0.0.1", port), 0.2).close()
                    return
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("qemu-nbd did not start")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


@pytest.fixture()
def chain(tmp_path):
    base, top = tmp_path / "base.qcow2", tmp_path / "top.qcow2"
    qemu_img_create(base, "qcow2", "4M")
    qemu_io(base, "write -P 1 0 2M")
    qemu_img_create(top, "qcow2", "4M", backing=str(base), backing_fmt="qcow2")
    qemu_io(top, "write -P 2 1M 2M")
    return top


@pytest.fixture()
def server(tmp_path, chain):
    srv = Server(["-r", "-f", "qcow2", "-A", str(chain)], sock=str(tmp_path / "nbd.sock"))
    yield srv
    srv.stop()


def _json(proc):
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_read_over_unix_socket(server, chain, tmp_path):
    with open_image({"driver": "nbd", "server": {"type": "unix", "path": server.sock}}) as dev:
        assert dev.format_name == "nbd" and dev.size == 4 << 20
        assert dev.read(0, 4096) == b"\1" * 4096
        assert dev.read((1 << 20) - 2, 4) == b"\1\1\2\2"
        assert dev.read(3 << 20, 16) == b"\0" * 16
    out = tmp_path / "copy.raw"
    qimg("convert", "-O", "raw", "nbd+unix://?socket=%s" % server.sock, str(out))
    theirs = tmp_path / "theirs.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(chain), str(theirs)], check=True)
    assert out.read_bytes() == theirs.read_bytes()


def test_map_and_allocation_depth(server, chain):
    opts = "driver=nbd,server.type=unix,server.path=%s" % server.sock
    for extra in ("", ",x-dirty-bitmap=qemu:allocation-depth"):
        ours = _json(qimg("map", "--output=json", "--image-opts", opts + extra, check=False))
        theirs = json.loads(subprocess.run(["qemu-img", "map", "--output=json", "--image-opts", opts + extra],
                                           stdout=subprocess.PIPE, check=True).stdout)
        assert ours == theirs


def test_info_name_and_missing_context(server):
    proc = qimg("info", "nbd+unix://?socket=%s" % server.sock, check=False)
    assert proc.returncode == 0 and proc.stdout.startswith("image: nbd+unix://?socket=%s\n" % server.sock)
    proc = qimg("map", "--image-opts", "driver=nbd,path=%s,x-dirty-bitmap=qemu:dirty-bitmap:nope" % server.sock,
                check=False)
    assert proc.returncode == 1 and "requested x-dirty-bitmap qemu:dirty-bitmap:nope not found" in proc.stderr


def test_tcp_write_and_export_name(tmp_path):
    img = tmp_path / "w.raw"
    qemu_img_create(img, "raw", "1M")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    srv = Server(["-f", "raw", "-x", "exp", str(img)], port=port)
    try:
        with open_image("nbd://127.0.0.1:%d/exp" % port, read_only=False) as dev:
            assert dev.filename == "nbd://127.0.0.1:%d/exp" % port and dev.format_name == "raw"
            dev.write(4096, b"x" * 4096)
            dev.write_zeroes(0, 512)
            dev.flush()
        with pytest.raises(QimgError) as e:
            open_image("nbd://127.0.0.1:%d/other" % port)
        assert "other" in str(e.value) or "export" in str(e.value)
    finally:
        srv.stop()
    assert img.read_bytes()[4096:8192] == b"x" * 4096


def test_connection_errors(tmp_path):
    proc = qimg("info", "nbd+unix://?socket=%s" % (tmp_path / "none.sock"), check=False)
    assert proc.returncode == 1 and "Failed to connect to" in proc.stderr and "Traceback" not in proc.stderr
    proc = qimg("info", 'json:{"driver": "nbd", "host": -1}', check=False)
    assert proc.stderr.startswith("qimg: Could not open 'json:{\"driver\": \"nbd\", \"host\": -1}': "
                                  "address resolution failed for -1:10809")


def test_hostile_server_is_a_clean_error(tmp_path):
    """A server that sends garbage (or a huge option reply) fails the open cleanly."""
    import threading
    path = str(tmp_path / "evil.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(4)
    payloads = [b"NBDMAGIC" + b"\0" * 8, b"NBDMAGICIHAVEOPT\0\3" + b"\0" * 4 + b"\0\0\x03\xe8\x89\x04\x55\x65\xa9"
                + b"\0\0\0\x08\0\0\0\x01\xff\xff\xff\xff"]

    def serve():
        for p in payloads:
            c = srv.accept()[0]
            c.sendall(p)
            time.sleep(0.2)
            c.close()
    t = threading.Thread(target=serve)
    t.start()
    try:
        for dummy in payloads:
            with pytest.raises(QimgError) as e:
                open_image("nbd+unix://?socket=%s" % path)
            assert "\n" not in str(e.value)
    finally:
        t.join()
        srv.close()


def test_compare_opens_each_export_once(server, chain):
    """qemu-nbd serves one client at a time: compare must not connect twice (it would wait)."""
    proc = qimg("compare", "nbd+unix://?socket=%s" % server.sock, str(chain), check=False, timeout=30)
    assert (proc.returncode, proc.stdout) == (0, "Images are identical.\n"), proc.stderr
