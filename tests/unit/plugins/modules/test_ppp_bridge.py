"""Tests of l2tp.lac.ppp_bridge: argument rules, records handling and messages.

The batch runs with scripted kernel responses in place of the namespace
child, so these tests cover what the module does with an outcome.
"""

import errno
import json

import pytest

from ansible.module_utils import basic
from ansible_collections.l2tp.lac.plugins.module_utils import bridge_plan
from ansible_collections.l2tp.lac.plugins.module_utils.ppp_ioctl import error_from_errno
from ansible_collections.l2tp.lac.plugins.modules import ppp_bridge
from module_runner import run_main


class ScriptedChannels:
    def __init__(self, channels, bridge_errors=None):
        self.channels = set(channels)
        self.bridge_errors = dict(bridge_errors or {})
        self.changes = []

    def check(self, index):
        if index not in self.channels:
            raise error_from_errno(errno.ENXIO, "attach", channel=index)

    def bridge(self, index, peer):
        self.changes.append(("bridge", index, peer))
        name = self.bridge_errors.get((index, peer))
        if name:
            raise error_from_errno(getattr(errno, name), "bridge", channel=index, peer=peer)

    def unbridge(self, index):
        self.changes.append(("unbridge", index))


@pytest.fixture
def kernel(monkeypatch):
    """Replace the namespace child with a batch run against ScriptedChannels."""
    scripted = ScriptedChannels([])

    def run_in_place(target, pairs, state, force, check_mode, recorded_entries, processes=None):
        outcome = bridge_plan.run_batch(pairs, state, force, check_mode, scripted, target.label,
                                        recorded_entries, sockets=[], processes=processes)
        result = outcome.to_dict()
        result["inaccessible"] = []
        return result

    monkeypatch.setattr(bridge_plan, "run_batch_in_netns", run_in_place)
    return scripted


def run_module(args, check_mode=False, diff=False):
    return run_main(ppp_bridge.main, args, check_mode=check_mode, diff=diff)


def channel_pairs(*pairs):
    return [{"a": {"channel": a}, "b": {"channel": b}} for a, b in pairs]


def stored_pairs(record_dir):
    with open(str(record_dir / "bridges.json")) as handle:
        records = json.load(handle)
    pairs = []
    for namespace in records["namespaces"].values():
        for entry in namespace["bridges"]:
            pairs.append((entry["a"]["channel"], entry["b"]["channel"]))
    return pairs


# ---------------------------------------------------------------------------
# Argument rules


def test_end_with_two_kinds_rejected(tmp_path):
    exited = run_module({"record_dir": str(tmp_path),
                         "pairs": [{"a": {"channel": 1, "pppoe": {"interface": "eth1", "session_id": 2}},
                                    "b": {"channel": 3}}]})

    assert exited.failed
    assert "mutually exclusive: channel|pppoe|l2tp" in exited.result["msg"]


def test_end_without_kind_rejected(tmp_path):
    exited = run_module({"record_dir": str(tmp_path), "pairs": [{"a": {}, "b": {"channel": 3}}]})

    assert exited.failed
    assert "one of the following is required: channel, pppoe, l2tp" in exited.result["msg"]


def test_missing_end_rejected(tmp_path):
    exited = run_module({"record_dir": str(tmp_path), "pairs": [{"a": {"channel": 3}}]})

    assert exited.failed
    assert "missing required arguments: b" in exited.result["msg"]


def test_unknown_state_rejected(tmp_path):
    exited = run_module({"record_dir": str(tmp_path), "state": "present", "pairs": channel_pairs((1, 2))})

    assert exited.failed
    assert "value of state must be one of: bridged, unbridged" in exited.result["msg"]


def test_out_of_range_ids_list_every_problem(tmp_path, kernel):
    exited = run_module({"record_dir": str(tmp_path), "pairs": [
        {"a": {"pppoe": {"interface": "eth1", "session_id": 65535}}, "b": {"l2tp": {"tunnel_id": 0, "session_id": 1}}},
    ]})

    assert exited.failed
    assert exited.result["msg"].startswith("invalid pairs, nothing was changed: ")
    assert len(exited.result["problems"]) == 2
    assert kernel.changes == []


def test_invalid_netns_name_rejected(tmp_path, kernel):
    exited = run_module({"record_dir": str(tmp_path), "netns": "../x", "pairs": channel_pairs((1, 2))})

    assert exited.failed
    assert "invalid network namespace name '../x'" in exited.result["msg"]


