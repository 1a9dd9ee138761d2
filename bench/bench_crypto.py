# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark encrypted qcow2 (LUKS, aes-256-xts-plain64) data paths against qemu-img.

Not a test: run `.venv/bin/python bench/bench_crypto.py [--size-mib N] [--quick]`. In a temporary
directory it builds a raw file of N MiB (default 512) of random data, then times, alternately:
  encrypt: qemu-img convert raw -> qcow2-LUKS   vs  our engine copying the raw into a qcow2-LUKS
           it created (open_image(..., secrets=, key_secret=).write in 2 MiB pieces);
  decrypt: qemu-img convert qcow2-LUKS -> raw   vs  our engine reading that qcow2-LUKS into a raw;
  convert encrypt / convert decrypt: the same two conversions through `bin/qimg convert`
           (the whole command: start-up, PBKDF2 of the key slot, the pipeline);
and the bare SectorCipher throughput. It prints the median of each and the ratio ours/qemu-img.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
from qimg.crypto.ciphers import SectorCipher  # noqa: E402
from qimg.crypto.secrets import SecretStore  # noqa: E402
from qimg.image import open_image  # noqa: E402
from qimg.ops.create import create_image  # noqa: E402

MiB = 1 << 20
PW = "benchmark"
OBJ = "secret,id=s0,data=" + PW
CHUNK = 2 * MiB
QIMG = [sys.executable, os.path.join(ROOT, "bin", "qimg")]


def qemu(cmd):
    for dummy in range(30):
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
        if p.returncode == 0:
            return
        if "Unable to get accurate CPU usage" not in p.stderr:
            raise SystemExit(p.stderr)
    raise SystemExit(p.stderr)


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=512)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    a = ap.parse_args()
    size = (64 if a.quick else a.size_mib) * MiB
    d = tempfile.mkdtemp(prefix="qimg-bench-crypto-")
    store = SecretStore()
    store.add_object(OBJ)
    try:
        raw = os.path.join(d, "in.raw")
        with open(raw, "wb") as f:
            for dummy in range(size // (64 * MiB) or 1):
                f.write(os.urandom(min(size, 64 * MiB)))
        enc = os.path.join(d, "enc.qcow2")
        spec = "driver=qcow2,file.filename=%s,encrypt.key-secret=s0" % enc
        results = {}

        def q_encrypt():
            if os.path.exists(enc):
                os.unlink(enc)
            qemu(["qemu-img", "convert", "--object", OBJ, "-O", "qcow2", "-o",
                  "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", raw, enc])

        def o_encrypt():
            out = os.path.join(d, "ours.qcow2")
            create_image(out, "qcow2", size, {"encrypt.format": "luks", "encrypt.key-secret": "s0",
                                              "encrypt.iter-time": "10"}, secrets=store)
            fd = os.open(raw, os.O_RDONLY)
            try:
                with open_image(out, read_only=False, secrets=store, key_secret="s0") as dev:
                    for off in range(0, size, CHUNK):
                        dev.write(off, os.pread(fd, CHUNK, off))
                    dev.flush()
            finally:
                os.close(fd)
            os.unlink(out)

        def q_decrypt():
            out = os.path.join(d, "q.raw")
            qemu(["qemu-img", "convert", "--object", OBJ, "--image-opts", spec, "-O", "raw", out])
            os.unlink(out)

        def o_decrypt():
            out = os.path.join(d, "o.raw")
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                with open_image(enc, secrets=store, key_secret="s0") as dev:
                    for off in range(0, size, CHUNK):
                        os.pwrite(fd, dev.read(off, CHUNK), off)
            finally:
                os.close(fd)
            os.unlink(out)

        def c_encrypt():
            out = os.path.join(d, "cli.qcow2")
            subprocess.run(QIMG + ["convert", "--object", OBJ, "-O", "qcow2", "-o",
                                   "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", raw, out],
                           check=True)
            os.unlink(out)

        def c_decrypt():
            out = os.path.join(d, "cli.raw")
            subprocess.run(QIMG + ["convert", "--object", OBJ, "--image-opts", spec, "-O", "raw", out], check=True)
            os.unlink(out)

        q_encrypt()
        pairs = (("qemu-img encrypt", q_encrypt), ("ours encrypt", o_encrypt),
                 ("qemu-img decrypt", q_decrypt), ("ours decrypt", o_decrypt),
                 ("qemu-img convert encrypt", q_encrypt), ("ours convert encrypt", c_encrypt),
                 ("qemu-img convert decrypt", q_decrypt), ("ours convert decrypt", c_decrypt))
        for name, fn in pairs:
            results[name] = []
        for dummy in range(a.runs):
            for name, fn in pairs:
                results[name].append(timed(fn))
        sc = SectorCipher("aes-256", "xts", os.urandom(64))
        buf = os.urandom(CHUNK)
        t = timed(lambda: [sc.decrypt(i * (CHUNK // 512), buf) for i in range(64)])
        print("%d MiB, %d runs (medians)" % (size // MiB, a.runs))
        for op in ("encrypt", "decrypt", "convert encrypt", "convert decrypt"):
            q = statistics.median(results["qemu-img " + op])
            o = statistics.median(results["ours " + op])
            print("%-16s qemu-img %6.2f s   ours %6.2f s   ratio %.2f" % (op, q, o, o / q))
        print("SectorCipher aes-256-xts: %.0f MB/s" % (64 * CHUNK / t / 1e6))
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
