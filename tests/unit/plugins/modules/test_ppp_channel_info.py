"""Tests of l2tp.lac.ppp_channel_info helpers and of its option handling."""

import pytest

from ansible_collections.l2tp.lac.plugins.module_utils import bridge_records, l2tp_netlink
from ansible_collections.l2tp.lac.plugins.modules import ppp_channel_info
from module_runner import run_main


def run_module(args):
    return run_main(ppp_channel_info.main, args)


def socket_with_channel(channel, kind="pppoe", tunnel_id=None, session_id=None, tunnel_socket=False, in_netns=True):
    return {"kind": kind, "channel": channel, "socket_inode": 1000 + (channel or 0), "tunnel_socket": tunnel_socket,
            "in_netns": in_netns,
            "l2tp": {"tunnel_id": tunnel_id, "session_id": session_id} if kind == "l2tp" else None}


def entry(channel_a, channel_b):
    return bridge_records.make_entry(bridge_records.make_end_record(channel_a),
                                     bridge_records.make_end_record(channel_b), bridged_at="2024-01-01T00:00:00Z")


def test_recorded_peer_marked_as_record():
    sockets = [socket_with_channel(17), socket_with_channel(42), socket_with_channel(5), socket_with_channel(None)]

    ppp_channel_info.add_recorded_peers(sockets, [entry(17, 42)])

    assert [(found["bridged_peer"], found["bridged_peer_source"]) for found in sockets] == [
        (42, "record"), (17, "record"), (None, None), (None, None)]


def test_recorded_peer_skips_other_namespace():
    sockets = [socket_with_channel(17), socket_with_channel(17, in_netns=False)]

    ppp_channel_info.add_recorded_peers(sockets, [entry(17, 42)])

    assert sockets[0]["bridged_peer"] == 42
    assert sockets[1]["bridged_peer"] is None


def test_describe_session_names_pseudowire():
    session = l2tp_netlink.describe_session({
        "L2TP_ATTR_CONN_ID": 5, "L2TP_ATTR_SESSION_ID": 9, "L2TP_ATTR_PEER_CONN_ID": 6,
        "L2TP_ATTR_PEER_SESSION_ID": 10, "L2TP_ATTR_PW_TYPE": 7})

    assert session == {"tunnel_id": 5, "session_id": 9, "peer_tunnel_id": 6, "peer_session_id": 10,
                       "pseudowire": "ppp", "interface": None}


def test_describe_session_keeps_unknown_pseudowire():
    assert l2tp_netlink.describe_session({"L2TP_ATTR_PW_TYPE": 99})["pseudowire"] == 99


def test_mark_carried_sessions():
    sessions = [{"tunnel_id": 5, "session_id": 9}, {"tunnel_id": 5, "session_id": 11}]
    sockets = [socket_with_channel(3, kind="l2tp", tunnel_id=5, session_id=9),
               socket_with_channel(None, kind="l2tp", tunnel_id=5, session_id=0, tunnel_socket=True)]

    l2tp_netlink.mark_carried_sessions(sessions, sockets)

    assert [session["pppox_socket_found"] for session in sessions] == [True, False]


def test_mark_carried_sessions_unknown_without_scan():
    sessions = [{"tunnel_id": 5, "session_id": 9}]

    l2tp_netlink.mark_carried_sessions(sessions, None)

    assert sessions[0]["pppox_socket_found"] is None


def test_missing_pyroute2_fails_with_hint(tmp_path, monkeypatch):
    monkeypatch.setattr(l2tp_netlink, "HAS_PYROUTE2", False)
    monkeypatch.setattr(l2tp_netlink, "PYROUTE2_IMPORT_ERROR", "ImportError: No module named 'pyroute2'")

    exited = run_module({"l2tp_netlink": True, "probe": False, "channels": False, "record_dir": str(tmp_path)})

    assert exited.failed
    assert "Failed to import the required Python library (pyroute2)" in exited.result["msg"]
    assert "for l2tp_netlink=true" in exited.result["msg"]


def test_nothing_requested_returns_empty(tmp_path):
    exited = run_module({"probe": False, "channels": False, "record_dir": str(tmp_path)})

    assert not exited.failed
    assert exited.result["changed"] is False
    assert exited.result["bridging"] is None
    assert exited.result["channels"] == []
    assert exited.result["netns"] == "the host network namespace"
    assert "l2tp_sessions" not in exited.result


def test_unknown_netns_fails(tmp_path):
    exited = run_module({"netns": "l2tp-lac-test-absent", "probe": False, "channels": False,
                         "record_dir": str(tmp_path)})

    assert exited.failed
    assert exited.result["msg"] == ("network namespace 'l2tp-lac-test-absent' does not exist "
                                    "(/run/netns/l2tp-lac-test-absent is missing)")
