# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The block-device contract every format driver fulfils, the opener and the chain reader.

Contract (offsets and lengths in bytes, guest view):
  dev.filename, dev.format_name, dev.size, dev.read_only
  dev.backing            opened backing BlockDevice or None
  dev.backing_filename   as stored in the image (None if none)
  dev.backing_format     as stored (None if none)
  dev.read(offset, length) -> bytes            reads through the backing chain
  dev.write(offset, data)
  dev.write_zeroes(offset, length)
  dev.discard(offset, length)
  dev.block_status(offset, length) -> [Extent]   this layer only (depth 0), covering the range
  dev.flush(); dev.close()  (also a context manager: closes the whole chain)
  dev.format_specific() -> dict or None   qemu-img's "format-specific" object
  dev.info_fields() -> dict               extra top-level qemu-img info keys (cluster-size, snapshots ...)
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

try:
    from _operator import itemgetter  # the C module operator re-exports: importing operator costs 0.3 ms
except ImportError:  # pragma: no cover - interpreters without it
    from operator import itemgetter

from .errors import BlockIOError, ImageNotFound, InvalidArgument, ReadOnlyImage, UnsafeImage, UnsupportedFeature
from .fileio import zero_view

# status of a guest range in ONE layer:
#   DATA: allocated here with data (offset = host offset when it maps linearly, else None)
#   ZERO: allocated here, reads as zeros (offset may be set for preallocated zero clusters)
#   UNALLOCATED: not allocated here; reads come from the backing file (or zeros)
DATA = "data"
ZERO = "zero"
UNALLOCATED = "unallocated"
# protocol nodes that report more than a file can (NBD block status):
#   DATA_ZERO: allocated, data, reads as zeros; HOLE: not allocated and not known to read as zeros
DATA_ZERO = "data-zero"
HOLE = "hole"


def _named_tuple(name, fields, doc):
    """A tuple type with named fields, like collections.namedtuple, without importing collections
    (that import is a millisecond of every command's start-up, and info needs nothing else from it)."""
    names = tuple(fields.split())

    def __new__(cls, *values):
        if len(values) != len(names):
            raise TypeError("%s takes %d values, not %d" % (name, len(names), len(values)))
        return tuple.__new__(cls, values)

    def _replace(self, **changes):
        values = [changes.pop(f, v) for f, v in zip(names, self)]
        if changes:
            raise ValueError("%s has no fields %s" % (name, sorted(changes)))
        return tuple.__new__(type(self), values)

    def __repr__(self):
        return "%s(%s)" % (name, ", ".join("%s=%r" % fv for fv in zip(names, self)))

    attrs = {"__slots__": (), "__doc__": doc, "_fields": names, "__new__": __new__, "_replace": _replace,
             "__repr__": __repr__, "__getnewargs__": tuple}
    attrs.update((f, property(itemgetter(i))) for i, f in enumerate(names))
    return type(name, (tuple,), attrs)


Extent = _named_tuple("Extent", "start length status offset", "One run of a layer's block status.")
# A chain extent: where the content of [start, start+length) comes from.
#   depth: layer index (0 = top); for ranges unallocated everywhere, the depth of the last layer
#   present: allocated in some layer; zero: reads as zeros; data: has data; offset: host offset
#   in the file at `depth`, or None; filename: that layer's filename
ChainExtent = _named_tuple("ChainExtent", "start length depth present zero data offset filename",
                           "Where the content of one run of a backing chain comes from.")

MAX_CHAIN_DEPTH = 64


