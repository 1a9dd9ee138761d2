# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""bin/qimg checksum and ops/checksum.py: blkhash's block hash of the guest content.

The oracle: qemu-img convert -O raw of the image, hashed in this file block by block with hashlib
(H(H(block 1) || ... || H(block N) || le64(length)), 64 KiB blocks, the last one short), with
no zero detection and no threads, so the engine's shortcuts (block status, the precomputed
zero-block digest, the thread pool) are checked against the plain definition.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os
import struct
import sys

import pytest

from conftest import QIMG, oracle_in, run
from crypto_helpers import qemu_retry, secret_obj

from qimg.errors import InvalidArgument  # noqa: E402
from qimg.ops.checksum import BLOCK_SIZE, BlockHash, image_checksum  # noqa: E402

PW = "checksum-pw"


def blkhash_file(path, algorithm="sha256"):
    """The definition, over a raw file, block by block."""
    outer = hashlib.new(algorithm)
    length = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(BLOCK_SIZE)
            if not block:
                break
            outer.update(hashlib.new(algorithm, block).digest())
            length += len(block)
    outer.update(struct.pack("<Q", length))
    return outer.hexdigest()


def oracle(directory, name, algorithm="sha256", extra=()):
    """blkhash of qemu-img's raw conversion of the image."""
    out = os.path.join(directory, "oracle.raw")
    run(["qemu-img", "convert"] + list(extra) + ["-O", "raw", name, out], cwd=directory)
    try:
        return blkhash_file(out, algorithm)
    finally:
        os.unlink(out)


def qimg_checksum(directory, *args):
    proc = run([sys.executable, QIMG, "checksum"] + list(args), cwd=directory, check=False)
    assert proc.returncode == 0, proc.stderr
    digest, name = proc.stdout.rstrip("\n").split("  ", 1)
    assert name == args[-1]
    return digest


@pytest.fixture(scope="module")
def images(tmp_path_factory, qemu_img, qemu_io):
    d = str(tmp_path_factory.mktemp("csum"))
    q, io = oracle_in(d, qemu_img, qemu_io)
    # data, written zeros, holes, a block boundary crossed, a write in the short last block
    q("create", "-q", "-f", "qcow2", "a.qcow2", str(5 * 1024 * 1024 + 3 * 512))
    io("qcow2", "a.qcow2", "write -P 1 0 100k", "write -P 2 1000k 3k", "write -z 1200k 300k",
       "write -P 0 2M 128k", "write -P 3 65535 2", "write -P 4 5M 1k")
    q("convert", "-O", "raw", "a.qcow2", "a.raw")
    q("convert", "-c", "-O", "qcow2", "a.qcow2", "c.qcow2")
    q("convert", "-O", "qcow2", "-o", "cluster_size=16k,extended_l2=on", "a.qcow2", "x.qcow2")
    # a chain: a shorter base, a middle layer that zeroes part of it, a top layer
    q("create", "-q", "-f", "qcow2", "base.qcow2", "2M")
    io("qcow2", "base.qcow2", "write -P 5 0 2M")
    q("create", "-q", "-f", "qcow2", "-b", "base.qcow2", "-F", "qcow2", "mid.qcow2", "3M")
    io("qcow2", "mid.qcow2", "write -z 64k 64k", "write -P 6 2500k 10k")
    q("create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", "top.qcow2", "3M")
    io("qcow2", "top.qcow2", "write -P 7 100k 1k")
    # sparse: a large empty image, a large raw with a little data
    q("create", "-q", "-f", "qcow2", "empty.qcow2", "1G")
    q("create", "-q", "-f", "raw", "sparse.raw", "256M")
    io("raw", "sparse.raw", "write -P 8 100M 64k", "write -P 9 255M 1")
    q("create", "-q", "-f", "qcow2", "zero.qcow2", "0")
    with open(os.path.join(d, "odd.raw"), "wb") as f:    # no multiple of 512: guest size rounds up
        f.write(os.urandom(100 * 1024 + 77))
    return d


@pytest.mark.parametrize("name, fmt", [
    ("a.qcow2", "qcow2"), ("a.raw", "raw"), ("c.qcow2", "qcow2"), ("x.qcow2", "qcow2"),
    ("top.qcow2", "qcow2"), ("mid.qcow2", "qcow2"), ("empty.qcow2", "qcow2"), ("sparse.raw", "raw"),
    ("zero.qcow2", "qcow2"), ("odd.raw", "raw"),
])
def test_checksum_equals_definition(images, name, fmt):
    want = oracle(images, name, extra=["-f", fmt])
    assert qimg_checksum(images, "-f", fmt, name) == want
    assert image_checksum(os.path.join(images, name), fmt)["checksum"] == want


def test_same_content_same_digest(images):
    digests = set(qimg_checksum(images, n) for n in ("a.qcow2", "a.raw", "c.qcow2", "x.qcow2"))
    assert len(digests) == 1


