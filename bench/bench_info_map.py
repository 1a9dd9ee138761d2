# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark `qimg info`, `qimg map --output=json` and `qimg check` against qemu-img on large metadata.

Not a test: run `python bench/bench_info_map.py`. It builds, with qemu-img/qemu-io in a temporary
directory that it removes afterwards,
  - a 1 TiB qcow2 (64 KiB clusters) with every L2 table allocated: one small write per 512 MiB
    region, 2048 writes, so 2048 L2 tables (128 MiB of metadata);
  - a 4 GiB qcow2 with 4 KiB clusters and scattered 4 KiB writes (many L2 tables, a long map);
then runs our command and qemu-img's alternately, prints medians, the ratio ours/qemu and peak RSS
(GNU time's %M, else the child's ru_maxrss), and whether the JSON outputs agree.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QIMG = os.path.join(ROOT, "bin", "qimg")
GiB = 1024 ** 3


def _qemu_io_script(path, commands):
    script = "\n".join(commands) + "\nquit\n"
    proc = subprocess.run(["qemu-io", "-f", "qcow2", path], input=script, stdout=subprocess.DEVNULL, check=False,
                          stderr=subprocess.PIPE, universal_newlines=True)
    if proc.returncode != 0:
        raise SystemExit("qemu-io failed: %s" % proc.stderr)


def build_full_l2(d):
    path = os.path.join(d, "full-l2-1T.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=64k", path, "1T"], check=True)
    region = 512 * 1024 * 1024
    cmds = ["write -q -P %d %d 4k" % (i % 255 + 1, i * region + (i * 65536) % region) for i in range(1024 * GiB // region)]
    _qemu_io_script(path, cmds)
    return path


def build_scattered_4k(d, writes=20000, seed=1):
    path = os.path.join(d, "scattered-4G-c4k.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", path, "4G"], check=True)
    rnd = random.Random(seed)
    cmds = ["write -q -P %d %d 4k" % (rnd.randrange(1, 256), rnd.randrange(4 * GiB // 4096) * 4096) for dummy in range(writes)]
    _qemu_io_script(path, cmds)
    return path


def timed(cmd):
    """Run cmd; return (wall seconds, stdout bytes)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (cmd, proc.returncode, err.decode(errors="replace")))
    return elapsed, out


GNU_TIME = "/usr/bin/time"


def peak_rss_kib(cmd):
    """Peak RSS (KiB) of one run of cmd.

    Prefer GNU time's %M: a small C parent, so the figure is the command's own. The fallback, the
    child's ru_maxrss from os.wait4, counts the memory of this (Python) process at fork time too
    (Linux keeps the pre-exec high-water mark), so it is only an upper bound.
    """
    if os.access(GNU_TIME, os.X_OK):
        fd, out = tempfile.mkstemp(prefix="qimg-bench-rss-")
        os.close(fd)
        try:
            proc = subprocess.run([GNU_TIME, "-f", "%M", "-o", out] + cmd, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, check=False)
            with open(out) as f:
                text = f.read().strip().splitlines()
            if proc.returncode == 0 and text and text[-1].isdigit():
                return int(text[-1])
        finally:
            os.unlink(out)
    with open(os.devnull, "wb") as null:
        proc = subprocess.Popen(cmd, stdout=null, stderr=null)
        dummy, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = status  # reaped here; keeps Popen from waiting again
    if status != 0:
        raise SystemExit("%s failed (wait status %d)" % (cmd, status))
    return usage.ru_maxrss


def bench(cases, runs):
    rows = []
    for name, ours, theirs, compare_json in cases:
        t_ours, t_theirs = [], []
        out_ours = out_theirs = None
        for dummy in range(runs):
            s, out_ours = timed(ours)
            t_ours.append(s)
            s, out_theirs = timed(theirs)
            t_theirs.append(s)
        same = ""
        if compare_json:
            same = "yes" if json.loads(out_ours) == json.loads(out_theirs) else "NO"
        m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
        rows.append((name, m_ours, m_theirs, m_ours / m_theirs, peak_rss_kib(ours) / 1024.0,
                     peak_rss_kib(theirs) / 1024.0, same))
        print("  done: %s" % name, file=sys.stderr)
    return rows


def main():
    # users' Pythons cache bytecode; a session that disabled it would time our compiler, not us
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each command (default 5)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--dir", default=None, help="where to make the temporary directory")
    args = parser.parse_args()
    for tool in ("qemu-img", "qemu-io"):
        if shutil.which(tool) is None:
            raise SystemExit("%s is needed (Debian package qemu-utils)" % tool)
    d = tempfile.mkdtemp(prefix="qimg-bench-", dir=args.dir)
    try:
        print("building images in %s ..." % d, file=sys.stderr)
        t0 = time.perf_counter()
        images = [("1T full-L2", build_full_l2(d)), ("4G c4k scattered", build_scattered_4k(d))]
        print("built in %.1f s" % (time.perf_counter() - t0), file=sys.stderr)
        ours = [sys.executable, QIMG]
        cases = []
        for label, path in images:
            cases.append(("info " + label, ours + ["info", path], ["qemu-img", "info", path], False))
            cases.append(("map json " + label, ours + ["map", "--output=json", path],
                          ["qemu-img", "map", "--output=json", path], True))
            cases.append(("check json " + label, ours + ["check", "--output=json", path],
                          ["qemu-img", "check", "--output=json", path], True))
        rows = bench(cases, args.runs)
    finally:
        if args.keep:
            print("kept %s" % d, file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)
    header = ("case", "ours s (median)", "qemu-img s", "ratio", "our peak RSS MiB", "qemu RSS MiB", "same JSON")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for dummy in header) + "|")
    for name, a, b, ratio, rss, rss_q, same in rows:
        print("| %s | %.3f | %.3f | %.1f | %.1f | %.1f | %s |" % (name, a, b, ratio, rss, rss_q, same))


if __name__ == "__main__":
    main()
