# -*- coding: utf-8 -*-
# Copyright: qimg.disk contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ssh protocol, as far as its options go: they are type-checked as QEMU checks them and the
server is contacted, so a wrong address fails with QEMU's message; the SSH protocol itself is not
implemented, so a reachable server gives a clear "not supported" error."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket

from ..errors import ImageNotFound, UnsupportedFeature
from ..spec import SpecError, _ssh_port

CONNECT_TIMEOUT = 10.0


def ssh_address(node):
    srv = node.sub("server") or {}
    host = node.options.get("host", srv.get("host"))
    port = node.options.get("port", srv.get("port", 22))
    if host is None:
        raise SpecError("Parameter 'server.host' is missing")
    if node.options.get("path") is None:
        raise SpecError("Parameter 'path' is missing")
    return node.str("host") if "host" in node.options else str(host), _ssh_port(port)


def open_ssh(node):
    """Connect (so an unreachable server gets QEMU's message), then refuse."""
    host, port = ssh_address(node)
    try:
        infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise ImageNotFound("address resolution failed for %s:%d: %s" % (host, port, e.strerror))
    last = None
    for family, stype, proto, _canon, sockaddr in infos:
        s = socket.socket(family, stype, proto)
        s.settimeout(CONNECT_TIMEOUT)
        try:
            s.connect(sockaddr)
        except (OSError, socket.error) as e:
            last = e
            continue
        finally:
            s.close()
        raise UnsupportedFeature("the 'ssh' protocol is not supported (server %s:%d is reachable, but this "
                                 "engine does not speak SSH)" % (host, port))
    raise ImageNotFound("Failed to connect to '%s:%d': %s" % (host, port, getattr(last, "strerror", last)))
