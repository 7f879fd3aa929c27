# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Validate, resolve and carry out a batch of channel bridge requests.

A batch is all or nothing up to the first kernel call that changes state:
every pair is validated and resolved to channel indices first, and any
problem stops the batch before anything changes. Once changes start, a
kernel rejection stops the batch at that pair, and the result lists which
pairs were done and which were not.

The kernel work goes through an ``ops`` object (ppp_ioctl.KernelChannelOps
on a real host) and the process scan through a ``discover`` callable, so that
the planning can be exercised with given kernel answers.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.l2tp.lac.plugins.module_utils import bridge_records
from ansible_collections.l2tp.lac.plugins.module_utils.discovery import (
    KIND_L2TP,
    KIND_PPPOE,
    discover_pppox_sockets,
)
from ansible_collections.l2tp.lac.plugins.module_utils.netns import run_in_netns
from ansible_collections.l2tp.lac.plugins.module_utils.ppp_ioctl import (
    BridgingUnsupported,
    ChannelBusy,
    ChannelNotFound,
    NotBridged,
    PermissionDenied,
    KernelChannelOps,
    PppDeviceMissing,
    PppError,
)

STATE_BRIDGED = "bridged"
STATE_UNBRIDGED = "unbridged"

ACTION_BRIDGED = "bridged"
ACTION_ALREADY_BRIDGED = "already bridged"
ACTION_UNBRIDGED = "unbridged"
ACTION_NOT_BRIDGED = "not bridged"
ACTION_NO_RECORD = "no record"
ACTION_FAILED = "failed"
ACTION_NOT_DONE = "not done"

KIND_CHANNEL = "channel"

CHANNEL_MAX = 0x7FFFFFFF
L2TP_ID_MAX = 0xFFFF
# RFC 2516: session id 0 is for discovery packets and 0xFFFF is reserved.
PPPOE_SESSION_MAX = 0xFFFE
IFNAME_MAX_LENGTH = 15
_MAC = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")

KMOD_ROLE = "l2tp.lac.ppp_kmod"


class BatchInvalid(Exception):
    """One or more pairs are invalid; ``problems`` lists one sentence per problem."""

    def __init__(self, problems):
        super(BatchInvalid, self).__init__("; ".join(problems))
        self.problems = list(problems)


# ---------------------------------------------------------------------------
# Ends and pairs


class End:
    """One end of a pair: a channel index, a PPPoE session or an L2TP session."""

    def __init__(self, kind, channel=None, interface=None, session_id=None, peer_mac=None,
                 tunnel_id=None, peer_tunnel_id=None, peer_session_id=None):
        self.kind = kind
        self.channel = channel
        self.interface = interface
        self.session_id = session_id
        self.peer_mac = peer_mac
        self.tunnel_id = tunnel_id
        self.peer_tunnel_id = peer_tunnel_id
        self.peer_session_id = peer_session_id

    def describe(self):
        if self.kind == KIND_CHANNEL:
            return "channel %d" % self.channel
        if self.kind == KIND_PPPOE:
            return "PPPoE session %d on %s" % (self.session_id, self.interface)
        return "L2TP session %d in tunnel %d" % (self.session_id, self.tunnel_id)

    def descriptor(self):
        """Return the session descriptor as stored in records and results, or None for a channel."""
        if self.kind == KIND_PPPOE:
            return {"pppoe": {"interface": self.interface, "session_id": self.session_id,
                              "peer_mac": self.peer_mac}}
        if self.kind == KIND_L2TP:
            return {"l2tp": {"tunnel_id": self.tunnel_id, "session_id": self.session_id,
                             "peer_tunnel_id": self.peer_tunnel_id, "peer_session_id": self.peer_session_id}}
        return None

    def lookup_key(self):
        if self.kind == KIND_PPPOE:
            return (KIND_PPPOE, self.interface, self.session_id)
        if self.kind == KIND_L2TP:
            return (KIND_L2TP, self.tunnel_id, self.session_id)
        return None


