"""Tests of the discovery parsers: /proc/net/pppol2tp, fd links and process names."""

import pytest

from ansible_collections.l2tp.lac.plugins.module_utils import discovery
from ansible_collections.l2tp.lac.plugins.module_utils.pppox_sockaddr import L2tpAddress, PppoeAddress

# Laid out as pppol2tp_seq_show prints it: a tunnel with a session connected
# to ppp0, a bound session connected to no unit, and a session without socket.
PROC_PPPOL2TP = """PPPoL2TP driver info, V2.0
TUNNEL name, user-data-ok session-count
 debug tx-pkts/bytes/errs rx-pkts/bytes/errs
  SESSION name, addr/port src-tid/sid dest-tid/sid state user-data-ok
   mtu/mru/rcvseq/sendseq/lns debug reorderto
   nr/ns tx-pkts/bytes/errs rx-pkts/bytes/errs

TUNNEL 'tunl 5', Y 3
 00000000 10/1000/0 12/1200/0
  SESSION 'sess 5/9' C0000201/1701 0005/0009 -> 0006/000A 3 Y
   0/0/-/-/LAC 00000000 0
   0/0 1/10/0 2/20/0
   interface ppp0
  SESSION 'sess 5/11' C0000201/1701 0005/000B -> 0006/00FF 3 Y
   0/0/-/-/LAC 00000000 0
   0/0 0/0/0 0/0/0
   interface (null)
  SESSION 'sess 5/12' C0000201/1701 0005/000C -> 0006/0100 0 N
   0/0/-/-/LAC 00000000 0
   0/0 0/0/0 0/0/0

TUNNEL 'tunl 700', Y 1
 00000000 0/0/0 0/0/0
  SESSION 'sess 700/65535' 7F000001/40000 02BC/FFFF -> 0001/0001 1 Y
   0/0/-/-/LAC 00000000 0
   0/0 0/0/0 0/0/0
   interface (null)
"""


def test_parse_pppol2tp_session_keys():
    sessions = discovery.parse_proc_pppol2tp(PROC_PPPOL2TP)

    assert sorted(sessions) == [(5, 9), (5, 11), (5, 12), (700, 65535)]


def test_parse_pppol2tp_connected_unit():
    session = discovery.parse_proc_pppol2tp(PROC_PPPOL2TP)[(5, 9)]

    assert session["interface"] == "ppp0"
    assert session["has_socket"] is True
    assert session["state"] == 3
    assert (session["peer_tunnel_id"], session["peer_session_id"]) == (6, 10)


def test_parse_pppol2tp_null_interface():
    session = discovery.parse_proc_pppol2tp(PROC_PPPOL2TP)[(5, 11)]

    assert session["interface"] is None
    assert session["has_socket"] is True
    assert session["peer_session_id"] == 255


def test_parse_pppol2tp_session_without_socket():
    session = discovery.parse_proc_pppol2tp(PROC_PPPOL2TP)[(5, 12)]

    assert session["has_socket"] is False
    assert session["state"] == 0


def test_parse_pppol2tp_empty_file():
    assert discovery.parse_proc_pppol2tp("") == {}


@pytest.mark.parametrize("target, expected", [
    ("socket:[123456]", ("socket", 123456)),
    ("/dev/ppp", ("ppp", None)),
    ("anon_inode:[eventpoll]", None),
    ("/dev/null", None),
    ("socket:[]", None),
    ("pipe:[77]", None),
])
def test_parse_fd_link(target, expected):
    assert discovery.parse_fd_link(target) == expected


@pytest.mark.parametrize("command, names, expected", [
    ("pppd", None, True),
    ("pppd", [], True),
    ("pppd", ["pppd", "accel-pppd"], True),
    ("xl2tpd", ["pppd"], False),
    ("l2tp-lac-daemo", ["l2tp-lac-daemo"], True),
    ("l2tp-lac-daemon", ["l2tp-lac-daemon-x"], True),
    ("l2tp-lac-daemon", ["l2tp-lac-daemon"], True),
    ("pppd", ["ppp"], False),
])
def test_process_selected_cuts_names(command, names, expected):
    assert discovery.process_selected(command[:15], names) is expected


def test_ppp_unit_unknown_for_pppoe():
    unit = discovery.describe_ppp_unit("pppoe", PppoeAddress(17, "02:00:00:00:00:01", "eth1"), {})

    assert unit["state"] == "unknown"
    assert "PPPoE" in unit["reason"]


def l2tp_address(version, tunnel_id, session_id):
    return L2tpAddress(version, 1, 3, tunnel_id, session_id, 6, 10, "192.0.2.1", 1701)


def test_ppp_unit_connected_from_proc():
    sessions = discovery.parse_proc_pppol2tp(PROC_PPPOL2TP)

    unit = discovery.describe_ppp_unit("l2tp", l2tp_address(2, 5, 9), sessions)

    assert unit == {"state": "connected", "interface": "ppp0", "reason": None}


def test_ppp_unit_not_connected_from_proc():
    sessions = discovery.parse_proc_pppol2tp(PROC_PPPOL2TP)

    unit = discovery.describe_ppp_unit("l2tp", l2tp_address(2, 5, 11), sessions)

    assert unit == {"state": "not connected", "interface": None, "reason": None}


def test_ppp_unit_unknown_for_l2tpv3():
    unit = discovery.describe_ppp_unit("l2tp", l2tp_address(3, 5, 9), {})

    assert unit["state"] == "unknown"
    assert "L2TPv2" in unit["reason"]


def test_ppp_unit_unknown_when_missing():
    unit = discovery.describe_ppp_unit("l2tp", l2tp_address(2, 8, 8), {})

    assert unit["state"] == "unknown"
    assert "missing" in unit["reason"]


def test_describe_address_pppoe():
    described = discovery.describe_address(PppoeAddress(17, "02:00:00:00:00:01", "eth1"))

    assert described == {"interface": "eth1", "session_id": 17, "peer_mac": "02:00:00:00:00:01"}


def test_describe_address_l2tp():
    described = discovery.describe_address(l2tp_address(2, 5, 9))

    assert described == {"version": 2, "tunnel_id": 5, "session_id": 9, "peer_tunnel_id": 6,
                         "peer_session_id": 10, "peer_address": "192.0.2.1", "peer_port": 1701}
