# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qimg engine: pure-Python disk image formats (raw, qcow2) and qemu-img operations.

Stdlib only, no Ansible imports. Imported both by Ansible modules (as
ansible_collections.qimg.disk.plugins.module_utils.qimg) and standalone by bin/qimg
(with plugins/module_utils on sys.path, as ``qimg``). Keep imports relative.
"""