class Pair:
    """A requested bridge: its 1-based position, optional name and two ends."""

    def __init__(self, number, name, end_a, end_b):
        self.number = number
        self.name = name
        self.a = end_a
        self.b = end_b

    def label(self):
        text = "pair %d" % self.number
        if self.name:
            text += " (%s)" % self.name
        return text


def _check_int(value, low, high, what, problems):
    if isinstance(value, bool) or not isinstance(value, int):
        problems.append("%s must be an integer, got %r" % (what, value))
        return False
    if not low <= value <= high:
        problems.append("%s must be between %d and %d, got %d" % (what, low, high, value))
        return False
    return True


def _check_interface(name, what, problems):
    # dev_valid_name() in net/core/dev.c rejects these.
    if not isinstance(name, str) or not name or len(name) > IFNAME_MAX_LENGTH or name in (".", "..") \
            or any(character in name for character in "/:") or any(character.isspace() for character in name):
        problems.append("%s must be a network interface name of 1 to %d characters without '/', ':' "
                        "or spaces, got %r" % (what, IFNAME_MAX_LENGTH, name))
        return False
    return True


def validate_end(spec, where):
    """Return (End or None, problems) for one end's option dict.

    ``where`` prefixes every problem, for example "pair 3 end a".
    """
    problems = []
    if not isinstance(spec, dict):
        return None, ["%s must be a mapping with one of channel, pppoe or l2tp" % where]

    given = [key for key in (KIND_CHANNEL, KIND_PPPOE, KIND_L2TP) if spec.get(key) is not None]
    if len(given) != 1:
        return None, ["%s needs exactly one of channel, pppoe or l2tp, got %s"
                      % (where, ", ".join(given) if given else "none")]
    kind = given[0]

    if kind == KIND_CHANNEL:
        if _check_int(spec[KIND_CHANNEL], 1, CHANNEL_MAX, "%s channel" % where, problems):
            return End(KIND_CHANNEL, channel=spec[KIND_CHANNEL]), problems
        return None, problems

    options = spec[kind]
    if not isinstance(options, dict):
        return None, ["%s %s must be a mapping" % (where, kind)]

    if kind == KIND_PPPOE:
        interface_ok = _check_interface(options.get("interface"), "%s pppoe.interface" % where, problems)
        session_ok = _check_int(options.get("session_id"), 1, PPPOE_SESSION_MAX,
                                "%s pppoe.session_id" % where, problems)
        peer_mac = options.get("peer_mac")
        if peer_mac is not None:
            if not isinstance(peer_mac, str) or not _MAC.match(peer_mac):
                problems.append("%s pppoe.peer_mac must look like 02:00:5e:00:53:01, got %r" % (where, peer_mac))
                peer_mac = None
            else:
                peer_mac = peer_mac.replace("-", ":").lower()
        if problems:
            return None, problems
        if interface_ok and session_ok:
            return End(KIND_PPPOE, interface=options["interface"], session_id=options["session_id"],
                       peer_mac=peer_mac), problems
        return None, problems

    for field in ("tunnel_id", "session_id"):
        _check_int(options.get(field), 1, L2TP_ID_MAX, "%s l2tp.%s" % (where, field), problems)
    for field in ("peer_tunnel_id", "peer_session_id"):
        if options.get(field) is not None:
            _check_int(options.get(field), 1, L2TP_ID_MAX, "%s l2tp.%s" % (where, field), problems)
    if problems:
        return None, problems
    return End(KIND_L2TP, tunnel_id=options["tunnel_id"], session_id=options["session_id"],
               peer_tunnel_id=options.get("peer_tunnel_id"),
               peer_session_id=options.get("peer_session_id")), problems


