# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copy-on-write under internal snapshots.

A qemu-made image has two internal snapshots whose content differs from each other and from the
active layer, so clusters and L2 tables are shared (refcount > 1). Writes, zero writes and
discards through the engine must copy shared clusters: afterwards every snapshot still reads as
before (`qemu-img convert -l snapshot.name=NAME`), the active layer equals the model, and
`qemu-img check` is clean.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import hashlib
import random

import pytest

from helpers import assert_check_clean, engine_digest, qemu_compare, qemu_img_create, qemu_io, qemu_raw_digest, run

SIZE = 2 * 1024 * 1024

# (id, -o options)
LAYOUTS = [
    ("v3-64k", {"cluster_size": "64k"}),
    ("v3-4k-rb2", {"cluster_size": "4k", "refcount_bits": "2"}),  # refcounts up to 3 exactly fit
    ("v2-4k", {"cluster_size": "4k", "compat": "0.10"}),
    ("v3-512-rb64", {"cluster_size": "512", "refcount_bits": "64"}),
    ("v3-64k-el2", {"cluster_size": "64k", "extended_l2": "on"}),
]


def _model_apply(model, kind, off, length, data, cluster):
    if kind == "write":
        model[off:off + length] = data
    elif kind == "zero":
        model[off:off + length] = bytes(length)
    else:  # whole clusters only; no backing file, so discarded clusters read as zeros
        first = -(-off // cluster) * cluster
        last = (off + length) // cluster * cluster
        for c in range(first, last, cluster):
            model[c:c + cluster] = bytes(cluster)


def _build(d, options):
    p = d / "snap.qcow2"
    qemu_img_create(p, "qcow2", SIZE, options)
    qemu_io(p, "write -P 1 0 1M", "write -P 2 1536k 256k")
    run(["qemu-img", "snapshot", "-c", "first", str(p)])
    qemu_io(p, "write -P 3 64k 128k", "write -z 512k 64k", "discard 768k 64k", "write -P 4 1900k 4k")
    run(["qemu-img", "snapshot", "-c", "second", str(p)])
    qemu_io(p, "write -P 5 0 16k", "write -P 6 1M 64k")
    return p


def _ops(seed, cluster):
    rnd = random.Random(seed)
    ops = [  # fixed ones that surely hit shared clusters and shared L2 tables
        ("write", 4096, 512),
        ("write", 1536 * 1024 + 100, 70000),
        ("zero", 64 * 1024, 64 * 1024),
        ("discard", 1600 * 1024, 128 * 1024),
        ("zero", 900 * 1024 + 7, 3000),
    ]
    for dummy in range(20):
        kind = rnd.choice(["write", "write", "zero", "discard"])
        off = rnd.randrange(SIZE)
        if rnd.random() < 0.5:
            off -= off % cluster
        length = min(SIZE - off, rnd.randrange(1, 4 * max(cluster, 4096)))
        ops.append((kind, off, length))
    return ops


@pytest.mark.parametrize("options", [x[1] for x in LAYOUTS], ids=[x[0] for x in LAYOUTS])
def test_snapshots_survive_engine_writes(qemu_img, qemu_io, tmp_path, options):
    from qimg.image import open_image
    src = _build(tmp_path, options)
    cluster = {"64k": 65536, "4k": 4096, "512": 512}[options["cluster_size"]]
    before = dict((name, qemu_raw_digest(src, tmp_path, snapshot=name)) for name in ("first", "second"))
    active_raw = tmp_path / "active.raw"
    run(["qemu-img", "convert", "-O", "raw", str(src), str(active_raw)])
    model = bytearray(active_raw.read_bytes())
    assert before["first"] != before["second"]

    img = tmp_path / "copy.qcow2"
    img.write_bytes(src.read_bytes())
    rnd = random.Random(cluster)
    with open_image(str(img), fmt="qcow2", read_only=False) as dev:
        for kind, off, length in _ops(cluster, cluster):
            data = rnd.randbytes(length)
            _model_apply(model, kind, off, length, data, cluster)
            if kind == "write":
                dev.write(off, data)
            elif kind == "zero":
                dev.write_zeroes(off, length)
            else:
                dev.discard(off, length)
        dev.flush()

    assert_check_clean(img)
    for name, digest in before.items():
        assert qemu_raw_digest(img, tmp_path, snapshot=name) == digest, "snapshot %s changed" % name
    active_raw.write_bytes(bytes(model))
    proc = qemu_compare(img, active_raw, "qcow2", "raw")
    assert proc.returncode == 0, "active layer differs from the model: %s %s" % (proc.stdout, proc.stderr)
    # and the engine itself reads the new active layer as the model
    assert engine_digest(str(img))[0] == hashlib.sha256(bytes(model)).hexdigest()
    # qemu-img still lists both snapshots
    out = run(["qemu-img", "snapshot", "-l", str(img)]).stdout
    assert "first" in out and "second" in out
