# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""List the kernel's L2TP sessions over generic netlink, with pyroute2.

/proc/net/pppol2tp shows L2TPv2 sessions only. The "l2tp" generic netlink
family (module l2tp_netlink) lists every tunnel and session of the caller's
network namespace, including L2TPv3 and sessions that no socket carries.
pyroute2 is optional: callers check HAS_PYROUTE2 and report
PYROUTE2_IMPORT_ERROR with missing_required_lib.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import traceback

try:
    from pyroute2.netlink.generic.l2tp import L2tp
except ImportError:
    HAS_PYROUTE2 = False
    PYROUTE2_IMPORT_ERROR = traceback.format_exc()
else:
    HAS_PYROUTE2 = True
    PYROUTE2_IMPORT_ERROR = None

# include/uapi/linux/l2tp.h: enum l2tp_pwtype.
PSEUDOWIRE_TYPES = {0x0000: "none", 0x0004: "eth_vlan", 0x0005: "eth", 0x0007: "ppp", 0x0008: "ppp_ac",
                    0x000B: "ip"}


class L2tpNetlinkError(Exception):
    """The l2tp generic netlink family cannot be queried."""


def describe_session(attributes):
    """Return the session dict for a mapping of L2TP_ATTR_* names to values."""
    pseudowire = attributes.get("L2TP_ATTR_PW_TYPE")
    return {
        "tunnel_id": attributes.get("L2TP_ATTR_CONN_ID"),
        "session_id": attributes.get("L2TP_ATTR_SESSION_ID"),
        "peer_tunnel_id": attributes.get("L2TP_ATTR_PEER_CONN_ID"),
        "peer_session_id": attributes.get("L2TP_ATTR_PEER_SESSION_ID"),
        "pseudowire": PSEUDOWIRE_TYPES.get(pseudowire, pseudowire),
        "interface": attributes.get("L2TP_ATTR_IFNAME"),
    }


def mark_carried_sessions(sessions, sockets):
    """Set ``pppox_socket_found`` on each session: whether a discovered PPPoL2TP socket carries it.

    With ``sockets`` None (no process scan) the flag is None, because it is unknown.
    """
    if sockets is None:
        for session in sessions:
            session["pppox_socket_found"] = None
        return sessions

    carried = set()
    for found in sockets:
        if found["kind"] == "l2tp" and not found.get("tunnel_socket"):
            carried.add((found["l2tp"]["tunnel_id"], found["l2tp"]["session_id"]))
    for session in sessions:
        session["pppox_socket_found"] = (session["tunnel_id"], session["session_id"]) in carried
    return sessions


def list_l2tp_sessions():
    """Return every L2TP session of the caller's network namespace, from generic netlink.

    NOTE: checked against the pyroute2 API of its current sources only. The
    python3-pyroute2 of Debian 11 (0.5.x) is older and not tested here.
    """
    if not HAS_PYROUTE2:
        raise L2tpNetlinkError("pyroute2 is not installed")

    try:
        l2tp = L2tp()
    except Exception as exc:  # pylint: disable=broad-except
        # pyroute2 raises its own NetlinkError when the family is missing, and others on setup problems.
        raise L2tpNetlinkError("the l2tp generic netlink family is unavailable (is l2tp_netlink loaded?): %s" % exc)

    try:
        messages = l2tp.get_session()
        sessions = []
        for message in messages:
            names = [name for name, _value in message["attrs"]]
            sessions.append(describe_session(dict((name, message.get_attr(name)) for name in names)))
        return sessions
    except Exception as exc:  # pylint: disable=broad-except
        raise L2tpNetlinkError("listing L2TP sessions over netlink failed: %s" % exc)
    finally:
        l2tp.close()