@pytest.mark.parametrize("algorithm", ["md5", "sha1", "sha512", "blake2b", "sha3_256", "SHA256"])
def test_algorithms(images, algorithm):
    want = oracle(images, "top.qcow2", algorithm.lower())
    assert qimg_checksum(images, "-a", algorithm, "top.qcow2") == want
    want = oracle(images, "a.qcow2", algorithm.lower())
    assert qimg_checksum(images, "--algorithm=%s" % algorithm, "a.qcow2") == want


def test_size_not_multiple_of_block(images, tmp_path):
    path = str(tmp_path / "short.raw")
    with open(path, "wb") as f:
        f.write(os.urandom(3 * BLOCK_SIZE + 512 * 7))
    assert image_checksum(path, "raw")["checksum"] == blkhash_file(path)


def test_encrypted(tmp_path, qemu_img):
    path = str(tmp_path / "enc.qcow2")
    qemu_retry([qemu_img, "create", "-q", "-f", "qcow2", "--object", secret_obj(PW), "-o",
                "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", path, "3M"])
    spec = "driver=qcow2,file.filename=%s,encrypt.key-secret=s0" % path
    run(["qemu-io", "--object", secret_obj(PW), "--image-opts", spec, "-c", "write -P 3 70k 200k"])
    want = oracle(str(tmp_path), spec, extra=["--object", secret_obj(PW), "--image-opts"])
    assert qimg_checksum(str(tmp_path), "--object", secret_obj(PW), "--image-opts", spec) == want


def test_progress_and_force_share(images):
    import subprocess
    out = subprocess.run([sys.executable, QIMG, "checksum", "-p", "-U", "a.qcow2"], cwd=images,
                         stdout=subprocess.PIPE, check=True).stdout.decode("ascii")
    progress, line = out.rsplit("\n", 2)[:2]
    assert progress.startswith("    (0.00/100%)\r") and progress.endswith("    (100.00/100%)\r")
    assert line == "%s  a.qcow2" % oracle(images, "a.qcow2")


@pytest.mark.parametrize("args, message", [
    (["-a", "nosuch", "a.qcow2"], "qimg: Unsupported hash algorithm 'nosuch'\n"),
    (["-a", "shake_128", "a.qcow2"], "qimg: Unsupported hash algorithm 'shake_128': its digest length is not "
                                     "fixed\n"),
    (["nonexist"], "qimg: Could not open 'nonexist': Could not open 'nonexist': No such file or directory\n"),
    ([], "qimg: Expecting one image file name\nTry 'qimg --help' for more information\n"),
    (["a.qcow2", "b"], "qimg: Expecting one image file name\nTry 'qimg --help' for more information\n"),
    (["-x", "a.qcow2"], "qimg: unrecognized option '-x'\nTry 'qimg --help' for more information\n"),
])
def test_errors(images, args, message):
    proc = run([sys.executable, QIMG, "checksum"] + args, cwd=images, check=False)
    assert (proc.returncode, proc.stdout, proc.stderr) == (1, "", message)


def test_hostile_image_is_an_error(tmp_path):
    path = str(tmp_path / "bad.qcow2")
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "1M"])
    with open(path, "r+b") as f:      # an L1 table offset past the end of the file
        f.seek(40)
        f.write(struct.pack(">Q", 1 << 50))
    proc = run([sys.executable, QIMG, "checksum", path], check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


def test_unknown_algorithm_engine():
    with pytest.raises(InvalidArgument):
        image_checksum("/nonexistent", algorithm="nosuch")


def reference(data, algorithm="sha256"):
    outer = hashlib.new(algorithm)
    for i in range(0, len(data), BLOCK_SIZE):
        outer.update(hashlib.new(algorithm, data[i:i + BLOCK_SIZE]).digest())
    outer.update(struct.pack("<Q", len(data)))
    return outer.hexdigest()


def test_blockhash_streaming():
    """BlockHash.update/zero in pieces of any size: the same digest as the definition."""
    import random
    rnd = random.Random(7)
    for dummy in range(40):
        pieces = []
        for dummy2 in range(rnd.randrange(0, 8)):
            n = rnd.choice([0, 1, 511, BLOCK_SIZE - 1, BLOCK_SIZE, BLOCK_SIZE + 1, 3 * BLOCK_SIZE, 200000])
            pieces.append(bytes(n) if rnd.random() < 0.4 else os.urandom(n))
        h = BlockHash()
        for p in pieces:
            if not p.strip(b"\0") and rnd.random() < 0.7:
                h.zero(len(p))
            else:
                h.update(p)
        assert h.hexdigest() == reference(b"".join(pieces))


def test_empty_message():
    assert BlockHash().hexdigest() == hashlib.sha256(struct.pack("<Q", 0)).hexdigest()
