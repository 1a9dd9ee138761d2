# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""qemu's progress meter (util/qemu-progress.c) and the steps qemu-img convert/compare print."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


MAX_BUF_SECTORS = 32768             # qemu-img convert's largest -S and buffer, in sectors


IO_BUF_SECTORS = 4096               # its default copy step for data (2 MiB)


REQUEST_MAX_SECTORS = (2 ** 31 - 1) >> 9


def float32(value):
    import struct
    return struct.unpack("f", struct.pack("f", value))[0]


class QemuProgress:
    """qemu's util/qemu-progress.c in its simple mode: "    (NN.NN/100%)\\r" lines, "\\n" at the end."""

    def __init__(self, enabled, min_skip, out):
        self.enabled = enabled
        self.min_skip = float32(min_skip)
        self.out = out
        self.current = float32(0.0)
        self.last_print = float32(0.0)

    def print_(self, delta, maximum):
        if maximum == 0:
            current = float32(delta)
        else:
            current = float32(self.current + float32(float32(delta) / 100) * maximum)
        if current > 100:
            current = float32(100.0)
        self.current = current
        if (current > float32(self.last_print + self.min_skip) or current < float32(self.last_print - self.min_skip)
                or current == 0 or current == 100):
            self.last_print = current
            if self.enabled:
                self.out("    (%3.2f/100%%)\r" % current)

    def end(self):
        if self.enabled:
            self.out("\n")