class BlockDevice(object):
    """Base class with the shared plumbing. Drivers override the I/O methods."""

    format_name = None

    def __init__(self, filename, read_only=True):
        self.filename = filename
        self.read_only = read_only
        self.size = 0
        self.backing = None
        self.backing_filename = None
        self.backing_format = None

    # --- I/O, to be provided by drivers ---
    def read(self, offset, length):
        raise NotImplementedError

    def readinto(self, offset, view):
        """Read len(view) guest bytes at offset into the writable memoryview (drivers that can
        read straight into it override this; it lets callers reuse their buffers)."""
        view[:] = self.read(offset, len(view))

    def write(self, offset, data):
        raise NotImplementedError

    def write_zeroes(self, offset, length):
        raise NotImplementedError

    def discard(self, offset, length):
        raise NotImplementedError

    def block_status(self, offset, length):
        raise NotImplementedError

    def flush(self):
        pass

    def close_self(self):
        pass

    # --- facts ---
    def format_specific(self):
        return None

    def info_fields(self):
        return {}

    def actual_size(self):
        return None

    # --- shared helpers ---
    def check_range(self, offset, length):
        if offset < 0 or length < 0 or offset + length > self.size:
            raise InvalidArgument("%s: request [%d, +%d) is outside the image (size %d)"
                                  % (self.filename, offset, length, self.size))

    def check_writable(self):
        if self.read_only:
            raise ReadOnlyImage("%s: image is opened read-only" % self.filename)

    def readinto_backing(self, offset, view):
        """Guest data below this layer for [offset, offset+len(view)) into view; zeros past the
        backing's end (or with no backing file)."""
        length = len(view)
        n = 0 if self.backing is None else max(0, min(length, self.backing.size - offset))
        if n:
            self.backing.readinto(offset, view[:n])
        if n < length:
            view[n:] = zero_view(length - n)

    @property
    def map_filename(self):
        """The name `qemu-img map` shows for data in this layer: its file node's."""
        node = getattr(self, "file", None)
        name = getattr(node, "filename", None)
        return name if name and getattr(self, "spec_node", None) is not None else self.filename

    def chain(self):
        dev = self
        while dev is not None:
            yield dev
            dev = dev.backing

    def close(self):
        """Close this layer and its whole backing chain."""
        for dev in list(self.chain()):
            dev.close_self()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def chain_block_status(dev, offset, length):
    """Map [offset, offset+length) through the backing chain like `qemu-img map` does.

    Returns a list of ChainExtent, unmerged (callers merge).
    """
    out = []
    _chain_status(dev, 0, offset, length, out)
    return out


def _chain_status(dev, depth, offset, length, out):
    # Mirrors qemu-img map: a layer that does not allocate a range defers to its backing file;
    # past the end of a shorter backing file (or with none) the range reads as zeros at this depth.
    end = offset + length
    fname = None
    for ext in dev.block_status(offset, length):
        s, e = ext.start, min(ext.start + ext.length, end)
        if e <= s:
            continue
        if ext.status == UNALLOCATED:
            below = dev.backing
            if below is not None and s < below.size:
                be = min(e, below.size)
                _chain_status(below, depth + 1, s, be - s, out)
                s = be
            if s < e:
                offset_here = None if ext.offset is None else ext.offset + (s - ext.start)
                out.append(ChainExtent(s, e - s, depth, False, True, False, offset_here, None))
        elif ext.status == HOLE:
            out.append(ChainExtent(s, e - s, depth, False, False, False, None, None))
        else:
            data = ext.status in (DATA, DATA_ZERO)
            zero = ext.status != DATA
            if fname is None:
                fname = dev.map_filename
            out.append(ChainExtent(s, e - s, depth, True, zero, data, ext.offset, fname))


# ---------------------------------------------------------------------------- the opener
_PROTOCOLS = ("json", "file", "nbd", "nbd+unix", "nbd+tcp", "http", "https", "ftp", "ftps", "ssh", "iscsi",
              "rbd", "gluster", "gluster+tcp", "gluster+unix", "gluster+rdma", "nfs", "host_device",
              "host_cdrom", "vvfat", "blkdebug", "blkverify", "null-co", "null-aio", "throttle", "fd")
FORMATS = ("raw", "qcow2", "luks")