def validate_pairs(raw_pairs):
    """Return the list of Pair for the ``pairs`` option, or raise BatchInvalid with every problem."""
    if not raw_pairs:
        raise BatchInvalid(["pairs is empty: give at least one pair"])

    pairs = []
    problems = []
    for number, raw in enumerate(raw_pairs, start=1):
        if not isinstance(raw, dict):
            problems.append("pair %d must be a mapping with ends a and b" % number)
            continue
        end_a, problems_a = validate_end(raw.get("a"), "pair %d end a" % number)
        end_b, problems_b = validate_end(raw.get("b"), "pair %d end b" % number)
        problems.extend(problems_a)
        problems.extend(problems_b)
        if end_a is not None and end_b is not None:
            pairs.append(Pair(number, raw.get("name"), end_a, end_b))

    if problems:
        raise BatchInvalid(problems)
    return pairs


# ---------------------------------------------------------------------------
# Resolution of session descriptors to channels


def build_socket_index(sockets):
    """Return {lookup key: [socket, ...]} for discovered sockets, in one pass."""
    index = {}
    for found in sockets:
        if found["kind"] == KIND_PPPOE:
            key = (KIND_PPPOE, found["pppoe"]["interface"], found["pppoe"]["session_id"])
        elif found.get("tunnel_socket"):
            continue
        else:
            key = (KIND_L2TP, found["l2tp"]["tunnel_id"], found["l2tp"]["session_id"])
        index.setdefault(key, []).append(found)
    return index


def build_channel_index(sockets):
    """Return {channel index: socket} for discovered sockets of this namespace whose index is known.

    Channel indices are per network namespace, so a socket of another
    namespace (a pppd in a container, say) may carry the same number.
    """
    return dict((found["channel"], found) for found in sockets
                if found.get("channel") is not None and found.get("in_netns"))


class ResolvedEnd:
    """An End with its channel index, the socket it came from, or why it has none.

    ``missing`` is True when no socket matched the descriptor at all.
    """

    def __init__(self, end, channel=None, socket=None, problem=None, missing=False):
        self.end = end
        self.channel = channel
        self.socket = socket
        self.problem = problem
        self.missing = missing

    def to_result(self):
        result = {"channel": self.channel, "description": self.end.describe(),
                  "pppoe": None, "l2tp": None, "owner_pid": None, "owner_command": None}
        descriptor = self.end.descriptor()
        if descriptor:
            result.update(descriptor)
        if self.socket is not None:
            result["owner_pid"] = self.socket["owner_pid"]
            result["owner_command"] = self.socket["owner_command"]
            result[self.socket["kind"]] = self.socket[self.socket["kind"]]
        return result

    def to_record(self):
        return bridge_records.make_end_record(
            self.channel, self.end.descriptor(),
            self.socket["socket_inode"] if self.socket else None,
            self.socket["owner_pid"] if self.socket else None)


def _owner_text(found):
    return "%s, pid %d" % (found["owner_command"] or "?", found["owner_pid"])


def _filter_by_peer(end, candidates):
    """Return the candidates whose peer fields match the end's optional ones."""
    matching = []
    for found in candidates:
        if end.kind == KIND_PPPOE:
            if end.peer_mac and found["pppoe"]["peer_mac"] != end.peer_mac:
                continue
        else:
            address = found["l2tp"]
            if end.peer_tunnel_id and address["peer_tunnel_id"] != end.peer_tunnel_id:
                continue
            if end.peer_session_id and address["peer_session_id"] != end.peer_session_id:
                continue
        matching.append(found)
    return matching