def status_runs(dev, offset, length):
    """[(start, end, zero)]: the extents one qemu block-status call after another would report."""
    from ..image import chain_block_status
    split = None
    if dev.format_name == "qcow2":
        cs = getattr(dev, "cluster_size", 65536)
        split = cs * (cs // (16 if getattr(dev, "extended_l2", False) else 8))   # one L2 table
    runs = []
    for e in chain_block_status(dev, offset, length) if length else []:
        s, t = e.start, e.start + e.length
        kind = (e.zero, e.present, e.depth)
        while s < t:
            u = t if split is None else min(t, (s // split + 1) * split)
            host = None if e.offset is None else e.offset + (s - e.start)
            if runs:
                ps, pe, pk, ph = runs[-1]
                same = pe == s and pk == kind and (split is None or s % split)
                if same and not e.zero:     # data runs must be contiguous in the file too
                    same = ph is not None and host is not None and ph + (s - ps) == host
                if same:
                    runs[-1] = (ps, u, pk, ph)
                    s = u
                    continue
            runs.append((s, u, kind, host))
            s = u
    return [(r[0], r[1], r[2][0]) for r in runs]


def convert_progress_steps(devs, min_sparse, compressed=False, cluster_sectors=128):
    """[(start byte, percent)] qemu-img convert -p prints on its copy pass (convert_iteration_sectors)."""
    sizes = [(d.size + 511) // 512 for d in devs]
    total = sum(sizes)
    aligns = []
    runs = []
    for dev in devs:
        cs = getattr(dev, "cluster_size", 0) if dev.format_name == "qcow2" else 0
        aligns.append(max(1, cs // 512))
        runs.append(status_runs(dev, 0, dev.size))
    state = {"next": 0, "status": None}
    buf = cluster_sectors if compressed else IO_BUF_SECTORS

    def iteration(sector):
        src, base = 0, 0
        while sector - base >= sizes[src]:
            base += sizes[src]
            src += 1
        n = min(total - sector, REQUEST_MAX_SECTORS)
        if state["next"] <= sector:
            off = (sector - base) * 512
            zero, end = True, off + n * 512
            for s, e, z in runs[src]:
                if s <= off < e:
                    zero, end = z, e
                    break
            count = min(end, off + n * 512, devs[src].size) - off
            n = max(1, -(-count // 512))
            tail = (sector - base + n) % aligns[src]
            if n > tail:
                n -= tail
            state["status"] = "zero" if zero else "data"
            state["next"] = sector + n
        n = min(n, state["next"] - sector)
        if state["status"] == "data":
            n = min(n, buf)
        if compressed:
            if n < cluster_sectors:
                n = min(cluster_sectors, total - sector)
                state["status"] = "data"
            else:
                n = n // cluster_sectors * cluster_sectors
        return n

    def walk(copy_pass):
        out, sector = [], 0
        state["next"] = 0
        while sector < total:
            n = iteration(sector)
            if copy_pass and not min_sparse and state["status"] == "zero":
                n = min(n, buf)
            if state["status"] == "data" or (not min_sparse and state["status"] == "zero"):
                out.append((sector, n))
            sector += n
        return out

    allocated = sum(n for _s, n in walk(False))
    steps, done = [], 0
    for sector, n in walk(True):
        done += n
        steps.append((sector * 512, 100.0 * done / allocated))
    return steps


def progress_printer(mode, ctx, prog, devs, min_sparse, compressed, cluster_size=65536):
    """A progress(done, total, elapsed) callback for the engine, and a finish(ok) function."""
    import json
    if mode == "json":
        last = {"done": None, "total": sum(d.size for d in devs), "elapsed": 0.0}

        def emit(done, total, elapsed):
            last.update(done=done, total=total, elapsed=elapsed)
            ctx.out(json.dumps({"done": done, "total": total, "elapsed": round(elapsed, 6)}) + "\n")

        def finish_json(ok):
            if ok and last["done"] != last["total"]:
                emit(last["total"], last["total"], last["elapsed"])
        return emit, finish_json
    steps = convert_progress_steps(devs, min_sparse, compressed, cluster_size // 512) if prog.enabled else []
    pending = [0]

    def report(done, _total, _elapsed):
        while pending[0] < len(steps) and steps[pending[0]][0] < done:
            prog.print_(steps[pending[0]][1], 0)
            pending[0] += 1

    def finish(ok):
        if ok:
            report(float("inf"), None, None)
    return report, finish


def compare_progress(prog, devs, stop, tail):
    """The progress qemu-img compare prints on its way (chunk by chunk, 2 MiB at most for data):
    over the common part, or (tail=True) over the larger image's excess. Stops at offset ``stop``."""
    sizes = [d.size for d in devs]
    base, common = max(sizes), min(sizes)
    buf = IO_BUF_SECTORS * 512

    def step(chunk):
        prog.print_(float32(float32(float32(chunk) / float32(base)) * 100), 100)

    if not prog.enabled:
        return
    if tail:
        over = devs[0] if sizes[0] > sizes[1] else devs[1]
        for s, e, zero in status_runs(over, common, base - common):
            pos = s
            while pos < e:
                chunk = e - pos if zero else min(e - pos, buf)
                if stop is not None and pos <= stop < pos + chunk:
                    return
                pos += chunk
                step(chunk)
        return
    runs = [status_runs(d, 0, common) for d in devs]
    offset, idx = 0, [0, 0]
    while offset < common:
        ends, zeros = [], []
        for k in (0, 1):
            while runs[k][idx[k]][1] <= offset:
                idx[k] += 1
            ends.append(runs[k][idx[k]][1])
            zeros.append(runs[k][idx[k]][2])
        chunk = min(ends) - offset
        if not (zeros[0] and zeros[1]):
            chunk = min(chunk, buf)
        if stop is not None and offset <= stop < offset + chunk:
            return
        offset += chunk
        step(chunk)


class JsonProgress(object):
    """Our ``--progress=json`` (convert, rebase, commit): one ``{"done", "total", "elapsed"}`` object
    per line, in bytes and seconds; the last line has done == total."""

    def __init__(self, out):
        import time
        self.out = out
        self.clock = time.monotonic
        self.start = self.clock()
        self.last = None

    def __call__(self, done, total):
        import json
        self.last = (done, total)
        self.out(json.dumps({"done": done, "total": total, "elapsed": round(self.clock() - self.start, 6)}) + "\n")

    def finish(self, total):
        if self.last is None or self.last != (total, total):
            self(total, total)