def refuse_pseudo_filename(name, what, allow_unsafe=False):
    """Refuse QEMU's json: syntax and protocol prefixes (they reach beyond the local file)."""
    if allow_unsafe or ":" not in name:
        return
    prefix = name.split(":", 1)[0]
    if prefix.lower() in _PROTOCOLS and "/" not in prefix:
        raise UnsafeImage("%s '%s' uses the '%s:' pseudo-filename syntax, which is refused "
                          "(only local files are opened)" % (what, name, prefix))


def probe_format(node):
    """qcow2 or luks by their magic, otherwise raw."""
    head = node.pread(0, 8)
    if head[:4] == b"QFI\xfb":
        return "qcow2"
    if head == b"LUKS\xba\xbe\x00\x01":
        return "luks"
    return "raw"


def full_backing_path(overlay_filename, backing_name):
    """QEMU's path_combine(): a relative backing name is relative to the overlay's directory."""
    if os.path.isabs(backing_name):
        return backing_name
    base_dir = os.path.dirname(overlay_filename)
    return os.path.join(base_dir, backing_name) if base_dir else backing_name


def open_format(filename, node, fmt=None, read_only=True, repair=False, open_data_file=True, data_file=None,
                secrets=None, key_secret=None):
    """The format driver `fmt` (probed when None) over an open protocol node; on failure the
    node is left open for the caller to close. qcow2 only: data_file is an opened node for its
    external data file (else the one its header names is opened, unless open_data_file is False).
    secrets (crypto.secrets.SecretStore) and key_secret (the encrypt.key-secret id) unlock an
    encrypted image."""
    if fmt is None:
        fmt = probe_format(node)
    if fmt == "qcow2":
        from .formats.qcow2 import Qcow2Image
        return Qcow2Image(filename, node, read_only, repair=repair, data_file=data_file,
                          open_data_file=open_data_file, secrets=secrets, key_secret=key_secret)
    if fmt == "luks":
        from .formats.luks import LuksImage
        return LuksImage(filename, node, read_only, secrets=secrets, key_secret=key_secret)
    from .formats.raw import RawImage
    return RawImage(filename, node, read_only)


def open_single(filename, fmt=None, read_only=True, force_share=False, repair=False, open_data_file=True,
                cache=None, secrets=None, key_secret=None):
    """Open one layer (no backing) on a local file, with QEMU's lock held by its node.
    cache: qemu's cache mode for the file (protocols/cache.py; None = writeback)."""
    from .protocols.file import HostFile
    if fmt is not None and fmt not in FORMATS:
        raise InvalidArgument("Could not open '%s': Unknown driver '%s'" % (filename, fmt))
    node = HostFile(filename, read_only, force_share, cache=cache)
    try:
        return open_format(filename, node, fmt, read_only, repair, open_data_file, secrets=secrets,
                           key_secret=key_secret)
    except BaseException:
        node.close()
        raise


def open_layer(filename, fmt=None, read_only=True, force_share=False, repair=False, cache=None, secrets=None,
               key_secret=None):
    """One layer (no backing chain) of whatever open_image accepts."""
    if secrets is None:
        secrets = getattr(filename, "secrets", None)
    if getattr(filename, "image_opts", False) or isinstance(filename, dict) or is_pseudo_filename(filename):
        return open_spec(filename, fmt, read_only, force_share, getattr(filename, "image_opts", False), cache,
                         secrets, key_secret)
    return open_single(filename, fmt, read_only, force_share, repair, cache=cache, secrets=secrets,
                       key_secret=key_secret)


