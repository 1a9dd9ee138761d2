# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""convert when the destination fills up or the user interrupts it.

A full file system (an 8 MiB tmpfs, mounted when we are allowed to; under CI=true we must be),
a file size limit (RLIMIT_FSIZE in a child process: writes past it fail with EFBIG) and SIGINT
part way through a large conversion must each end with a clear one-line error (no traceback), no
temporary file left in the destination directory and an existing destination file untouched.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import resource
import signal
import subprocess
import sys
import time

import pytest

from conftest import QIMG, ROOT
from helpers import MiB, file_digest

ENGINE = os.path.join(ROOT, "plugins", "module_utils")

# Runs the engine's convert in a child: argv = src dest out_fmt compress. QimgError -> one line, exit 1;
# KeyboardInterrupt -> exit 130. Prints "started" on the first progress call.
CHILD = r"""
import sys
sys.path.insert(0, %r)
from qimg.errors import QimgError
from qimg.ops.convert import convert
started = []
def progress(done, total, elapsed):
    if not started:
        started.append(1)
        sys.stdout.write("started\n")
        sys.stdout.flush()
try:
    convert([sys.argv[1]], sys.argv[2], out_fmt=sys.argv[3], compress=sys.argv[4] == "1", progress=progress)
except QimgError as e:
    sys.stderr.write("qimg: %%s\n" %% e)
    sys.exit(1)
except KeyboardInterrupt:
    sys.stderr.write("qimg: interrupted\n")
    sys.exit(130)
""" % ENGINE


def _cli_has_convert():
    from qimg import cli  # conftest put the engine on sys.path
    return "convert" in getattr(cli, "COMMANDS", {})


def _child_cmd(src, dest, out_fmt, compress=False, cli=False, progress=False):
    if cli:
        flags = (["-c"] if compress else []) + (["-p"] if progress else [])
        return [sys.executable, QIMG, "convert", "-O", out_fmt] + flags + [str(src), str(dest)]
    return [sys.executable, "-c", CHILD, str(src), str(dest), out_fmt, "1" if compress else "0"]


def _modes():
    return [False, True] if _cli_has_convert() else [False]


def _random_file(path, size):
    """size bytes that do not compress and have no zero blocks (a 4 MiB random block, repeated with a counter)."""
    block = bytearray(os.urandom(4 * MiB))
    with open(str(path), "wb") as f:
        done = 0
        i = 0
        while done < size:
            block[:8] = i.to_bytes(8, "little")
            n = min(len(block), size - done)
            f.write(block[:n])
            done += n
            i += 1
    return path


def _assert_clean_failure(proc, directory, dest, before):
    err = proc.stderr.decode(errors="replace") if isinstance(proc.stderr, bytes) else proc.stderr
    assert proc.returncode == 1, "rc=%s stderr=%s" % (proc.returncode, err)
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, "expected one error line, got %r" % err
    assert lines[0].startswith("qimg: "), err
    _assert_untouched(directory, dest, before)
    return lines[0]


def _assert_untouched(directory, dest, before):
    assert sorted(os.listdir(str(directory))) == [os.path.basename(str(dest))], "temporary file left behind"
    assert file_digest(dest) == before, "existing destination changed"


# --- a full file system ----------------------------------------------------------------------------

@pytest.fixture
def small_fs(tmp_path):
    """An 8 MiB tmpfs mounted on a fresh directory; skipped when we may not mount (never under CI)."""
    mnt = tmp_path / "full"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, check=False)
    if proc.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail("cannot mount a tmpfs under CI: %s" % proc.stderr.strip())
        pytest.skip("cannot mount a tmpfs: %s" % proc.stderr.strip())
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("out_fmt,compress", [("raw", False), ("qcow2", False), ("qcow2", True)],
                         ids=["raw", "qcow2", "qcow2-compressed"])
def test_enospc_engine(tmp_path, small_fs, out_fmt, compress):
    from qimg.errors import QimgError
    from qimg.ops.convert import convert
    src = _random_file(tmp_path / "src.raw", 16 * MiB)
    dest = small_fs / "dest.img"
    dest.write_bytes(os.urandom(MiB))
    before = file_digest(dest)
    with pytest.raises(QimgError) as err:
        convert([str(src)], str(dest), out_fmt=out_fmt, compress=compress)
    message = str(err.value)
    assert "\n" not in message
    assert "dest.img" in message, message
    assert "No space left on device" in message, message
    _assert_untouched(small_fs, dest, before)
    # the file system is usable again: the space of the temporary file was given back
    assert os.statvfs(str(small_fs)).f_bfree * os.statvfs(str(small_fs)).f_frsize > 6 * MiB


