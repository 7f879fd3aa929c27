# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Find out whether the running kernel can bridge PPP channels.

The probe never touches live channels. A forked child creates its own empty
network namespace (unshare) and brings up its loopback. There it opens a UDP
socket connected to itself and makes an L2TPv2 tunnel over it by connecting
a PPPoL2TP tunnel socket (session 0). Two PPPoL2TP session sockets in that
tunnel are the two throwaway channels. The probe sends no frame. It then attaches /dev/ppp to
the first channel and asks for a bridge to the second: success means the
kernel bridges (the bridge is removed again), ENOTTY means it does not.
Everything dies with the child and its namespace.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os
import socket
import struct

from ansible_collections.l2tp.lac.plugins.module_utils.netns import ChildFailed, NamespaceError, run_in_new_netns
from ansible_collections.l2tp.lac.plugins.module_utils.ppp_ioctl import (
    AF_PPPOX,
    PX_PROTO_OL2TP,
    AttachedChannel,
    BridgingUnsupported,
    PppDeviceMissing,
    PppError,
    read_channel_index,
)
from ansible_collections.l2tp.lac.plugins.module_utils.pppox_sockaddr import pack_pppol2tp, pppox_connect

# include/uapi/linux/sockios.h and if.h
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ_FLAGS = struct.Struct("=16sH22x")

PROBE_TUNNEL_ID = 1
PROBE_SESSION_IDS = (1, 2)


class ProbeNotRun(Exception):
    """The probe could not build its throwaway channels. The message gives the reason."""


def _bring_loopback_up():
    control = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        request = _IFREQ_FLAGS.pack(b"lo", 0)
        _name, flags = _IFREQ_FLAGS.unpack(fcntl.ioctl(control, SIOCGIFFLAGS, request))
        fcntl.ioctl(control, SIOCSIFFLAGS, _IFREQ_FLAGS.pack(b"lo", flags | IFF_UP))
    finally:
        control.close()


def _pppol2tp_socket():
    try:
        return socket.socket(AF_PPPOX, socket.SOCK_DGRAM, PX_PROTO_OL2TP)
    except OSError as exc:
        if exc.errno in (errno.EAFNOSUPPORT, errno.EPROTONOSUPPORT):
            raise ProbeNotRun("PPPoL2TP sockets are unavailable (%s): the pppox or l2tp_ppp kernel module "
                              "is missing or cannot be loaded (try 'modprobe l2tp_ppp')" % exc.strerror)
        raise ProbeNotRun("creating a PPPoL2TP socket failed: %s" % exc.strerror)


def _connect_session(pppox, udp, session_id):
    address, port = udp.getsockname()
    try:
        pppox_connect(pppox.fileno(), pack_pppol2tp(udp.fileno(), PROBE_TUNNEL_ID, session_id,
                                                    PROBE_TUNNEL_ID, session_id, address, port))
    except OSError as exc:
        raise ProbeNotRun("connecting a PPPoL2TP socket for tunnel %d session %d failed: %s"
                          % (PROBE_TUNNEL_ID, session_id, exc.strerror))


def _probe_in_fresh_netns():
    """Build the throwaway channels, try a bridge and return the probe result dict."""
    opened = []
    try:
        _bring_loopback_up()
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        opened.append(udp)
        udp.bind(("127.0.0.1", 0))
        udp.connect(udp.getsockname())

        tunnel = _pppol2tp_socket()
        opened.append(tunnel)
        _connect_session(tunnel, udp, 0)

        channels = []
        for session_id in PROBE_SESSION_IDS:
            session = _pppol2tp_socket()
            opened.append(session)
            _connect_session(session, udp, session_id)
            # Our own socket, so binding it to its channel takes nothing from anyone.
            channels.append(read_channel_index(session.fileno()))

        with AttachedChannel(channels[0]) as channel:
            try:
                channel.bridge(channels[1])
            except BridgingUnsupported:
                return {"supported": False, "reason": "PPPIOCBRIDGECHAN returned ENOTTY: this ppp_generic has no "
                                                      "channel bridging (Linux 5.11 added it)"}
            channel.unbridge()
        return {"supported": True, "reason": "bridged and unbridged two throwaway channels (%d and %d)"
                                             % (channels[0], channels[1])}
    except PppDeviceMissing as exc:
        return {"supported": None, "reason": "the probe could not run: /dev/ppp is missing or has no driver "
                                             "(try 'modprobe ppp_generic'): %s" % exc}
    except (PppError, ProbeNotRun) as exc:
        return {"supported": None, "reason": "the probe could not run: %s" % exc}
    finally:
        for item in reversed(opened):
            item.close()


def _read_module_version(name):
    try:
        with open("/sys/module/%s/version" % name) as handle:
            return handle.read().strip()
    except (IOError, OSError):
        return None


def probe_bridging_support(timeout=60):
    """Return whether the kernel bridges PPP channels, probed in a throwaway namespace.

    The dict has ``supported`` (True, False, or None when the probe could
    not run), ``reason`` (a sentence), ``kernel`` (the running release) and
    ``ppp_generic_version`` (the module's MODULE_VERSION, or None when it has
    none, which is the case for in-tree builds). Needs root: unshare needs
    CAP_SYS_ADMIN and /dev/ppp needs CAP_NET_ADMIN.
    """
    try:
        result = run_in_new_netns(_probe_in_fresh_netns, timeout=timeout)
    except (NamespaceError, ChildFailed) as exc:
        result = {"supported": None, "reason": "the probe could not run: %s" % exc}

    result["kernel"] = os.uname()[2]
    result["ppp_generic_version"] = _read_module_version("ppp_generic")
    return result
