"""Tests of pair validation, descriptor resolution and the bridge batch.

Kernel responses come from ScriptedChannels: which channel indices exist
and which errno a bridge or unbridge request gets. These tests check how the
batch plans, reports and records given those answers. Whether the kernel
really responds that way is checked in the VM lab.
"""

import errno
import os

import pytest
import yaml

from ansible_collections.l2tp.lac.plugins.module_utils import bridge_plan, bridge_records
from ansible_collections.l2tp.lac.plugins.module_utils.bridge_plan import BatchInvalid
from ansible_collections.l2tp.lac.plugins.module_utils.ppp_ioctl import error_from_errno

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
HOST = "the host network namespace"

with open(os.path.join(FIXTURES, "pair_ends.yml")) as handle:
    END_CASES = yaml.safe_load(handle)


class ScriptedChannels:
    """Scripted kernel responses to channel operations, and a log of the calls made."""

    def __init__(self, channels, bridge_errors=None, unbridge_errors=None):
        self.channels = set(channels)
        self.bridge_errors = dict(bridge_errors or {})
        self.unbridge_errors = dict(unbridge_errors or {})
        self.calls = []

    def check(self, index):
        self.calls.append(("check", index))
        if index not in self.channels:
            raise error_from_errno(errno.ENXIO, "attach", channel=index)

    def bridge(self, index, peer):
        self.calls.append(("bridge", index, peer))
        answers = self.bridge_errors.get((index, peer))
        if answers:
            name = answers.pop(0)
            if name:
                raise error_from_errno(getattr(errno, name), "bridge", channel=index, peer=peer)

    def unbridge(self, index):
        self.calls.append(("unbridge", index))
        name = self.unbridge_errors.get(index)
        if name:
            raise error_from_errno(getattr(errno, name), "unbridge", channel=index)

    def changes(self):
        return [call for call in self.calls if call[0] != "check"]


def pppoe_socket(interface, session_id, channel, inode, peer_mac="02:00:00:00:00:01", in_netns=True, pid=100):
    return {
        "kind": "pppoe", "pppoe": {"interface": interface, "session_id": session_id, "peer_mac": peer_mac},
        "l2tp": None, "tunnel_socket": False, "bound": channel is not None, "channel": channel,
        "channel_unknown_reason": None if channel is not None else "the socket is not bound to its channel yet",
        "in_netns": in_netns, "socket_inode": inode, "owner_pid": pid, "owner_command": "pppoe-server",
        "owner_fd": 5, "holders": [], "owner_ppp_device_fds": 1,
        "ppp_unit": {"state": "unknown", "interface": None, "reason": "x"},
    }


def l2tp_socket(tunnel_id, session_id, channel, inode, peer_tunnel_id=6, peer_session_id=10, tunnel_socket=False):
    return {
        "kind": "l2tp", "pppoe": None,
        "l2tp": {"version": 2, "tunnel_id": tunnel_id, "session_id": session_id, "peer_tunnel_id": peer_tunnel_id,
                 "peer_session_id": peer_session_id, "peer_address": "192.0.2.1", "peer_port": 1701},
        "tunnel_socket": tunnel_socket, "bound": True, "channel": channel, "channel_unknown_reason": None,
        "in_netns": True, "socket_inode": inode, "owner_pid": 200, "owner_command": "l2tpd", "owner_fd": 9,
        "holders": [], "owner_ppp_device_fds": 0,
        "ppp_unit": {"state": "not connected", "interface": None, "reason": None},
    }


def channel_pairs(*pairs):
    return bridge_plan.validate_pairs([{"a": {"channel": a}, "b": {"channel": b}} for a, b in pairs])


def recorded(channel_a, channel_b, inode_a=None, inode_b=None):
    return bridge_records.make_entry(bridge_records.make_end_record(channel_a, socket_inode=inode_a),
                                     bridge_records.make_end_record(channel_b, socket_inode=inode_b),
                                     bridged_at="2024-01-01T00:00:00Z")


