# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backend of qimg_measure: the space a new image needs, for a size or an existing image's content.

``run_measure(module)`` returns the result; engine failures are raised (QimgError) for the
module's ``qimg_errors``.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import (
    engine_options,
    resolve_snapshot,
    snake_case_keys,
    target_options,
)
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.measure import measure


def run_measure(module):
    params = module.params
    options = target_options(module, params["target_format"], params["options"])
    snapshot = params["snapshot"]
    if snapshot is not None:
        snapshot = resolve_snapshot(params["path"], params["format"], snapshot)
    figures = measure(filename=params["path"], size=params["size"], fmt=params["format"],
                      out_fmt=params["target_format"], options=engine_options(options),
                      snapshot=snapshot, force_share=params["force_share"],
                      allow_unsafe_backing=params["allow_unsafe_backing"])
    result = dict(changed=False)
    result.update(snake_case_keys(figures))
    return result
