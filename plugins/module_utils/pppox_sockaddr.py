# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""PPPoX socket addresses: the packed struct layouts, and connect/getsockname.

Layouts follow ``include/uapi/linux/if_pppox.h`` (struct sockaddr_pppox) and
``include/uapi/linux/if_pppol2tp.h`` (struct pppol2tp_addr and its IPv6 and
L2TPv3 variants). Every struct is packed. sa_family, sa_protocol, pid, fd and
the L2TP ids are in host byte order. The PPPoE session id and the ports and
addresses inside sockaddr_in/sockaddr_in6 are in network byte order.

Python's socket module cannot pass or read these addresses, because it
truncates address families it does not know, so connect and getsockname go
through libc with ctypes.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import ctypes
import ctypes.util
import os
import socket
import struct

from ansible_collections.l2tp.lac.plugins.module_utils.ppp_ioctl import (
    AF_PPPOX,
    PX_PROTO_OE,
    PX_PROTO_OL2TP,
)

ETH_ALEN = 6
IFNAMSIZ = 16

# Header shared by every sockaddr_pppox*: sa_family (u16), sa_protocol (u32).
_HEADER = struct.Struct("=HI")
# struct pppoe_addr: sid (__be16), remote MAC, device name.
_PPPOE_ADDR = struct.Struct(">H%ds%ds" % (ETH_ALEN, IFNAMSIZ))
# pid and fd at the start of every pppol2tp*_addr.
_L2TP_OWNER = struct.Struct("=ii")
_L2TP_IDS_V2 = struct.Struct("=HHHH")
_L2TP_IDS_V3 = struct.Struct("=IIII")
# struct sockaddr_in: family (host order), port, address, 8 bytes of padding.
_SOCKADDR_IN = struct.Struct("=H2s4s8x")
# struct sockaddr_in6: family, port, flowinfo, address, scope id.
_SOCKADDR_IN6 = struct.Struct("=H2s4s16sI")

SOCKADDR_PPPOX_SIZE = _HEADER.size + _PPPOE_ADDR.size
SOCKADDR_PPPOL2TP_SIZE = _HEADER.size + _L2TP_OWNER.size + _SOCKADDR_IN.size + _L2TP_IDS_V2.size
SOCKADDR_PPPOL2TPIN6_SIZE = _HEADER.size + _L2TP_OWNER.size + _L2TP_IDS_V2.size + _SOCKADDR_IN6.size
SOCKADDR_PPPOL2TPV3_SIZE = _HEADER.size + _L2TP_OWNER.size + _SOCKADDR_IN.size + _L2TP_IDS_V3.size
SOCKADDR_PPPOL2TPV3IN6_SIZE = _HEADER.size + _L2TP_OWNER.size + _L2TP_IDS_V3.size + _SOCKADDR_IN6.size

# sizeof(struct sockaddr_storage); large enough for every variant above.
_SOCKADDR_STORAGE_SIZE = 128

PppoeAddress = collections.namedtuple(
    "PppoeAddress", ["session_id", "peer_mac", "interface"])
PppoeAddress.__doc__ = "A PPPoE session: session id, peer MAC (aa:bb:...) and interface name."

L2tpAddress = collections.namedtuple(
    "L2tpAddress",
    ["version", "owner_pid", "tunnel_fd", "tunnel_id", "session_id",
     "peer_tunnel_id", "peer_session_id", "peer_address", "peer_port"])
L2tpAddress.__doc__ = (
    "A PPPoL2TP session as getsockname returns it. owner_pid and tunnel_fd are "
    "the pid that created the session and its tunnel socket descriptor.")


class SockaddrError(ValueError):
    """A PPPoX address that cannot be built or parsed."""


def format_mac(raw):
    """Return six raw bytes as lower-case colon-separated hex."""
    return ":".join("%02x" % octet for octet in bytearray(raw))