def run(pairs, ops, state="bridged", force=False, check_mode=False, records=(), sockets=None, processes=None):
    return bridge_plan.run_batch(pairs, state, force, check_mode, ops, HOST, list(records),
                                 sockets=sockets, processes=processes)


# ---------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize("case", END_CASES["valid"], ids=lambda case: case["id"])
def test_validate_end_accepts(case):
    end, problems = bridge_plan.validate_end(case["spec"], "pair 1 end a")

    assert problems == []
    for field, value in case["end"].items():
        assert getattr(end, field) == value, field


@pytest.mark.parametrize("case", END_CASES["invalid"], ids=lambda case: case["id"])
def test_validate_end_rejects(case):
    end, problems = bridge_plan.validate_end(case["spec"], "pair 1 end a")

    assert end is None
    assert len(problems) == len(case["problems"])
    for problem, expected in zip(problems, case["problems"]):
        assert problem.startswith("pair 1 end a ")
        assert expected in problem


def test_validate_pairs_reports_every_problem():
    raw = [
        {"a": {"channel": 1}, "b": {"channel": 2}},
        {"a": {"channel": 0}, "b": {"pppoe": {"interface": "eth1", "session_id": 0}}},
        "not a mapping",
        {"a": {"channel": 3}},
    ]

    with pytest.raises(BatchInvalid) as raised:
        bridge_plan.validate_pairs(raw)

    problems = raised.value.problems
    assert len(problems) == 4
    assert problems[0].startswith("pair 2 end a channel")
    assert problems[1].startswith("pair 2 end b pppoe.session_id")
    assert problems[2] == "pair 3 must be a mapping with ends a and b"
    assert problems[3].startswith("pair 4 end b must be a mapping")


def test_validate_pairs_rejects_empty():
    with pytest.raises(BatchInvalid, match="pairs is empty"):
        bridge_plan.validate_pairs([])


def test_validate_pairs_keeps_names_and_order():
    pairs = bridge_plan.validate_pairs([{"name": "sub-1", "a": {"channel": 4}, "b": {"channel": 5}},
                                        {"a": {"channel": 6}, "b": {"channel": 7}}])

    assert [(pair.number, pair.name) for pair in pairs] == [(1, "sub-1"), (2, None)]
    assert pairs[0].label() == "pair 1 (sub-1)"
    assert pairs[1].label() == "pair 2"


# ---------------------------------------------------------------------------
# Resolution


def end_of(spec):
    end, problems = bridge_plan.validate_end(spec, "end")
    assert problems == []
    return end


def test_resolve_pppoe_to_channel():
    index = bridge_plan.build_socket_index([pppoe_socket("eth1", 17, 31, 9001)])

    resolved = bridge_plan.resolve_end(end_of({"pppoe": {"interface": "eth1", "session_id": 17}}), index, HOST)

    assert resolved.problem is None
    assert resolved.channel == 31
    assert resolved.socket["socket_inode"] == 9001


def test_resolve_missing_session_names_scope():
    index = bridge_plan.build_socket_index([])

    resolved = bridge_plan.resolve_end(end_of({"pppoe": {"interface": "eth1", "session_id": 17}}), index, HOST,
                                       processes=["pppoe-server"])

    assert resolved.missing is True
    assert resolved.problem == ("PPPoE session 17 on eth1 was not found among the processes pppoe-server: "
                                "no process holds a socket for it in the host network namespace")


def test_resolve_same_sid_two_macs_is_ambiguous():
    index = bridge_plan.build_socket_index([
        pppoe_socket("eth1", 17, 31, 9001, peer_mac="02:00:00:00:00:01"),
        pppoe_socket("eth1", 17, 32, 9002, peer_mac="02:00:00:00:00:02", pid=101),
    ])

    resolved = bridge_plan.resolve_end(end_of({"pppoe": {"interface": "eth1", "session_id": 17}}), index, HOST)

    assert resolved.channel is None
    assert "matches 2 sockets" in resolved.problem
    assert "Give peer_mac to choose one" in resolved.problem


