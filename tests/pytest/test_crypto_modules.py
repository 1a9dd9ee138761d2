# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The modules on encrypted images: passphrase options (no_log) open them, and the passphrase
appears nowhere in the output of ansible-playbook -vvv (results, diffs, invocation, messages)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os
import sys

import pytest

pytest.importorskip("cryptography")

from conftest import ROOT, run  # noqa: E402
from crypto_helpers import assert_io_ok, qemu_io_enc, qemu_retry, secret_obj  # noqa: E402

PW = "Zebra-Passphrase-93"
OTHER = "Other-Passphrase-17"

PLAYBOOK = """
- hosts: localhost
  gather_facts: false
  vars:
    d: "{d}"
  tasks:
    - name: info with the passphrase
      qimg.disk.qimg_info: {{path: "{{{{ d }}}}/e.qcow2", passphrase: "{pw}"}}
      register: info
    - name: check
      qimg.disk.qimg_check: {{path: "{{{{ d }}}}/e.qcow2", passphrase: "{pw}"}}
      register: check
    - name: measure
      qimg.disk.qimg_measure: {{path: "{{{{ d }}}}/e.qcow2", passphrase: "{pw}", target_format: raw}}
      register: measure
    - name: compare with the plain copy
      qimg.disk.qimg_compare:
        path1: "{{{{ d }}}}/e.qcow2"
        passphrase1: "{pw}"
        path2: "{{{{ d }}}}/plain.raw"
      register: compare
    - name: compare with a wrong passphrase
      qimg.disk.qimg_compare:
        path1: "{{{{ d }}}}/e.qcow2"
        passphrase1: "{other}"
        path2: "{{{{ d }}}}/plain.raw"
      register: wrong
      ignore_errors: true
    - name: convert to raw
      qimg.disk.qimg_convert:
        src: "{{{{ d }}}}/e.qcow2"
        src_passphrase: "{pw}"
        dest: "{{{{ d }}}}/out.raw"
        format: raw
      register: convert
    - name: snapshot
      qimg.disk.qimg_snapshot: {{path: "{{{{ d }}}}/e.qcow2", passphrase: "{pw}", name: s1}}
      register: snapshot
      diff: true
    - name: resize
      qimg.disk.qimg_resize: {{path: "{{{{ d }}}}/e.qcow2", passphrase: "{pw}", size: 8M}}
      register: resize
      diff: true
    - name: amend
      qimg.disk.qimg_amend:
        path: "{{{{ d }}}}/e.qcow2"
        passphrase: "{pw}"
        options: {{lazy_refcounts: true}}
      register: amend
      diff: true
    - name: results
      ansible.builtin.copy:
        dest: "{{{{ d }}}}/results.json"
        content: "{{{{ dict(info=info, check=check, measure=measure, compare=compare, wrong=wrong, convert=convert,
                   snapshot=snapshot, resize=resize, amend=amend) | to_json }}}}"
"""