def parse_mac(text):
    """Return the six bytes of a MAC given as aa:bb:cc:dd:ee:ff or aa-bb-...-ff."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != ETH_ALEN or any(len(part) != 2 for part in parts):
        raise SockaddrError("invalid MAC address %r: expected six hex pairs such as 02:00:00:00:00:01" % text)
    try:
        return bytes(bytearray(int(part, 16) for part in parts))
    except ValueError:
        raise SockaddrError("invalid MAC address %r: expected six hex pairs such as 02:00:00:00:00:01" % text)


def pack_pppoe(session_id, peer_mac, interface):
    """Build a 30-byte sockaddr_pppox for connecting a PPPoE socket."""
    name = interface.encode("ascii")
    if not name or len(name) >= IFNAMSIZ:
        raise SockaddrError("invalid interface name %r: 1 to %d characters" % (interface, IFNAMSIZ - 1))
    if not 0 <= session_id <= 0xFFFF:
        raise SockaddrError("invalid PPPoE session id %r: must fit in 16 bits" % session_id)

    return _HEADER.pack(AF_PPPOX, PX_PROTO_OE) + _PPPOE_ADDR.pack(session_id, parse_mac(peer_mac), name)


def pack_pppol2tp(tunnel_fd, tunnel_id, session_id, peer_tunnel_id, peer_session_id,
                  peer_address="0.0.0.0", peer_port=0, owner_pid=0):
    """Build a 38-byte sockaddr_pppol2tp (L2TPv2 over IPv4) for connect.

    Session ids 0/0 make the socket the tunnel's management socket, which
    creates the tunnel over the UDP socket ``tunnel_fd`` if it does not exist.
    """
    for name, value in (("tunnel_id", tunnel_id), ("session_id", session_id),
                        ("peer_tunnel_id", peer_tunnel_id), ("peer_session_id", peer_session_id)):
        if not 0 <= value <= 0xFFFF:
            raise SockaddrError("invalid L2TPv2 %s %r: must fit in 16 bits" % (name, value))

    address = _SOCKADDR_IN.pack(socket.AF_INET, struct.pack(">H", peer_port), socket.inet_aton(peer_address))
    return (_HEADER.pack(AF_PPPOX, PX_PROTO_OL2TP)
            + _L2TP_OWNER.pack(owner_pid, tunnel_fd)
            + address
            + _L2TP_IDS_V2.pack(tunnel_id, session_id, peer_tunnel_id, peer_session_id))


def _parse_sockaddr_in(raw):
    _family, port, address = _SOCKADDR_IN.unpack(raw)
    return socket.inet_ntop(socket.AF_INET, address), struct.unpack(">H", port)[0]


def _parse_sockaddr_in6(raw):
    _family, port, _flowinfo, address, _scope = _SOCKADDR_IN6.unpack(raw)
    return socket.inet_ntop(socket.AF_INET6, address), struct.unpack(">H", port)[0]


def _parse_l2tp(raw, version, ids_layout, address_first, parse_address):
    offset = _HEADER.size
    owner_pid, tunnel_fd = _L2TP_OWNER.unpack_from(raw, offset)
    offset += _L2TP_OWNER.size

    address_size = _SOCKADDR_IN.size if parse_address is _parse_sockaddr_in else _SOCKADDR_IN6.size
    if address_first:
        address_raw = raw[offset:offset + address_size]
        ids = ids_layout.unpack_from(raw, offset + address_size)
    else:
        ids = ids_layout.unpack_from(raw, offset)
        address_raw = raw[offset + ids_layout.size:offset + ids_layout.size + address_size]

    peer_address, peer_port = parse_address(address_raw)
    tunnel_id, session_id, peer_tunnel_id, peer_session_id = ids
    return L2tpAddress(version, owner_pid, tunnel_fd, tunnel_id, session_id,
                       peer_tunnel_id, peer_session_id, peer_address, peer_port)


def parse_pppox(raw):
    """Parse a sockaddr_pppox* into a PppoeAddress or an L2tpAddress.

    The L2TP variant is chosen by length, as the kernel does: 38 bytes is
    L2TPv2 over IPv4, 50 L2TPv2 over IPv6, 46 L2TPv3 over IPv4 and 58 L2TPv3
    over IPv6. Raises SockaddrError for anything else.
    """
    raw = bytes(raw)
    if len(raw) < _HEADER.size:
        raise SockaddrError("PPPoX address of %d bytes is shorter than its %d-byte header" % (len(raw), _HEADER.size))

    family, protocol = _HEADER.unpack_from(raw)
    if family != AF_PPPOX:
        raise SockaddrError("address family %d is not AF_PPPOX (%d)" % (family, AF_PPPOX))

    if protocol == PX_PROTO_OE:
        if len(raw) != SOCKADDR_PPPOX_SIZE:
            raise SockaddrError("PPPoE address of %d bytes, expected %d" % (len(raw), SOCKADDR_PPPOX_SIZE))
        session_id, mac, name = _PPPOE_ADDR.unpack_from(raw, _HEADER.size)
        interface = name.split(b"\0", 1)[0].decode("ascii", "replace")
        return PppoeAddress(session_id, format_mac(mac), interface)

    if protocol == PX_PROTO_OL2TP:
        layouts = {
            SOCKADDR_PPPOL2TP_SIZE: (2, _L2TP_IDS_V2, True, _parse_sockaddr_in),
            SOCKADDR_PPPOL2TPIN6_SIZE: (2, _L2TP_IDS_V2, False, _parse_sockaddr_in6),
            SOCKADDR_PPPOL2TPV3_SIZE: (3, _L2TP_IDS_V3, True, _parse_sockaddr_in),
            SOCKADDR_PPPOL2TPV3IN6_SIZE: (3, _L2TP_IDS_V3, False, _parse_sockaddr_in6),
        }
        if len(raw) not in layouts:
            raise SockaddrError("PPPoL2TP address of %d bytes matches no known layout" % len(raw))
        return _parse_l2tp(raw, *layouts[len(raw)])

    raise SockaddrError("unknown PPPoX protocol %d" % protocol)


_libc = None


def libc():
    """Return the C library, loaded once with errno capture."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    return _libc


def pppox_connect(fd, address):
    """connect() a PPPoX socket to a packed address; raise OSError on failure."""
    buffer = ctypes.create_string_buffer(bytes(address), len(address))
    if libc().connect(fd, buffer, len(address)) != 0:
        error_number = ctypes.get_errno()
        raise OSError(error_number, os.strerror(error_number))


def pppox_getsockname(fd):
    """Return the raw address bytes that getsockname() returns for ``fd``."""
    buffer = ctypes.create_string_buffer(_SOCKADDR_STORAGE_SIZE)
    length = ctypes.c_uint32(_SOCKADDR_STORAGE_SIZE)
    if libc().getsockname(fd, buffer, ctypes.byref(length)) != 0:
        error_number = ctypes.get_errno()
        raise OSError(error_number, os.strerror(error_number))
    return buffer.raw[:min(length.value, _SOCKADDR_STORAGE_SIZE)]
