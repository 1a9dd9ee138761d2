# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark `qimg checksum` against what qemu-img users do today to hash an image's content.

Not a test: run `python3 bench/bench_checksum.py [--quick]`. It builds, in a temporary directory
that it removes afterwards,
  (a) bench_convert's sparse image: 4 GiB raw with 1 GiB of random data in 256 extents of 4 MiB
      and a 256 MiB run of written zeros, and its qcow2 (made by qemu-img);
  (b) an empty 8 TiB qcow2;
then times, alternately and after one untimed run of each (warm page cache):
  ours:   bin/qimg checksum IMAGE (sha256, blkhash's construction);
  theirs: qemu-img convert -O raw IMAGE | sha256sum. qemu-img 7.2 cannot write to a pipe
          ("Could not resize file: Invalid argument", with -n: "'file' driver requires
          '/dev/stdout' to be a regular file"), so its output goes to a file in the temporary
          directory that sha256sum then reads and that is removed before the next run: the
          closest thing qemu-img offers. For the raw image alone also plain `sha256sum IMAGE`.
It prints medians, the ratio ours/theirs, the fastest runs and peak RSS (bench_convert's helpers),
and checks that our digest is the same for the raw image and its qcow2.

(b) has no `theirs` (hashing 8 TiB takes hours). Its floor: blkhash's outer hash takes the 32-byte
digest of every 64 KiB block, 4 GiB of hash input for 8 TiB, whatever skips the reads; the script
times hashlib.sha256 over 4 GiB in this process and prints it next to ours.
--quick: 1/16 of the sizes (a 512 GiB empty image) and 3 pairs, a smoke test of the script.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import datetime
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_convert import GiB, MiB, QIMG, build_sparse, run_measured  # noqa: E402

TiB = 1024 * GiB


def our_digest(path):
    out = subprocess.run([sys.executable, QIMG, "checksum", path], stdout=subprocess.PIPE, check=True,
                         universal_newlines=True).stdout
    return out.split()[0]


def timed_pairs(name, ours, theirs, pairs, cleanup=None):
    """Run ours and theirs (argv lists; theirs may be None) alternately; return a result row."""
    def once(cmd):
        if cleanup is not None:
            cleanup()
        elapsed, rc, rss, err = run_measured(cmd)
        if rc != 0:
            raise SystemExit("%s: %s exited %d: %s" % (name, cmd[:4], rc, err.strip()))
        return elapsed, rss
    once(ours)
    if theirs is not None:
        once(theirs)
    t_o, t_t, r_o, r_t = [], [], [], []
    for dummy in range(pairs):
        e, r = once(ours)
        t_o.append(e)
        r_o.append(r)
        if theirs is not None:
            e, r = once(theirs)
            t_t.append(e)
            r_t.append(r)
    if cleanup is not None:
        cleanup()
    m_o = statistics.median(t_o)
    m_t = statistics.median(t_t) if t_t else None
    return (name, m_o, m_t, (m_o / m_t) if m_t else None, min(t_o), min(t_t) if t_t else None, max(r_o),
            max(r_t) if r_t else None)


def fmt(value, pattern="%.2f"):
    return "-" if value is None else pattern % value


def main():
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1/16 of the sizes, 3 pairs")
    parser.add_argument("--pairs", type=int, default=None, help="timed runs of each command (default 5, quick 3)")
    parser.add_argument("--dir", default=None, help="where to make the temporary directory")
    args = parser.parse_args()
    for tool in ("qemu-img", "sha256sum"):
        if shutil.which(tool) is None:
            raise SystemExit("%s is needed" % tool)
    scale = 16 if args.quick else 1
    pairs = args.pairs or (3 if args.quick else 5)
    d = tempfile.mkdtemp(prefix="qimg-bench-checksum-", dir=args.dir)
    rows = []
    notes = []
    try:
        print("building images in %s ..." % d, file=sys.stderr)
        a_raw = build_sparse(os.path.join(d, "a.raw"), 4 * GiB // scale, 256 // scale, 4 * MiB, 256 * MiB // scale)
        a_qcow2 = os.path.join(d, "a.qcow2")
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", a_raw, a_qcow2], check=True)
        empty = os.path.join(d, "empty.qcow2")
        empty_size = 8 * TiB // scale
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", empty, str(empty_size)], check=True)
        tmp_raw = os.path.join(d, "converted.raw")

        def drop_tmp():
            if os.path.exists(tmp_raw):
                os.unlink(tmp_raw)

        size = "%d GiB" % (4 // scale) if scale == 1 else "%d MiB" % (4 * 1024 // scale)
        for label, path, src_fmt in (("raw", a_raw, "raw"), ("qcow2", a_qcow2, "qcow2")):
            theirs = ["sh", "-c", 'qemu-img convert -f %s -O raw "$1" "$2" && sha256sum "$2" >/dev/null' % src_fmt,
                      "sh", path, tmp_raw]
            rows.append(timed_pairs("(a) %s sparse %s: convert + sha256sum" % (size, label),
                                    [sys.executable, QIMG, "checksum", "-f", src_fmt, path], theirs, pairs, drop_tmp))
            print("  done: %s" % rows[-1][0], file=sys.stderr)
        rows.append(timed_pairs("(a) %s sparse raw: sha256sum alone" % size,
                                [sys.executable, QIMG, "checksum", "-f", "raw", a_raw], ["sha256sum", a_raw], pairs))
        same = our_digest(a_raw) == our_digest(a_qcow2)
        notes.append("(a) our digest of the raw image %s its qcow2's" % ("equals" if same else "DIFFERS FROM"))
        rows.append(timed_pairs("(b) %d TiB empty qcow2" % (empty_size // TiB) if empty_size >= TiB
                                else "(b) %d GiB empty qcow2" % (empty_size // GiB),
                                [sys.executable, QIMG, "checksum", empty], None, pairs))
        outer = empty_size // (64 * 1024) * 32
        zeros = bytes(32) * (1 << 18)
        t0 = time.perf_counter()
        h = hashlib.sha256()
        for dummy in range(outer // len(zeros)):
            h.update(zeros)
        floor = time.perf_counter() - t0
        notes.append("(b) floor: hashlib.sha256 over the %d MiB of block digests alone takes %.2f s here"
                     % (outer // MiB, floor))
    finally:
        shutil.rmtree(d, ignore_errors=True)
    print("date: %s   nproc: %d   python: %s   %s" % (
        datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S"), os.cpu_count() or 0, sys.version.split()[0],
        subprocess.run(["qemu-img", "--version"], stdout=subprocess.PIPE, universal_newlines=True,
                       check=False).stdout.splitlines()[0]))
    print("ours: %s bin/qimg checksum (sha256); %d timed pairs per case, medians" % (sys.executable, pairs))
    header = ("case", "ours s", "theirs s", "ours/theirs", "fastest: ours", "theirs", "our peak RSS MiB",
              "their RSS MiB")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for dummy in header) + "|")
    for name, a, b, ratio, best, best_t, rss, rss_t in rows:
        cells = (name, a, fmt(b), fmt(ratio), best, fmt(best_t), rss, fmt(rss_t, "%.0f"))
        print("| %s | %.2f | %s | %s | %.2f | %s | %.0f | %s |" % cells)
    for note in notes:
        print(note)


if __name__ == "__main__":
    main()
