# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""convert's -m, -W, -C and -r do what qemu-img's do: -m sets the compression threads, -W is
allowed, -C copies raw data with copy_file_range (and falls back when the kernel refuses it),
-r throttles the target's writes. None of them changes the content (qemu-img compare)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import shutil
import subprocess
import sys
import time

import pytest

from conftest import QIMG, run
from helpers import assert_check_clean, qemu_compare, qemu_img_create, qemu_io

STRACE = shutil.which("strace")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """A 16 MiB raw with 6 MiB of data in three runs and holes, and its qcow2."""
    d = tmp_path_factory.mktemp("tuning")
    raw = d / "src.raw"
    qemu_img_create(raw, "raw", "16M")
    qemu_io(raw, "write -P 0x11 0 2M", "write -P 0x22 5M 3M", "write -P 0x33 13M 1M", fmt="raw")
    qcow2 = d / "src.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow2)])
    return raw, qcow2


def _qimg(*args, **kw):
    return run([sys.executable, QIMG] + [str(a) for a in args], **kw)


def _traced_calls(argv, syscall, inject=None):
    """Run argv under strace -f; the number of `syscall` calls that returned."""
    cmd = [STRACE, "-f", "-qq", "-e", "trace=" + syscall]
    if inject:
        cmd += ["-e", "inject=%s:error=%s" % (syscall, inject)]
    proc = subprocess.run(cmd + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    return sum(1 for line in proc.stderr.splitlines() if syscall + "(" in line and "resumed" not in line)


@pytest.mark.skipif(STRACE is None, reason="strace is installed by scripts/setup.sh and CI")
def test_copy_offload_raw_uses_copy_file_range(sources, tmp_path):
    raw, dummy = sources
    out = tmp_path / "out.raw"
    calls = _traced_calls([sys.executable, QIMG, "convert", "-C", "-f", "raw", "-O", "raw", str(raw), str(out)],
                          "copy_file_range")
    assert calls >= 3, "expected copy_file_range for each data run, got %d calls" % calls
    assert qemu_compare(raw, out, "raw", "raw", strict=True).returncode == 0
    without = _traced_calls([sys.executable, QIMG, "convert", "-f", "raw", "-O", "raw", str(raw), str(tmp_path / "b")],
                            "copy_file_range")
    assert without == 0


@pytest.mark.skipif(STRACE is None, reason="strace is installed by scripts/setup.sh and CI")
@pytest.mark.parametrize("errno_name", ["EXDEV", "EOPNOTSUPP", "EINVAL"])
def test_copy_offload_falls_back_when_refused(sources, tmp_path, errno_name):
    """As qemu-img: the first refusal turns offloading off and the copy goes on by reading."""
    raw, dummy = sources
    out = tmp_path / "out.raw"
    calls = _traced_calls([sys.executable, QIMG, "convert", "-C", "-f", "raw", "-O", "raw", str(raw), str(out)],
                          "copy_file_range", inject=errno_name)
    assert calls == 1, "offloading must stop after the first refusal (%d calls)" % calls
    assert qemu_compare(raw, out, "raw", "raw", strict=True).returncode == 0


def test_copy_offload_other_sources_and_targets(sources, tmp_path):
    """A qcow2 source or a qcow2 target is copied the usual way; the content is the same."""
    raw, qcow2 = sources
    a, b = tmp_path / "a.raw", tmp_path / "b.qcow2"
    _qimg("convert", "-C", "-f", "qcow2", "-O", "raw", qcow2, a)
    _qimg("convert", "-C", "-f", "raw", "-O", "qcow2", raw, b)
    assert qemu_compare(raw, a, "raw", "raw", strict=True).returncode == 0
    assert qemu_compare(raw, b, "raw", "qcow2").returncode == 0
    assert_check_clean(b)


@pytest.mark.parametrize("flags,message", [
    (["-C", "-c"], "Cannot enable copy offloading when -c is used"),
    (["-C", "-S", "4k"], "Cannot enable copy offloading when -S is used"),
    (["-m", "0"], "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16"),
    (["-m", "17"], "Invalid number of coroutines. Allowed number of coroutines is between 1 and 16"),
])
def test_refusals_as_qemu_img(sources, tmp_path, flags, message):
    raw, dummy = sources
    out_fmt = "qcow2" if "-c" in flags else "raw"
    theirs = run(["qemu-img", "convert"] + flags + ["-O", out_fmt, str(raw), str(tmp_path / "t")], check=False)
    ours = _qimg("convert", *(flags + ["-O", out_fmt, raw, tmp_path / "o"]), check=False)
    assert theirs.returncode == ours.returncode == 1
    assert message in theirs.stderr and message in ours.stderr, (theirs.stderr, ours.stderr)


@pytest.mark.parametrize("out_fmt", ["raw", "qcow2"])
def test_rate_limit_throttles_writes(sources, tmp_path, out_fmt):
    """6 MiB of data at 4 MiB/s: at least 1.5 s (the first 4 MiB chunk goes at once, as qemu's
    bucket lets a burst through); unthrottled it is far quicker."""
    raw, dummy = sources
    start = time.monotonic()
    _qimg("convert", "-r", "4M", "-f", "raw", "-O", out_fmt, raw, tmp_path / "slow")
    slow = time.monotonic() - start
    start = time.monotonic()
    _qimg("convert", "-f", "raw", "-O", out_fmt, raw, tmp_path / "fast")
    fast = time.monotonic() - start
    assert slow >= 1.4, "rate limit not applied: %.2f s" % slow
    assert fast < slow - 0.8, (fast, slow)
    assert qemu_compare(raw, tmp_path / "slow", "raw", out_fmt).returncode == 0


def test_workers_set_the_compression_threads(sources, tmp_path, monkeypatch):
    """-m N: N compression threads; -W: allowed (our writes stay in guest order). Same content."""
    import concurrent.futures
    from qimg.ops.convert import Tuning, convert
    seen = []
    real = concurrent.futures.ThreadPoolExecutor

    def recording(max_workers=None, **kw):
        seen.append(max_workers)
        return real(max_workers=max_workers, **kw)
    monkeypatch.setattr(concurrent.futures, "ThreadPoolExecutor", recording)
    raw, dummy = sources
    for workers in (1, 5):
        out = tmp_path / ("c%d.qcow2" % workers)
        convert([str(raw)], str(out), src_fmt="raw", out_fmt="qcow2", compress=True,
                tuning=Tuning(workers=workers, in_order=False))
        assert qemu_compare(raw, out, "raw", "qcow2").returncode == 0
        assert_check_clean(out)
    assert seen == [1, 5]
    out = tmp_path / "cli.qcow2"
    _qimg("convert", "-W", "-m", "3", "-c", "-f", "raw", "-O", "qcow2", raw, out)
    assert qemu_compare(raw, out, "raw", "qcow2").returncode == 0
