# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""An NBD client protocol node (docs/interop/nbd.txt and the NBD protocol specification).

Fixed-newstyle negotiation with NBD_OPT_STRUCTURED_REPLY, NBD_OPT_SET_META_CONTEXT (base:allocation,
or the context named by x-dirty-bitmap, e.g. qemu:allocation-depth) and NBD_OPT_GO; then
NBD_CMD_READ / WRITE / WRITE_ZEROES / TRIM / FLUSH / BLOCK_STATUS over simple or structured
replies, one request at a time. No TLS. Every length the server sends is checked before it is
read, so a hostile server gives a clean error, never an unbounded allocation.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import socket
import struct

from ..errors import BlockIOError, ImageNotFound, QimgError, UnsupportedFeature
from .base import ProtocolNode

NBDMAGIC = b"NBDMAGIC"
IHAVEOPT = 0x49484156454F5054
REPLY_MAGIC = 0x3e889045565a9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698
STRUCTURED_REPLY_MAGIC = 0x668e33ef

FLAG_FIXED_NEWSTYLE = 1
FLAG_NO_ZEROES = 2

OPT_GO = 7
OPT_STRUCTURED_REPLY = 8
OPT_SET_META_CONTEXT = 10
REP_ACK = 1
REP_INFO = 3
REP_META_CONTEXT = 4
REP_FLAG_ERROR = 1 << 31
INFO_EXPORT = 0
INFO_BLOCK_SIZE = 3

T_FLAG_READ_ONLY = 1 << 1
T_FLAG_SEND_FLUSH = 1 << 2
T_FLAG_SEND_TRIM = 1 << 5
T_FLAG_SEND_WRITE_ZEROES = 1 << 6

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS = 0, 1, 2, 3, 4, 6, 7
CMD_FLAG_REQ_ONE = 1 << 3

REPLY_FLAG_DONE = 1
REPLY_TYPE_NONE = 0
REPLY_TYPE_OFFSET_DATA = 1
REPLY_TYPE_OFFSET_HOLE = 2
REPLY_TYPE_BLOCK_STATUS = 5
REPLY_TYPE_ERROR = (1 << 15) + 1
REPLY_TYPE_ERROR_OFFSET = (1 << 15) + 2

STATE_HOLE = 1
STATE_ZERO = 2

MAX_OPTION_REPLY = 1 << 16
MAX_REQUEST = 32 << 20        # bytes per read/write request (QEMU's NBD_MAX_BUFFER_SIZE)
MAX_STATUS_REPLY = 1 << 20
TIMEOUT = 60.0

# NBD errors -> errno (the protocol's own numbering)
_NBD_ERRNO = {1: errno.EPERM, 5: errno.EIO, 12: errno.ENOMEM, 22: errno.EINVAL, 28: errno.ENOSPC,
              75: errno.EOVERFLOW, 95: errno.ENOTSUP, 108: errno.ESHUTDOWN}

_REQ = struct.Struct(">IHHQQI")
_SIMPLE = struct.Struct(">IIQ")
_STRUCT_HDR = struct.Struct(">IHHQI")
_OPT_REPLY = struct.Struct(">QIII")


class NbdError(QimgError):
    """The server broke the protocol or refused the export."""