def open_image(filename, fmt=None, read_only=True, force_share=False, open_backing=True,
               allow_unsafe_backing=False, open_data_file=True, cache=None, secrets=None, key_secret=None,
               backing_key_secret=None, image_opts=False):
    """Open an image and (optionally) its backing chain, depth-limited and loop-checked.

    filename: what the user named: a file name, `json:{...}`, a protocol name (nbd://...,
    null-co://, blkdebug:CONF:FILE, file:NAME), an --image-opts string (image_opts=True) or an
    already crumpled options dict (see spec.py). A plain file name takes the direct path.
    Backing files are always opened read-only and with the caller's force_share; a backing name
    read from an image may not use json: or a protocol unless allow_unsafe_backing.
    cache: qemu's cache mode for the files (None: the default); backing files inherit it.
    secrets: a crypto.secrets.SecretStore (default: the one a spec.ImageName carries); key_secret:
    the secret id that unlocks the top image (encrypt.key-secret; a spec's own encrypt.key-secret
    wins), backing_key_secret the one for encrypted backing files (default: the same).
    """
    image_opts = image_opts or getattr(filename, "image_opts", False)
    if secrets is None:
        secrets = getattr(filename, "secrets", None)
    if image_opts or isinstance(filename, dict) or is_pseudo_filename(filename):
        top = open_spec(filename, fmt, read_only, force_share, image_opts, cache, secrets, key_secret)
    else:
        top = open_single(filename, fmt, read_only, force_share, open_data_file=open_data_file, cache=cache,
                          secrets=secrets, key_secret=key_secret)
    if secrets is not None:
        top.secrets = secrets
    if backing_key_secret is None:
        backing_key_secret = key_secret
    if not open_backing:
        return top
    try:
        _open_backing_chain(top, filename, force_share, allow_unsafe_backing, cache, open_data_file, secrets,
                            backing_key_secret)
        return top
    except BaseException:
        top.close()
        raise


def is_pseudo_filename(name):
    """json: or a protocol we know (or know we lack): the spec path opens it."""
    if ":" not in name:
        return False  # the common case, without importing the spec module
    from .spec import _UNAVAILABLE, protocol_of
    prefix = protocol_of(name)
    return prefix is not None and (prefix in ("json", "file", "nbd", "nbd+unix", "nbd+tcp", "null-co", "null-aio",
                                              "blkdebug", "ssh") or prefix in _UNAVAILABLE)


def backing_path(dev):
    """The backing file's path as QEMU resolves it (bdrv_dirname of the overlay), or None when the
    overlay's directory cannot be determined (QEMU: "cannot determine actual path")."""
    name = dev.backing_filename
    if not name:
        return None
    ns = getattr(dev, "spec_node", None)
    if ns is None:
        return full_backing_path(dev.filename, name)
    if os.path.isabs(name):
        return name
    base = ns.dirname()
    if base is None:
        return None
    return os.path.join(base, name) if base else name


def _format_layers(top):
    """The format layers under filters (blkdebug over qcow2 opens the qcow2's chain)."""
    dev = top
    while getattr(dev, "child", None) is not None and isinstance(dev.child, BlockDevice):
        dev = dev.child
    return dev


def _open_backing_chain(top, filename, force_share, allow_unsafe_backing, cache=None, open_data_file=True,
                        secrets=None, key_secret=None):
    seen = set()
    dev = _format_layers(top)
    if dev.fd is not None:
        st = os.fstat(dev.fd)
        seen.add((st.st_dev, st.st_ino))
    label = filename if isinstance(filename, str) else top.filename
    depth = 0
    while True:
        override = getattr(dev, "backing_override", False)
        if override is not False:
            # the spec said backing: null (cut the chain) or gave the backing image itself;
            # bdrv_refresh_filename(): a cut or replaced chain is part of the name
            if override is not None or dev.backing_filename:
                dev.filename = dev.spec_node.filename(backing_overridden=True)
            if override is None:
                return
            dev.backing = override
            dev.backing_override = False
            dev = _format_layers(override)
            depth += 1
            continue
        if not dev.backing_filename:
            return
        depth += 1
        if depth > MAX_CHAIN_DEPTH:
            raise UnsafeImage("Could not open backing file of '%s': the backing chain of '%s' is deeper "
                              "than %d images" % (dev.filename, label, MAX_CHAIN_DEPTH))
        name = dev.backing_filename
        refuse_pseudo_filename(name, "Backing file name", allow_unsafe_backing)
        bfmt = dev.backing_format
        if bfmt is not None and bfmt not in FORMATS:
            raise UnsupportedFeature("Could not open backing file '%s' of '%s': Unknown driver '%s'"
                                     % (name, dev.filename, bfmt))
        if allow_unsafe_backing and is_pseudo_filename(name):
            backing = open_spec(name, bfmt, True, force_share, cache=cache, secrets=secrets, key_secret=key_secret)
        else:
            path = backing_path(dev)
            if path is None:
                raise ImageNotFound("Could not open '%s': Could not open backing file: Cannot generate a base "
                                    "directory for %s nodes" % (label, _base_driver(dev)))
            try:
                bst = os.stat(path)
            except OSError as e:
                raise ImageNotFound("Could not open '%s': Could not open backing file: Could not open '%s': %s"
                                    % (label, path, e.strerror))
            key = (bst.st_dev, bst.st_ino)
            if key in seen:
                err = UnsafeImage("Could not open backing file '%s' of '%s': the backing chain has a loop"
                                  % (path, dev.filename))
                err.loop_path = path   # qemu-img info --backing-chain names it ("creates an infinite loop")
                raise err
            seen.add(key)
            backing = open_single(path, bfmt, True, force_share, open_data_file=open_data_file, cache=cache,
                                  secrets=secrets, key_secret=key_secret)
        dev.backing = backing
        dev = _format_layers(backing)


