# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""``qemu-img snapshot [-q] [-U] [-l | -a snapshot | -c snapshot | -d snapshot] filename``.

As in qemu-img 7.2: no action at all opens the image (read-write) and does nothing; -f is not an
option of this command; -d looks the snapshot up by name only, -a by id first, then by name.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from .args import image_name
from .errors import CommandError, HelpRequested, UsageError
from .getopt import iter_getopt
from .output import snapshot_line

PROBED_RAW_WARNING = ("WARNING: Image format was not specified for '%s' and probing guessed raw.\n"
                      "         Automatically detecting the format is dangerous for raw images, "
                      "write operations on block 0 will be restricted.\n"
                      "         Specify the 'raw' format explicitly to remove the restrictions.\n")


def format_snapshot_list(snapshots):
    """qemu-img's dump_snapshots(): nothing at all when there are none."""
    if not snapshots:
        return ""
    return "Snapshot list:\n" + "".join(snapshot_line(sn) + "\n" for sn in [None] + list(snapshots))


def run(argv, ctx):
    longopts = {"help": (False, "h"), "object": (True, "object"), "image-opts": (False, "image-opts"),
                "force-share": (False, "U")}
    action, name, share = None, None, False
    objects, image_opts = [], False
    args = []
    for opt, arg in iter_getopt(argv, ":la:c:d:hqU", longopts):
        if opt is None:
            args = arg
        elif opt == "h":
            raise HelpRequested()
        elif opt in ("l", "a", "c", "d"):
            if action is not None:
                raise UsageError("Cannot mix '-l', '-a', '-c', '-d'")
            action, name = opt, arg
        elif opt == "U":
            share = True
        elif opt == "object":
            objects.append(arg)
        elif opt == "image-opts":
            image_opts = True
    if len(args) != 1:
        raise UsageError("Expecting one image file name")
    filename = image_name(args[0], image_opts=image_opts, objects=objects)
    from ..ops import snapshot as ops_snapshot
    if action == "l":
        ctx.out(format_snapshot_list(ops_snapshot.list_snapshots(filename, force_share=share, specs=True)))
        return 0
    if share:
        raise CommandError("Could not open '%s': force-share=on can only be used with read-only images" % filename)
    from ..ops.check import probe_format
    if probe_format(filename)["probed-raw"]:
        # -a on raw: QEMU falls back to the protocol layer and reopens the format (a second warning)
        ctx.err(PROBED_RAW_WARNING % filename * (2 if action == "a" else 1))
    try:
        if action == "c":
            ops_snapshot.create_snapshot(filename, name, specs=True)
        elif action == "a":
            ops_snapshot.apply_snapshot(filename, name, specs=True)
        elif action == "d":
            ops_snapshot.delete_snapshot(filename, name=name, specs=True)
        else:
            ops_snapshot.open_for_nothing(filename, force_share=share, specs=True)
    except ops_snapshot.SnapshotFailed as err:
        if err.notes:
            ctx.err("".join(line + "\n" for line in err.notes))
        raise CommandError(err.lines)
    return 0
