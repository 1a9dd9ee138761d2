# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Decisions of the qimg_snapshot module: desired state vs the image's snapshot table.

present: create the snapshot when no snapshot of that name exists; absent: delete every snapshot
of that name; applied: revert the active image to it unless the active image already equals it
(from the tables first, from the guest content when the tables differ). The same plan serves
check mode (nothing is done) and the real run, so check mode predicts exactly.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.qimg.disk.plugins.module_utils.ansible_glue import (
    image_facts,
    qimg_errors,
    refuse_in_use,
    snake_case_keys,
)
from ansible_collections.qimg.disk.plugins.module_utils.qimg.formats.qcow2.snapshots import (
    MAX_NAME_BYTES,
    next_snapshot_id,
)
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops import snapshot as ops_snapshot
from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.info import image_info

STATES = ("present", "absent", "applied")


class _Ids(object):
    def __init__(self, snap_id):
        self.id = snap_id


def plan(path, name, state):
    """What the task would do: a dict with `actions` [(op, argument)], `before` and `after` (snapshot
    lists of {id, name} in table order) and `active` (None, or (before, after) for a revert)."""
    info = image_info(path, force_share=True)
    if info.get("format") != "qcow2":
        raise ops_snapshot.SnapshotFailed("%s: internal snapshots need a qcow2 image (this one is %s)"
                                          % (path, info.get("format")))
    current = info.get("snapshots") or []
    before = [{"id": s["id"], "name": s["name"]} for s in current]
    after = list(before)
    actions = []
    active = None
    if state == "present":
        if not any(s["name"] == name for s in current):
            new_id = next_snapshot_id([_Ids(s["id"]) for s in current])
            after.append({"id": new_id, "name": name})
            actions.append(("create", name))
    elif state == "absent":
        for s in current:
            if s["name"] == name:
                actions.append(("delete", name))
        after = [s for s in before if s["name"] != name]
    else:
        match = [s for s in current if s["name"] == name]
        if not match:
            raise ops_snapshot.SnapshotNotFound("%s: there is no snapshot called '%s'" % (path, name))
        snap_id = match[0]["id"]
        if not ops_snapshot.active_equals_snapshot(path, snap_id, force_share=True):
            actions.append(("apply", snap_id))
            active = ("current", "snapshot %s (id %s)" % (name, snap_id))
    return {"actions": actions, "before": before, "after": after, "active": active}


def _diff(p):
    before = {"snapshots": ["%s %s" % (s["id"], s["name"]) for s in p["before"]]}
    after = {"snapshots": ["%s %s" % (s["id"], s["name"]) for s in p["after"]]}
    if p["active"] is not None:
        before["active"], after["active"] = p["active"]
    return {"before": before, "after": after}


def _act(path, actions):
    for op, arg in actions:
        if op == "create":
            ops_snapshot.create_snapshot(path, arg)
        elif op == "delete":
            ops_snapshot.delete_snapshot(path, name=arg)
        else:
            ops_snapshot.apply_snapshot(path, arg)


def run(module):
    """The whole module: plan, refuse an image in use, act (unless check mode), report."""
    params = module.params
    path, name, state = params["path"], params["name"], params["state"]
    result = {"changed": False, "path": path}
    if len(name.encode("utf-8", "surrogateescape")) > MAX_NAME_BYTES:
        # QEMU keeps at most 255 bytes of a name: a longer one would never be found again
        module.fail_json(msg="name is longer than %d bytes" % MAX_NAME_BYTES, **result)
    with qimg_errors(module, **result):
        p = plan(path, name, state)
    result["changed"] = bool(p["actions"])
    if module._diff:
        result["diff"] = _diff(p)
    if p["actions"]:
        refuse_in_use(module, path, "change the snapshots of", result)
        if not module.check_mode:
            with qimg_errors(module, **result):
                _act(path, p["actions"])
    with qimg_errors(module, **result):
        info = image_info(path, force_share=True)
    facts = image_facts(info)
    facts.pop("path", None)
    result.update(facts)
    result["snapshots"] = snake_case_keys(info.get("snapshots") or [])
    module.exit_json(**result)