def _base_driver(dev):
    ns = getattr(dev, "spec_node", None)
    while ns is not None and ns.primary_child() is not None:
        ns = ns.primary_child()
    return ns.driver if ns is not None else "file"


# ---------------------------------------------------------------------------- specs
class DeviceNode(object):
    """A block device used as another format's file (qcow2 inside qcow2, as QEMU allows)."""

    driver = None

    def __init__(self, dev):
        self.dev = dev
        self.filename = dev.filename
        self.driver = dev.format_name
        self.read_only = dev.read_only
        self.fd = None
        self.lock = None

    def length(self):
        return self.dev.size

    def pread(self, offset, n):
        buf = bytearray(n)
        self.preadinto(offset, memoryview(buf))
        return bytes(buf)

    def preadinto(self, offset, view):
        n = max(0, min(len(view), self.dev.size - offset))
        if n:
            self.dev.readinto(offset, view[:n])
        if n < len(view):
            view[n:] = zero_view(len(view) - n)

    def extents(self, offset, n):
        end = min(offset + n, self.dev.size)
        out = [(e.start, e.length, e.status in (DATA, DATA_ZERO, HOLE))
               for e in self.dev.block_status(offset, end - offset)] if end > offset else []
        if end < offset + n:
            out.append((end, offset + n - end, False))
        return out

    def allocated_bytes(self):
        return self.dev.actual_size()

    def check_writable(self):
        self.dev.check_writable()

    def pwrite(self, offset, data):
        self.dev.write(offset, data)

    def pwritev(self, offset, buffers):
        self.dev.write(offset, b"".join(bytes(b) for b in buffers))

    def truncate(self, size):
        raise UnsupportedFeature("%s: cannot resize a format node used as a file" % self.filename)

    def allocate(self, offset, n):
        pass

    def punch(self, offset, n):
        self.dev.write_zeroes(offset, n)

    def flush(self):
        self.dev.flush()

    def close(self):
        if self.dev is not None:
            self.dev.close()
            self.dev = None