class NbdNode(ProtocolNode):
    """One NBD export. address: ("unix", path) or ("inet", host, port)."""

    driver = "nbd"

    def __init__(self, filename, address, export="", read_only=True, meta_context=None):
        super(NbdNode, self).__init__(filename, read_only)
        self.address = address
        self.export = export or ""
        self.sock = None
        self.handle = 0
        self.size = 0
        self.flags = 0
        self.min_block = 1
        self.structured = False
        self.context_id = None
        self.want_context = meta_context or "base:allocation"
        self.alloc_depth = self.want_context == "qemu:allocation-depth"
        self.x_dirty_bitmap = meta_context
        self._connect()
        try:
            self._negotiate()
        except BaseException:
            self.close()
            raise
        if self.flags & T_FLAG_READ_ONLY and not read_only:
            self.close()
            raise ImageNotFound("Could not open '%s': NBD export is read-only" % filename)

    # --- socket plumbing ---
    def _connect(self):
        if self.address[0] == "unix":
            path = self.address[1]
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.settimeout(TIMEOUT)
            try:
                s.connect(path)
            except (OSError, socket.error) as e:
                s.close()
                raise ImageNotFound("Failed to connect to '%s': %s" % (path, e.strerror or e))
            self.sock = s
            return
        host, port = self.address[1], self.address[2]
        try:
            infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise ImageNotFound("address resolution failed for %s:%s: %s" % (host, port, e.strerror))
        except UnicodeError:
            raise ImageNotFound("address resolution failed for %s:%s: Name or service not known" % (host, port))
        last = None
        for family, stype, proto, _canon, sockaddr in infos:
            s = socket.socket(family, stype, proto)
            s.settimeout(TIMEOUT)
            try:
                s.connect(sockaddr)
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.sock = s
                return
            except (OSError, socket.error) as e:
                last = e
                s.close()
        raise ImageNotFound("Failed to connect to '%s:%s': %s" % (host, port, getattr(last, "strerror", last)))

    def _recv(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except socket.timeout:
                raise NbdError("%s: the NBD server did not answer" % self.filename)
            except (OSError, socket.error) as e:
                raise NbdError("%s: reading from the NBD server failed: %s" % (self.filename, e.strerror or e))
            if not k:
                raise NbdError("%s: the NBD server closed the connection" % self.filename)
            got += k
        return bytes(buf)

    def _recv_into(self, view):
        got = 0
        n = len(view)
        while got < n:
            try:
                k = self.sock.recv_into(view[got:], n - got)
            except socket.timeout:
                raise NbdError("%s: the NBD server did not answer" % self.filename)
            except (OSError, socket.error) as e:
                raise NbdError("%s: reading from the NBD server failed: %s" % (self.filename, e.strerror or e))
            if not k:
                raise NbdError("%s: the NBD server closed the connection" % self.filename)
            got += k

    def _send(self, *parts):
        try:
            for p in parts:
                self.sock.sendall(p)
        except (OSError, socket.error) as e:
            raise NbdError("%s: writing to the NBD server failed: %s" % (self.filename, e.strerror or e))

    # --- handshake ---
    def _negotiate(self):
        head = self._recv(16)
        if head[:8] != NBDMAGIC:
            raise NbdError("Could not open '%s': server did not send the NBD magic" % self.filename)
        if struct.unpack(">Q", head[8:])[0] != IHAVEOPT:
            raise NbdError("Could not open '%s': the server speaks only old-style NBD (not supported)"
                           % self.filename)
        hflags = struct.unpack(">H", self._recv(2))[0]
        if not hflags & FLAG_FIXED_NEWSTYLE:
            raise NbdError("Could not open '%s': the server does not support fixed newstyle NBD" % self.filename)
        self._send(struct.pack(">I", hflags & (FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES)))
        # structured replies
        self._option(OPT_STRUCTURED_REPLY, b"")
        rtype, data = self._option_reply(OPT_STRUCTURED_REPLY)
        self.structured = rtype == REP_ACK
        if rtype != REP_ACK and not rtype & REP_FLAG_ERROR:
            raise NbdError("Could not open '%s': unexpected reply to NBD_OPT_STRUCTURED_REPLY" % self.filename)
        name = self.export.encode("utf-8")
        if self.structured:
            ctx = self.want_context.encode("utf-8")
            self._option(OPT_SET_META_CONTEXT, struct.pack(">I", len(name)) + name + struct.pack(">II", 1, len(ctx))
                         + ctx)
            while True:
                rtype, data = self._option_reply(OPT_SET_META_CONTEXT)
                if rtype == REP_META_CONTEXT and len(data) >= 4:
                    if data[4:] == ctx:
                        self.context_id = struct.unpack(">I", data[:4])[0]
                elif rtype == REP_ACK or rtype & REP_FLAG_ERROR:
                    break
        if self.x_dirty_bitmap and self.context_id is None:
            raise NbdError("Could not open '%s': requested x-dirty-bitmap %s not found"
                           % (self.filename, self.x_dirty_bitmap))
        self._option(OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(">HH", 1, INFO_BLOCK_SIZE))
        have_export = False
        while True:
            rtype, data = self._option_reply(OPT_GO)
            if rtype == REP_INFO and len(data) >= 2:
                itype = struct.unpack(">H", data[:2])[0]
                if itype == INFO_EXPORT and len(data) == 12:
                    self.size, self.flags = struct.unpack(">QH", data[2:])
                    have_export = True
                elif itype == INFO_BLOCK_SIZE and len(data) == 14:
                    mn, _pref, _mx = struct.unpack(">III", data[2:])
                    if mn and mn & (mn - 1) == 0 and mn <= 65536:
                        self.min_block = mn
            elif rtype == REP_ACK:
                break
            elif rtype & REP_FLAG_ERROR:
                msg = data.decode("utf-8", "replace") if data else "server refused the export"
                raise ImageNotFound("Could not open '%s': Requested export not available: %s"
                                    % (self.filename, msg.splitlines()[0] if msg else msg))
            else:
                raise NbdError("Could not open '%s': unexpected reply %d to NBD_OPT_GO" % (self.filename, rtype))
        if not have_export:
            raise NbdError("Could not open '%s': the server sent no export information" % self.filename)
        if self.size > (1 << 63):
            raise NbdError("Could not open '%s': export size out of range" % self.filename)

    def _option(self, opt, data):
        self._send(struct.pack(">QII", IHAVEOPT, opt, len(data)), data)

    def _option_reply(self, opt):
        magic, ropt, rtype, length = _OPT_REPLY.unpack(self._recv(_OPT_REPLY.size))
        if magic != REPLY_MAGIC or ropt != opt:
            raise NbdError("Could not open '%s': bad NBD option reply" % self.filename)
        if length > MAX_OPTION_REPLY:
            raise NbdError("Could not open '%s': NBD option reply too long" % self.filename)
        return rtype, self._recv(length)

    # --- transmission ---
    def _request(self, cmd, offset, length, flags=0, payload=()):
        self.handle += 1
        self._send(_REQ.pack(REQUEST_MAGIC, flags, cmd, self.handle, offset, length), *payload)
        return self.handle

    def _error(self, code, offset, what="request"):
        err = _NBD_ERRNO.get(code, errno.EIO)
        return BlockIOError(err, offset)

    def _reply(self, handle, offset, view=None, status=None):
        """Receive the reply (all chunks) to request `handle`; data into view, extents to status."""
        failure = None
        while True:
            magic = struct.unpack(">I", self._recv(4))[0]
            if magic == SIMPLE_REPLY_MAGIC:
                err, rhandle = struct.unpack(">IQ", self._recv(12))
                if rhandle != handle:
                    raise NbdError("%s: NBD reply for an unknown request" % self.filename)
                if err:
                    raise self._error(err, offset)
                if view is not None:
                    self._recv_into(view)
                return
            if magic != STRUCTURED_REPLY_MAGIC or not self.structured:
                raise NbdError("%s: bad NBD reply magic" % self.filename)
            flags, rtype, rhandle, length = struct.unpack(">HHQI", self._recv(16))
            if rhandle != handle:
                raise NbdError("%s: NBD reply for an unknown request" % self.filename)
            if rtype == REPLY_TYPE_OFFSET_DATA and view is not None:
                if length < 8:
                    raise NbdError("%s: bad NBD data chunk" % self.filename)
                at = struct.unpack(">Q", self._recv(8))[0]
                n = length - 8
                if at < offset or at + n > offset + len(view):
                    raise NbdError("%s: NBD data chunk outside the request" % self.filename)
                self._recv_into(view[at - offset:at - offset + n])
            elif rtype == REPLY_TYPE_OFFSET_HOLE and view is not None:
                if length != 12:
                    raise NbdError("%s: bad NBD hole chunk" % self.filename)
                at, n = struct.unpack(">QI", self._recv(12))
                if at < offset or at + n > offset + len(view):
                    raise NbdError("%s: NBD hole chunk outside the request" % self.filename)
                view[at - offset:at - offset + n] = bytes(n)
            elif rtype == REPLY_TYPE_BLOCK_STATUS and status is not None:
                if length < 12 or (length - 4) % 8 or length > MAX_STATUS_REPLY:
                    raise NbdError("%s: bad NBD block status chunk" % self.filename)
                body = self._recv(length)
                ctx = struct.unpack(">I", body[:4])[0]
                if ctx == self.context_id:
                    for i in range(4, length, 8):
                        status.append(struct.unpack(">II", body[i:i + 8]))
            elif rtype in (REPLY_TYPE_ERROR, REPLY_TYPE_ERROR_OFFSET):
                if length < 6 or length > MAX_OPTION_REPLY:
                    raise NbdError("%s: bad NBD error chunk" % self.filename)
                body = self._recv(length)
                code = struct.unpack(">I", body[:4])[0]
                failure = failure or self._error(code, offset)
            elif rtype == REPLY_TYPE_NONE:
                if length:
                    raise NbdError("%s: bad NBD chunk" % self.filename)
            else:
                if length > MAX_REQUEST + 16:
                    raise NbdError("%s: NBD chunk too long" % self.filename)
                self._recv(length)  # a chunk type we did not ask for: skip it
            if flags & REPLY_FLAG_DONE:
                if failure is not None:
                    raise failure
                return

    # --- the node contract ---
    def length(self):
        return self.size

    def preadinto(self, offset, view):
        n = len(view)
        inside = max(0, min(n, self.size - offset))
        pos = 0
        while pos < inside:
            k = min(MAX_REQUEST, inside - pos)
            h = self._request(CMD_READ, offset + pos, k)
            sub = view[pos:pos + k]
            if self.structured:
                sub[:] = bytes(k)  # chunks need not cover the whole request when the server sends holes
            self._reply(h, offset + pos, view=sub)
            pos += k
        if inside < n:
            view[inside:] = bytes(n - inside)

    def pwritev(self, offset, buffers):
        self.check_writable()
        data = b"".join(bytes(b) for b in buffers)
        pos = 0
        while pos < len(data):
            chunk = data[pos:pos + MAX_REQUEST]
            h = self._request(CMD_WRITE, offset + pos, len(chunk), payload=(chunk,))
            self._reply(h, offset + pos)
            pos += len(chunk)

    def punch(self, offset, n):
        self.check_writable()
        cmd = CMD_WRITE_ZEROES if self.flags & T_FLAG_SEND_WRITE_ZEROES else None
        if cmd is None:
            return super(NbdNode, self).punch(offset, n)
        pos = 0
        while pos < n:
            k = min(1 << 30, n - pos)
            h = self._request(cmd, offset + pos, k)
            self._reply(h, offset + pos)
            pos += k

    def flush(self):
        if not self.read_only and self.flags & T_FLAG_SEND_FLUSH:
            h = self._request(CMD_FLUSH, 0, 0)
            self._reply(h, 0)

    def truncate(self, size):
        raise UnsupportedFeature("Cannot resize NBD nodes")

    def block_status(self, offset, n):
        """[(start, length, flags)] of the negotiated context, covering [offset, offset+n)."""
        out = []
        end = min(offset + n, self.size)
        pos = offset
        while pos < end:
            if self.context_id is None:
                out.append((pos, end - pos, 0))
                break
            k = min(end - pos, (1 << 31) - self.min_block)
            h = self._request(CMD_BLOCK_STATUS, pos, k)
            got = []
            self._reply(h, pos, status=got)
            if not got:
                raise NbdError("%s: the NBD server sent no block status" % self.filename)
            length, flags = got[0]
            if self.min_block > 1 and length % self.min_block:
                if length > self.min_block:
                    length -= length % self.min_block
                else:
                    length, flags = self.min_block, 0
            length = min(length, end - pos)
            if length <= 0:
                raise NbdError("%s: the NBD server sent an empty extent" % self.filename)
            if self.alloc_depth and flags > 2:
                flags = 2
            out.append((pos, length, flags))
            pos += length
        if end < offset + n:
            out.append((end, offset + n - end, STATE_ZERO))
        return out

    def extents(self, offset, n):
        return [(s, k, not flags & STATE_HOLE) for s, k, flags in self.block_status(offset, n)]

    def close(self):
        if self.sock is None:
            return
        try:
            self.sock.settimeout(2.0)
            self.sock.sendall(_REQ.pack(REQUEST_MAGIC, 0, CMD_DISC, self.handle + 1, 0, 0))
        except (OSError, socket.error):
            pass
        try:
            self.sock.close()
        finally:
            self.sock = None


def address_of(node):
    """(address, export) from an nbd NodeSpec: server.* or the legacy host/port/path options."""
    from ..spec import SpecError
    srv = node.sub("server") or {}
    path = node.str("path")
    host = node.str("host")
    port = node.str("port")
    if path is not None or host is not None or port is not None:
        if srv:
            raise SpecError("Cannot use 'server' and path/host/port at the same time")
        if path is not None and (host is not None or port is not None):
            raise SpecError("path and host may not be used at the same time")
        srv = {"type": "unix", "path": path} if path is not None else {"type": "inet", "host": host, "port": port}
    stype = srv.get("type", "inet" if "host" in srv else ("unix" if "path" in srv else None))
    if stype is None:
        raise SpecError("NBD server address missing")
    if stype == "unix":
        if "path" not in srv:
            raise SpecError("Parameter 'server.path' is missing")
        return ("unix", str(srv["path"])), node.str("export", "")
    if stype == "inet":
        if srv.get("host") is None:
            raise SpecError("Parameter 'server.host' is missing")
        p = srv.get("port") or "10809"
        return ("inet", str(srv["host"]), str(p)), node.str("export", "")
    raise SpecError("Parameter 'server.type' does not accept value '%s'" % stype)
