# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Shared pytest set-up: the engine on sys.path as ``qimg``, and the QEMU oracle tools."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
QIMG = os.path.join(ROOT, "bin", "qimg")


def _need_tool(name):
    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("%s is required for interop tests (install qemu-utils)" % name)
        pytest.skip("%s not installed" % name)
    return path


@pytest.fixture(scope="session")
def qemu_img():
    """Path to qemu-img (the oracle). Fails, not skips, when CI=true and it is missing."""
    return _need_tool("qemu-img")


@pytest.fixture(scope="session")
def qemu_io():
    return _need_tool("qemu-io")


def run(cmd, check=True, **kw):
    """Run a command; return CompletedProcess with text stdout/stderr."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False,
                          universal_newlines=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError("%s failed (%d): %s" % (cmd, proc.returncode, proc.stderr))
    return proc


def oracle_in(directory, qemu_img="qemu-img", qemu_io="qemu-io"):
    """(q, io) that run qemu-img and qemu-io in directory, for fixtures that build image sets:
    q("create", ...) and io(fmt, name, "write -P 1 0 1M", ...)."""
    def q(*args):
        run([qemu_img] + list(args), cwd=directory)

    def io(fmt, name, *cmds):
        cmd = [qemu_io, "-f", fmt]
        for c in cmds:
            cmd += ["-c", c]
        run(cmd + [name], cwd=directory)
    return q, io


Outcome = collections.namedtuple("Outcome", "stdout stderr returncode")


def oracle_and_ours(qemu_img, runner, args, cwd):
    """(qemu-img's, ours) Outcomes for the same args in cwd; runner runs bin/qimg (qimg, qimg_as...)."""
    want = run([qemu_img] + list(args), check=False, cwd=cwd)
    got = runner(*args, cwd=cwd)
    return Outcome(want.stdout, want.stderr, want.returncode), Outcome(got.stdout, got.stderr, got.returncode)


def assert_same_as_qemu_img(qemu_img, runner, args, cwd):
    """Identical stdout, stderr and exit code; returns our Outcome."""
    want, got = oracle_and_ours(qemu_img, runner, args, cwd)
    assert got == want, "%s\nqemu-img: %r\nqimg:     %r" % (args, want, got)
    return got


def qimg(*args, **kw):
    """Run bin/qimg with the current interpreter."""
    return run([sys.executable, QIMG] + [str(a) for a in args], **kw)


def qimg_as(name, tmpdir):
    """A runner for bin/qimg through a symlink called ``name`` (busybox style: it names itself so)."""
    link = os.path.join(str(tmpdir), name)
    if not os.path.lexists(link):
        os.symlink(QIMG, link)

    def runner(*args, **kw):
        kw.setdefault("check", False)
        return run([sys.executable, link] + [str(a) for a in args], **kw)
    return runner


@pytest.fixture(scope="session")
def as_qemu_img(tmp_path_factory):
    """bin/qimg through a symlink named qemu-img: its messages begin "qemu-img:", as a drop-in's must."""
    return qimg_as("qemu-img", tmp_path_factory.mktemp("link"))
