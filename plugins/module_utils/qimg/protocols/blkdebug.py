# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""blkdebug: QEMU's error-injecting filter (block/blkdebug.c), for tests.

The rules (a config file's [inject-error]/[set-state] sections and the inject-error/set-state
options) live in one Rules object; two thin adapters put it in a chain:
  BlkdebugNode    a protocol node over a protocol node: qcow2 over blkdebug over file
  BlkdebugDevice  a block device over a block device: blkdebug over qcow2 (it then also sees
                  block-status requests in guest terms)
Events ("none" at open, "read_aio" for a format's data reads, ...) arm inject-error rules whose
state matches; an armed rule fails matching requests with its errno (a BlockIOError).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ..errors import BlockIOError, ImageNotFound
from ..image import BlockDevice
from ..spec import SpecError, blkdebug_rule
from .base import ProtocolNode

MAX_CONFIG = 1 << 20


def parse_config(path):
    """qemu_config_parse() of a blkdebug config file -> [(section, {key: value})]."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG + 1)
    except (IOError, OSError) as e:
        raise ImageNotFound("Could not read blkdebug config file: %s" % e.strerror)
    if len(data) > MAX_CONFIG:
        raise SpecError("%s: blkdebug config file too large" % path)
    text = data.decode("utf-8", "replace")
    out = []
    current = None
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise SpecError("%s:%d: parse error" % (path, lineno))
            name = line[1:-1].strip().split(" ", 1)[0]
            if name not in ("inject-error", "set-state"):
                raise SpecError("%s:%d: There is no option group '%s'" % (path, lineno, name))
            current = (name, {})
            out.append(current)
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or current is None or len(value) < 2 or value[0] != '"' or value[-1] != '"':
            raise SpecError("%s:%d: parse error" % (path, lineno))
        current[1][key] = value[1:-1]
    return out


class Rules(object):
    """QEMU's rule lists per event, the state machine and the armed rules."""

    def __init__(self, config=None, inject=None, set_state=None):
        self.by_event = {}
        self.state = 1
        self.active = []
        sections = parse_config(config) if config else []
        sections += [("inject-error", r) for r in inject or []]
        sections += [("set-state", r) for r in set_state or []]
        for section, raw in sections:
            rule = blkdebug_rule(section, raw)
            rule["action"] = section
            # QLIST_INSERT_HEAD: the last rule added is processed first
            self.by_event.setdefault(rule["event"], []).insert(0, rule)

    @classmethod
    def from_spec(cls, node):
        config = node.str("config")
        inject = node.sub("inject-error") or []
        set_state = node.sub("set-state") or []
        return cls(config, inject, set_state)

    def event(self, name):
        new_state = self.state
        injected = 0
        for rule in self.by_event.get(name, ()):
            if rule["state"] and rule["state"] != self.state:
                continue
            if rule["action"] == "inject-error":
                injected += 1
                if injected == 1:
                    self.active = []
                self.active.insert(0, rule)
            else:
                new_state = rule["new_state"]
        self.state = new_state

    def check(self, iotype, offset, nbytes):
        for rule in self.active:
            at = rule["offset"]
            if (at is None or (nbytes and offset <= at < offset + nbytes)) and iotype in rule["iotypes"]:
                break
        else:
            return
        if not rule["errno"]:
            return
        if rule["once"]:
            self.active.remove(rule)
            lst = self.by_event.get(rule["event"], [])
            if rule in lst:
                lst.remove(rule)
        raise BlockIOError(rule["errno"], offset)


class BlkdebugNode(ProtocolNode):
    """blkdebug as a protocol node over another protocol node (its "image")."""

    driver = "blkdebug"

    def __init__(self, filename, child, rules, read_only=True):
        super(BlkdebugNode, self).__init__(filename, read_only)
        self.child = child
        self.rules = rules
        self.fd = child.fd
        self.lock = child.lock
        rules.event("none")

    def debug_event(self, name):
        self.rules.event(name)

    def length(self):
        return self.child.length()

    def preadinto(self, offset, view):
        self.rules.check("read", offset, len(view))
        self.child.preadinto(offset, view)

    def pread(self, offset, n):
        self.rules.check("read", offset, n)
        return self.child.pread(offset, n)

    def extents(self, offset, n):
        self.rules.check("block-status", offset, n)
        return self.child.extents(offset, n)

    def allocated_bytes(self):
        return None  # QEMU: a protocol driver without the callback, "disk size: unavailable"

    def pwritev(self, offset, buffers):
        self.check_writable()
        self.rules.check("write", offset, sum(len(b) for b in buffers))
        self.child.pwritev(offset, buffers)

    def pwrite(self, offset, data):
        self.pwritev(offset, [data])

    def truncate(self, size):
        self.child.truncate(size)

    def allocate(self, offset, n):
        self.child.allocate(offset, n)

    def punch(self, offset, n):
        self.check_writable()
        self.rules.check("write-zeroes", offset, n)
        self.child.punch(offset, n)

    def flush(self):
        self.rules.check("flush", 0, 0)
        self.child.flush()

    def close(self):
        if self.child is not None:
            self.child.close()
            self.child = None


class BlkdebugDevice(BlockDevice):
    """blkdebug as a filter over a block device (a format node): guest-level requests are checked,
    then passed to the child; backing files, map file names and depths are the child's."""

    format_name = "blkdebug"

    def __init__(self, filename, child, rules, read_only=True):
        super(BlkdebugDevice, self).__init__(filename, read_only)
        self.child = child
        self.rules = rules
        self.size = child.size
        self.file = getattr(child, "file", None)
        rules.event("none")

    # the chain below is the child's (a filter adds no layer)
    @property
    def backing(self):
        return None if self.child is None else self.child.backing

    @backing.setter
    def backing(self, value):
        if getattr(self, "child", None) is not None:
            self.child.backing = value

    @property
    def map_filename(self):
        return getattr(self.child, "map_filename", self.child.filename)

    @property
    def fd(self):
        return getattr(self.child, "fd", None)

    def read(self, offset, length):
        self.rules.check("read", offset, length)
        return self.child.read(offset, length)

    def readinto(self, offset, view):
        self.rules.check("read", offset, len(view))
        self.child.readinto(offset, view)

    def write(self, offset, data):
        self.check_writable()
        self.rules.check("write", offset, len(data))
        self.child.write(offset, data)

    def write_zeroes(self, offset, length):
        self.check_writable()
        self.rules.check("write-zeroes", offset, length)
        self.child.write_zeroes(offset, length)

    def discard(self, offset, length):
        self.check_writable()
        self.rules.check("discard", offset, length)
        self.child.discard(offset, length)

    def block_status(self, offset, length):
        self.rules.check("block-status", offset, length)
        return self.child.block_status(offset, length)

    def flush(self):
        self.rules.check("flush", 0, 0)
        self.child.flush()

    def actual_size(self):
        return None  # as QEMU: blkdebug cannot tell ("disk size: unavailable")

    def info_fields(self):
        # bdrv_get_info() of a filter is its child's: the cluster size shows through
        extra = self.child.info_fields() if self.child is not None else {}
        return dict((k, v) for k, v in extra.items() if k == "cluster-size")

    def close_self(self):
        if self.child is not None:
            child, self.child = self.child, None
            child.close_self()
