# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Property test: random writes and zero writes into a 3-deep chain (base <- mid <- top), then a
random rebase or commit, checked against a model of the chain.

The model keeps, per image and cluster, the content the image allocates itself (None: it reads
through); a write allocates the cluster with what the image read there before (copy-on-write),
then patches it. After the operation the engine reads every image's guest view as the model says
and `qemu-img check` finds all three clean. Shrinking is off unless QIMG_SHRINK=1.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import shutil

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from helpers import assert_check_clean, qemu_img_create

PHASES = [Phase.explicit, Phase.reuse, Phase.generate]
if os.environ.get("QIMG_SHRINK") == "1":
    PHASES.append(Phase.shrink)
SETTINGS = settings(max_examples=int(os.environ.get("QIMG_CHAIN_EXAMPLES", "30")), deadline=None,
                    phases=PHASES, derandomize=os.environ.get("CI") == "true",
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])

CLUSTER = 4096
SIZE = 16 * CLUSTER
LAYERS = ("base", "mid", "top")
FINALS = ["commit", "commit-drop", "commit-base", "commit-base-atomic", "commit-atomic", "rebase-base",
          "rebase-none", "rebase-unsafe-base", "rebase-mid-base-then-top"]


@st.composite
def write(draw):
    layer = draw(st.integers(0, 2))
    off = draw(st.integers(0, SIZE // CLUSTER - 1)) * CLUSTER + draw(st.sampled_from([0, 0, 512, CLUSTER // 2]))
    off = min(off, SIZE - 512)
    length = min(SIZE - off, draw(st.sampled_from([512, CLUSTER, 2 * CLUSTER, 3 * CLUSTER + 512])))
    return (layer, off, length, draw(st.sampled_from([0, 0] + list(range(1, 8)))))


class Chain(object):
    def __init__(self):
        self.own = [[None] * (SIZE // CLUSTER) for _l in LAYERS]
        self.below = [None, 0, 1]   # the layer each one reads through (None: zeros)

    def cluster(self, layer, c):
        while layer is not None:
            if self.own[layer][c] is not None:
                return self.own[layer][c]
            layer = self.below[layer]
        return bytes(CLUSTER)

    def view(self, layer):
        return b"".join(self.cluster(layer, c) for c in range(SIZE // CLUSTER))

    def write(self, layer, off, data):
        pos = 0
        while pos < len(data):
            c, at = divmod(off + pos, CLUSTER)
            n = min(CLUSTER - at, len(data) - pos)
            buf = bytearray(self.cluster(layer, c))
            buf[at:at + n] = data[pos:pos + n]
            self.own[layer][c] = bytes(buf)
            pos += n


def _paths(d):
    return [os.path.join(str(d), name + ".qcow2") for name in LAYERS]


def _build(d):
    base, mid, top = _paths(d)
    qemu_img_create(base, "qcow2", SIZE, options={"cluster_size": CLUSTER})
    qemu_img_create(mid, "qcow2", SIZE, options={"cluster_size": CLUSTER}, backing="base.qcow2", backing_fmt="qcow2")
    qemu_img_create(top, "qcow2", SIZE, options={"cluster_size": CLUSTER}, backing="mid.qcow2", backing_fmt="qcow2")


def _apply(final, paths, model):
    from qimg.ops.commit import commit_image
    from qimg.ops.rebase import rebase_image
    base, mid, top = paths
    if final.startswith("commit"):
        atomic = final.endswith("atomic")
        if final.startswith("commit-base"):
            commit_image(top, base=base, atomic=atomic)
            model.own[0] = [model.cluster(2, c) if any(model.own[k][c] is not None for k in (1, 2))
                            else model.own[0][c] for c in range(SIZE // CLUSTER)]
        else:
            commit_image(top, drop=final == "commit-drop", atomic=atomic)
            model.own[1] = [model.cluster(2, c) for c in range(SIZE // CLUSTER)]
            if final != "commit-drop":
                model.own[2] = [None] * (SIZE // CLUSTER)
            # mid allocates what it read through if top allocated it: fine either way for the views
    elif final == "rebase-base":
        view = [model.cluster(2, c) for c in range(SIZE // CLUSTER)]
        rebase_image(top, "base.qcow2", "qcow2")
        model.below[2] = 0
        model.own[2] = [view[c] if view[c] != model.cluster(0, c) or model.own[2][c] is not None else None
                        for c in range(SIZE // CLUSTER)]
    elif final == "rebase-none":
        view = [model.cluster(2, c) for c in range(SIZE // CLUSTER)]
        rebase_image(top, "")
        model.below[2] = None
        model.own[2] = view
    elif final == "rebase-unsafe-base":
        rebase_image(top, "base.qcow2", "qcow2", unsafe=True)
        model.below[2] = 0
    else:   # flatten mid onto nothing, then move top onto base safely
        rebase_image(mid, "")
        model.own[1] = [model.cluster(1, c) for c in range(SIZE // CLUSTER)]
        model.below[1] = None
        view = [model.cluster(2, c) for c in range(SIZE // CLUSTER)]
        rebase_image(top, "base.qcow2", "qcow2")
        model.below[2] = 0
        model.own[2] = [view[c] if view[c] != model.cluster(0, c) or model.own[2][c] is not None else None
                        for c in range(SIZE // CLUSTER)]


@SETTINGS
@given(writes=st.lists(write(), min_size=1, max_size=12), final=st.sampled_from(FINALS))
def test_chain_operations_match_the_model(tmp_path, writes, final):
    from qimg.image import open_image
    d = tmp_path / "chain"
    if d.exists():
        shutil.rmtree(str(d))
    d.mkdir()
    _build(d)
    paths = _paths(d)
    model = Chain()
    for layer, off, length, pattern in writes:
        with open_image(paths[layer], "qcow2", read_only=False) as dev:
            if pattern:
                dev.write(off, bytes([pattern]) * length)
            else:
                dev.write_zeroes(off, length)
        model.write(layer, off, bytes([pattern]) * length)
    _apply(final, paths, model)
    for layer, path in enumerate(paths):
        with open_image(path, "qcow2") as dev:
            got = dev.read(0, SIZE)
        assert got == model.view(layer), (final, LAYERS[layer])
        assert_check_clean(path)
    if final in ("commit", "commit-atomic"):
        from qimg.image import UNALLOCATED
        with open_image(paths[2], "qcow2", open_backing=False) as dev:
            assert all(e.status == UNALLOCATED for e in dev.block_status(0, SIZE)), "top not emptied"
