# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend of qimg_info: the facts of an image (and of its backing chain).

``run_info(module)`` returns the result; engine failures are raised (QimgError) for the
module's ``qimg_errors``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import image_facts
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.checksum import image_checksum
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info


def run_info(module):
    params = module.params
    info = image_info(params["path"], fmt=params["format"], backing_chain=params["backing_chain"],
                      force_share=params["force_share"],
                      allow_unsafe_backing=params["allow_unsafe_backing"])
    result = dict(changed=False)
    if params["backing_chain"]:
        images = [image_facts(one) for one in info]
        result.update(images[0])
        result["images"] = images
    else:
        result.update(image_facts(info))
    if params.get("checksum"):
        result["checksum"] = image_checksum(params["path"], fmt=params["format"], algorithm=params["checksum"],
                                            force_share=params["force_share"],
                                            allow_unsafe_backing=params["allow_unsafe_backing"])["checksum"]
    return result
