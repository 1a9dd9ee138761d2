# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""`info`: an image's facts in qemu-img's `info --output=json` shape."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..crypto import no_io
from ..image import backing_path, open_image


def device_info(dev):
    """ImageInfo dict for one open layer."""
    d = {"virtual-size": dev.size, "filename": dev.filename, "format": dev.format_name}
    actual = dev.actual_size()
    if actual is not None:
        d["actual-size"] = actual
    extra = dev.info_fields()
    if "cluster-size" in extra:
        d["cluster-size"] = extra["cluster-size"]
    if dev.backing_filename:
        d["backing-filename"] = dev.backing_filename
        full = backing_path(dev)
        if full is not None:
            d["full-backing-filename"] = full
        if dev.backing_format:
            d["backing-filename-format"] = dev.backing_format
    if extra.get("snapshots"):
        d["snapshots"] = extra["snapshots"]
    fs = dev.format_specific()
    if fs is not None:
        d["format-specific"] = fs
    if extra.get("encrypted"):
        d["encrypted"] = True
    d["dirty-flag"] = extra.get("dirty-flag", False)
    return d


def image_info(filename, fmt=None, backing_chain=False, force_share=False, allow_unsafe_backing=False):
    """Facts of an image; with backing_chain a list, top first."""
    # like qemu-img, a missing backing file does not stop `info` unless the chain is asked for
    # nor does it open external data files (qemu-img info opens images without I/O)
    with no_io(), open_image(filename, fmt, read_only=True, force_share=force_share, open_backing=backing_chain,
                             allow_unsafe_backing=allow_unsafe_backing, open_data_file=False) as dev:
        if not backing_chain:
            return device_info(dev)
        return [device_info(layer) for layer in dev.chain()]
