"""Tests of the bridge record file: shape checks, changes, locking and atomic writes."""

import json
import os

import pytest

from ansible_collections.l2tp.lac.plugins.module_utils import bridge_records
from ansible_collections.l2tp.lac.plugins.module_utils.bridge_records import RecordError, RecordStore


def entry(channel_a, channel_b, inode_a=None, inode_b=None):
    return bridge_records.make_entry(
        bridge_records.make_end_record(channel_a, socket_inode=inode_a),
        bridge_records.make_end_record(channel_b, socket_inode=inode_b),
        bridged_at="2024-01-01T00:00:00Z")


def test_index_by_channel_covers_both_ends():
    first = entry(1, 2)
    second = entry(7, 3)

    by_channel = bridge_records.index_by_channel([first, second])

    assert by_channel == {1: first, 2: first, 7: second, 3: second}


def test_recorded_peer_either_direction():
    by_channel = bridge_records.index_by_channel([entry(1, 2)])

    assert bridge_records.recorded_peer(by_channel, 1) == 2
    assert bridge_records.recorded_peer(by_channel, 2) == 1
    assert bridge_records.recorded_peer(by_channel, 3) is None


def test_apply_changes_removes_either_order():
    kept = entry(5, 6)

    result = bridge_records.apply_changes([entry(1, 2), kept], [(2, 1)], [])

    assert result == [kept]


def test_apply_changes_added_replaces_shared_channel():
    new = entry(2, 9)

    result = bridge_records.apply_changes([entry(1, 2), entry(5, 6)], [], [new])

    assert result == [entry(5, 6), new]


def test_namespace_entries_round_trip():
    records = bridge_records.empty_records()

    bridge_records.replace_namespace_entries(records, 4026531992, "the host network namespace", [entry(1, 2)])

    assert bridge_records.namespace_entries(records, 4026531992) == [entry(1, 2)]
    assert bridge_records.namespace_entries(records, 1) == []
    assert records["namespaces"]["4026531992"]["label"] == "the host network namespace"


def test_replace_with_nothing_drops_namespace():
    records = bridge_records.empty_records()
    bridge_records.replace_namespace_entries(records, 7, "x", [entry(1, 2)])

    bridge_records.replace_namespace_entries(records, 7, "x", [])

    assert records["namespaces"] == {}


@pytest.mark.parametrize("data, problem", [
    ([], "unknown format version"),
    ({"version": 2, "namespaces": {}}, "unknown format version"),
    ({"version": 1, "namespaces": []}, "'namespaces' is not a mapping"),
    ({"version": 1, "namespaces": {"1": {"label": "x"}}}, "namespace 1 has no list of bridges"),
    ({"version": 1, "namespaces": {"1": {"bridges": [{"a": {"channel": 1}}]}}}, "malformed bridge entry"),
    ({"version": 1, "namespaces": {"1": {"bridges": [{"a": {"channel": "1"}, "b": {"channel": 2}}]}}},
     "malformed bridge entry"),
    ({"version": 1, "namespaces": {"1": {"bridges": [{"a": {"channel": True}, "b": {"channel": 2}}]}}},
     "malformed bridge entry"),
])
def test_validate_records_rejects(data, problem):
    with pytest.raises(RecordError, match=problem):
        bridge_records.validate_records(data, "/run/l2tp-lac/bridges.json")


def test_store_load_missing_file_is_empty(tmp_path):
    with RecordStore(str(tmp_path / "records")) as store:
        assert store.load() == bridge_records.empty_records()


def test_store_save_then_load(tmp_path):
    records = bridge_records.empty_records()
    bridge_records.replace_namespace_entries(records, 11, "network namespace 'a'", [entry(1, 2, 100, 200)])

    with RecordStore(str(tmp_path)) as store:
        store.save(records)
    with RecordStore(str(tmp_path)) as store:
        loaded = store.load()

    assert loaded == records


def test_store_save_leaves_no_temporary(tmp_path):
    with RecordStore(str(tmp_path)) as store:
        store.save(bridge_records.empty_records())

    assert sorted(os.listdir(str(tmp_path))) == ["bridges.json", "bridges.lock"]


def test_store_save_replaces_whole_file(tmp_path):
    path = tmp_path / "bridges.json"
    path.write_text(json.dumps(bridge_records.empty_records()) + "\n" + " " * 4096)

    with RecordStore(str(tmp_path)) as store:
        store.save(bridge_records.empty_records())

    assert json.loads(path.read_text()) == bridge_records.empty_records()


def test_store_rejects_invalid_json(tmp_path):
    (tmp_path / "bridges.json").write_text("{not json")

    with RecordStore(str(tmp_path)) as store:
        with pytest.raises(RecordError, match="not valid JSON.*Move it aside"):
            store.load()


def test_store_rejects_invalid_records_on_save(tmp_path):
    with RecordStore(str(tmp_path)) as store:
        with pytest.raises(RecordError, match="unknown format version"):
            store.save({"namespaces": {}})

    assert not (tmp_path / "bridges.json").exists()


def test_store_lock_excludes_second_run(tmp_path):
    with RecordStore(str(tmp_path)):
        second = RecordStore(str(tmp_path), lock_timeout=0.2)
        with pytest.raises(RecordError, match="still held by another run after 0.2 s"):
            second.lock()


def test_store_lock_released_on_exit(tmp_path):
    with RecordStore(str(tmp_path)):
        pass

    with RecordStore(str(tmp_path), lock_timeout=0.2) as store:
        assert store.load() == bridge_records.empty_records()


def test_store_requires_lock(tmp_path):
    store = RecordStore(str(tmp_path))

    with pytest.raises(RecordError, match="without holding its lock"):
        store.load()
