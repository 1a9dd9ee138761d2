# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Mutation fuzzing of qcow2 images against every read-side command and repair.

Seeds are small valid images made by qemu-img/qemu-io; a mutant patches one field of the
header, an extension, an L1/L2 entry, the refcount table or a refcount block, the snapshot
table or the bitmap directory with a random or boundary value. Each mutant goes through info,
map, check, check -r all (on a copy), convert -O raw and a full read in a worker process with a
per-case timeout and an address-space limit.

Pass: the engine raises a QimgError (a clean one-line error) or returns a result; it never
raises anything else, never hangs, stays within the memory limit, leaves the input untouched
(except the repaired copy) and writes no file other than its outputs.

Used by tests/pytest/test_fuzz.py (a fixed-seed set) and by `python3 tests/pytest/fuzz_images.py
--cases N` for a longer campaign.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import argparse
import hashlib
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CASE_TIMEOUT = 10
MEMORY_LIMIT = 1 << 30

SEEDS = [
    ("v3", ["-o", "cluster_size=64k"], ["write -P 1 0 200k", "write -z 1M 64k", "write -P 2 3M 4k"]),
    ("v2", ["-o", "compat=0.10"], ["write -P 3 0 100k", "write -P 4 2M 64k"]),
    ("c512", ["-o", "cluster_size=512"], ["write -P 5 0 8k", "write -P 6 100k 1k"]),
    ("extl2", ["-o", "extended_l2=on"], ["write -P 7 0 3k", "write -z 64k 2k", "write -P 8 1M 64k"]),
    ("rb1", ["-o", "refcount_bits=1,cluster_size=4k"], ["write -P 9 0 64k"]),
]