def test_modules_open_encrypted_images_and_never_show_the_passphrase(tmp_path):
    if not os.path.exists(os.path.join(os.path.dirname(sys.executable), "ansible-playbook")):
        pytest.skip("no ansible-playbook beside the interpreter")
    d = tmp_path / "img"
    d.mkdir()
    qemu_retry(["qemu-img", "create", "-q", "-f", "qcow2", "--object", secret_obj(PW), "-o",
                "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10", str(d / "e.qcow2"), "4M"])
    spec = "driver=qcow2,file.filename=%s,encrypt.key-secret=s0" % (d / "e.qcow2")
    assert_io_ok(qemu_io_enc(spec, PW, "write -P 7 0 64k", "write -P 3 2M 4k"))
    run(["qemu-img", "convert", "--object", secret_obj(PW), "--image-opts", spec, "-O", "raw", str(d / "plain.raw")])
    coll = tmp_path / "collections" / "ansible_collections" / "qimg"
    coll.mkdir(parents=True)
    os.symlink(ROOT, str(coll / "disk"))
    book = tmp_path / "play.yml"
    book.write_text(PLAYBOOK.format(d=d, pw=PW, other=OTHER))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    proc = run([playbook, "-vvv", "--diff", str(book)], check=False, env=env, cwd=str(tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert PW not in out and OTHER not in out
    results = json.loads((d / "results.json").read_text())
    text = json.dumps(results)
    assert PW not in text and OTHER not in text
    assert results["info"]["encrypted"] is True
    assert results["check"]["failed"] is False
    assert results["compare"]["identical"] is True
    assert results["wrong"]["failed"] is True and "Invalid password" in results["wrong"]["msg"]
    assert (d / "out.raw").read_bytes() == (d / "plain.raw").read_bytes()
    assert results["snapshot"]["changed"] and results["resize"]["changed"] and results["amend"]["changed"]
    run(["qemu-img", "check", "--object", secret_obj(PW), "--image-opts", spec])
    info = json.loads(run(["qemu-img", "info", "--output=json", str(d / "e.qcow2")]).stdout)
    assert info["virtual-size"] == 8 << 20 and info["format-specific"]["data"]["lazy-refcounts"] is True
    assert [s["name"] for s in info["snapshots"]] == ["s1"]


KEYSLOTS = """
- hosts: localhost
  gather_facts: false
  vars:
    d: "{d}"
    img: "{{{{ d }}}}/{name}"
  tasks:
    - name: add a passphrase (check mode)
      qimg.disk.qimg_amend: &add
        path: "{{{{ img }}}}"
        passphrase: "{pw}"
        options: {{encrypt: {{state: active, new_passphrase: "{other}", iter_time: 10}}}}
      check_mode: true
      register: add_check
    - name: add a passphrase
      qimg.disk.qimg_amend: *add
      register: add
      diff: true
    - name: add it again (check mode)
      qimg.disk.qimg_amend: *add
      check_mode: true
      register: add_again_check
    - name: add it again
      qimg.disk.qimg_amend: *add
      register: add_again
    - name: remove the first passphrase, opening with the new one
      qimg.disk.qimg_amend: &remove
        path: "{{{{ img }}}}"
        passphrase: "{other}"
        options: {{encrypt: {{state: inactive, old_passphrase: "{pw}"}}}}
      register: remove
    - name: remove it again
      qimg.disk.qimg_amend: *remove
      register: remove_again
    - name: results
      ansible.builtin.copy:
        dest: "{{{{ d }}}}/keyslots.json"
        content: "{{{{ dict(add_check=add_check, add=add, add_again_check=add_again_check, add_again=add_again,
                   remove=remove, remove_again=remove_again) | to_json }}}}"
"""


@pytest.mark.parametrize("name", ["e.qcow2", "e.luks"])
def test_amend_keyslots_idempotent(tmp_path, name):
    d = tmp_path / "img"
    d.mkdir()
    fmt, opts, spec = (("qcow2", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
                        "driver=qcow2,file.filename=%s,encrypt.key-secret=s0") if name.endswith("qcow2") else
                       ("luks", "key-secret=s0,iter-time=10", "driver=luks,file.filename=%s,key-secret=s0"))
    qemu_retry(["qemu-img", "create", "-q", "-f", fmt, "--object", secret_obj(PW), "-o", opts, str(d / name), "2M"])
    assert_io_ok(qemu_io_enc(spec % (d / name), PW, "write -P 9 0 4k"))
    coll = tmp_path / "collections" / "ansible_collections" / "qimg"
    coll.mkdir(parents=True)
    os.symlink(ROOT, str(coll / "disk"))
    book = tmp_path / "play.yml"
    book.write_text(KEYSLOTS.format(d=d, name=name, pw=PW, other=OTHER))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    proc = run([playbook, "-vvv", "--diff", str(book)], check=False, env=env, cwd=str(tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert PW not in out and OTHER not in out
    r = json.loads((d / "keyslots.json").read_text())
    assert [r[k]["changed"] for k in ("add_check", "add", "add_again_check", "add_again", "remove", "remove_again")] \
        == [True, True, False, False, True, False]
    assert [s["active"] for s in r["add"]["keyslots"]][:2] == [True, True]
    assert [s["active"] for s in r["remove"]["keyslots"]][:2] == [False, True]
    assert "Invalid password" in qemu_io_enc(spec % (d / name), PW, "read 0 512").stderr
    assert_io_ok(qemu_io_enc(spec % (d / name), OTHER, "read -P 9 0 4k"))


CREATE = """
- hosts: localhost
  gather_facts: false
  vars:
    d: "{d}"
  tasks:
    - name: create encrypted (check mode)
      qimg.disk.qimg_create: &create
        path: "{{{{ d }}}}/n.qcow2"
        size: 4M
        options: {{encrypt: {{passphrase: "{pw}", iter_time: 10, cipher_mode: cbc, ivgen_alg: essiv}}}}
      check_mode: true
      register: c1
    - name: create encrypted
      qimg.disk.qimg_create: *create
      register: c2
      diff: true
    - name: again (check mode)
      qimg.disk.qimg_create: *create
      check_mode: true
      register: c3
    - name: again
      qimg.disk.qimg_create: *create
      register: c4
    - name: another cipher mode is a difference
      qimg.disk.qimg_create:
        path: "{{{{ d }}}}/n.qcow2"
        size: 4M
        options: {{encrypt: {{passphrase: "{pw}", iter_time: 10}}}}
      register: c5
      ignore_errors: true
    - name: a raw source
      ansible.builtin.copy: {{dest: "{{{{ d }}}}/src.raw", content: "{{{{ 'qimg' * 4096 }}}}"}}
    - name: convert into an encrypted image
      qimg.disk.qimg_convert: &convert
        src: "{{{{ d }}}}/src.raw"
        dest: "{{{{ d }}}}/c.qcow2"
        format: qcow2
        options: {{encrypt: {{passphrase: "{pw}", iter_time: 10}}}}
      register: v1
    - name: again
      qimg.disk.qimg_convert: *convert
      register: v2
    - name: results
      ansible.builtin.copy:
        dest: "{{{{ d }}}}/create.json"
        content: "{{{{ dict(c1=c1, c2=c2, c3=c3, c4=c4, c5=c5, v1=v1, v2=v2) | to_json }}}}"
"""


def test_create_encrypted_idempotent(tmp_path):
    d = tmp_path / "img"
    d.mkdir()
    coll = tmp_path / "collections" / "ansible_collections" / "qimg"
    coll.mkdir(parents=True)
    os.symlink(ROOT, str(coll / "disk"))
    book = tmp_path / "play.yml"
    book.write_text(CREATE.format(d=d, pw=PW))
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=str(tmp_path / "collections"), ANSIBLE_NOCOLOR="1",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_LOCALHOST_WARNING="0",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="0")
    playbook = os.path.join(os.path.dirname(sys.executable), "ansible-playbook")
    proc = run([playbook, "-vvv", "--diff", str(book)], check=False, env=env, cwd=str(tmp_path))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert PW not in out
    r = json.loads((d / "create.json").read_text())
    assert [r[k]["changed"] for k in ("c1", "c2", "c3", "c4")] == [True, True, False, False]
    assert (r["v1"]["changed"], r["v2"]["changed"]) == (True, False), (r["v1"], r["v2"])
    run(["qemu-img", "compare", "--object", secret_obj(PW), "--image-opts",
         "driver=qcow2,file.filename=%s,encrypt.key-secret=s0" % (d / "c.qcow2"),
         "driver=raw,file.filename=%s" % (d / "src.raw")])
    assert r["c5"]["failed"] and "encrypt.cipher_mode cbc != xts" in r["c5"]["differences"], r["c5"]
    spec = "driver=qcow2,file.filename=%s,encrypt.key-secret=s0" % (d / "n.qcow2")
    assert_io_ok(qemu_io_enc(spec, PW, "write -P 1 0 4k", "read -P 1 0 4k"))
    info = json.loads(run(["qemu-img", "info", "--output=json", str(d / "n.qcow2")]).stdout)
    enc = info["format-specific"]["data"]["encrypt"]
    assert (enc["format"], enc["cipher-mode"], enc["ivgen-alg"]) == ("luks", "cbc", "essiv")
