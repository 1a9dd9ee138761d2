# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark start-up (`info` of a small qcow2) and the scattered 2 GiB case against qemu-img.

Not a test: run `python3 bench/bench_startup.py [--quick]`. It builds, in a temporary directory
that it removes afterwards,
  (s) a 64 MiB qcow2 with a few written clusters (made by qemu-img and qemu-io);
  (d) a 2 GiB sparse raw with 384 MiB of data scattered by qemu-io writes (1536 writes of 256 KiB
      at random 64 KiB-aligned offsets, a different pattern byte each), and its qcow2 (qemu-img);
then times `info` of (s) (start-up: the command's whole cost is importing and opening), qcow2 -> raw
of (d) and `compare` of (d) raw against its qcow2, our command and qemu-img's alternately, with the
run pattern of bench_convert.py (outputs removed and `sync` before each run, one untimed run of
each first; medians, ratio, fastest runs, peak RSS).
Our command is `bin/qimg` under --python (default: Debian's own /usr/bin/python3, as a user runs
it; not a version-manager shim), bytecode cached.
--quick: a 256 MiB image with 48 MiB of data and 3 pairs (smoke test of the script).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import datetime
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_convert import QIMG, Case, bench, mib  # noqa: E402

MiB = 1024 ** 2
GiB = 1024 ** 3


def build_scattered(path, size, data, write=256 * 1024, seed=3):
    """A sparse raw of `size` with `data` bytes written by qemu-io at random 64 KiB-aligned offsets."""
    rnd = random.Random(seed)
    slot = 2 * write                    # one write per slot, at a random 64 KiB step inside it: no overlaps
    chosen = sorted(rnd.sample(range(size // slot), data // write))
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path, str(size)], check=True)
    cmds = []
    for i, k in enumerate(chosen):
        offset = k * slot + rnd.randrange((slot - write) // (64 * 1024) + 1) * 64 * 1024
        cmds += ["-c", "write -q -P %d %d %d" % (1 + i % 254, offset, write)]
    for k in range(0, len(cmds), 512):
        subprocess.run(["qemu-io", "-f", "raw"] + cmds[k:k + 512] + [path], check=True,
                       stdout=subprocess.DEVNULL)
    return path


def main():
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small image, 3 pairs")
    parser.add_argument("--pairs", type=int, default=None, help="timed runs of each command (default 7)")
    parser.add_argument("--info-pairs", type=int, default=30, help="timed runs of info (default 30)")
    parser.add_argument("--python", default="/usr/bin/python3", help="interpreter for bin/qimg")
    parser.add_argument("--dir", default=None, help="where to make the temporary directory")
    parser.add_argument("--only", default=None, help="run only cases whose name contains this")
    args = parser.parse_args()
    if shutil.which("qemu-img") is None or shutil.which("qemu-io") is None:
        raise SystemExit("qemu-img and qemu-io are needed (Debian package qemu-utils)")
    pairs = args.pairs or (3 if args.quick else 7)
    ours = [args.python, QIMG]
    subprocess.run(ours + ["--version"], stdout=subprocess.DEVNULL, check=True)  # byte-compile once
    d = tempfile.mkdtemp(prefix="qimg-bench-startup-", dir=args.dir)
    rows = []
    try:
        small = os.path.join(d, "s.qcow2")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", small, "64M"], check=True)
        subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -q 0 64k", "-c", "write -q 32M 128k", small],
                       check=True, stdout=subprocess.DEVNULL)
        size, data = (256 * MiB, 48 * MiB) if args.quick else (2 * GiB, 384 * MiB)
        print("building images in %s ..." % d, file=sys.stderr)
        t0 = time.perf_counter()
        d_raw = build_scattered(os.path.join(d, "d.raw"), size, data)
        d_qcow2 = os.path.join(d, "d.qcow2")
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", d_raw, d_qcow2], check=True)
        print("built in %.1f s" % (time.perf_counter() - t0), file=sys.stderr)
        out = os.path.join(d, "out")
        label = "%d MiB/%d MiB" % (size // MiB, data // MiB)
        info = ["info", small]
        conv = ["convert", "-f", "qcow2", "-O", "raw", d_qcow2, out]
        comp = ["compare", "-f", "raw", "-F", "qcow2", d_raw, d_qcow2]
        cases = [(Case("(s) info 64 MiB qcow2 (start-up)", ours + info, ["qemu-img"] + info), args.info_pairs),
                 (Case("(d) %s qcow2 -> raw" % label, ours + conv, ["qemu-img"] + conv, output=out,
                       source=d_qcow2, source_fmt="qcow2"), pairs),
                 (Case("(d) %s compare raw qcow2" % label, ours + comp, ["qemu-img"] + comp), pairs)]
        for case, n in cases:
            if args.only and args.only not in case.name:
                continue
            rows.append(bench(case, n))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    load = os.getloadavg()
    print("date: %s   nproc: %d   load: %.2f %.2f %.2f   python: %s   %s" % (
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), os.cpu_count() or 0, load[0], load[1], load[2],
        subprocess.run([args.python, "-c", "import sys; print(sys.version.split()[0])"], stdout=subprocess.PIPE,
                       universal_newlines=True, check=False).stdout.strip(),
        subprocess.run(["qemu-img", "--version"], stdout=subprocess.PIPE, universal_newlines=True,
                       check=False).stdout.splitlines()[0]))
    print("ours: %s bin/qimg; medians of %d timed pairs (info: %d)" % (args.python, pairs, args.info_pairs))
    header = ("case", "ours ms", "qemu-img ms", "ours/qemu", "fastest: ours", "qemu-img", "our peak RSS MiB",
              "qemu RSS MiB", "our out MiB", "qemu out MiB", "check")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for dummy in header) + "|")
    for name, a, b, ratio, best, best_q, rss, rss_q, osize, size_q, check in rows:
        cells = (name, a * 1000, b * 1000, ratio, best * 1000, best_q * 1000, rss, rss_q, mib(osize), mib(size_q),
                 check)
        print("| %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.0f | %.0f | %s | %s | %s |" % cells)


if __name__ == "__main__":
    main()