def resolve_end(end, socket_index, netns_label, processes=None):
    """Return the ResolvedEnd for one end, given the discovery index."""
    if end.kind == KIND_CHANNEL:
        return ResolvedEnd(end, channel=end.channel)

    candidates = socket_index.get(end.lookup_key(), [])
    if not candidates:
        scope = ""
        if processes:
            scope = " among the processes %s" % ", ".join(processes)
        return ResolvedEnd(end, missing=True, problem=(
            "%s was not found%s: no process holds a socket for it in %s"
            % (end.describe(), scope, netns_label)))

    matching = _filter_by_peer(end, candidates)
    if not matching:
        seen = candidates[0]
        if end.kind == KIND_PPPOE:
            actual = "peer MAC %s" % seen["pppoe"]["peer_mac"]
        else:
            actual = "peer tunnel %d, peer session %d" % (seen["l2tp"]["peer_tunnel_id"],
                                                          seen["l2tp"]["peer_session_id"])
        return ResolvedEnd(end, socket=seen, problem=(
            "%s exists but with %s, which does not match the given peer fields" % (end.describe(), actual)))

    if len(matching) > 1:
        owners = "; ".join(_owner_text(found) for found in matching)
        hint = " Give peer_mac to choose one." if end.kind == KIND_PPPOE else ""
        return ResolvedEnd(end, problem="%s matches %d sockets (%s).%s"
                           % (end.describe(), len(matching), owners, hint))

    found = matching[0]
    if not found["in_netns"]:
        return ResolvedEnd(end, socket=found, problem=(
            "%s (held by %s) belongs to another network namespace than %s; set netns to its namespace"
            % (end.describe(), _owner_text(found), netns_label)))
    if found["channel"] is None:
        return ResolvedEnd(end, socket=found, problem=(
            "%s (held by %s) has no known channel index: %s. Bridge it by channel index once its owner "
            "uses it as a PPP channel" % (end.describe(), _owner_text(found), found["channel_unknown_reason"])))
    return ResolvedEnd(end, channel=found["channel"], socket=found)


def needs_discovery(pairs):
    """Return whether any end is a session descriptor, which needs the process scan."""
    return any(end.kind != KIND_CHANNEL for pair in pairs for end in (pair.a, pair.b))


# ---------------------------------------------------------------------------
# Operator sentences for kernel errors


def explain_error(exc, netns_label):
    """Return one sentence for a PppError, naming the channel and what to do."""
    if isinstance(exc, PppDeviceMissing):
        return ("/dev/ppp is missing or has no driver, so ppp_generic is not loaded: "
                "run 'modprobe ppp_generic' (%s)" % exc)
    if isinstance(exc, PermissionDenied):
        return ("permission denied (%s): run the task as root or with CAP_NET_ADMIN, "
                "for example with become: true" % exc)
    if isinstance(exc, BridgingUnsupported):
        return ("the running kernel cannot bridge PPP channels (PPPIOCBRIDGECHAN returned ENOTTY on channel %s). "
                "Bridging needs Linux 5.11 or later, or the patched ppp_generic that the %s role installs"
                % (exc.channel, KMOD_ROLE))
    if isinstance(exc, ChannelNotFound):
        missing = exc.peer if exc.operation == "bridge" else exc.channel
        return ("channel %s was not found in %s: its session has ended, or it belongs to another "
                "network namespace (channel indices are per namespace; check netns)" % (missing, netns_label))
    if isinstance(exc, ChannelBusy):
        return ("channel %s or channel %s is already bridged or attached to a PPP unit; the kernel does "
                "not say which. Set force: true to replace an existing bridge; a channel connected to a "
                "PPP unit must first be released by the process that owns it" % (exc.channel, exc.peer))
    return str(exc)


# ---------------------------------------------------------------------------
# The batch


def _pair_result(pair, resolved_a, resolved_b, action=ACTION_NOT_DONE, changed=False, error=None):
    return {
        "number": pair.number,
        "name": pair.name,
        "a": resolved_a.to_result(),
        "b": resolved_b.to_result(),
        "action": action,
        "changed": changed,
        "error": error,
        "unbridged_first": [],
        "before": None,
        "after": None,
    }


def _busy_sentence(channel, peer, by_channel):
    """Explain EALREADY on a bridge request, using our records where they help."""
    for busy in (channel, peer):
        recorded = bridge_records.recorded_peer(by_channel, busy)
        if recorded is not None and recorded not in (channel, peer):
            return ("channel %d is bridged to channel %d according to this collection's records; "
                    "set force: true to bridge it to channel %d instead"
                    % (busy, recorded, peer if busy == channel else channel))
    return None