def test_missing_netns_rejected(tmp_path, kernel):
    exited = run_module({"record_dir": str(tmp_path), "netns": "l2tp-lac-test-absent", "pairs": channel_pairs((1, 2))})

    assert exited.failed
    assert "l2tp-lac-test-absent" in exited.result["msg"]


# ---------------------------------------------------------------------------
# Runs


def test_bridge_writes_records(tmp_path, kernel):
    kernel.channels.update([1, 2])

    exited = run_module({"record_dir": str(tmp_path), "pairs": channel_pairs((1, 2))})

    assert not exited.failed
    assert exited.result["changed"] is True
    assert exited.result["pairs"][0]["action"] == "bridged"
    assert exited.result["netns"] == "the host network namespace"
    assert stored_pairs(tmp_path) == [(1, 2)]


def test_second_run_is_unchanged(tmp_path, kernel):
    kernel.channels.update([1, 2])
    run_module({"record_dir": str(tmp_path), "pairs": channel_pairs((1, 2))})
    kernel.bridge_errors[(1, 2)] = "EALREADY"

    exited = run_module({"record_dir": str(tmp_path), "pairs": channel_pairs((1, 2))})

    assert not exited.failed
    assert exited.result["changed"] is False
    assert exited.result["pairs"][0]["action"] == "already bridged"


def test_check_mode_writes_nothing(tmp_path, kernel):
    kernel.channels.update([1, 2])
    record_dir = tmp_path / "records"

    exited = run_module({"record_dir": str(record_dir), "pairs": channel_pairs((1, 2))}, check_mode=True)

    assert exited.result["changed"] is True
    assert kernel.changes == []
    assert not record_dir.exists()


def test_mid_batch_failure_keeps_done_records(tmp_path, kernel):
    kernel.channels.update([1, 2, 3, 4, 5, 6])
    kernel.bridge_errors[(3, 4)] = "EALREADY"

    exited = run_module({"record_dir": str(tmp_path), "pairs": channel_pairs((1, 2), (3, 4), (5, 6))})

    assert exited.failed
    assert exited.result["changed"] is True
    assert [pair["action"] for pair in exited.result["pairs"]] == ["bridged", "failed", "not done"]
    assert exited.result["msg"].startswith("pair 2 (channel 3, channel 3 <-> channel 4, channel 4) failed: "
                                           "channel 3 or channel 4 is already bridged or attached to a PPP unit")
    assert stored_pairs(tmp_path) == [(1, 2)]


def test_unbridge_without_record_warns(tmp_path, kernel):
    kernel.channels.update([1, 2])
    warnings = []

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(basic.AnsibleModule, "warn", lambda module, text: warnings.append(text))
        exited = run_module({"record_dir": str(tmp_path), "state": "unbridged", "pairs": channel_pairs((1, 2))})

    assert exited.result["changed"] is False
    assert exited.result["pairs"][0]["action"] == "no record"
    assert warnings == ["1 pair(s) were left alone because no record lists their bridge (pairs 1). "
                        "Set force: true to unbridge them anyway."]


def test_diff_lists_each_pair(tmp_path, kernel):
    kernel.channels.update([1, 2])

    exited = run_module({"record_dir": str(tmp_path), "pairs": [
        {"name": "sub-1", "a": {"channel": 1}, "b": {"channel": 2}}]}, diff=True)

    assert exited.result["diff"] == {
        "before": "pair 1 (sub-1): channel 1 <-> channel 2: not bridged (no record)\n",
        "after": "pair 1 (sub-1): channel 1 <-> channel 2: bridged to channel 2 (record)\n",
    }


def test_device_missing_fails_cleanly(tmp_path, monkeypatch):
    def no_device(*args, **kwargs):
        raise error_from_errno(errno.ENOENT, "open")

    monkeypatch.setattr(bridge_plan, "run_batch_in_netns", no_device)

    exited = run_module({"record_dir": str(tmp_path), "pairs": channel_pairs((1, 2))})

    assert exited.failed
    assert exited.result["msg"].startswith("nothing was changed: /dev/ppp is missing or has no driver")
    assert "modprobe ppp_generic" in exited.result["msg"]


def test_corrupt_record_file_fails(tmp_path, kernel):
    (tmp_path / "bridges.json").write_text("[")

    exited = run_module({"record_dir": str(tmp_path), "pairs": channel_pairs((1, 2))})

    assert exited.failed
    assert "is not valid JSON" in exited.result["msg"]
    assert kernel.changes == []