class WindowNode(object):
    """raw's offset/size: a window [offset, offset+size) of the file below."""

    def __init__(self, node, offset, size):
        self.node = node
        self.offset = offset
        self.size = size
        self.filename = node.filename
        self.driver = node.driver
        self.read_only = node.read_only
        self.fd = node.fd
        self.lock = node.lock

    def length(self):
        return self.size

    def pread(self, offset, n):
        buf = bytearray(n)
        self.preadinto(offset, memoryview(buf))
        return bytes(buf)

    def preadinto(self, offset, view):
        n = max(0, min(len(view), self.size - offset))
        if n:
            self.node.preadinto(self.offset + offset, view[:n])
        if n < len(view):
            view[n:] = zero_view(len(view) - n)

    def extents(self, offset, n):
        end = min(offset + n, self.size)
        out = [(s - self.offset, k, d) for s, k, d in self.node.extents(self.offset + offset, end - offset)] \
            if end > offset else []
        if end < offset + n:
            out.append((end, offset + n - end, False))
        return out

    def allocated_bytes(self):
        return self.node.allocated_bytes()

    def check_writable(self):
        if self.read_only:
            raise ReadOnlyImage("%s: image is opened read-only" % self.filename)

    def _check(self, offset, n):
        if offset + n > self.size:
            raise InvalidArgument("%s: request beyond the raw size" % self.filename)

    def pwrite(self, offset, data):
        self._check(offset, len(data))
        self.node.pwrite(self.offset + offset, data)

    def pwritev(self, offset, buffers):
        self._check(offset, sum(len(b) for b in buffers))
        self.node.pwritev(self.offset + offset, buffers)

    def truncate(self, size):
        raise UnsupportedFeature("Cannot resize fixed-size raw disks")

    def allocate(self, offset, n):
        self.node.allocate(self.offset + offset, n)

    def punch(self, offset, n):
        self._check(offset, n)
        self.node.punch(self.offset + offset, n)

    def flush(self):
        self.node.flush()

    def close(self):
        self.node.close()


def open_spec(name, fmt=None, read_only=True, force_share=False, image_opts=False, cache=None, secrets=None,
              key_secret=None):
    """Open what a specification names (see open_image); one layer plus the layers the spec
    itself names. Errors read "Could not open '<what the user typed>': <reason>"."""
    from . import spec as S
    from .errors import QimgError
    label = name if isinstance(name, str) else S.compact_json(name)
    try:
        if isinstance(name, str):
            crumpled = S.image_spec(name, fmt, image_opts)
        else:
            crumpled = dict(name)
            if fmt:
                crumpled["driver"] = fmt
        tree = S.build_tree(crumpled)
        tree.secrets = secrets if secrets is not None else getattr(name, "secrets", None)
        _pass_down(tree, cache, tree.secrets, key_secret)
        dev = _open_top(tree, read_only, force_share)
        dev.secrets = tree.secrets
        return dev
    except S.SpecError as e:
        raise InvalidArgument("Could not open '%s': %s" % (label, e.message), hint=e.hint)
    except BlockIOError as e:
        raise BlockIOError(e.errno, e.offset, "Could not open '%s': %s" % (label, e.message))
    except QimgError as e:
        if isinstance(e, InvalidArgument) and e.message.startswith("Could not open '%s'" % label):
            raise
        msg = e.message
        if msg.startswith("Could not open '"):
            # HostFile's "Could not open 'X': reason" -> the reason, under the user's name
            rest = msg[len("Could not open '"):]
            k = rest.find("': ")
            if k >= 0 and rest[k + 3:].startswith("Could not open"):
                msg = rest[k + 3:]
            elif k >= 0:
                msg = rest[k + 3:]
        try:
            again = type(e)("Could not open '%s': %s" % (label, msg), hint=e.hint)
        except TypeError:  # a subclass with its own constructor
            again = QimgError("Could not open '%s': %s" % (label, msg), hint=e.hint)
        raise again


def _open_top(tree, read_only, force_share):
    obj = _open_node(tree, read_only, force_share)
    if isinstance(obj, BlockDevice):
        return obj
    try:
        from .formats.raw import ProtocolDevice
        dev = ProtocolDevice(tree.filename(), obj, read_only)
    except BaseException:
        obj.close()
        raise
    dev.spec_node = tree
    return dev