class BatchOutcome:
    """Per-pair results, the failed pair (or None) and the record changes to store."""

    def __init__(self):
        self.results = []
        self.failed_pair = None
        self.message = None
        self.removed = []
        self.added = []
        self.stale = []
        self.entries_after = None

    def to_dict(self):
        return {"results": self.results, "failed_pair": self.failed_pair, "message": self.message,
                "removed": self.removed, "added": self.added, "stale": self.stale,
                "entries_after": self.entries_after}


def partition_stale(entries, channel_exists, channel_index=None):
    """Split record entries into (live, stale).

    An entry is stale when either channel no longer exists, because closing a
    channel's socket also ends its bridge. With ``channel_index`` (from a
    process scan) it is also stale when the recorded socket inode differs
    from the socket that now has that index, which happens when a namespace
    was recreated and its inode number reused.
    """
    live = []
    stale = []
    for entry in entries:
        is_live = True
        for side in ("a", "b"):
            end = entry[side]
            if not channel_exists(end["channel"]):
                is_live = False
                break
            if channel_index is not None and end.get("socket_inode") is not None:
                found = channel_index.get(end["channel"])
                if found is not None and found["socket_inode"] != end["socket_inode"]:
                    is_live = False
                    break
        if is_live:
            live.append(entry)
        else:
            stale.append(entry)
    return live, stale


def _exists_checker(ops):
    cache = {}

    def channel_exists(index):
        if index not in cache:
            try:
                ops.check(index)
                cache[index] = True
            except ChannelNotFound:
                cache[index] = False
        return cache[index]
    return channel_exists


def split_live_records(entries, sockets):
    """Return (live, stale) record entries, asking the kernel whether each channel still exists.

    Call it inside the records' namespace, because channel indices are per
    namespace. Attaching to a channel is the existence check and changes nothing.
    """
    # No bridge request follows these checks, so they keep no descriptor.
    with KernelChannelOps(keep_limit=0) as ops:
        return partition_stale(entries, _exists_checker(ops), build_channel_index(sockets))


def _check_batch_conflicts(resolved_pairs, state, problems):
    """Add a problem for a pair bridged to itself or a channel used by two pairs."""
    users = {}
    for pair, resolved_a, resolved_b in resolved_pairs:
        if resolved_a.channel is None or resolved_b.channel is None:
            continue
        if resolved_a.channel == resolved_b.channel:
            problems.append("%s bridges channel %d to itself (%s and %s)"
                            % (pair.label(), resolved_a.channel, pair.a.describe(), pair.b.describe()))
            continue
        if state != STATE_BRIDGED:
            continue
        for channel in (resolved_a.channel, resolved_b.channel):
            if channel in users and users[channel] != pair.number:
                problems.append("channel %d appears in pair %d and in %s; a channel can have one bridge only"
                                % (channel, users[channel], pair.label()))
            users.setdefault(channel, pair.number)


def _resolve_all(pairs, sockets, netns_label, processes, state, channel_exists, problems):
    socket_index = build_socket_index(sockets)
    resolved_pairs = []
    for pair in pairs:
        resolved_a = resolve_end(pair.a, socket_index, netns_label, processes)
        resolved_b = resolve_end(pair.b, socket_index, netns_label, processes)
        for resolved in (resolved_a, resolved_b):
            if resolved.problem is None:
                continue
            # A session that no longer exists has no bridge, which is what state unbridged requests.
            if state == STATE_UNBRIDGED and resolved.missing:
                continue
            problems.append("%s: %s" % (pair.label(), resolved.problem))
        resolved_pairs.append((pair, resolved_a, resolved_b))

    if state == STATE_BRIDGED:
        for pair, resolved_a, resolved_b in resolved_pairs:
            for resolved in (resolved_a, resolved_b):
                if resolved.channel is None or channel_exists(resolved.channel):
                    continue
                subject = "channel %d" % resolved.channel
                if resolved.end.kind != KIND_CHANNEL:
                    subject = "%s resolves to channel %d, which" % (resolved.end.describe(), resolved.channel)
                problems.append("%s: %s was not found in %s; channel indices are per network namespace, "
                                "so check netns" % (pair.label(), subject, netns_label))
    _check_batch_conflicts(resolved_pairs, state, problems)
    return resolved_pairs


