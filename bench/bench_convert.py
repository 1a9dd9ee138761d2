# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark `qimg convert` and `qimg compare` against qemu-img on large images.

Not a test: run `python3 bench/bench_convert.py [--quick]`. It builds, in a temporary directory that
it removes afterwards,
  (a) a 4 GiB sparse raw with 1 GiB of random data in 256 extents of 4 MiB at random 4 MiB-aligned
      offsets and a 256 MiB run of written zeros (and its qcow2, made by qemu-img);
  (b) 1 GiB of compressible text (random words from a small vocabulary, ~3-4x with zlib);
  (c) 1 GiB of random data;
then times raw->qcow2 and qcow2->raw of (a), `-c` of (b) with zlib and zstd, raw->qcow2 of (c) and
`compare` of (a) raw against its qcow2: our command and qemu-img's alternately, outputs removed
before each run, each command run once untimed first (warm page cache). It prints medians, the
ratio ours/qemu-img of the medians, the fastest run of each (on a shared VM some runs of both
tools stall on fresh memory, and the fastest shows what the tools cost without the stalls) and the
peak RSS of each command (ru_maxrss of that child, from os.wait4 in a small fork/exec wrapper).
Our command is `bin/qimg convert|compare` under the interpreter that runs this script (use the
project's .venv/bin/python: a system Python's site-packages .pth files can add to every start-up).
--quick: 1/16 of the sizes and 3 pairs, a smoke test of the script.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import datetime
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QIMG = os.path.join(ROOT, "bin", "qimg")
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
from qimg.formats.qcow2.compress import zstd_available  # noqa: E402  (what our convert -c can use)
MiB = 1024 ** 2
GiB = 1024 ** 3


# --- images ----------------------------------------------------------------------------------------

def write_random(f, length, block=64 * MiB):
    while length > 0:
        n = min(block, length)
        f.write(os.urandom(n))
        length -= n