def _open_node(ns, read_only, force_share):
    """A NodeSpec -> a BlockDevice (format nodes, filters over them) or a protocol node."""
    from .spec import SpecError, is_format
    d = ns.driver
    if d is None or is_format(d):
        return _open_format_node(ns, read_only, force_share)
    if d == "file":
        return _open_host_file(ns, read_only, force_share)
    if d in ("null-co", "null-aio"):
        from .protocols.null import NullNode
        return NullNode(ns.filename(), ns.size("size", 1 << 30), ns.bool("read-zeroes"), read_only, driver=d)
    if d == "nbd":
        from .protocols.nbd import NbdNode, address_of
        address, export = address_of(ns)
        return NbdNode(ns.filename(), address, export, read_only, ns.str("x-dirty-bitmap"))
    if d == "ssh":
        from .protocols.ssh import open_ssh
        open_ssh(ns)
    if d == "quorum":
        from .protocols.quorum import QuorumNode
        opened = []
        try:
            for i in range(len(ns.children)):
                child = _open_node(ns.children["children.%d" % i], read_only, force_share)
                opened.append(DeviceNode(child) if isinstance(child, BlockDevice) else child)
            return QuorumNode(ns.filename(), opened, ns.number("vote-threshold"), ns.str("read-pattern", "quorum"),
                              read_only)
        except BaseException:
            for child in opened:
                child.close()
            raise
    if d == "blkdebug":
        from .protocols.blkdebug import BlkdebugDevice, BlkdebugNode, Rules
        rules = Rules.from_spec(ns)
        _blkdebug_limits(ns)
        child = _open_node(ns.children["image"], read_only, force_share)
        try:
            if isinstance(child, BlockDevice):
                dev = BlkdebugDevice(ns.filename(), child, rules, read_only)
                dev.spec_node = ns
                return dev
            return BlkdebugNode(ns.filename(), child, rules, read_only)
        except BaseException:
            child.close()
            raise
    raise SpecError("Unknown driver '%s'" % d)


def _pass_down(ns, cache, secrets, key_secret):
    """The caller's cache mode (-t/-T) for the file nodes a spec does not give cache.* options, and
    the secret store (with the caller's key-secret id for encrypted formats that name none)."""
    ns.default_cache = cache
    ns.secrets = secrets
    ns.default_key_secret = key_secret
    for child in ns.children.values():
        if child is not None:
            _pass_down(child, cache, secrets, key_secret)


def _file_cache_mode(ns):
    """The qemu cache mode named by a file node's cache.direct / cache.no-flush, or None (default)."""
    from .spec import opt_bool
    values = dict(ns.inherited)
    values.update((k, v) for k, v in ns.options.items() if k in ("cache.direct", "cache.no-flush"))
    if not values:
        return None
    direct = opt_bool(values.get("cache.direct", False), "cache.direct")
    no_flush = opt_bool(values.get("cache.no-flush", False), "cache.no-flush")
    if direct and no_flush:
        raise UnsupportedFeature("cache.direct=on together with cache.no-flush=on is not supported")
    return "none" if direct else ("unsafe" if no_flush else "writeback")


def _open_host_file(ns, read_only, force_share):
    from .protocols.file import HostFile
    from .spec import SpecError
    locking = ns.str("locking", "auto") != "off"
    mode = _file_cache_mode(ns) or getattr(ns, "default_cache", None)
    if ns.str("aio") == "native" and mode != "none":
        raise SpecError("aio=native was specified, but it requires cache.direct=on, which was not specified.")
    if mode is None:
        return HostFile(ns.str("filename"), read_only, force_share, lock=locking)
    try:
        node = HostFile(ns.str("filename"), read_only, force_share, lock=locking, cache=mode)
    except TypeError:
        raise UnsupportedFeature("cache.direct/cache.no-flush are not supported by this build")
    if getattr(node, "direct", None) is not None:
        node = DirectExtents(node, getattr(node.direct, "align", 4096))
    return node