def test_resolve_peer_mac_chooses_socket():
    index = bridge_plan.build_socket_index([
        pppoe_socket("eth1", 17, 31, 9001, peer_mac="02:00:00:00:00:01"),
        pppoe_socket("eth1", 17, 32, 9002, peer_mac="02:00:00:00:00:02"),
    ])
    spec = {"pppoe": {"interface": "eth1", "session_id": 17, "peer_mac": "02:00:00:00:00:02"}}

    resolved = bridge_plan.resolve_end(end_of(spec), index, HOST)

    assert resolved.channel == 32


def test_resolve_l2tp_peer_mismatch():
    index = bridge_plan.build_socket_index([l2tp_socket(5, 9, 40, 7001, peer_tunnel_id=6, peer_session_id=10)])
    spec = {"l2tp": {"tunnel_id": 5, "session_id": 9, "peer_session_id": 11}}

    resolved = bridge_plan.resolve_end(end_of(spec), index, HOST)

    assert resolved.channel is None
    assert resolved.problem == ("L2TP session 9 in tunnel 5 exists but with peer tunnel 6, peer session 10, "
                                "which does not match the given peer fields")


def test_resolve_socket_in_other_namespace():
    index = bridge_plan.build_socket_index([pppoe_socket("eth1", 17, 31, 9001, in_netns=False)])

    resolved = bridge_plan.resolve_end(end_of({"pppoe": {"interface": "eth1", "session_id": 17}}), index, HOST)

    assert resolved.channel is None
    assert "belongs to another network namespace than the host network namespace" in resolved.problem
    assert "pppoe-server, pid 100" in resolved.problem


def test_resolve_unbound_socket_has_no_channel():
    index = bridge_plan.build_socket_index([pppoe_socket("eth1", 17, None, 9001)])

    resolved = bridge_plan.resolve_end(end_of({"pppoe": {"interface": "eth1", "session_id": 17}}), index, HOST)

    assert resolved.channel is None
    assert "has no known channel index" in resolved.problem
    assert "not bound to its channel yet" in resolved.problem


def test_tunnel_sockets_are_not_indexed():
    index = bridge_plan.build_socket_index([l2tp_socket(5, 0, None, 7000, peer_session_id=0, tunnel_socket=True)])

    assert index == {}


