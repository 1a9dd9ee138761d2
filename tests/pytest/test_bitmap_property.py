# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Random sessions of guest writes, bitmap actions and resizes against a model of the bitmaps
(a set of dirty granules per bitmap); after each step the file must hold what the model says
(read by the independent reader of test_bitmap) and qemu-img check must be clean."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json

import pytest

hypothesis = pytest.importorskip("hypothesis")
st = pytest.importorskip("hypothesis.strategies")

from conftest import run  # noqa: E402
from helpers import assert_check_clean, qemu_img_create  # noqa: E402
from test_bitmap import raw_bitmaps  # noqa: E402

KiB = 1024
NAMES = ["a", "b", "c"]
GRANULARITIES = [512, 4 * KiB, 64 * KiB, 1024 * KiB]

_write = st.tuples(st.just("write"), st.integers(0, 4 * 1024 - 1), st.integers(1, 256),
                   st.sampled_from(["data", "zero", "discard"]))
_bitmap = st.tuples(st.just("bitmap"), st.sampled_from(NAMES),
                    st.lists(st.sampled_from(["add", "remove", "clear", "enable", "disable", "merge"]),
                             min_size=1, max_size=3),
                    st.sampled_from(GRANULARITIES), st.sampled_from(NAMES))
_resize = st.tuples(st.just("resize"), st.sampled_from([2, 3, 4, 6]))
STEPS = st.lists(st.one_of(_write, _write, _bitmap, _resize), min_size=1, max_size=10)


class Model(object):
    def __init__(self, size):
        self.size = size
        self.bitmaps = []   # [name, granularity, enabled, set of granules], directory order

    def find(self, name):
        for b in self.bitmaps:
            if b[0] == name:
                return b
        return None

    def mark(self, off, length):
        end = min(off + length, self.size)
        for b in self.bitmaps:
            if b[2] and off < end:
                b[3].update(range(off // b[1], (end - 1) // b[1] + 1))

    def ranges(self, b):
        out = []
        for i in sorted(b[3]):
            start, end = i * b[1], min(self.size, (i + 1) * b[1])
            if out and out[-1][1] == start:
                out[-1] = (out[-1][0], end)
            else:
                out.append((start, end))
        return out

    def action(self, act, name, gran, src):
        """Returns False when qemu-img would fail this action (the ones before it stay)."""
        b = self.find(name)
        if act == "add":
            if b is not None:
                return False
            self.bitmaps.append([name, gran, True, set()])
            return True
        if b is None:
            return False
        if act == "remove":
            self.bitmaps.remove(b)
        elif act == "clear":
            b[3].clear()
        elif act in ("enable", "disable"):
            b[2] = act == "enable"
        else:
            s = self.find(src)
            if s is None:
                return False
            for i in list(s[3]):
                start, end = i * s[1], min(self.size, (i + 1) * s[1])
                b[3].update(range(start // b[1], (end - 1) // b[1] + 1))
        return True

    def resize(self, size):
        self.size = size
        for b in self.bitmaps:
            limit = -(-size // b[1])
            b[3] = set(i for i in b[3] if i < limit)


def _apply(path, model, step):
    from qimg.errors import QimgError
    from qimg.image import open_image
    from qimg.ops import bitmap as ops_bitmap
    from qimg.ops.resize import resize_image
    if step[0] == "write":
        _, sector, count, kind = step
        off, length = sector * 512 * 4, count * 512 * 4
        if off >= model.size:
            return
        length = min(length, model.size - off)
        with open_image(str(path), read_only=False) as dev:
            if kind == "data":
                dev.write(off, b"\x01" * length)
            elif kind == "zero":
                dev.write_zeroes(off, length)
            else:
                dev.discard(off, length)
        model.mark(off, length)
    elif step[0] == "bitmap":
        _, name, acts, gran, src = step
        actions = [(a, src if a == "merge" else None) for a in acts]
        granularity = gran if "add" in acts else None
        try:
            ops_bitmap.bitmap(str(path), name, actions, granularity=granularity)
            ok = True
        except QimgError:
            ok = False
        for a in acts:
            if not model.action(a, name, gran, src):
                assert not ok, (step, "qemu-img would fail")
                break
        else:
            assert ok, step
    else:
        size = step[1] * 1024 * 1024
        resize_image(str(path), size, shrink=True)
        model.resize(size)


@hypothesis.settings(max_examples=25, deadline=None,
                     suppress_health_check=list(hypothesis.HealthCheck))
@hypothesis.given(steps=STEPS)
def test_bitmaps_follow_the_model(tmp_path_factory, steps):
    path = tmp_path_factory.mktemp("prop") / "p.qcow2"
    qemu_img_create(path, "qcow2", "4M", {"cluster_size": "4k"})
    model = Model(4 * 1024 * 1024)
    for step in steps:
        _apply(path, model, step)
        got = raw_bitmaps(path)
        assert list(got) == [b[0] for b in model.bitmaps], step
        for b in model.bitmaps:
            flags, gran, ranges = got[b[0]]
            assert flags == (2 if b[2] else 0) and gran == b[1], (step, b[0], flags)
            assert ranges == model.ranges(b), (step, b[0])
    assert_check_clean(path)
    info = json.loads(run(["qemu-img", "info", "--output=json", str(path)]).stdout)
    listed = info["format-specific"]["data"].get("bitmaps", [])
    assert [x["name"] for x in listed] == [b[0] for b in model.bitmaps]
