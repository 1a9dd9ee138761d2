# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.qimg.disk.plugins.module_utils import ansible_glue
from ansible_collections.qimg.disk.plugins.module_utils.qimg.errors import ImageCorrupt

QCOW2_INFO = {
    "virtual-size": 1024,
    "filename": "ov.qcow2",
    "cluster-size": 65536,
    "format": "qcow2",
    "actual-size": 200704,
    "format-specific": {
        "type": "qcow2",
        "data": {"compat": "1.1", "compression-type": "zlib", "lazy-refcounts": False,
                 "refcount-bits": 16, "corrupt": False, "extended-l2": False},
    },
    "snapshots": [{"id": "1", "name": "snap-1", "vm-state-size": 0}],
    "backing-filename-format": "qcow2",
    "full-backing-filename": "base.qcow2",
    "backing-filename": "base.qcow2",
    "dirty-flag": False,
}


def test_snake_case_keys_recursive():
    out = ansible_glue.snake_case_keys(QCOW2_INFO)
    assert out["virtual_size"] == 1024
    assert out["format_specific"]["data"]["lazy_refcounts"] is False
    assert out["snapshots"][0]["vm_state_size"] == 0
    # values are never touched
    assert out["snapshots"][0]["name"] == "snap-1"
    assert "virtual-size" in QCOW2_INFO  # input untouched


def test_image_facts_drops_size():
    facts = ansible_glue.image_facts(dict(QCOW2_INFO, size=5))
    assert "size" not in facts
    assert facts["virtual_size"] == 1024


def test_image_metadata_qcow2():
    meta = ansible_glue.image_metadata(QCOW2_INFO)
    assert list(meta) == ["state", "format", "virtual_size", "cluster_size", "compat",
                          "refcount_bits", "lazy_refcounts", "extended_l2", "compression_type",
                          "backing_file", "backing_format"]
    assert meta["backing_file"] == "base.qcow2"
    assert meta["backing_format"] == "qcow2"


def test_image_metadata_v2_defaults():
    info = {"virtual-size": 1, "format": "qcow2", "cluster-size": 65536,
            "format-specific": {"type": "qcow2", "data": {"compat": "0.10",
                                                          "refcount-bits": 16}}}
    meta = ansible_glue.image_metadata(info)
    assert meta["lazy_refcounts"] is False
    assert meta["extended_l2"] is False
    assert meta["compression_type"] == "zlib"
    assert meta["backing_file"] is None


def test_image_metadata_raw():
    meta = ansible_glue.image_metadata({"virtual-size": 4096, "format": "raw"})
    assert meta == {"state": "present", "format": "raw", "virtual_size": 4096,
                    "backing_file": None, "backing_format": None}


class FakeModule(object):
    class Failed(Exception):
        pass

    def fail_json(self, **kwargs):
        raise self.Failed(kwargs)


def test_qimg_errors_maps_to_fail_json():
    module = FakeModule()
    with pytest.raises(FakeModule.Failed) as exc:
        with ansible_glue.qimg_errors(module, path="/x"):
            raise ImageCorrupt("qcow2 header of 'x' is bad\nreally")
    assert exc.value.args[0] == {"msg": "qcow2 header of 'x' is bad really", "path": "/x"}


def test_qimg_errors_lets_other_errors_through():
    module = FakeModule()
    with pytest.raises(ValueError):
        with ansible_glue.qimg_errors(module):
            raise ValueError("bug")


def test_task_error_adds_its_result_keys():
    module = FakeModule()
    with pytest.raises(FakeModule.Failed) as exc:
        with ansible_glue.qimg_errors(module, path="/x", changed=False):
            raise ansible_glue.TaskError("it differs", {"differences": ["a"], "changed": True})
    assert exc.value.args[0] == {"msg": "it differs", "path": "/x", "changed": True, "differences": ["a"]}


def test_in_context_keeps_the_engine_message_on_one_line():
    err = ansible_glue.in_context("cannot read /x to compare it", ImageCorrupt("bad\nheader"))
    assert isinstance(err, ansible_glue.TaskError)
    assert str(err) == "cannot read /x to compare it: bad header"