class DirectExtents(object):
    """A file opened with O_DIRECT reports data in whole request-alignment blocks: a data extent
    that ends in a partial block at EOF is rounded up (file-posix's block status)."""

    def __init__(self, node, align):
        self.__dict__["_node"] = node
        self.__dict__["_align"] = align

    def __getattr__(self, name):
        return getattr(self._node, name)

    def __setattr__(self, name, value):
        setattr(self._node, name, value)

    def extents(self, offset, n):
        out = []
        end = offset + n
        for s, k, is_data in self._node.extents(offset, n):
            if out and out[-1][0] + out[-1][1] > s:
                cut = out[-1][0] + out[-1][1] - s
                s, k = s + cut, k - cut
                if k <= 0:
                    continue
            if is_data and (s + k) % self._align:
                k = min(end, (s + k + self._align - 1) // self._align * self._align) - s
            out.append((s, k, is_data))
        return out


def _blkdebug_limits(ns):
    from .spec import SpecError
    align = ns.size("align", 0)
    if align and (align >= 1 << 31 or align & (align - 1)):
        raise SpecError("Cannot meet constraints with align %d" % align)
    base = max(align, 1)
    for key, unit in (("max-transfer", base), ("opt-write-zero", base), ("opt-discard", base)):
        v = ns.size(key, 0)
        if v and (v >= 1 << 31 or v % unit):
            raise SpecError("Cannot meet constraints with %s %d" % (key, v))
    for key, opt in (("max-write-zero", "opt-write-zero"), ("max-discard", "opt-discard")):
        v = ns.size(key, 0)
        if v and (v >= 1 << 31 or v % max(base, ns.size(opt, 0))):
            raise SpecError("Cannot meet constraints with %s %d" % (key, v))


def _open_format_node(ns, read_only, force_share):
    from .spec import SpecError
    file_spec = ns.children.get("file")
    if file_spec is None:
        raise SpecError('A block device must be specified for "file"')
    node = _open_node(file_spec, read_only, force_share)
    try:
        if isinstance(node, BlockDevice):
            node = DeviceNode(node)
        fmt = ns.driver
        if fmt is None:
            try:
                fmt = probe_format(node)
            except BlockIOError as e:
                raise BlockIOError(e.errno, e.offset, "Could not read image for determining its format: %s"
                                   % e.message)
        if fmt == "raw" and ("offset" in ns.options or "size" in ns.options):
            node = _raw_window(ns, node)
        ns.probed = fmt
        shown = ns.filename()
        keys = dict(secrets=getattr(ns, "secrets", None),
                    key_secret=ns.str("encrypt.key-secret") or ns.str("key-secret")
                    or getattr(ns, "default_key_secret", None))
        if fmt == "qcow2" and "data-file" in ns.children and ns.children["data-file"] is not None:
            # opened here, handed to the driver (Qcow2Image(data_file=...))
            data = _open_node(ns.children["data-file"], read_only, force_share)
            try:
                dev = open_format(shown, node, "qcow2", read_only, data_file=data, **keys)
            except BaseException:
                data.close()
                raise
        else:
            try:
                dev = open_format(shown, node, fmt, read_only, **keys)
            except BlockIOError as e:
                if fmt != "qcow2":
                    raise
                raise BlockIOError(e.errno, e.offset, "Could not read qcow2 header: %s" % e.message)
    except BaseException:
        node.close()
        raise
    dev.spec_node = ns
    if "backing" in ns.children:
        b = ns.children["backing"]
        if b is None:
            dev.backing_override = None
        else:
            try:
                dev.backing_override = _open_top(b, True, force_share)
            except BaseException:
                dev.close()
                raise
    return dev


def _raw_window(ns, node):
    from .spec import SpecError
    real = node.length()
    offset = ns.size("offset", 0)
    if offset > real:
        raise SpecError("Offset (%d) cannot be greater than size of the containing file (%d)" % (offset, real))
    if "size" in ns.options:
        size = ns.size("size")
        if offset + size > real:
            raise SpecError("The sum of offset (%d) and size (%d) has to be smaller or equal to the  actual size "
                            "of the containing file (%d)" % (offset, size, real))
        if size % 512:
            raise SpecError("Specified size is not multiple of 512")
    else:
        size = real - offset
    return WindowNode(node, offset, size)
