# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Oracle helpers for the encryption tests: qemu-img/qemu-io with --object secret, and a small
qcow2 reader (header extensions, L1/L2) to find an encrypted image's host clusters."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import struct

from conftest import run

FDE_EXT = 0x0537be77


def qemu_retry(cmd, attempts=20, **kw):
    """Run a qemu tool, retrying its flaky PBKDF2 benchmark ("Unable to get accurate CPU usage")."""
    for dummy in range(attempts):
        proc = run(cmd, check=False, **kw)
        if proc.returncode == 0 or "Unable to get accurate CPU usage" not in proc.stderr:
            break
    assert proc.returncode == 0, "%s: %s" % (cmd, proc.stderr)
    return proc


def secret_obj(pw, sid="s0"):
    return "secret,id=%s,data=%s" % (sid, pw.replace(",", ",,"))


def qemu_io_enc(spec, pw, *commands, **kw):
    """qemu-io on an --image-opts spec with secret s0 = pw; returns the process (check=False)."""
    cmd = ["qemu-io", "--object", secret_obj(pw), "--image-opts", spec]
    for c in commands:
        cmd += ["-c", c]
    return run(cmd, check=False, **kw)


def assert_io_ok(proc):
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "fail" not in text.lower() and "error" not in text.lower(), text


def qcow2_layout(path):
    """(crypt_method, cluster_size, fde (offset, length) or None, l1 table list)."""
    with open(str(path), "rb") as f:
        hdr = f.read(4096)
        magic, version = struct.unpack_from(">II", hdr, 0)
        assert magic == 0x514649fb
        cluster_bits, = struct.unpack_from(">I", hdr, 20)
        crypt_method, l1_size = struct.unpack_from(">II", hdr, 32)
        l1_offset, = struct.unpack_from(">Q", hdr, 40)
        hlen = 72 if version == 2 else struct.unpack_from(">I", hdr, 100)[0]
        fde = None
        pos = hlen
        while pos + 8 <= len(hdr):
            etype, elen = struct.unpack_from(">II", hdr, pos)
            if etype == 0:
                break
            if etype == FDE_EXT:
                fde = struct.unpack_from(">QQ", hdr, pos + 8)
            pos += 8 + (elen + 7) // 8 * 8
        f.seek(l1_offset)
        l1 = list(struct.unpack(">%dQ" % l1_size, f.read(8 * l1_size)))
    return crypt_method, 1 << cluster_bits, fde, l1


def qcow2_host_offset(path, guest):
    """The host offset of a guest offset in an (uncompressed, standard-L2) qcow2 image, or None."""
    dummy, cs, dummy2, l1 = qcow2_layout(path)
    l2_entries = cs // 8
    l1i, rest = divmod(guest, cs * l2_entries)
    l2i, inside = divmod(rest, cs)
    l2_off = l1[l1i] & 0x00fffffffffffe00
    if not l2_off:
        return None
    with open(str(path), "rb") as f:
        f.seek(l2_off + 8 * l2i)
        entry, = struct.unpack(">Q", f.read(8))
    host = entry & 0x00fffffffffffe00
    return host + inside if host else None


def file_reader(path):
    """read(offset, length) over a file, for luks.read_header / unlock."""
    def read(offset, length):
        with open(str(path), "rb") as f:
            f.seek(offset)
            return f.read(length)
    return read


def file_writer(path):
    def write(offset, data):
        with open(str(path), "r+b") as f:
            f.seek(offset)
            f.write(data)
    return write


def region_reader(path, base):
    """read() over a region of a file starting at base (a qcow2 image's LUKS header clusters)."""
    inner = file_reader(path)
    return lambda offset, length: inner(base + offset, length)
