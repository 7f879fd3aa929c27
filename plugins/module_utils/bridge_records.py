# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Records of the bridges this collection made, in a JSON file under /run.

The kernel cannot be asked whether a channel is bridged, or to which peer,
so the only source for "channel 17 is bridged to channel 42" is what we
wrote down when we bridged them. /run is a tmpfs cleared at boot, like the
bridges themselves.

Entries are grouped by network namespace, keyed by the inode of the
namespace, because channel indices are per namespace. Each end stores the
channel index and the session descriptor it was resolved from (if any). It
also stores the socket inode and owner pid seen at the time, so that a later
run can tell a stale entry from a live one. Writers hold an exclusive fcntl lock on a
separate lock file and replace the file atomically (temporary file, fsync,
rename).
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import json
import os
import tempfile
import time

DEFAULT_RECORD_DIR = "/run/l2tp-lac"
RECORD_FILE_NAME = "bridges.json"
LOCK_FILE_NAME = "bridges.lock"
FORMAT_VERSION = 1


class RecordError(Exception):
    """The record file cannot be locked, read or written."""


def empty_records():
    return {"version": FORMAT_VERSION, "namespaces": {}}


def make_end_record(channel, descriptor=None, socket_inode=None, owner_pid=None):
    """Return the stored form of one bridge end."""
    return {"channel": channel, "descriptor": descriptor, "socket_inode": socket_inode, "owner_pid": owner_pid}


def make_entry(end_a, end_b, bridged_at=None):
    """Return a bridge entry for two end records, stamped with the UTC time."""
    if bridged_at is None:
        bridged_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return {"a": end_a, "b": end_b, "bridged_at": bridged_at}


def validate_records(data, path):
    """Raise RecordError unless ``data`` has the shape this module writes."""
    problem = None
    if not isinstance(data, dict) or data.get("version") != FORMAT_VERSION:
        problem = "unknown format version (expected %d)" % FORMAT_VERSION
    elif not isinstance(data.get("namespaces"), dict):
        problem = "'namespaces' is not a mapping"
    else:
        for key, namespace in data["namespaces"].items():
            entries = namespace.get("bridges") if isinstance(namespace, dict) else None
            if not isinstance(entries, list):
                problem = "namespace %s has no list of bridges" % key
                break
            for entry in entries:
                if not _entry_is_valid(entry):
                    problem = "namespace %s has a malformed bridge entry: %r" % (key, entry)
                    break
            if problem:
                break
    if problem:
        raise RecordError("bridge record file %s is invalid: %s. Move it aside to start afresh; "
                          "bridges it listed are not affected." % (path, problem))


def _entry_is_valid(entry):
    if not isinstance(entry, dict):
        return False
    for side in ("a", "b"):
        end = entry.get(side)
        if not isinstance(end, dict) or not isinstance(end.get("channel"), int) or isinstance(end.get("channel"), bool):
            return False
    return True


def namespace_entries(records, netns_key):
    """Return the list of entries stored for one namespace (empty if none)."""
    namespace = records["namespaces"].get(str(netns_key))
    return list(namespace["bridges"]) if namespace else []


def replace_namespace_entries(records, netns_key, label, entries):
    """Store ``entries`` as the namespace's bridges, dropping it when empty."""
    key = str(netns_key)
    if entries:
        records["namespaces"][key] = {"label": label, "bridges": list(entries)}
    else:
        records["namespaces"].pop(key, None)


def index_by_channel(entries):
    """Return {channel index: entry} for both ends of every entry."""
    by_channel = {}
    for entry in entries:
        by_channel[entry["a"]["channel"]] = entry
        by_channel[entry["b"]["channel"]] = entry
    return by_channel


def recorded_peer(by_channel, channel):
    """Return the channel recorded as bridged to ``channel``, or None."""
    entry = by_channel.get(channel)
    if entry is None:
        return None
    if entry["a"]["channel"] == channel:
        return entry["b"]["channel"]
    return entry["a"]["channel"]


def apply_changes(entries, removed_pairs, added_entries):
    """Return the entries without those whose channels are in ``removed_pairs``, plus ``added_entries``.

    ``removed_pairs`` contains (channel, channel) tuples in either order. An
    added entry replaces any entry that shares a channel with it, because a
    channel has at most one bridge.
    """
    removed = set(frozenset(pair) for pair in removed_pairs)
    added_channels = set()
    for entry in added_entries:
        added_channels.add(entry["a"]["channel"])
        added_channels.add(entry["b"]["channel"])

    kept = []
    for entry in entries:
        channels = frozenset((entry["a"]["channel"], entry["b"]["channel"]))
        if channels in removed or channels & added_channels:
            continue
        kept.append(entry)
    return kept + list(added_entries)


class RecordStore:
    """The record file and its lock, in ``directory`` (default /run/l2tp-lac).

    Use as a context manager: entering takes the lock (waiting up to
    ``lock_timeout`` seconds), leaving releases it. ``load`` and ``save`` are
    valid only while the lock is held.
    """

    def __init__(self, directory=DEFAULT_RECORD_DIR, lock_timeout=30.0):
        self.directory = directory
        self.path = os.path.join(directory, RECORD_FILE_NAME)
        self.lock_path = os.path.join(directory, LOCK_FILE_NAME)
        self.lock_timeout = lock_timeout
        self._lock_fd = None

    def __enter__(self):
        self.lock()
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.unlock()
        return False

    def lock(self):
        try:
            os.makedirs(self.directory, 0o755)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise RecordError("cannot create record directory %s: %s" % (self.directory, exc.strerror))

        try:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise RecordError("cannot open lock file %s: %s" % (self.lock_path, exc.strerror))

        deadline = time.monotonic() + self.lock_timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES) or time.monotonic() >= deadline:
                    os.close(fd)
                    raise RecordError("lock %s is still held by another run after %s s: %s"
                                      % (self.lock_path, self.lock_timeout, exc.strerror))
                time.sleep(0.05)
        self._lock_fd = fd

    def unlock(self):
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _require_lock(self):
        if self._lock_fd is None:
            raise RecordError("internal error: record file %s used without holding its lock" % self.path)

    def load(self):
        """Return the records, or empty records when the file does not exist."""
        self._require_lock()
        try:
            with open(self.path) as handle:
                text = handle.read()
        except (IOError, OSError) as exc:
            if exc.errno == errno.ENOENT:
                return empty_records()
            raise RecordError("cannot read bridge record file %s: %s" % (self.path, exc.strerror))

        try:
            data = json.loads(text)
        except ValueError as exc:
            raise RecordError("bridge record file %s is not valid JSON (%s). Move it aside to start afresh; "
                              "bridges it listed are not affected." % (self.path, exc))
        validate_records(data, self.path)
        return data

    def save(self, records):
        """Replace the record file atomically with ``records``."""
        self._require_lock()
        validate_records(records, self.path)
        # No indent: with indent, json falls back to its pure-Python encoder,
        # which made saving the records of 1,000 pairs most of a run's time.
        text = json.dumps(records, sort_keys=True, separators=(",", ":"))

        fd, temporary = tempfile.mkstemp(prefix=".bridges.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temporary, 0o644)
            os.rename(temporary, self.path)
        except (IOError, OSError) as exc:
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise RecordError("cannot write bridge record file %s: %s" % (self.path, exc.strerror))

        directory_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(directory_fd)
        finally:
            os.close(directory_fd)
