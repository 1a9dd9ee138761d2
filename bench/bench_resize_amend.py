# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark `qimg amend` and `qimg resize` against qemu-img on a 1 TiB qcow2 image.

Not a test: run `.venv/bin/python bench/bench_resize_amend.py [--quick] [--pairs N]`. In a temporary
directory (removed afterwards) qemu-img makes a 1 TiB qcow2 image with preallocation=metadata (every
L2 table allocated, 16 Mi data clusters with a refcount each: ~160 MiB of metadata, the file sparse).
Then, for each of
  amend -o refcount_bits=64, amend -o compat=0.10, resize to 2 TiB,
our command and qemu-img's run alternately, each on a fresh sparse copy of the image (the copy is
not timed), after one untimed run of each (warm page cache). It prints the median wall time of
each tool, the ratio ours/qemu-img of the medians and the fastest run of each, and checks the
result of our last run with `qemu-img check`.
--quick: a 64 GiB image and 2 pairs, a smoke test of the script.
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
QIMG = os.path.join(ROOT, "bin", "qimg")
GiB = 1024 ** 3


def timed(cmd):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True,
                          check=False)
    elapsed = time.perf_counter() - t0
    if proc.returncode:
        raise SystemExit("%s failed (%d): %s" % (cmd, proc.returncode, proc.stderr))
    return elapsed


def fresh_copy(base, dest):
    if os.path.exists(dest):
        os.unlink(dest)
    subprocess.run(["cp", "--sparse=always", base, dest], check=True)
    os.sync()  # the copy's dirty pages must not be flushed by the first fsync of the timed command


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--pairs", type=int, default=None)
    args = parser.parse_args()
    size = 64 * GiB if args.quick else 1024 * GiB
    pairs = args.pairs or (2 if args.quick else 3)
    qemu_img = shutil.which("qemu-img")
    if qemu_img is None:
        raise SystemExit("qemu-img is needed (the reference)")
    work = tempfile.mkdtemp(prefix="qimg-bench-resize-amend.", dir=os.environ.get("BENCH_DIR"))
    try:
        base = os.path.join(work, "base.qcow2")
        t0 = time.perf_counter()
        subprocess.run([qemu_img, "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", base, str(size)],
                       check=True)
        print("image: %d GiB qcow2, preallocation=metadata (built in %.1f s); python %s; %d pairs"
              % (size // GiB, time.perf_counter() - t0, sys.version.split()[0], pairs))
        target = os.path.join(work, "t.qcow2")
        cases = [("amend refcount_bits=64", ["amend", "-o", "refcount_bits=64"]),
                 ("amend compat=0.10", ["amend", "-o", "compat=0.10"]),
                 ("resize to %d GiB" % (2 * size // GiB), ["resize", None, str(2 * size)])]
        worst = 0.0
        print("%-24s %10s %10s %7s %10s %10s" % ("case", "qimg s", "qemu-img s", "ratio", "qimg min", "qemu min"))
        for name, argv in cases:
            def cmd(tool):
                if argv[0] == "resize":
                    return tool + ["resize", "-q", target, argv[2]]
                return tool + argv + [target]
            ours_cmd = cmd([sys.executable, QIMG])
            theirs_cmd = cmd([qemu_img])
            times = {"ours": [], "theirs": []}
            for k in range(pairs + 1):
                for who, c in (("ours", ours_cmd), ("theirs", theirs_cmd)):
                    fresh_copy(base, target)
                    t = timed(c)
                    if k:
                        times[who].append(t)
            fresh_copy(base, target)
            timed(ours_cmd)
            check = subprocess.run([qemu_img, "check", target], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   universal_newlines=True, check=False)
            if check.returncode:
                raise SystemExit("qemu-img check after our %s: %s" % (name, check.stdout))
            ours, theirs = statistics.median(times["ours"]), statistics.median(times["theirs"])
            ratio = ours / theirs if theirs else float("inf")
            worst = max(worst, ratio)
            print("%-24s %10.3f %10.3f %7.2f %10.3f %10.3f"
                  % (name, ours, theirs, ratio, min(times["ours"]), min(times["theirs"])))
        print("worst ratio: %.2f (goal <= 1.0)" % worst)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
