# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Helpers shared by the interop, property and hostile-image tests.

Everything that asks the oracle (qemu-img, qemu-io) something lives here, so the tests read as
"what we expect" rather than "how to run qemu". conftest.py puts plugins/module_utils on sys.path
before any test module imports this file.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import json
import os
import subprocess
import sys

from conftest import QIMG, qimg, run

CHUNK = 4 * 1024 * 1024
MiB = 1024 * 1024
GiB = 1024 * MiB
TiB = 1024 * GiB


# --- the oracle -------------------------------------------------------------------------------

def qemu_img_create(path, fmt, size=None, options=None, backing=None, backing_fmt=None, unsafe=False):
    """`qemu-img create`; options is a dict of -o names to values."""
    cmd = ["qemu-img", "create", "-q", "-f", fmt]
    if options:
        cmd += ["-o", ",".join("%s=%s" % (k, v) for k, v in options.items())]
    if backing is not None:
        cmd += ["-b", backing]
        if backing_fmt is not None:
            cmd += ["-F", backing_fmt]
    if unsafe:
        cmd.append("-u")
    cmd.append(str(path))
    if size is not None:
        cmd.append(str(size))
    run(cmd)


def qemu_io(path, *commands, **kw):
    """Run qemu-io commands (each a string such as 'write -P 1 0 4k') on an image."""
    fmt = kw.get("fmt", "qcow2")
    cmd = ["qemu-io", "-f", fmt]
    for c in commands:
        cmd += ["-c", c]
    cmd.append(str(path))
    proc = run(cmd)
    # qemu-io exits 0 even when a command fails; its messages say so.
    bad = [line for line in (proc.stdout + proc.stderr).splitlines()
           if "failed" in line.lower() or "error" in line.lower()]
    assert not bad, "qemu-io %s: %s" % (commands, bad)
    return proc


def qemu_io_script(path, commands, fmt="qcow2"):
    """Run many qemu-io commands in one process through its stdin."""
    script = "\n".join(commands) + "\nquit\n"
    proc = subprocess.run(["qemu-io", "-f", fmt, str(path)], input=script, stdout=subprocess.PIPE, check=False,
                          stderr=subprocess.PIPE, universal_newlines=True)
    assert proc.returncode == 0, proc.stderr
    bad = [line for line in (proc.stdout + proc.stderr).splitlines()
           if "failed" in line.lower() or "error" in line.lower()]
    assert not bad, bad[:5]
    return proc


def qemu_info(path, fmt=None, extra=()):
    cmd = ["qemu-img", "info", "--output=json"] + list(extra)
    if fmt:
        cmd += ["-f", fmt]
    return json.loads(run(cmd + [str(path)]).stdout)


def qemu_map(path, fmt=None):
    cmd = ["qemu-img", "map", "--output=json"]
    if fmt:
        cmd += ["-f", fmt]
    return json.loads(run(cmd + [str(path)]).stdout)


def qemu_check(path, fmt="qcow2"):
    """`qemu-img check --output=json`: (exit code, parsed report)."""
    proc = run(["qemu-img", "check", "--output=json", "-f", fmt, str(path)], check=False)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        report = {"stdout": proc.stdout, "stderr": proc.stderr}
    return proc.returncode, report


def assert_check_clean(path, fmt="qcow2"):
    """qemu-img check exits 0 and reports no errors and no leaks."""
    rc, report = qemu_check(path, fmt)
    assert rc == 0, "qemu-img check %s: rc=%d %s" % (path, rc, report)
    for key in ("corruptions", "leaks", "check-errors", "corruptions-fixed", "leaks-fixed"):
        assert report.get(key, 0) == 0, "qemu-img check %s: %s" % (path, report)
    return report


def qemu_raw_digest(path, tmpdir, fmt=None, snapshot=None):
    """sha256 of the guest content as `qemu-img convert -O raw` writes it (the oracle)."""
    out = os.path.join(str(tmpdir), "oracle-%d.raw" % os.getpid())
    cmd = ["qemu-img", "convert", "-O", "raw"]
    if fmt:
        cmd += ["-f", fmt]
    if snapshot is not None:
        cmd += ["-l", "snapshot.name=%s" % snapshot]
    run(cmd + [str(path), out])
    try:
        return file_digest(out)
    finally:
        os.unlink(out)


def qemu_compare(a, b, fmt_a=None, fmt_b=None, strict=False):
    cmd = ["qemu-img", "compare"]
    if fmt_a:
        cmd += ["-f", fmt_a]
    if fmt_b:
        cmd += ["-F", fmt_b]
    if strict:
        cmd.append("-s")
    return run(cmd + [str(a), str(b)], check=False)


# --- digests ----------------------------------------------------------------------------------

def file_digest(path, chunk=CHUNK):
    h = hashlib.sha256()
    with open(str(path), "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def engine_digest(path, fmt=None, chunk=CHUNK):
    """sha256 of the guest content read through the engine in chunks; also returns the size."""
    from qimg.image import open_image
    h = hashlib.sha256()
    with open_image(str(path), fmt=fmt) as dev:
        size = dev.size
        off = 0
        while off < size:
            n = min(chunk, size - off)
            data = dev.read(off, n)
            assert len(data) == n, "short read at %d: %d of %d" % (off, len(data), n)
            h.update(data)
            off += n
    return h.hexdigest(), size


# --- our CLI ----------------------------------------------------------------------------------

def qimg_json(*args):
    """Run bin/qimg with --output=json args and parse stdout."""
    proc = qimg(*args)
    return json.loads(proc.stdout)


def qimg_cmd(*args):
    """The argv that runs bin/qimg (for timing and wrappers)."""
    return [sys.executable, QIMG] + [str(a) for a in args]


def strip_map_filenames(entries):
    return [dict((k, v) for k, v in e.items() if k != "filename") for e in entries]


def same_bytes(got, want, what="data"):
    """assert got == want for big byte strings, without pytest's quadratic diff of the two."""
    got, want = bytes(got), bytes(want)
    if got == want:
        return
    if len(got) != len(want):
        raise AssertionError("%s: length %d, expected %d" % (what, len(got), len(want)))
    first = next(i for i in range(len(got)) if got[i] != want[i])
    last = next(i for i in range(len(got) - 1, -1, -1) if got[i] != want[i])
    raise AssertionError("%s differs in bytes [%d, %d]: got %r..., expected %r..."
                         % (what, first, last, got[first:first + 16], want[first:first + 16]))