@pytest.mark.parametrize("cli", _modes(), ids=lambda c: "cli" if c else "engine")
def test_enospc_subprocess(tmp_path, small_fs, cli):
    src = _random_file(tmp_path / "src.raw", 16 * MiB)
    dest = small_fs / "dest.qcow2"
    dest.write_bytes(os.urandom(MiB))
    before = file_digest(dest)
    proc = subprocess.run(_child_cmd(src, dest, "qcow2", cli=cli), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, check=False, timeout=120)
    line = _assert_clean_failure(proc, small_fs, dest, before)
    assert "No space left on device" in line, line


def test_enospc_fits_after_all(tmp_path, small_fs):
    """Sanity check of the set-up: a conversion that fits the file system succeeds there."""
    from qimg.ops.convert import convert
    src = _random_file(tmp_path / "src.raw", 2 * MiB)
    dest = small_fs / "dest.raw"
    convert([str(src)], str(dest), out_fmt="raw")
    assert file_digest(dest) == file_digest(src)
    assert os.listdir(str(small_fs)) == ["dest.raw"]


# --- a file size limit (works without mount) ----------------------------------------------------

def _limit_fsize(limit):
    def preexec():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return preexec


@pytest.mark.parametrize("out_fmt,compress", [("raw", False), ("qcow2", False), ("qcow2", True)],
                         ids=["raw", "qcow2", "qcow2-compressed"])
@pytest.mark.parametrize("cli", _modes(), ids=lambda c: "cli" if c else "engine")
def test_efbig_rlimit(tmp_path, cli, out_fmt, compress):
    src = _random_file(tmp_path / "src.raw", 16 * MiB)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = out_dir / "dest.img"
    dest.write_bytes(os.urandom(MiB))
    before = file_digest(dest)
    proc = subprocess.run(_child_cmd(src, dest, out_fmt, compress, cli), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, check=False, timeout=120,
                          preexec_fn=_limit_fsize(4 * MiB))
    line = _assert_clean_failure(proc, out_dir, dest, before)
    assert "File too large" in line, line


# --- SIGINT part way through --------------------------------------------------------------------

@pytest.fixture(scope="module")
def big_source(tmp_path_factory):
    return _random_file(tmp_path_factory.mktemp("sigint") / "big.raw", 512 * MiB)


@pytest.mark.parametrize("out_fmt", ["qcow2", "raw"])
@pytest.mark.parametrize("cli", _modes(), ids=lambda c: "cli" if c else "engine")
def test_sigint(tmp_path, big_source, cli, out_fmt):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    dest = out_dir / "dest.img"
    dest.write_bytes(os.urandom(MiB))
    before = file_digest(dest)
    proc = subprocess.Popen(_child_cmd(big_source, dest, out_fmt, cli=cli, progress=True), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, universal_newlines=True)
    try:
        # the conversion is under way: the engine child says "started", the CLI prints its -p progress
        first = proc.stdout.read(1)
        assert first in ("s", " ", "("), "no progress output: %r" % first
        time.sleep(0.05)  # well before the end: a 512 MiB copy takes a few tenths of a second at best
        assert proc.poll() is None, "conversion ended before the interrupt; make the source larger"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode in (130, -signal.SIGINT), "rc=%s %s" % (proc.returncode, err)
    assert "Traceback" not in err, err
    _assert_untouched(out_dir, dest, before)


_COMMIT_POINT_CHILD = r"""
import os, signal, sys
sys.path.insert(0, sys.argv[2])
from qimg.util import atomic_output
dest = os.path.join(sys.argv[1], "dest.img")
with open(dest, "wb") as f:
    f.write(b"old" * 1000)


def build_then_interrupt(node):
    node.pwrite(0, b"new" * 1000)
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT])  # lands just before the commit
    os.kill(os.getpid(), signal.SIGINT)


try:
    atomic_output(dest, build_then_interrupt)
    print("not interrupted")
except KeyboardInterrupt:
    print("interrupted", open(dest, "rb").read() == b"old" * 1000, os.listdir(sys.argv[1]),
          signal.SIGINT in signal.sigpending(), signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, []))

real_rename = os.rename


def rename_then_interrupt(src, dst):
    real_rename(src, dst)
    os.kill(os.getpid(), signal.SIGINT)  # held until the window closes, then dropped


os.rename = rename_then_interrupt
atomic_output(dest, lambda node: node.pwrite(0, b"new" * 1000))
os.rename = real_rename
print("committed", open(dest, "rb").read() == b"new" * 1000, os.listdir(sys.argv[1]))
"""


def test_interrupt_at_the_commit_point(tmp_path):
    """An interrupt that is pending when atomic_output is about to rename gives up (old file kept, no
    temporary left); one that comes during the rename is dropped, as the new file is complete.
    In a child process: the signal mask is per thread and pytest's worker may not be the main one."""
    out = subprocess.run([sys.executable, "-c", _COMMIT_POINT_CHILD, str(tmp_path), os.path.join(str(ROOT), "plugins", "module_utils")],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["interrupted True ['dest.img'] False False",
                                       "committed True ['dest.img']"], out.stdout + out.stderr
