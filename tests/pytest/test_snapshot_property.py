# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property test: random guest writes, zero writes, discards and snapshot create / apply / delete
on our image and on a model (the active bytes plus an ordered list of snapshot name -> bytes).

After every step `qemu-img check` is clean, the engine reads the active image and every snapshot
as the model says; at the end of each example qemu-img reads them the same (`convert -l`).
Shrinking is off unless QIMG_SHRINK=1, as in test_property.py.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import os

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from helpers import assert_check_clean, qemu_img_create, qemu_raw_digest

PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("QIMG_SHRINK") == "1":
    PHASES.append(Phase.shrink)
SETTINGS = settings(max_examples=int(os.environ.get("QIMG_SNAPSHOT_EXAMPLES", "25")), deadline=None,
                    phases=PHASES, derandomize=os.environ.get("CI") == "true",
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

NAMES = ["a", "b", "c"]

# (id, -o options, cluster size, image size)
PARAMS = [
    ("c4k-v3", {"cluster_size": "4k"}, 4096, 256 * 1024),
    ("c512-rb64", {"cluster_size": "512", "refcount_bits": "64"}, 512, 96 * 1024),
    ("c4k-v2", {"cluster_size": "4k", "compat": "0.10"}, 4096, 192 * 1024),
    ("c64k-el2", {"cluster_size": "64k", "extended_l2": "on"}, 65536, 1024 * 1024),
]


@st.composite
def step(draw, size, cluster):
    kind = draw(st.sampled_from(["write", "write", "zero", "discard", "create", "create", "apply", "delete"]))
    if kind in ("create", "apply", "delete"):
        return (kind, draw(st.sampled_from(NAMES)))
    off = draw(st.integers(0, size // cluster - 1)) * cluster + draw(st.sampled_from([0, 0, 512, cluster // 2]))
    off = min(off, size - 1)
    length = min(size - off, draw(st.sampled_from([512, cluster, 2 * cluster, 3 * cluster + 512])))
    return (kind, off, length, draw(st.integers(1, 255)))


def _discard_model(model, off, length, cluster):
    first = -(-off // cluster) * cluster
    end = off + length
    last = end if end == len(model) else end // cluster * cluster
    if last > first:
        model[first:last] = bytes(last - first)


def _read_all(dev):
    return dev.read(0, dev.size)


@pytest.mark.parametrize("param", PARAMS, ids=[p[0] for p in PARAMS])
def test_snapshot_sequences(qemu_img, tmp_path, param):
    from qimg.errors import QimgError
    from qimg.image import open_image
    from qimg.ops import snapshot as S
    _pid, options, cluster, size = param

    @SETTINGS
    @given(st.lists(step(size, cluster), min_size=1, max_size=10))
    def run_example(steps):
        img = tmp_path / "p.qcow2"
        if img.exists():
            img.unlink()
        qemu_img_create(img, "qcow2", size, options)
        active = bytearray(size)
        snaps = []  # [(name, bytes)] in table order
        for st_ in steps:
            kind = st_[0]
            if kind == "create":
                S.create_snapshot(str(img), st_[1])
                snaps.append((st_[1], bytes(active)))
            elif kind == "apply":
                match = [b for n, b in snaps if n == st_[1]]
                if not match:
                    with pytest.raises(QimgError):
                        S.apply_snapshot(str(img), st_[1])
                    continue
                S.apply_snapshot(str(img), st_[1])
                active = bytearray(match[0])
            elif kind == "delete":
                idx = [i for i, (n, _b) in enumerate(snaps) if n == st_[1]]
                if not idx:
                    with pytest.raises(QimgError):
                        S.delete_snapshot(str(img), name=st_[1])
                    continue
                S.delete_snapshot(str(img), name=st_[1])
                del snaps[idx[0]]
            else:
                _k, off, length, pattern = st_
                with open_image(str(img), fmt="qcow2", read_only=False) as dev:
                    if kind == "write":
                        data = bytes([pattern]) * length
                        dev.write(off, data)
                        active[off:off + length] = data
                    elif kind == "zero":
                        dev.write_zeroes(off, length)
                        active[off:off + length] = bytes(length)
                    else:
                        dev.discard(off, length)
                        _discard_model(active, off, length, cluster)
            assert_check_clean(img)
            with open_image(str(img), fmt="qcow2") as dev:
                assert _read_all(dev) == bytes(active), "active differs after %s" % (st_,)
                assert [s.name for s in dev.snapshots] == [n for n, _b in snaps]
                ids = [s.id for s in dev.snapshots]
            for snap_id, (name, content) in zip(ids, snaps):
                with open_image(str(img), fmt="qcow2") as dev:
                    dev.activate_snapshot(snapshot_id=snap_id)
                    assert _read_all(dev) == content, "snapshot %s differs after %s" % (name, st_)
        assert qemu_raw_digest(img, tmp_path) == hashlib.sha256(bytes(active)).hexdigest()
        for name, content in snaps:
            if [n for n, _b in snaps].count(name) == 1:
                assert qemu_raw_digest(img, tmp_path, snapshot=name) == hashlib.sha256(content).hexdigest()

    run_example()
