# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend of qimg_compare: compare the guest-visible content of two images.

``run_compare(module)`` returns the result; engine failures are raised (QimgError) for the
module's ``qimg_errors``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.compare import IDENTICAL, compare_images


def run_compare(module):
    params = module.params
    found = compare_images(params["path1"], params["path2"], fmt1=params["format1"],
                           fmt2=params["format2"], strict=params["strict"],
                           force_share=params["force_share"],
                           allow_unsafe_backing=params["allow_unsafe_backing"])
    return dict(changed=False, identical=found["result"] == IDENTICAL, result=found["result"],
                offset=found["offset"], size_mismatch=found["size-mismatch"])
