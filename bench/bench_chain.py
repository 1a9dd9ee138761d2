# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Benchmark `qimg rebase` (safe) and `qimg commit` against qemu-img on the same images.

Not a test: run `python3 bench/bench_chain.py [--size 4G] [--diff 1G] [--pairs 3] [--dir /var/tmp]`.
It builds, in a temporary directory that it removes afterwards (unless --keep):

- rebase: an old golden image of --size full of data, a new one that differs from it in --diff
  (scattered 4 MiB runs), and an empty overlay on the old one; each run rebases a fresh copy of
  the overlay onto the new image (safe mode: --diff bytes are compared different and copied);
- commit: a base of --size full of data and an overlay holding --diff of data (scattered 4 MiB
  runs); each run commits into fresh copies of both (`cp --sparse=always`, not timed).

Our command and qemu-img's alternate, once untimed first. It prints medians, the ratio
ours/qemu-img and the peak RSS of each (ru_maxrss of the child), then `qemu-img compare` of the
results and `qemu-img check` of ours.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QIMG = os.path.join(ROOT, "bin", "qimg")
RUN = 4 * 1024 * 1024

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


def run_measured(cmd, cwd):
    proc = subprocess.run([sys.executable, "-c", WRAPPER] + cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False, cwd=cwd)
    elapsed, code, rss = proc.stdout.split()
    if int(code):
        raise SystemExit("%s failed (%s): %s" % (cmd, code, proc.stderr))
    return float(elapsed), int(rss) / 1024.0


def sh(*cmd, **kw):
    subprocess.run(list(cmd), check=True, stdout=subprocess.DEVNULL, **kw)


def parse_size(text):
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    text = text.strip().lower()
    if text[-1:] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def qemu_io_script(path, commands):
    """Many qemu-io commands in one process (fed on stdin)."""
    subprocess.run(["qemu-io", "-f", "qcow2", path], input="\n".join(commands + ["quit"]) + "\n",
                   universal_newlines=True, check=True, stdout=subprocess.DEVNULL)


def scattered(size, total, seed):
    rng = random.Random(seed)
    slots = sorted(rng.sample(range(size // RUN), max(1, total // RUN)))
    return [s * RUN for s in slots]


def build(d, size, diff):
    mk = ["qemu-img", "create", "-q", "-f", "qcow2"]
    old, new = os.path.join(d, "old.qcow2"), os.path.join(d, "new.qcow2")
    sh(*(mk + [old, str(size)]))
    qemu_io_script(old, ["write -P 1 %d %d" % (off, RUN) for off in range(0, size, RUN)])
    sh("cp", "--sparse=always", old, new)
    qemu_io_script(new, ["write -P 2 %d %d" % (off, RUN) for off in scattered(size, diff, 1)])
    sh(*(mk + ["-b", "old.qcow2", "-F", "qcow2", os.path.join(d, "top.orig")]), cwd=d)
    # commit: the overlay on the old image holds --diff of data
    sh(*(mk + ["-b", "old.qcow2", "-F", "qcow2", os.path.join(d, "ctop.orig")]), cwd=d)
    qemu_io_script(os.path.join(d, "ctop.orig"), ["write -P 3 %d %d" % (off, RUN) for off in scattered(size, diff, 2)])


def case(d, name, pairs, prepare, ours, theirs):
    times = {"ours": [], "qemu-img": []}
    rss = {}
    for i in range(pairs + 1):
        for who, cmd in (("ours", ours), ("qemu-img", theirs)):
            work = os.path.join(d, "%s-%s" % (name, who.replace("-", "")))
            prepare(work)
            elapsed, peak = run_measured(cmd, work)
            if i:
                times[who].append(elapsed)
            rss[who] = max(rss.get(who, 0), peak)
    a, b = statistics.median(times["ours"]), statistics.median(times["qemu-img"])
    print("%-8s ours %7.2f s  qemu-img %7.2f s  ratio %.2f  rss ours %6.1f MiB  qemu-img %6.1f MiB"
          % (name, a, b, a / b, rss["ours"], rss["qemu-img"]))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="4G")
    p.add_argument("--diff", default="1G")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--dir", default=None)
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    size, diff = parse_size(args.size), parse_size(args.diff)
    d = tempfile.mkdtemp(prefix="qimg-bench-chain.", dir=args.dir)
    try:
        print("building %s images, %s differing ..." % (args.size, args.diff))
        build(d, size, diff)

        def prep_rebase(work):
            os.makedirs(work, exist_ok=True)
            for n in ("old.qcow2", "new.qcow2"):
                if not os.path.exists(os.path.join(work, n)):
                    os.link(os.path.join(d, n), os.path.join(work, n))
            shutil.copyfile(os.path.join(d, "top.orig"), os.path.join(work, "top.qcow2"))

        def prep_commit(work):
            if os.path.exists(work):
                shutil.rmtree(work)
            os.makedirs(work)
            sh("cp", "--sparse=always", os.path.join(d, "old.qcow2"), os.path.join(work, "old.qcow2"))
            sh("cp", "--sparse=always", os.path.join(d, "ctop.orig"), os.path.join(work, "top.qcow2"))

        rebase = ["rebase", "-b", "new.qcow2", "-F", "qcow2", "top.qcow2"]
        case(d, "rebase", args.pairs, prep_rebase, [sys.executable, QIMG] + rebase, ["qemu-img"] + rebase)
        ok = subprocess.run(["qemu-img", "compare", os.path.join(d, "rebase-ours", "top.qcow2"),
                             os.path.join(d, "rebase-qemuimg", "top.qcow2")], stdout=subprocess.PIPE,
                            universal_newlines=True, check=False)
        print("  compare: %s" % ok.stdout.strip())
        sh("qemu-img", "check", os.path.join(d, "rebase-ours", "top.qcow2"))
        commit = ["commit", "top.qcow2"]
        case(d, "commit", args.pairs, prep_commit, [sys.executable, QIMG] + commit, ["qemu-img"] + commit)
        ok = subprocess.run(["qemu-img", "compare", os.path.join(d, "commit-ours", "old.qcow2"),
                             os.path.join(d, "commit-qemuimg", "old.qcow2")], stdout=subprocess.PIPE,
                            universal_newlines=True, check=False)
        print("  compare: %s" % ok.stdout.strip())
        sh("qemu-img", "check", os.path.join(d, "commit-ours", "old.qcow2"))
    finally:
        if args.keep:
            print("kept in", d)
        else:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