def build_sparse(path, size, extents, extent, zero_run, seed=1):
    """size bytes, mostly holes: `extents` random extents of `extent` bytes and a run of written zeros."""
    rnd = random.Random(seed)
    slots = size // extent
    zero_first = slots // 2
    zero_slots = set(range(zero_first, zero_first + zero_run // extent))
    chosen = sorted(rnd.sample([s for s in range(slots) if s not in zero_slots], extents))
    with open(path, "wb") as f:
        f.truncate(size)
        for slot in chosen:
            f.seek(slot * extent)
            write_random(f, extent)
        f.seek(zero_first * extent)
        zeros = bytes(min(zero_run, 64 * MiB))
        left = zero_run
        while left > 0:
            n = min(len(zeros), left)
            f.write(zeros[:n])
            left -= n
    return path


WORDS = ("the of and to in is was that for on with as by at from his her an which but not are be this had have "
         "were one all they their been has more its who will would when there no can out up into so some "
         "disk image cluster table refcount header qcow raw convert backing snapshot offset length").split()


def build_text(path, size, seed=2):
    """Text of random words: about 3-4x with zlib, a little better with zstd."""
    rnd = random.Random(seed)
    pieces = []
    tile = 0
    while tile < 16 * MiB:
        line = " ".join(rnd.choice(WORDS) for dummy in range(12)) + " %d\n" % rnd.randrange(10 ** 6)
        pieces.append(line)
        tile += len(line)
    block = "".join(pieces).encode("ascii")[:16 * MiB]
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(len(block), left)
            f.write(block[:n])
            left -= n
    sample = block[:64 * 1024]
    return path, len(sample) / len(zlib.compress(sample))


def build_random(path, size):
    with open(path, "wb") as f:
        write_random(f, size)
    return path


# --- running ---------------------------------------------------------------------------------------

# A small wrapper that forks and execs the command and reports the child's own wall time, exit code and
# ru_maxrss (os.wait4). Measuring from this bench process would not do: a child forked from it starts
# with this process's resident set (hundreds of MiB of image-building buffers), and Linux keeps that
# high-water mark in the child's ru_maxrss across exec. The wrapper's own few MiB are the floor.
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
    """Run cmd under the wrapper; return (wall seconds, exit code, peak RSS MiB of cmd alone, stderr)."""
    proc = subprocess.run([sys.executable, "-c", WRAPPER] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False)
    try:
        elapsed, code, rss = proc.stdout.split()
    except ValueError:
        raise SystemExit("wrapper failed for %s: %s %s" % (cmd, proc.stdout, proc.stderr))
    return float(elapsed), int(code), int(rss) / 1024.0, proc.stderr


class Case(object):
    def __init__(self, name, ours, theirs, output=None, source=None, source_fmt=None, expect_rc=0):
        self.name, self.ours, self.theirs = name, ours, theirs
        self.output, self.source, self.source_fmt, self.expect_rc = output, source, source_fmt, expect_rc


def convert_case(name, src, src_fmt, dest, out_fmt, compress=False, options=None):
    opts = ["-o", ",".join("%s=%s" % kv for kv in sorted(options.items()))] if options else []
    args = ["convert", "-f", src_fmt, "-O", out_fmt] + (["-c"] if compress else []) + opts + [src, dest]
    return Case(name, [sys.executable, QIMG] + args, ["qemu-img"] + args, output=dest, source=src,
                source_fmt=src_fmt)


def compare_case(name, a, b, fmt_a, fmt_b):
    args = ["compare", "-f", fmt_a, "-F", fmt_b, a, b]
    return Case(name, [sys.executable, QIMG] + args, ["qemu-img"] + args)


def remove(path):
    if path is not None:
        try:
            os.unlink(path)
        except OSError:
            pass
        os.sync()  # no writeback of the previous output during the next run


def once(case, cmd):
    remove(case.output)
    elapsed, rc, rss, err = run_measured(cmd)
    if rc != case.expect_rc:
        raise SystemExit("%s: %s exited %d: %s" % (case.name, cmd[:4], rc, err.strip()))
    return elapsed, rss


def verify(case):
    """Our last output holds the source's content (qemu-img compare)."""
    if case.output is None:
        return "exit %d" % case.expect_rc
    proc = subprocess.run(["qemu-img", "compare", "-f", case.source_fmt, case.source, case.output],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, check=False)
    return "identical" if proc.returncode == 0 else "DIFFERS: " + proc.stdout.strip()


def bench(case, pairs):
    once(case, case.ours)          # warm the page cache, untimed
    once(case, case.theirs)
    t_ours, t_theirs, rss_ours, rss_theirs = [], [], [], []
    for dummy in range(pairs):
        elapsed, rss = once(case, case.ours)
        t_ours.append(elapsed)
        rss_ours.append(rss)
        elapsed, rss = once(case, case.theirs)
        t_theirs.append(elapsed)
        rss_theirs.append(rss)
    out_size = os.path.getsize(case.output) if case.output else None
    once(case, case.ours)          # leave our output for the check
    check = verify(case)
    ours_size = os.path.getsize(case.output) if case.output else None
    remove(case.output)
    m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
    return (case.name, m_ours, m_theirs, m_ours / m_theirs, min(t_ours), min(t_theirs), max(rss_ours),
            max(rss_theirs), ours_size, out_size, check)


def mib(n):
    return "-" if n is None else "%.0f" % (n / MiB)


def main():
    # users' Pythons cache bytecode; a session that disabled it would time our compiler, not us
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/16 of the sizes, 3 pairs")
    parser.add_argument("--pairs", type=int, default=None, help="timed runs of each command (default 5, quick 3)")
    parser.add_argument("--dir", default=None, help="where to make the temporary directory")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if shutil.which("qemu-img") is None:
        raise SystemExit("qemu-img is needed (Debian package qemu-utils)")
    scale = 16 if args.quick else 1
    pairs = args.pairs or (3 if args.quick else 5)
    have_zstd = zstd_available()
    d = tempfile.mkdtemp(prefix="qimg-bench-convert-", dir=args.dir)
    rows = []
    try:
        print("building images in %s ..." % d, file=sys.stderr)
        t0 = time.perf_counter()
        a_raw = build_sparse(os.path.join(d, "a.raw"), 4 * GiB // scale, 256 // scale, 4 * MiB, 256 * MiB // scale)
        a_qcow2 = os.path.join(d, "a.qcow2")
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", a_raw, a_qcow2], check=True)
        b_raw, ratio = build_text(os.path.join(d, "b.raw"), GiB // scale)
        c_raw = build_random(os.path.join(d, "c.raw"), GiB // scale)
        print("built in %.1f s (text compresses %.1fx with zlib)" % (time.perf_counter() - t0, ratio), file=sys.stderr)
        out = os.path.join(d, "out")
        a_size = "%d GiB" % (4 // scale) if scale == 1 else "%d MiB" % (4 * 1024 // scale)
        g_size = "1 GiB" if scale == 1 else "%d MiB" % (1024 // scale)
        cases = [
            convert_case("(a) %s sparse raw -> qcow2" % a_size, a_raw, "raw", out, "qcow2"),
            convert_case("(a) qcow2 -> raw", a_qcow2, "qcow2", out, "raw"),
            convert_case("(b) %s text -c zlib" % g_size, b_raw, "raw", out, "qcow2", compress=True),
        ]
        if have_zstd:
            cases.append(convert_case("(b) %s text -c zstd" % g_size, b_raw, "raw", out, "qcow2",
                                      compress=True, options={"compression_type": "zstd"}))
        else:
            print("no zstandard/pyzstd module: skipping the zstd case", file=sys.stderr)
        cases += [
            convert_case("(c) %s random raw -> qcow2" % g_size, c_raw, "raw", out, "qcow2"),
            compare_case("(a) compare raw qcow2", a_raw, a_qcow2, "raw", "qcow2"),
        ]
        for case in cases:
            t0 = time.perf_counter()
            rows.append(bench(case, pairs))
            print("  done: %s (%.0f s)" % (case.name, time.perf_counter() - t0), file=sys.stderr)
    finally:
        if args.keep:
            print("kept %s" % d, file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)
    print("date: %s   nproc: %d   python: %s   %s" % (
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), os.cpu_count() or 0, sys.version.split()[0],
        subprocess.run(["qemu-img", "--version"], stdout=subprocess.PIPE, universal_newlines=True,
                       check=False).stdout.splitlines()[0]))
    print("ours: %s bin/qimg; %d timed pairs per case, medians" % (sys.executable, pairs))
    header = ("case", "ours s", "qemu-img s", "ours/qemu", "fastest: ours", "qemu-img", "our peak RSS MiB",
              "qemu RSS MiB", "our out MiB", "qemu out MiB", "check")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for dummy in header) + "|")
    for name, a, b, ratio, best, best_q, rss, rss_q, size, size_q, check in rows:
        cells = (name, a, b, ratio, best, best_q, rss, rss_q, mib(size), mib(size_q), check)
        print("| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %.0f | %s | %s | %s |" % cells)


if __name__ == "__main__":
    main()
