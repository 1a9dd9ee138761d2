# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark `qimg snapshot -c` and `-d` against qemu-img on a large image with every L2 table allocated.

Not a test: run `python3 bench/bench_snapshot.py [--size 1T] [--pairs 3]`. It builds, in a temporary
directory that it removes afterwards, a qcow2 image of --size (default 1 TiB) made by
`qemu-img create -o preallocation=metadata` (every L2 table and every L2 entry allocated: 2048 L2
tables and 16 Mi refcounts for 1 TiB; the file is sparse, ~160 MiB on disk) and a copy of it with one
snapshot. Each timed run works on a fresh sparse copy (`cp --sparse=always`, not timed): our
`bin/qimg snapshot -c` / `-d` and qemu-img's alternately, each once untimed first. It prints medians,
the ratio ours/qemu-img, the fastest run of each and the peak RSS of each command (ru_maxrss of the
child), then our peak RSS on an image twice the size (memory must not grow with the image: the
caches are bounded), and `qemu-img check` of our outputs.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QIMG = os.path.join(ROOT, "bin", "qimg")

# fork/exec wrapper: the child's own wall time, exit code and ru_maxrss (see bench_convert.py)
WRAPPER = r"""
import os, sys, time
t0 = time.perf_counter()
pid = os.fork()
if pid == 0:
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    finally:
        os._exit(127)
dummy, status, usage = os.wait4(pid, 0)
elapsed = time.perf_counter() - t0
code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
print("%r %d %d" % (elapsed, code, usage.ru_maxrss))
"""


def run_measured(cmd):
    proc = subprocess.run([sys.executable, "-c", WRAPPER] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False)
    elapsed, code, rss = proc.stdout.split()
    if int(code):
        raise SystemExit("%s failed (%s): %s" % (cmd, code, proc.stderr))
    return float(elapsed), int(rss) / 1024.0


def sparse_copy(src, dest):
    subprocess.run(["cp", "--sparse=always", src, dest], check=True)


def build(d, size):
    base = os.path.join(d, "base-%s.qcow2" % size)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "preallocation=metadata", base, size],
                   check=True)
    snap = os.path.join(d, "snap-%s.qcow2" % size)
    sparse_copy(base, snap)
    subprocess.run(["qemu-img", "snapshot", "-c", "s1", snap], check=True)
    return base, snap


def one(source, work, tool, action):
    sparse_copy(source, work)
    prog = [sys.executable, QIMG] if tool == "ours" else ["qemu-img"]
    return run_measured(prog + ["snapshot", action, "s1", work])


def bench(name, source, work, action, pairs):
    one(source, work, "ours", action)
    one(source, work, "qemu", action)
    times = {"ours": [], "qemu": []}
    rss = {"ours": [], "qemu": []}
    for dummy in range(pairs):
        for tool in ("ours", "qemu"):
            t, r = one(source, work, tool, action)
            times[tool].append(t)
            rss[tool].append(r)
    one(source, work, "ours", action)
    check = subprocess.run(["qemu-img", "check", work], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           universal_newlines=True, check=False)
    verdict = "clean" if check.returncode == 0 and "No errors were found" in check.stdout else "NOT CLEAN"
    m_ours, m_qemu = statistics.median(times["ours"]), statistics.median(times["qemu"])
    return (name, m_ours, m_qemu, m_ours / m_qemu, min(times["ours"]), min(times["qemu"]), max(rss["ours"]),
            max(rss["qemu"]), verdict)


def main():
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1T", help="virtual size of the image (default 1T)")
    parser.add_argument("--large", default=None, help="size for the memory comparison (default twice --size)")
    parser.add_argument("--pairs", type=int, default=3, help="timed runs of each command (default 3)")
    parser.add_argument("--dir", default=None, help="where to make the temporary directory")
    args = parser.parse_args()
    if shutil.which("qemu-img") is None:
        raise SystemExit("qemu-img is needed (Debian package qemu-utils)")
    units = {"G": 1, "T": 1024}
    gib = int(args.size[:-1]) * units[args.size[-1].upper()]
    large = args.large or "%dG" % (2 * gib)
    d = tempfile.mkdtemp(prefix="qimg-bench-snapshot-", dir=args.dir)
    rows = []
    try:
        t0 = time.perf_counter()
        base, snap = build(d, args.size)
        print("built %s in %.1f s" % (args.size, time.perf_counter() - t0), file=sys.stderr)
        work = os.path.join(d, "work.qcow2")
        rows.append(bench("create, %s, every L2 allocated" % args.size, base, work, "-c", args.pairs))
        rows.append(bench("delete, %s, every L2 allocated" % args.size, snap, work, "-d", args.pairs))
        os.unlink(base)
        os.unlink(snap)
        l_base, l_snap = build(d, large)
        large_rss = (one(l_base, work, "ours", "-c")[1], one(l_snap, work, "ours", "-d")[1])
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("date: %s   nproc: %d   python: %s   %s" % (
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), os.cpu_count() or 0, sys.version.split()[0],
        subprocess.run(["qemu-img", "--version"], stdout=subprocess.PIPE, universal_newlines=True,
                       check=False).stdout.splitlines()[0]))
    print("ours: %s bin/qimg; %d timed pairs per case, medians" % (sys.executable, args.pairs))
    header = ("case", "ours s", "qemu-img s", "ours/qemu", "fastest: ours", "qemu-img", "our peak RSS MiB",
              "qemu RSS MiB", "qemu-img check of ours")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for dummy in header) + "|")
    for row in rows:
        print("| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %.0f | %s |" % row)
    print("our peak RSS at %s: create %.0f MiB, delete %.0f MiB (at %s: %.0f, %.0f)"
          % (large, large_rss[0], large_rss[1], args.size, rows[0][6], rows[1][6]))


if __name__ == "__main__":
    main()
