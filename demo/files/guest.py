# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Stand-ins for the outside world of the demo (demo/demo.yml).

  guest.py cloud-image PATH --release N
      Write a raw "cloud image" of 1 GiB with about 210 MiB of file-system-like content: a boot
      sector, inode-table-like records, text files, binaries, logs, and unwritten (sparse) free
      space. The content is a fixed function of N; release 2 has updated files and new ones.
  guest.py job IMAGE --seed N [--done FILE]
      What a CI job running in a VM writes to its disk: a few MiB of build output and logs,
      written through the collection's engine into the (qcow2) image, as the VM would. Then
      creates FILE, the job's record that it ran.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import os
import random
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "plugins", "module_utils"))

from qimg.errors import QimgError  # noqa: E402
from qimg.image import open_image  # noqa: E402

MIB = 1 << 20
SIZE = 1 << 30
WORDS = ("the of and to in is for on that with as by this be are from at or an it not which have "
         "kernel module package config systemd network libc python usr lib share bin etc var log "
         "install update version release debian ubuntu error warning info debug").split()


def text_block(rng, size):
    """Compressible text, like the files of a distribution."""
    out, n = [], 0
    while n < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 14))) + "\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def cloud_extents(release):
    """(offset, data) pairs of the cloud image of this release."""
    rng = random.Random(1000)
    text = text_block(rng, MIB)
    extents = [(0, bytes(rng.randrange(256) for _ in range(440)) + bytes(70) + b"\x55\xaa")]
    # inode-table-like records: small, regular, very compressible (8 MiB at 4 MiB)
    table = b"".join(b"INODE%08d" % i + bytes(18) + (b"%05o" % (i % 32768)) for i in range(8 * MIB // 36))
    extents.append((4 * MIB, table[:8 * MIB]))
    # text files: 160 MiB from 16 MiB on, every MiB a different rotation of the text
    for i in range(160):
        cut = (i * 7919) % MIB
        if release >= 2 and 40 <= i < 56:
            cut = (cut + 4242) % MIB  # updated packages
        chunk = text[cut:] + text[:cut]
        extents.append((16 * MIB + i * MIB, b"FILE%06d" % i + chunk[10:]))
    # binaries: 24 MiB of incompressible data at 192 MiB
    bin_rng = random.Random(2000)
    for i in range(24):
        data = bin_rng.randbytes(MIB)
        if release >= 2 and i in (3, 4, 17):
            data = random.Random(3000 + i).randbytes(MIB)  # rebuilt libraries
        extents.append((192 * MIB + i * MIB, data))
    # logs: 16 MiB at 512 MiB, mostly text with timestamps
    for i in range(16):
        extents.append((512 * MIB + i * MIB, (b"2026-12-01T00:%02d:00 " % i) + text[i * 4096:][:MIB - 20]))
    if release >= 2:
        # new files in what was free space
        for i in range(8):
            extents.append((768 * MIB + i * MIB, b"NEWFILE%03d" % i + text[i * 999:][:MIB - 10]))
    return extents


def cloud_image(path, release):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.truncate(SIZE)
        for offset, data in cloud_extents(release):
            f.seek(offset)
            f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, path)


def job(image, seed):
    rng = random.Random(seed)
    text = text_block(rng, MIB)
    with open_image(image, read_only=False) as dev:
        for i in range(6):  # build output and logs, here and there
            offset = (600 + 37 * i + rng.randrange(8)) * MIB
            dev.write(offset, text[i * 100:] + text[:i * 100])
        dev.write(16 * MIB, b"FILE000000 changed by job %d\n" % seed)  # and a changed file
        dev.flush()


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("cloud-image")
    one.add_argument("path")
    one.add_argument("--release", type=int, default=1)
    two = sub.add_parser("job")
    two.add_argument("image")
    two.add_argument("--seed", type=int, default=1)
    two.add_argument("--done")
    args = parser.parse_args(argv)
    try:
        if args.command == "cloud-image":
            cloud_image(args.path, args.release)
        else:
            job(args.image, args.seed)
            if args.done:
                with open(args.done, "w") as f:
                    f.write("job %d ran on %s\n" % (args.seed, args.image))
    except QimgError as err:
        sys.stderr.write("guest.py: %s\n" % err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