def test_image_differences():
    current = ansible_glue.image_metadata(QCOW2_INFO)
    assert ansible_glue.image_differences(current, "qcow2", {}, "base.qcow2") == []
    assert ansible_glue.image_differences(current, "qcow2", {"cluster_size": 4096, "compat": "0.10"},
                                          "base.qcow2", "raw", size=2048) == [
        "virtual size 1024 != 2048", "cluster_size 65536 != 4096", "compat 1.1 != 0.10",
        "backing format qcow2 != raw"]
    # qcow2 options are not compared across formats; the backing file always is
    assert ansible_glue.image_differences(current, "raw", {"cluster_size": 4096}) == [
        "format qcow2 != raw", "backing file base.qcow2 != none"]
    # size_key normalises the current size before the comparison (not in the message)
    assert ansible_glue.image_differences(current, "qcow2", {}, "base.qcow2", size=1536,
                                          size_key=lambda n: 1536) == []


def test_predicted_metadata():
    meta = ansible_glue.predicted_metadata("qcow2", 4096, {"cluster_size": 4096}, "b.qcow2", "qcow2")
    assert meta == ansible_glue.ordered(dict(ansible_glue.QCOW2_CREATE_DEFAULTS, state="present", format="qcow2",
                                             virtual_size=4096, cluster_size=4096, backing_file="b.qcow2",
                                             backing_format="qcow2"))
    assert list(meta)[:3] == ["state", "format", "virtual_size"]
    assert ansible_glue.predicted_metadata("raw", 512, {}) == {
        "state": "present", "format": "raw", "virtual_size": 512, "backing_file": None, "backing_format": None}


class LadderModule(FakeModule):
    def __init__(self, check_mode):
        self.check_mode = check_mode


def test_ladder_unchanged_and_plan_change():
    before = {"state": "present", "format": "raw"}
    result = ansible_glue.unchanged({"changed": True, "differences": []}, before)
    assert result == {"changed": False, "diff": {"before": before, "after": before}}
    for check_mode in (True, False):
        result = {}
        act = ansible_glue.plan_change(LadderModule(check_mode), result, before, {"state": "absent"})
        assert act is not check_mode
        assert result == {"changed": True, "diff": {"before": before, "after": {"state": "absent"}}}


def test_replace_existing(tmp_path):
    path = str(tmp_path / "missing.img")
    before = {"state": "present"}
    result = {"changed": False, "differences": []}
    assert ansible_glue.replace_existing(result, path, before, False, "replace") is False
    assert result["diff"] == {"before": before, "after": before} and "differences" not in result
    result = {"changed": False, "differences": ["format raw != qcow2", "virtual size 1 != 2"]}
    with pytest.raises(ansible_glue.TaskError) as exc:
        ansible_glue.replace_existing(result, path, before, False, "replace")
    assert str(exc.value) == ("%s differs from the requested image and force is false: "
                              "format raw != qcow2; virtual size 1 != 2" % path)
    assert exc.value.result["differences"] == result["differences"]
    # with force: replaced (nobody holds a missing file open)
    assert ansible_glue.replace_existing(result, path, before, True, "replace") is True


def test_change_in_place_ladder(tmp_path):
    from ansible_collections.qimg.disk.plugins.module_utils.qimg.ops.create import create_image
    path = str(tmp_path / "disk.qcow2")
    create_image(path, "qcow2", size="1M")
    calls = []

    def grow():
        calls.append(1)
        create_image(path, "qcow2", size="2M")

    def ladder(check_mode):
        result = {"changed": False}
        before = ansible_glue.read_image(path)[1]
        after = dict(before, virtual_size=2 << 20)
        info = ansible_glue.change_in_place(LadderModule(check_mode), result, path, before, after, "resize",
                                            grow)
        return result, info

    # check mode: changed, predicted diff, nothing done
    result, info = ladder(True)
    assert info is None and calls == []
    assert result["changed"] is True and result["diff"]["after"]["virtual_size"] == 2 << 20
    assert result["diff"]["before"]["virtual_size"] == 1 << 20
    # real run: acted, the diff's after and the facts read back from the image
    result, info = ladder(False)
    assert calls == [1] and info["virtual-size"] == 2 << 20
    assert result["changed"] is True and result["virtual_size"] == 2 << 20
    assert result["diff"]["after"] == ansible_glue.image_metadata(info)
    # again (check mode and real): nothing to do
    for check_mode in (True, False):
        result, info = ladder(check_mode)
        assert result == {"changed": False, "diff": {"before": result["diff"]["before"],
                                                     "after": result["diff"]["before"]}}
    assert calls == [1]
