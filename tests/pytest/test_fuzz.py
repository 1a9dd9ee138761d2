# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixed-seed mutation fuzzing of qcow2 images (see fuzz_images.py; a longer campaign:
`python3 tests/pytest/fuzz_images.py --cases 20000`)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fuzz_images  # noqa: E402  pylint: disable=wrong-import-position

CASES = int(os.environ.get("QIMG_FUZZ_CASES", "600"))


@pytest.mark.parametrize("seed", [1, 2])
def test_mutants_fail_cleanly(qemu_img, qemu_io, tmp_path, seed):
    tried, failures = fuzz_images.campaign(CASES // 2, seed=seed, directory=str(tmp_path))
    assert tried == CASES // 2
    report = "\n".join("%s\n    %s" % (desc, "\n    ".join(problems)) for desc, problems in failures[:5])
    assert not failures, "%d of %d mutants misbehaved:\n%s" % (len(failures), tried, report)


def test_mutation_changes_the_image(qemu_img, qemu_io, tmp_path):
    """The fuzzer really mutates: most mutants differ from their seed."""
    import random
    seeds = fuzz_images.build_seeds(str(tmp_path))
    rnd = random.Random(3)
    data = open(seeds["v3"], "rb").read()
    changed = sum(fuzz_images.mutate(data, rnd)[0] != data for dummy in range(50))
    assert changed >= 40


def test_mutated_specs_fail_cleanly(qemu_img, tmp_path):
    """Bad json:/--image-opts specifications (mutants of good ones) end in a clean error."""
    img = tmp_path / "a.qcow2"
    import subprocess
    subprocess.run(["qemu-img", "create", "-f", "qcow2", str(img), "1M"], check=True, stdout=subprocess.PIPE)
    tried, failures = fuzz_images.spec_campaign(CASES, seed=5, image=str(img))
    report = "\n".join("%r\n    %s" % (text, "\n    ".join(problems)) for text, problems in failures[:5])
    assert not failures, "%d of %d specs misbehaved:\n%s" % (len(failures), tried, report)


def test_hostile_luks_headers_fail_cleanly(tmp_path):
    """LUKS headers of luks files and LUKS qcow2 images with key material beyond the file, bad
    stripes, iteration counts, payload offsets, truncations: one-line errors, bounded time and
    memory, through info, read, check, convert and a keyslot amend."""
    pytest.importorskip("cryptography")
    tried, failures = fuzz_images.crypto_campaign(max(CASES // 4, 40), seed=11, directory=str(tmp_path))
    report = "\n".join("%s\n    %s" % (desc, "\n    ".join(problems)) for desc, problems in failures[:5])
    assert not failures, "%d of %d mutants misbehaved:\n%s" % (len(failures), tried, report)