def test_resolution_at_scale_keeps_pairing():
    count = 5000
    sockets = []
    raw = []
    for number in range(1, count + 1):
        sockets.append(pppoe_socket("eth1", number, 2 * number, 100000 + number))
        sockets.append(l2tp_socket(1 + number // 1000, number, 2 * number + 1, 200000 + number))
        raw.append({"a": {"pppoe": {"interface": "eth1", "session_id": number}},
                    "b": {"l2tp": {"tunnel_id": 1 + number // 1000, "session_id": number}}})
    pairs = bridge_plan.validate_pairs(raw)
    ops = ScriptedChannels(range(1, 2 * count + 2))

    outcome = run(pairs, ops, check_mode=True, sockets=sockets)

    assert outcome.message is None
    assert [(result["a"]["channel"], result["b"]["channel"]) for result in outcome.results] == \
        [(2 * number, 2 * number + 1) for number in range(1, count + 1)]


# ---------------------------------------------------------------------------
# The batch: bridging


def test_bridge_new_pairs():
    ops = ScriptedChannels([1, 2, 3, 4])

    outcome = run(channel_pairs((1, 2), (3, 4)), ops)

    assert outcome.message is None
    assert [result["action"] for result in outcome.results] == ["bridged", "bridged"]
    assert all(result["changed"] for result in outcome.results)
    assert ops.changes() == [("bridge", 1, 2), ("bridge", 3, 4)]
    assert [(entry["a"]["channel"], entry["b"]["channel"]) for entry in outcome.entries_after] == [(1, 2), (3, 4)]


def test_bridge_records_descriptors_and_inodes():
    sockets = [pppoe_socket("eth1", 17, 31, 9001), l2tp_socket(5, 9, 40, 7001)]
    pairs = bridge_plan.validate_pairs([{"a": {"pppoe": {"interface": "eth1", "session_id": 17}},
                                         "b": {"l2tp": {"tunnel_id": 5, "session_id": 9}}}])

    outcome = run(pairs, ScriptedChannels([31, 40]), sockets=sockets)

    entry = outcome.added[0]
    assert entry["a"]["channel"] == 31
    assert entry["a"]["socket_inode"] == 9001
    assert entry["a"]["descriptor"]["pppoe"]["session_id"] == 17
    assert entry["b"]["descriptor"]["l2tp"]["tunnel_id"] == 5
    assert entry["b"]["owner_pid"] == 200


def test_invalid_pair_changes_nothing():
    ops = ScriptedChannels([1, 2, 3])

    outcome = run(channel_pairs((1, 2), (3, 99)), ops)

    assert ops.changes() == []
    assert outcome.message.startswith("nothing was changed because 1 problem(s) were found: ")
    assert "pair 2: channel 99 was not found in the host network namespace; channel indices are per network " \
        "namespace, so check netns" in outcome.message
    assert [result["action"] for result in outcome.results] == ["not done", "not done"]
    assert outcome.failed_pair is None


def test_unresolved_descriptor_changes_nothing():
    ops = ScriptedChannels([1, 2])
    pairs = bridge_plan.validate_pairs([
        {"a": {"channel": 1}, "b": {"channel": 2}},
        {"a": {"pppoe": {"interface": "eth1", "session_id": 5}}, "b": {"channel": 2}},
    ])

    outcome = run(pairs, ops, sockets=[])

    assert ops.changes() == []
    assert "pair 2: PPPoE session 5 on eth1 was not found" in outcome.message


def test_bridge_to_itself_rejected():
    outcome = run(channel_pairs((5, 5)), ScriptedChannels([5]))

    assert "pair 1 bridges channel 5 to itself (channel 5 and channel 5)" in outcome.message


def test_channel_in_two_pairs_rejected():
    ops = ScriptedChannels([1, 2, 3])

    outcome = run(channel_pairs((1, 2), (3, 2)), ops)

    assert "channel 2 appears in pair 1 and in pair 2" in outcome.message
    assert ops.changes() == []


def test_mid_batch_rejection_reports_done_and_not_done():
    ops = ScriptedChannels([1, 2, 3, 4, 5, 6], bridge_errors={(3, 4): ["EALREADY"]})

    outcome = run(channel_pairs((1, 2), (3, 4), (5, 6)), ops)

    assert [result["action"] for result in outcome.results] == ["bridged", "failed", "not done"]
    assert outcome.failed_pair == 2
    assert ops.changes() == [("bridge", 1, 2), ("bridge", 3, 4)]
    assert outcome.results[1]["error"].startswith(
        "channel 3 or channel 4 is already bridged or attached to a PPP unit; the kernel does not say which.")
    assert outcome.message.startswith("pair 2 (channel 3, channel 3 <-> channel 4, channel 4) failed: ")
    assert "Pair 1 was done; the 1 pair(s) after it were not attempted" in outcome.message
    assert [(entry["a"]["channel"], entry["b"]["channel"]) for entry in outcome.entries_after] == [(1, 2)]


def test_first_pair_failure_message():
    ops = ScriptedChannels([1, 2], bridge_errors={(1, 2): ["ENOTTY"]})

    outcome = run(channel_pairs((1, 2)), ops)

    assert "No pair before it was changed" in outcome.message
    assert "not attempted" not in outcome.message
    assert "l2tp.lac.ppp_kmod" in outcome.results[0]["error"]
    assert "Linux 5.11" in outcome.results[0]["error"]


def test_recorded_bridge_is_already_bridged():
    ops = ScriptedChannels([1, 2], bridge_errors={(1, 2): ["EALREADY"]})

    outcome = run(channel_pairs((1, 2)), ops, records=[recorded(2, 1)])

    assert outcome.results[0]["action"] == "already bridged"
    assert outcome.results[0]["changed"] is False
    assert outcome.results[0]["before"] == "bridged to channel 2 (record)"
    assert outcome.added == []


def test_recorded_but_gone_bridge_is_rebridged():
    ops = ScriptedChannels([1, 2])

    outcome = run(channel_pairs((1, 2)), ops, records=[recorded(1, 2)])

    assert outcome.results[0]["action"] == "bridged"
    assert outcome.results[0]["changed"] is True
    assert len(outcome.entries_after) == 1


def test_busy_with_other_recorded_peer_explains():
    ops = ScriptedChannels([1, 2, 3], bridge_errors={(1, 2): ["EALREADY"]})

    outcome = run(channel_pairs((1, 2)), ops, records=[recorded(1, 3)])

    assert outcome.results[0]["error"] == (
        "channel 1 is bridged to channel 3 according to this collection's records; "
        "set force: true to bridge it to channel 2 instead")


def test_force_replaces_existing_bridge():
    ops = ScriptedChannels([1, 2, 3], bridge_errors={(1, 2): ["EALREADY", None]}, unbridge_errors={2: "EINVAL"})

    outcome = run(channel_pairs((1, 2)), ops, force=True, records=[recorded(1, 3)])

    assert ops.changes() == [("bridge", 1, 2), ("unbridge", 1), ("unbridge", 2), ("bridge", 1, 2)]
    assert outcome.results[0]["action"] == "bridged"
    assert outcome.results[0]["unbridged_first"] == [1]
    assert outcome.removed == [(1, 3)]
    assert [(entry["a"]["channel"], entry["b"]["channel"]) for entry in outcome.entries_after] == [(1, 2)]


def test_force_cannot_release_ppp_unit():
    ops = ScriptedChannels([1, 2], bridge_errors={(1, 2): ["EALREADY", "EALREADY"]},
                           unbridge_errors={1: "EINVAL", 2: "EINVAL"})

    outcome = run(channel_pairs((1, 2)), ops, force=True)

    assert outcome.results[0]["action"] == "failed"
    assert "still busy after their bridges were removed, so one of them is connected to a PPP unit" \
        in outcome.results[0]["error"]


def test_check_mode_issues_no_state_change():
    ops = ScriptedChannels([1, 2, 3, 4])

    outcome = run(channel_pairs((1, 2), (3, 4)), ops, check_mode=True, records=[recorded(3, 4)])

    assert ops.changes() == []
    assert [result["action"] for result in outcome.results] == ["bridged", "already bridged"]
    assert [result["changed"] for result in outcome.results] == [True, False]
    assert outcome.added == []


def test_missing_peer_named_in_error():
    ops = ScriptedChannels([1, 2], bridge_errors={(1, 2): ["ENXIO"]})

    outcome = run(channel_pairs((1, 2)), ops)

    assert outcome.results[0]["error"].startswith("channel 2 was not found in the host network namespace")


@pytest.mark.parametrize("name, expected", [
    ("EPERM", "run the task as root or with CAP_NET_ADMIN"),
    ("EACCES", "run the task as root or with CAP_NET_ADMIN"),
    ("ENOTTY", "the running kernel cannot bridge PPP channels"),
])
def test_bridge_error_sentences(name, expected):
    ops = ScriptedChannels([1, 2], bridge_errors={(1, 2): [name]})

    outcome = run(channel_pairs((1, 2)), ops)

    assert expected in outcome.results[0]["error"]


def test_device_missing_sentence():
    error = error_from_errno(errno.ENOENT, "open")

    sentence = bridge_plan.explain_error(error, HOST)

    assert sentence.startswith("/dev/ppp is missing or has no driver, so ppp_generic is not loaded: "
                               "run 'modprobe ppp_generic'")


# ---------------------------------------------------------------------------
# The batch: unbridging


def test_unbridge_recorded_pair():
    ops = ScriptedChannels([1, 2])

    outcome = run(channel_pairs((2, 1)), ops, state="unbridged", records=[recorded(1, 2)])

    assert ops.changes() == [("unbridge", 2)]
    assert outcome.results[0]["action"] == "unbridged"
    assert outcome.results[0]["changed"] is True
    assert outcome.entries_after == []


def test_unbridge_recorded_but_gone():
    ops = ScriptedChannels([1, 2], unbridge_errors={1: "EINVAL"})

    outcome = run(channel_pairs((1, 2)), ops, state="unbridged", records=[recorded(1, 2)])

    assert ops.changes() == [("unbridge", 1)]
    assert outcome.results[0]["action"] == "not bridged"
    assert outcome.results[0]["changed"] is False
    assert outcome.entries_after == []


def test_unbridge_without_record_skips():
    ops = ScriptedChannels([1, 2])

    outcome = run(channel_pairs((1, 2)), ops, state="unbridged")

    assert ops.changes() == []
    assert outcome.results[0]["action"] == "no record"


def test_unbridge_force_without_record():
    ops = ScriptedChannels([1, 2], unbridge_errors={2: "EINVAL"})

    outcome = run(channel_pairs((1, 2)), ops, state="unbridged", force=True)

    assert ops.changes() == [("unbridge", 1), ("unbridge", 2)]
    assert outcome.results[0]["action"] == "unbridged"


def test_unbridge_missing_session_is_not_bridged():
    ops = ScriptedChannels([2])
    pairs = bridge_plan.validate_pairs([{"a": {"pppoe": {"interface": "eth1", "session_id": 5}},
                                         "b": {"channel": 2}}])

    outcome = run(pairs, ops, state="unbridged", sockets=[])

    assert outcome.message is None
    assert ops.changes() == []
    assert outcome.results[0]["action"] == "not bridged"


def test_unbridge_check_mode_predicts():
    ops = ScriptedChannels([1, 2])

    outcome = run(channel_pairs((1, 2)), ops, state="unbridged", check_mode=True, records=[recorded(1, 2)])

    assert ops.changes() == []
    assert outcome.results[0]["action"] == "unbridged"
    assert outcome.results[0]["changed"] is True


# ---------------------------------------------------------------------------
# Stale records


def test_record_with_gone_channel_is_stale():
    live_entry = recorded(3, 4)
    stale_entry = recorded(1, 2)

    outcome = run(channel_pairs((3, 4)), ScriptedChannels([2, 3, 4], bridge_errors={(3, 4): ["EALREADY"]}),
                  records=[stale_entry, live_entry])

    assert outcome.stale == [stale_entry]
    assert outcome.entries_after == [live_entry]


def test_record_with_other_socket_inode_is_stale():
    sockets = [pppoe_socket("eth1", 17, 1, 5555)]
    entry = recorded(1, 2, inode_a=4444)

    live, stale = bridge_plan.partition_stale([entry], lambda index: True,
                                              bridge_plan.build_channel_index(sockets))

    assert live == []
    assert stale == [entry]


def test_record_with_same_socket_inode_is_live():
    sockets = [pppoe_socket("eth1", 17, 1, 5555)]
    entry = recorded(1, 2, inode_a=5555)

    live, stale = bridge_plan.partition_stale([entry], lambda index: True,
                                              bridge_plan.build_channel_index(sockets))

    assert live == [entry]
    assert stale == []


def test_record_ignores_same_index_in_other_namespace():
    # A pppd in another namespace has channel 1 there too; only this
    # namespace's socket decides whether the record is stale.
    sockets = [pppoe_socket("eth1", 17, 1, 5555), pppoe_socket("eth0", 1, 1, 7777, in_netns=False)]
    entry = recorded(1, 2, inode_a=5555)

    live, stale = bridge_plan.partition_stale([entry], lambda index: True,
                                              bridge_plan.build_channel_index(sockets))

    assert live == [entry]
    assert stale == []
