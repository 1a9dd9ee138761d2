# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures to run a module's main() in-process and parse its JSON result."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import shutil
import subprocess
import time

import pytest

from ansible.module_utils.testing import patch_module_args
from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import ImageInUse
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info


def run_module(main, capsys, args, check_mode=False, diff=False):
    """Run main() with args; return (result dict, failed flag).

    The real exit_json/fail_json run (so Ansible's own additions such as path facts are seen);
    their JSON on stdout is parsed.
    """
    args = dict(args)
    if check_mode:
        args["_ansible_check_mode"] = True
    if diff:
        args["_ansible_diff"] = True
    capsys.readouterr()
    with patch_module_args(args):
        with pytest.raises(SystemExit) as exc:
            main()
    out = capsys.readouterr().out
    result = json.loads(out)
    failed = bool(result.get("failed")) or exc.value.code not in (0, None)
    return result, failed


def run_ok(main, capsys, args, **kwargs):
    result, failed = run_module(main, capsys, args, **kwargs)
    assert not failed, result
    return result


def run_fail(main, capsys, args, **kwargs):
    result, failed = run_module(main, capsys, args, **kwargs)
    assert failed, result
    return result


class ModuleRunner(object):
    def __init__(self, capsys):
        self.capsys = capsys

    def __call__(self, main, args, **kwargs):
        return run_module(main, self.capsys, args, **kwargs)

    def ok(self, main, args, **kwargs):
        return run_ok(main, self.capsys, args, **kwargs)

    def fail(self, main, args, **kwargs):
        return run_fail(main, self.capsys, args, **kwargs)


@pytest.fixture
def run(capsys):
    """run.ok(main, args, check_mode=..., diff=...) -> result; run.fail(...) -> failed result."""
    return ModuleRunner(capsys)


@pytest.fixture
def in_use(tmp_path):
    """A qcow2 image held open for writing by qemu-nbd (as a running VM would hold it)."""
    nbd = shutil.which("qemu-nbd")
    if nbd is None:
        pytest.skip("qemu-nbd not installed")
    path = str(tmp_path / "busy.qcow2")
    create_image(path, "qcow2", size="1M")
    sock = str(tmp_path / "nbd.sock")
    # Our probe takes QEMU's locks for a moment: when qemu-nbd opens the image in that moment it
    # cannot get its own lock and exits, so a start is retried a few times.
    for dummy in range(5):
        proc = subprocess.Popen([nbd, "-k", sock, "-f", "qcow2", path])  # pylint: disable=consider-using-with
        if _wait_for_write_lock(proc, path):
            break
        proc.wait()
    else:
        pytest.fail("qemu-nbd never took the image's write lock (last exit status %s)" % proc.returncode)
    try:
        yield path
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # qemu-nbd may ignore SIGTERM while starting up
            proc.kill()
            proc.wait()


def _wait_for_write_lock(proc, path):
    """True once qemu-nbd holds its write lock (the socket may appear first); False if it exited."""
    for dummy in range(400):
        try:
            image_info(path, force_share=False)
        except ImageInUse:
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    proc.kill()
    return False