def _qemu(*args):
    subprocess.run(list(args), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def build_seeds(directory):
    """Create the seed images; returns {name: path}."""
    out = {}
    for name, opts, writes in SEEDS:
        path = os.path.join(directory, "seed-%s.qcow2" % name)
        _qemu("qemu-img", "create", "-f", "qcow2", *(opts + [path, "4M"]))
        _qemu("qemu-io", *sum((["-c", w] for w in writes), []) + [path])
        out[name] = path
    comp_src = out["v3"]
    comp = os.path.join(directory, "seed-compressed.qcow2")
    _qemu("qemu-img", "convert", "-c", "-O", "qcow2", comp_src, comp)
    out["compressed"] = comp
    snap = os.path.join(directory, "seed-snap.qcow2")
    shutil.copy(out["v3"], snap)
    _qemu("qemu-img", "snapshot", "-c", "one", snap)
    _qemu("qemu-io", "-c", "write -P 11 0 64k", snap)
    out["snapshots"] = snap
    bm = os.path.join(directory, "seed-bitmaps.qcow2")
    shutil.copy(out["v3"], bm)
    _qemu("qemu-img", "bitmap", "--add", bm, "b0")
    out["bitmaps"] = bm
    base = os.path.join(directory, "seed-base.qcow2")
    shutil.copy(out["v3"], base)
    over = os.path.join(directory, "seed-overlay.qcow2")
    _qemu("qemu-img", "create", "-f", "qcow2", "-b", os.path.basename(base), "-F", "qcow2", over)
    _qemu("qemu-io", "-c", "write -P 12 64k 64k", over)
    out["overlay"] = over
    return out


# header fields: (offset, size)
HEADER_FIELDS = [(4, 4), (8, 8), (16, 4), (20, 4), (24, 8), (32, 4), (36, 4), (40, 8), (48, 8), (56, 4),
                 (60, 4), (64, 8), (72, 8), (80, 8), (88, 8), (96, 4), (100, 4), (104, 1)]


def _u(buf, fmt, off):
    return struct.unpack_from(fmt, buf, off)[0] if off + struct.calcsize(fmt) <= len(buf) else 0


def _targets(buf):
    """Candidate (offset, size) places to mutate, by structure."""
    cs = 1 << min(max(_u(buf, ">I", 20), 9), 21)
    places = {"header": list(HEADER_FIELDS)}
    places["extensions"] = [(o, 4) for o in range(112, min(cs, 1024), 4)]
    l1 = _u(buf, ">Q", 40)
    l1_size = _u(buf, ">I", 36)
    places["l1"] = [(l1 + 8 * i, 8) for i in range(min(l1_size, 64))]
    l2s = []
    for i in range(min(l1_size, 8)):
        e = _u(buf, ">Q", l1 + 8 * i) & 0x00FFFFFFFFFFFE00
        if e and e + cs <= len(buf):
            l2s.extend((e + 8 * k, 8) for k in range(min(cs // 8, 256)))
    places["l2"] = l2s
    rt = _u(buf, ">Q", 48)
    places["reftable"] = [(rt + 8 * i, 8) for i in range(4)]
    rb = _u(buf, ">Q", rt) & ~511
    places["refblock"] = [(rb + 2 * i, 2) for i in range(64)] if rb and rb < len(buf) else []
    places["bitmaps"] = _bitmap_places(buf, cs)
    snap = _u(buf, ">Q", 64)
    places["snapshots"] = [(snap + i, 1) for i in range(0, 80)] if _u(buf, ">I", 60) and snap < len(buf) else []
    return dict((k, [p for p in v if 0 <= p[0] and p[0] + p[1] <= len(buf)]) for k, v in places.items())


def _bitmap_places(buf, cs):
    """Fields of the bitmap directory's first entry and the first bitmap table entries."""
    off = _u(buf, ">I", 100) if _u(buf, ">I", 4) >= 3 else 72
    while off + 8 <= min(len(buf), cs):
        kind, length = _u(buf, ">I", off), _u(buf, ">I", off + 4)
        if kind == 0:
            break
        if kind == 0x23852875 and length == 24:
            directory = _u(buf, ">Q", off + 24)
            table = _u(buf, ">Q", directory) if directory + 8 <= len(buf) else 0
            places = [(directory + o, n) for o, n in ((0, 8), (8, 4), (12, 4), (16, 1), (17, 1), (18, 2), (20, 4))]
            places += [(off + 8, 4), (off + 16, 8), (off + 24, 8)]
            if table and table + 64 <= len(buf):
                places += [(table + 8 * i, 8) for i in range(8)]
            return places
        off += 8 + ((length + 7) & ~7)
    return []


def _value(rnd, size, buf):
    bits = 8 * size
    cs = 1 << min(max(_u(buf, ">I", 20), 9), 21)
    choices = [0, 1, (1 << bits) - 1, 1 << (bits - 1), rnd.getrandbits(bits)]
    if size >= 4:
        choices += [len(buf), len(buf) + cs, cs * 3, (1 << 31), 0x7FFFFFFF, 513]
    if size == 8:
        choices += [(1 << 63) | len(buf), (1 << 56), (1 << 63) | (cs * 2), (1 << 62) | rnd.getrandbits(40),
                    (1 << 63) | 0x200, cs * 5 + 8]
    v = rnd.choice(choices)
    return v & ((1 << bits) - 1)


def mutate(seed_bytes, rnd):
    """Return (mutated bytes, description)."""
    buf = bytearray(seed_bytes)
    if rnd.random() < 0.05:
        cut = rnd.choice([0, 3, 50, 71, 100, 511, len(buf) // 2, len(buf) - 1])
        return bytes(buf[:cut]), "truncate at %d" % cut
    places = _targets(buf)
    kinds = [k for k, v in places.items() if v]
    kind = rnd.choice(kinds)
    off, size = rnd.choice(places[kind])
    value = _value(rnd, size, buf)
    buf[off:off + size] = value.to_bytes(size, "big")
    return bytes(buf), "%s: %d bytes at %#x := %#x" % (kind, size, off, value)


# ----------------------------------------------------------------------------- worker side
def _worker_case(path, workdir):
    """Run every operation on one mutant; return a list of problems (empty = pass)."""
    sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
    from qimg.errors import QimgError
    from qimg.image import open_image
    from qimg.ops.check import check_image
    from qimg.ops.convert import convert
    from qimg.ops.info import image_info
    from qimg.ops.map import image_map

    problems = []
    before = open(path, "rb").read()
    digest = hashlib.sha256(before).hexdigest()
    listing = sorted(os.listdir(workdir))

    def attempt(name, fn):
        try:
            fn()
        except QimgError as e:
            if "\n" in str(e):
                problems.append("%s: multi-line error %r" % (name, str(e)))
        except MemoryError:
            problems.append("%s: MemoryError" % name)
        except Exception as e:  # the point of the fuzzer: anything else is a bug
            import traceback
            problems.append("%s: %s: %s\n%s" % (name, type(e).__name__, e, traceback.format_exc()))

    def read_all():
        with open_image(path, force_share=True) as dev:
            pos = 0
            while pos < dev.size:
                n = min(4 << 20, dev.size - pos)
                dev.read(pos, n)
                pos += n
                if pos > (64 << 20):
                    break

    attempt("info", lambda: image_info(path, backing_chain=True, force_share=True))
    attempt("map", lambda: image_map(path, force_share=True, max_length=1 << 30))
    attempt("check", lambda: check_image(path, force_share=True))
    attempt("read", read_all)
    out = os.path.join(workdir, "out.raw")
    attempt("convert", lambda: _bounded_convert(convert, path, out))
    if os.path.exists(out):
        os.unlink(out)
    if hashlib.sha256(open(path, "rb").read()).hexdigest() != digest:
        problems.append("the input image was modified by a read-only operation")
    repaired = os.path.join(workdir, "repair.qcow2")
    shutil.copy(path, repaired)
    attempt("check -r all", lambda: check_image(repaired, repair="all"))
    os.unlink(repaired)
    if sorted(os.listdir(workdir)) != listing:
        problems.append("files left behind: %s" % sorted(set(os.listdir(workdir)) - set(listing)))
    return problems


def _bounded_convert(convert, path, out):
    from qimg.image import open_image
    with open_image(path, force_share=True) as dev:
        if dev.size > (256 << 20):
            return  # huge virtual sizes from mutated headers: reading them all is not the point
    convert([path], out, out_fmt="raw", force_share=True)


class CaseTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no `except Exception` swallows it."""


def worker_main():
    """Read case paths from stdin, answer one JSON line each."""
    import resource
    import signal
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    def on_alarm(signum, frame):
        raise CaseTimeout("case took longer than %d s" % CASE_TIMEOUT)
    signal.signal(signal.SIGALRM, on_alarm)
    for line in sys.stdin:
        args = json.loads(line)
        path, workdir = args[:2]
        signal.alarm(CASE_TIMEOUT)
        try:
            if len(args) > 2:
                problems = _crypto_worker_case(path, workdir, args[2])
            else:
                problems = _worker_case(path, workdir)
        except CaseTimeout as e:
            import traceback
            problems = ["hang: %s\n%s" % (e, traceback.format_exc())]
        finally:
            signal.alarm(0)
        sys.stdout.write(json.dumps(problems) + "\n")
        sys.stdout.flush()


# ----------------------------------------------------------------------------- driver side
class Worker(object):
    def __init__(self):
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)

    def run(self, path, workdir, fmt=None):
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        self.proc.stdin.write(json.dumps([path, workdir] + ([fmt] if fmt else [])) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            code = self.proc.wait()
            self.proc = None
            return ["worker died (exit %s): crash, hang past the alarm or memory limit" % code]
        return json.loads(line)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()


def campaign(cases, seed=1, directory=None, deadline=None):
    """Run `cases` mutants; returns (tried, failures: [(description, problems)])."""
    own = directory is None
    directory = directory or tempfile.mkdtemp(prefix="qimg-fuzz-")
    rnd = random.Random(seed)
    failures = []
    worker = Worker()
    tried = 0
    try:
        seeds = build_seeds(directory)
        names = sorted(seeds)
        work = os.path.join(directory, "case")
        os.mkdir(work)
        for name in names:  # backing files resolve relative to the mutant
            if name == "overlay":
                shutil.copy(os.path.join(directory, "seed-base.qcow2"), os.path.join(work, "seed-base.qcow2"))
        originals = dict((n, open(p, "rb").read()) for n, p in seeds.items())
        for i in range(cases):
            if deadline is not None and time.time() > deadline:
                break
            name = names[i % len(names)]
            data, desc = mutate(originals[name], rnd)
            path = os.path.join(work, "mutant.qcow2")
            with open(path, "wb") as f:
                f.write(data)
            problems = worker.run(path, work)
            tried += 1
            if problems:
                failures.append(("%s #%d %s" % (name, i, desc), problems))
    finally:
        worker.stop()
        if own:
            shutil.rmtree(directory, ignore_errors=True)
    return tried, failures


# ----------------------------------------------------------------------------- encrypted images
# LUKS1 header fields (offset, size), then each keyslot's (active, iterations, salt, key offset,
# stripes): the mutants of a luks file and of a LUKS qcow2 image's header clusters.
CRYPTO_PASSPHRASE = b"fuzz-passphrase"
LUKS_FIELDS = [(6, 2), (8, 4), (40, 4), (44, 4), (72, 4), (104, 4), (108, 4), (112, 4), (164, 4), (168, 4)]
for _i in range(8):
    LUKS_FIELDS += [(208 + 48 * _i, 4), (212 + 48 * _i, 4), (248 + 48 * _i, 4), (252 + 48 * _i, 4)]
# iteration counts stay at boundary values: a valid count of tens of millions (up to the cap,
# crypto.luks.MAX_ITERATIONS) is slow, not wrong
_LUKS_VALUES = [0, 1, 7, 8, 4000, 4001, 0xDEAD, 0x00AC71F3, 0x7FFFFFFF, 0xFFFFFFFF, (1 << 26) + 1,
                4096, 1 << 18, 1 << 30]


def build_crypto_seeds(directory):
    """A luks file and a LUKS qcow2 image with data, keyed with CRYPTO_PASSPHRASE (our engine, the
    smallest iteration counts, so that a case stays fast): {name: (path, format, header base)}."""
    sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
    from qimg.crypto.secrets import SecretStore
    from qimg.image import open_image
    from qimg.ops.create import create_image
    store = SecretStore()
    store.add("s0", CRYPTO_PASSPHRASE)
    out = {}
    for name, fmt, opts in (("luks", "luks", {"key-secret": "s0", "iter-time": "0"}),
                            ("qcow2-luks", "qcow2", {"encrypt.format": "luks", "encrypt.key-secret": "s0",
                                                     "encrypt.iter-time": "0", "cluster_size": "4096"})):
        path = os.path.join(directory, "seed-%s.img" % name)
        create_image(path, fmt, 1 << 20, opts, secrets=store)
        with open_image(path, fmt, read_only=False, secrets=store, key_secret="s0") as dev:
            dev.write(0, b"\x5a" * 20000)
            dev.write(700000, b"\xa5" * 4096)
            base = dev.crypto.region[0] if fmt == "qcow2" else 0
        out[name] = (path, fmt, base)
    return out


def mutate_luks(seed_bytes, base, rnd):
    """(mutated bytes, description): one LUKS header field, or the file cut short."""
    buf = bytearray(seed_bytes)
    if rnd.random() < 0.08:
        cut = rnd.choice([base + 100, base + 592, base + 4096, base + 8192, len(buf) // 2])
        return bytes(buf[:cut]), "truncate at %d" % cut
    off, size = rnd.choice(LUKS_FIELDS)
    value = rnd.choice(_LUKS_VALUES + [rnd.getrandbits(8 * size)]) & ((1 << (8 * size)) - 1)
    if (off == 164 or (off - 212) % 48 == 0) and 1 << 18 < value <= 1 << 26:
        value = (1 << 26) + 1   # a random count in the allowed range: slow, not hostile
    buf[base + off:base + off + size] = value.to_bytes(size, "big")
    return bytes(buf), "luks header: %d bytes at %#x := %#x" % (size, off, value)


def _crypto_worker_case(path, workdir, fmt):
    """info (no key), open with the key and read it all, check, convert to raw, add a keyslot on
    a copy: a QimgError or a result, nothing else."""
    sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
    from qimg.crypto.secrets import SecretStore
    from qimg.errors import QimgError
    from qimg.image import open_image
    from qimg.ops.amend import amend_image
    from qimg.ops.check import check_image
    from qimg.ops.convert import convert
    from qimg.ops.info import image_info
    from qimg.spec import ImageName
    store = SecretStore()
    store.add("s0", CRYPTO_PASSPHRASE)
    store.add("s1", b"another")
    name = ImageName(path, secrets=store, key_secret="s0")
    problems = []

    def attempt(what, fn):
        try:
            fn()
        except QimgError as e:
            if "\n" in str(e):
                problems.append("%s: multi-line error %r" % (what, str(e)))
        except MemoryError:
            problems.append("%s: MemoryError" % what)
        except Exception as e:
            import traceback
            problems.append("%s: %s: %s\n%s" % (what, type(e).__name__, e, traceback.format_exc()))

    def read_all():
        with open_image(name, fmt, force_share=True) as dev:
            pos = 0
            while pos < min(dev.size, 64 << 20):
                dev.read(pos, min(4 << 20, dev.size - pos))
                pos += 4 << 20

    attempt("info", lambda: image_info(path, fmt, force_share=True))
    attempt("read", read_all)
    attempt("check", lambda: check_image(name, fmt, force_share=True))
    out = os.path.join(workdir, "out.raw")
    attempt("convert", lambda: convert([name], out, src_fmt=fmt, out_fmt="raw", force_share=True))
    if os.path.exists(out):
        os.unlink(out)
    copy = os.path.join(workdir, "amend.img")
    shutil.copy(path, copy)
    prefix = "encrypt." if fmt == "qcow2" else ""
    attempt("amend", lambda: amend_image(ImageName(copy, secrets=store, key_secret="s0"),
                                         {prefix + "state": "active", prefix + "new-secret": "s1",
                                          prefix + "iter-time": "0"}, fmt=fmt))
    os.unlink(copy)
    return problems


def crypto_campaign(cases, seed=1, directory=None):
    """Mutants of the LUKS headers of a luks file and a LUKS qcow2 image; (tried, failures)."""
    own = directory is None
    directory = directory or tempfile.mkdtemp(prefix="qimg-fuzz-crypto-")
    rnd = random.Random(seed)
    failures = []
    worker = Worker()
    tried = 0
    try:
        seeds = build_crypto_seeds(directory)
        names = sorted(seeds)
        work = os.path.join(directory, "case")
        os.mkdir(work)
        originals = dict((n, open(seeds[n][0], "rb").read()) for n in names)
        for i in range(cases):
            name = names[i % len(names)]
            dummy, fmt, base = seeds[name]
            data, desc = mutate_luks(originals[name], base, rnd)
            path = os.path.join(work, "mutant.img")
            with open(path, "wb") as f:
                f.write(data)
            problems = worker.run(path, work, fmt)
            tried += 1
            if problems:
                failures.append(("%s #%d %s" % (name, i, desc), problems))
    finally:
        worker.stop()
        if own:
            shutil.rmtree(directory, ignore_errors=True)
    return tried, failures


# ----------------------------------------------------------------------------- image specifications
# json:/--image-opts texts, mutated like the images: the parser and validator must give a clean
# one-line QimgError or a tree; trees that only reach local files (no nbd/ssh) are also opened.
SPEC_SEEDS = [
    ("json", 'json:{"driver": "qcow2", "file": {"driver": "file", "filename": "%(img)s"}, "backing": null}'),
    ("json", "json:{'driver': 'raw', 'file': {'driver': 'null-co', 'size': 4096}, 'offset': 512, 'size': 1024}"),
    ("json", 'json:{"driver": "null-co", "size": 1048576, "read-zeroes": true}'),
    ("json", 'json:{"driver": "blkdebug", "image": {"driver": "qcow2", "file.filename": "%(img)s"}, '
             '"inject-error": [{"event": "none", "iotype": "read", "errno": 5, "sector": 3}]}'),
    ("json", 'json:{"file.filename": "%(img)s", "file.locking": "off", "encrypt.key-secret": "s0"}'),
    ("json", 'json:{"driver": "qcow2", "file": {"driver": "blkdebug", "image.filename": "%(img)s", '
             '"inject-error": [{"event": "none", "sector": 0}], '
             '"set-state": [{"event": "read_aio", "new_state": 2}]}}'),
    ("json", "json:{'driver': 'qcow2', 'file': {'driver': 'quorum', 'vote-threshold': 2, 'children': ["
             "{'driver': 'file', 'filename': '%(img)s'}, {'driver': 'null-co', 'size': 65536}]}}"),
    ("opts", "driver=qcow2,file.driver=file,file.filename=%(img)s,backing="),
    ("opts", "driver=raw,file.driver=null-co,file.size=64k,offset=4k,size=8k"),
    ("opts", "driver=blkdebug,image.driver=null-co,align=4k,max-transfer=64k"),
]
_SPEC_CHARS = "{}[]:,.='\\\" \t0123456789-aeflnrstuxz\x00\u00e9"


def mutate_spec(text, rnd):
    """1-3 edits: delete, insert or replace a character, or duplicate a slice."""
    s = list(text)
    for dummy in range(rnd.randint(1, 3)):
        op = rnd.randrange(4)
        i = rnd.randrange(len(s) + 1)
        if op == 0 and s:
            del s[min(i, len(s) - 1)]
        elif op == 1:
            s.insert(i, rnd.choice(_SPEC_CHARS))
        elif op == 2 and s:
            s[min(i, len(s) - 1)] = rnd.choice(_SPEC_CHARS)
        else:
            j = rnd.randrange(len(s) + 1)
            a, b = min(i, j), max(i, j)
            s[a:a] = s[a:b][:64]
    return "".join(s)


def _spec_drivers(node, out):
    out.add(node.driver)
    for child in node.children.values():
        if child is not None:
            _spec_drivers(child, out)
    return out


def spec_case(kind, text):
    """Problems (empty = pass) of one mutated specification."""
    from qimg.errors import QimgError
    from qimg.image import open_image
    from qimg import spec as S
    problems = []
    try:
        tree = S.build_tree(S.image_spec(text, image_opts=kind == "opts"))
        if _spec_drivers(tree, set()) & set(["nbd", "ssh"]):
            return problems
        with open_image(S.ImageName(text, image_opts=kind == "opts"), force_share=True) as dev:
            dev.read(0, min(dev.size, 4096))
    except QimgError as e:
        if "\n" in str(e):
            problems.append("multi-line error %r" % str(e))
    except Exception as e:  # anything else is a bug
        import traceback
        problems.append("%s: %s\n%s" % (type(e).__name__, e, traceback.format_exc()))
    return problems


def spec_campaign(cases, seed, image):
    """Run `cases` mutated specifications in this process; returns (tried, failures)."""
    sys.path.insert(0, os.path.join(ROOT, "plugins", "module_utils"))
    rnd = random.Random(seed)
    failures = []
    for i in range(cases):
        kind, template = SPEC_SEEDS[i % len(SPEC_SEEDS)]
        text = mutate_spec(template % {"img": image}, rnd)
        problems = spec_case(kind, text)
        if problems:
            failures.append((text, problems))
    return cases, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cases", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--minutes", type=float, default=None)
    args = parser.parse_args()
    if args.worker:
        worker_main()
        return 0
    deadline = time.time() + 60 * args.minutes if args.minutes else None
    start = time.time()
    tried, failures = campaign(args.cases, args.seed, deadline=deadline)
    for desc, problems in failures:
        print("FAIL %s" % desc)
        for p in problems:
            print("    " + p.replace("\n", "\n    "))
    print("seed %d: %d cases in %.0f s, %d failed" % (args.seed, tried, time.time() - start, len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
