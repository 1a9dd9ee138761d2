# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kill a command with SIGKILL before its K-th write to the files it changes, for every K.

This is how in-place operations (snapshot, rebase, commit, resize, amend, repair, bitmap) prove
their write order: a kill at any point must leave images that `qemu-img check` finds free of
corruption and whose content is the old or the new one.

strace does the killing: `-P FILE` limits tracing to system calls on those files, and
`-e inject=SYSCALL:signal=KILL:when=N` kills the process on entry to the N-th such call, so that
call never happens. strace counts per system call name and per thread, so a first, traced run
records the order of the write calls (pwrite64, pwritev2, ...), and trial K injects into the
syscall of the K-th write with its rank among calls of that name. The writes must all come from
one thread (the harness checks it): the ordinal would otherwise depend on thread scheduling.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shutil
import subprocess

import pytest

# System calls that change a file's content or size.
WRITE_CALLS = ("pwrite64", "pwritev", "pwritev2", "write", "writev", "ftruncate", "fallocate")
_LINE = re.compile(r"^(\d+)\s+(\w+)\(")


def need_strace():
    path = shutil.which("strace")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("strace is required for the kill-at-every-write tests (apt-get install strace)")
        pytest.skip("strace not installed")
    return path


def _strace(paths, extra):
    cmd = [need_strace(), "-f", "-qq", "-s", "0", "-e", "signal=none",
           "-e", "trace=" + ",".join(WRITE_CALLS)]
    for p in paths:
        cmd += ["-P", os.path.abspath(str(p))]
    return cmd + list(extra)


def write_trace(argv, paths, cwd=None, env=None):
    """Run argv to the end under strace: (CompletedProcess, [(tid, syscall name)] in order)."""
    log = os.path.join(str(cwd or "."), ".crashkill-trace.%d" % os.getpid())
    try:
        proc = subprocess.run(_strace(paths, ["-o", log, "--"] + list(argv)), cwd=cwd, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                              check=False)
        calls = []
        with open(log) as f:
            for line in f:
                m = _LINE.match(line)
                if m and m.group(2) in WRITE_CALLS:
                    calls.append((int(m.group(1)), m.group(2)))
    finally:
        if os.path.exists(log):
            os.unlink(log)
    return proc, calls


def kill_before(argv, paths, calls, k, cwd=None, env=None):
    """Run argv and SIGKILL it on entry to its k-th write (1-based), as recorded in calls."""
    name = calls[k - 1][1]
    rank = sum(1 for _tid, c in calls[:k] if c == name)
    inject = "inject=%s:signal=KILL:when=%d" % (name, rank)
    return subprocess.run(_strace(paths, ["-o", os.devnull, "-e", inject, "--"] + list(argv)), cwd=cwd,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          check=False)


def kill_at_every_write(prepare, argv, paths, verify, cwd=None, env=None, step=1):
    """For K = 1, 1+step, ...: prepare() fresh files, kill argv before its K-th write to paths,
    then verify(K) (returns None when the files are fine, else a text saying what is wrong).

    The full, unkilled run must succeed and write at least once. Returns (trials, failures) where
    failures is a list of (K, text); K = 0 stands for the complete run, verified last.
    """
    prepare()
    proc, calls = write_trace(argv, paths, cwd, env)
    assert proc.returncode == 0, "%s failed: %s" % (argv, proc.stderr)
    assert calls, "%s wrote nothing to %s" % (argv, paths)
    tids = set(tid for tid, _c in calls)
    assert len(tids) == 1, "writes come from %d threads; the kill ordinal would not be reproducible" % len(tids)
    failures = []
    trials = 0
    for k in range(1, len(calls) + 1, step):
        prepare()
        proc = kill_before(argv, paths, calls, k, cwd, env)
        trials += 1
        if proc.returncode != -9:
            failures.append((k, "not killed before write %d of %d (exit %s): %s"
                             % (k, len(calls), proc.returncode, proc.stderr.strip()[-300:])))
            continue
        problem = verify(k)
        if problem:
            failures.append((k, problem))
    prepare()
    proc = subprocess.run(list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False)
    assert proc.returncode == 0, proc.stderr
    problem = verify(0)
    if problem:
        failures.append((0, problem))
    return trials, failures