def _state_text(bridged_to):
    if bridged_to is None:
        return "not bridged (no record)"
    return "bridged to channel %d (record)" % bridged_to


def _bridge_pair(result, channel_a, channel_b, force, check_mode, ops, by_channel, outcome):
    """Bridge one pair and store the action in ``result``. A kernel rejection raises PppError."""
    recorded = bridge_records.recorded_peer(by_channel, channel_a)
    result["before"] = _state_text(recorded)

    if check_mode:
        if recorded == channel_b:
            result["action"] = ACTION_ALREADY_BRIDGED
        else:
            result["action"] = ACTION_BRIDGED
            result["changed"] = True
        result["after"] = _state_text(channel_b)
        return None

    try:
        ops.bridge(channel_a, channel_b)
        result["action"] = ACTION_BRIDGED
        result["changed"] = True
    except ChannelBusy:
        if recorded == channel_b:
            result["action"] = ACTION_ALREADY_BRIDGED
            result["after"] = _state_text(channel_b)
            return None
        if not force:
            raise

        for channel in (channel_a, channel_b):
            try:
                ops.unbridge(channel)
                result["unbridged_first"].append(channel)
                peer = bridge_records.recorded_peer(by_channel, channel)
                if peer is not None:
                    outcome.removed.append((channel, peer))
            except NotBridged:
                pass
        try:
            ops.bridge(channel_a, channel_b)
        except ChannelBusy as exc:
            raise PppError(
                "channel %d or channel %d is still busy after their bridges were removed, so one of them is "
                "connected to a PPP unit; the process that owns it must release it first" % (channel_a, channel_b),
                operation=exc.operation, channel=exc.channel, peer=exc.peer, error_number=exc.errno)
        result["action"] = ACTION_BRIDGED
        result["changed"] = True

    result["after"] = _state_text(channel_b)
    return None


def _unbridge_pair(result, resolved_a, resolved_b, force, check_mode, ops, by_channel, outcome):
    channel_a = resolved_a.channel
    channel_b = resolved_b.channel
    recorded = bridge_records.recorded_peer(by_channel, channel_a) if channel_a is not None else None
    recorded_pair = recorded is not None and recorded == channel_b
    result["before"] = _state_text(recorded if recorded_pair else None)
    result["after"] = _state_text(None)

    # Closing a session's socket unregisters its channel, which ends any bridge.
    if resolved_a.missing or resolved_b.missing:
        result["action"] = ACTION_NOT_BRIDGED
        if recorded_pair:
            outcome.removed.append((channel_a, channel_b))
        return

    if not recorded_pair and not force:
        result["action"] = ACTION_NO_RECORD
        result["after"] = result["before"]
        return

    if check_mode:
        result["action"] = ACTION_UNBRIDGED
        result["changed"] = True
        return

    # A bridge is symmetric, so for a recorded pair removing end a's bridge
    # removes the pair, and end a without a bridge means the pair has none.
    # With force and no record, each end's bridge is removed whatever its peer.
    targets = [channel_a] if recorded_pair else [channel_a, channel_b]
    removed_any = False
    for channel in targets:
        try:
            ops.unbridge(channel)
            removed_any = True
        except (NotBridged, ChannelNotFound):
            pass

    if recorded_pair:
        outcome.removed.append((channel_a, channel_b))
    result["action"] = ACTION_UNBRIDGED if removed_any else ACTION_NOT_BRIDGED
    result["changed"] = removed_any


