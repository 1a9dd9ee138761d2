# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The kill-at-every-write harness itself: trial K leaves exactly the first K-1 writes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys

from crashkill import kill_at_every_write

# Six writes through three different system calls (pwrite64, pwritev2, ftruncate).
WRITER = r"""
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
for i in range(5):
    if i % 2:
        os.pwrite(fd, b"%d" % i, i)
    else:
        os.pwritev(fd, [b"%d" % i], i)
os.ftruncate(fd, 8)
"""


def test_kill_before_each_write(tmp_path):
    target = tmp_path / "f"
    script = tmp_path / "w.py"
    script.write_text(WRITER)

    def prepare():
        target.write_bytes(b"-----")

    def verify(k):
        want = b"01234\0\0\0" if k == 0 else (b"01234"[:k - 1] + b"-----"[k - 1:])
        got = target.read_bytes()
        return None if got == want else "after kill %d: %r, expected %r" % (k, got, want)

    trials, failures = kill_at_every_write(prepare, [sys.executable, str(script), str(target)], [target], verify,
                                           cwd=str(tmp_path))
    assert trials == 6
    assert failures == []
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith(".crashkill")]