def run_batch(pairs, state, force, check_mode, ops, netns_label, recorded_entries,
              sockets=None, processes=None):
    """Validate, resolve and carry out the pairs; return a BatchOutcome.

    ``pairs`` come from validate_pairs. ``sockets`` is the discovery result
    (needed when an end is a session descriptor), ``recorded_entries`` the
    record entries of this namespace. In check mode the only kernel calls are
    existence checks (attach), which change nothing.
    """
    outcome = BatchOutcome()
    sockets = sockets or []
    channel_exists = _exists_checker(ops)

    live, outcome.stale = partition_stale(recorded_entries, channel_exists, build_channel_index(sockets))
    by_channel = bridge_records.index_by_channel(live)

    problems = []
    resolved_pairs = _resolve_all(pairs, sockets, netns_label, processes, state, channel_exists, problems)
    for pair, resolved_a, resolved_b in resolved_pairs:
        outcome.results.append(_pair_result(pair, resolved_a, resolved_b))
    if problems:
        outcome.message = "nothing was changed because %d problem(s) were found: %s" % (
            len(problems), "; ".join(problems))
        outcome.entries_after = live
        return outcome

    for position, (pair, resolved_a, resolved_b) in enumerate(resolved_pairs):
        result = outcome.results[position]
        try:
            if state == STATE_BRIDGED:
                _bridge_pair(result, resolved_a.channel, resolved_b.channel, force, check_mode, ops,
                             by_channel, outcome)
                if result["action"] == ACTION_BRIDGED and not check_mode:
                    outcome.added.append(bridge_records.make_entry(resolved_a.to_record(), resolved_b.to_record()))
            else:
                _unbridge_pair(result, resolved_a, resolved_b, force, check_mode, ops, by_channel, outcome)
        except PppError as exc:
            sentence = None
            if isinstance(exc, ChannelBusy):
                sentence = _busy_sentence(resolved_a.channel, resolved_b.channel, by_channel)
            result["action"] = ACTION_FAILED
            result["error"] = sentence or explain_error(exc, netns_label)
            outcome.failed_pair = pair.number
            outcome.message = _failure_message(pair, resolved_a, resolved_b, result["error"], position,
                                               len(resolved_pairs))
            break

    outcome.entries_after = bridge_records.apply_changes(live, outcome.removed, outcome.added)
    return outcome


def _failure_message(pair, resolved_a, resolved_b, error, position, total):
    where = "%s (%s, channel %s <-> %s, channel %s)" % (
        pair.label(), resolved_a.end.describe(), resolved_a.channel, resolved_b.end.describe(), resolved_b.channel)
    if position == 0:
        done = "No pair before it was changed"
    elif position == 1:
        done = "Pair 1 was done"
    else:
        done = "Pairs 1 to %d were done" % position
    remaining = total - position - 1
    after = "; the %d pair(s) after it were not attempted" % remaining if remaining else ""
    return "%s failed: %s. %s%s; see 'pairs' for each pair's action" % (where, error, done, after)


def run_batch_in_netns(target, pairs, state, force, check_mode, recorded_entries, processes=None):
    """Scan for sockets if needed and run the batch inside ``target`` (a netns.NetnsTarget).

    Returns BatchOutcome.to_dict() plus ``inaccessible``: the processes the
    scan could not read. Kernel errors of the batch are in the outcome;
    errors that stop the scan itself are raised.
    """
    def work():
        sockets = []
        inaccessible = []
        if needs_discovery(pairs):
            scan = discover_pppox_sockets(processes)
            sockets = scan["sockets"]
            inaccessible = scan["inaccessible"]
        with KernelChannelOps() as ops:
            outcome = run_batch(pairs, state, force, check_mode, ops, target.label,
                                recorded_entries, sockets=sockets, processes=processes)
        result = outcome.to_dict()
        result["inaccessible"] = inaccessible
        return result

    return run_in_netns(target, work)
