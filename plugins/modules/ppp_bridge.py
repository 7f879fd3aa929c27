#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Ansible module l2tp.lac.ppp_bridge: bridge PPP channels in the kernel."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ppp_bridge
short_description: Bridge PPP channels, such as a PPPoE session and an L2TP session, in the kernel
version_added: 0.1.0
description:
  - Bridges pairs of PPP channels with the C(PPPIOCBRIDGECHAN) ioctl of C(ppp_generic) (Linux 5.11 and later,
    or the backport that the C(l2tp.lac.ppp_kmod) role installs), or removes such bridges.
  - Frames arriving on one channel of a bridge go out on the other unchanged, so a PPPoE subscriber session can be
    carried into an L2TP session without a PPP unit on this host.
  - An end of a pair is a channel index, or a PPPoE or L2TP session that the module finds among the PPPoX sockets
    of running processes. One process scan resolves every session of the task.
  - The module does not own the sessions. The processes holding the PPPoE and PPPoL2TP sockets must keep them open,
    because closing either socket ends the bridge.
  - Every pair is validated and resolved before the first change. If the kernel rejects a request mid-batch, the
    module stops there, fails, and reports which pairs were done and which were not.
  - The kernel cannot report whether a channel is bridged or to which peer. The module keeps records of the bridges
    it made in O(record_dir)/bridges.json and relies on them to report "already bridged" and to unbridge.
author:
  - l2tp.lac maintainers
options:
  pairs:
    description:
      - The bridges to make or remove. Each pair has two ends, O(pairs[].a) and O(pairs[].b). The order does not
        matter because a bridge carries frames both ways.
      - One task can carry thousands of pairs. Use one task with a long list rather than a loop.
    type: list
    elements: dict
    required: true
    suboptions:
      name:
        description:
          - A label for this pair in results and messages, for example the subscriber's name.
        type: str
      a:
        description:
          - One end of the bridge. Give exactly one of O(pairs[].a.channel), O(pairs[].a.pppoe) or
            O(pairs[].a.l2tp).
        type: dict
        required: true
        suboptions: &end_options
          channel:
            description:
              - A channel index, as C(PPPIOCGCHAN) returns it. Channel indices belong to a network namespace.
            type: int
          pppoe:
            description:
              - A PPPoE session, found by its interface and session id.
            type: dict
            suboptions:
              interface:
                description:
                  - The Ethernet interface that carries the session.
                type: str
                required: true
              session_id:
                description:
                  - The PPPoE session id, 1 to 65534.
                type: int
                required: true
              peer_mac:
                description:
                  - The subscriber's MAC address, as V(02:00:5e:00:53:01). Needed only when two sessions on the
                    interface share the session id.
                type: str
          l2tp:
            description:
              - An L2TPv2 session carried by a PPPoL2TP socket, found by its local ids.
            type: dict
            suboptions:
              tunnel_id:
                description:
                  - The local tunnel id, 1 to 65535.
                type: int
                required: true
              session_id:
                description:
                  - The local session id, 1 to 65535.
                type: int
                required: true
              peer_tunnel_id:
                description:
                  - If set, the session must have this peer tunnel id.
                type: int
              peer_session_id:
                description:
                  - If set, the session must have this peer session id.
                type: int
      b:
        description:
          - The other end of the bridge, with the same options as O(pairs[].a).
        type: dict
        required: true
        suboptions: *end_options
  state:
    description:
      - V(bridged) bridges each pair. V(unbridged) removes the bridge of each pair that the records list.
    type: str
    choices: [bridged, unbridged]
    default: bridged
  force:
    description:
      - With O(state=bridged), an end that is already bridged elsewhere is unbridged first and then bridged to its
        new peer. This cannot release a channel that a process connected to a PPP unit.
      - With O(state=unbridged), the bridge of each end is removed even when no record lists the pair, whatever
        the end's peer is.
    type: bool
    default: false
  netns:
    description:
      - The network namespace of the channels, as a name under C(/run/netns) or as the pid of a process in it.
      - Omit it for the namespace of the module process.
    type: str
  processes:
    description:
      - Command names (as in C(/proc/PID/comm), cut to 15 characters) of the processes to search for sessions,
        for example V(pppoe-server) or V(pppd). Omit it to search every process.
      - Limiting the search makes it faster on hosts with many sockets.
    type: list
    elements: str
  record_dir:
    description:
      - The directory of the bridge record file and its lock file. Keep it on a tmpfs that is cleared at boot,
        like the bridges.
    type: path
    default: /run/l2tp-lac
  lock_timeout:
    description:
      - Maximum time in seconds to wait for another run of this module to release the record lock.
    type: float
    default: 30
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
    details:
      - Check mode attaches to channels (C(PPPIOCATTCHAN)) to check that they exist, which changes nothing, and
        makes no bridge or unbridge request.
      - The prediction comes from the records, so a pair that the kernel would reject is still reported as
        V(bridged).
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: full
    details:
      - The diff lists each pair's state before and after, as the records show it.
  idempotent:
    description: Running the task again with the same options changes nothing.
    support: partial
    details:
      - The kernel rejects a bridge request with EALREADY both for a channel that is bridged and for one connected
        to a PPP unit, and cannot be asked which. A pair counts as already bridged only when the records list it.
        A bridge that another tool made therefore fails without O(force).
      - If the records list the pair but its bridge was replaced outside this module, EALREADY is still taken as
        already bridged.
      - Records are written after the batch. A crash between the ioctls and the write loses the records of that
        batch. The next run then fails on those pairs with EALREADY, and O(state=unbridged) skips them unless
        O(force) is set.
      - Channels are attached afresh by index on every run, never kept open between runs.
notes:
  - Needs root, or CAP_NET_ADMIN for C(/dev/ppp) and ptrace rights over the processes holding the sessions
    (C(pidfd_getfd), Linux 5.6 or later). Joining O(netns) needs CAP_SYS_ADMIN.
  - The channel index of a session is read with C(PPPIOCGCHAN) only when the session's socket is already bound to
    its channel, because that ioctl would otherwise divert the socket's frames from its owner. A session whose
    owner has not bound it yet cannot be given by descriptor. Give its channel index instead.
  - A session descriptor that matches no socket counts as not bridged when O(state=unbridged), because closing a
    session's socket ends its bridge.
  - Bridges do not survive a reboot, and neither do the records under C(/run).
requirements:
  - Linux 5.6 or later on the target, with C(ppp_generic) that supports channel bridging.
seealso:
  - module: l2tp.lac.ppp_channel_info
"""

EXAMPLES = r"""
- name: Bridge two PPPoE subscribers to their L2TP sessions
  l2tp.lac.ppp_bridge:
    pairs:
      - name: subscriber-17
        a:
          pppoe:
            interface: eth1
            session_id: 17
        b:
          l2tp:
            tunnel_id: 5
            session_id: 9
      - name: subscriber-18
        a:
          pppoe:
            interface: eth1
            session_id: 18
            peer_mac: 02:00:5e:00:53:12
        b:
          l2tp:
            tunnel_id: 5
            session_id: 10
    processes:
      - pppoe-server
      - l2tp-lac-daemon
  become: true

- name: Bridge channels by index inside a network namespace
  l2tp.lac.ppp_bridge:
    netns: lac-a
    pairs:
      - a:
          channel: 17
        b:
          channel: 42

- name: Move channel 17 to a new peer, replacing its current bridge
  l2tp.lac.ppp_bridge:
    force: true
    pairs:
      - a:
          channel: 17
        b:
          channel: 43

- name: Remove the bridges this collection made for a subscriber
  l2tp.lac.ppp_bridge:
    state: unbridged
    pairs:
      - a:
          pppoe:
            interface: eth1
            session_id: 17
        b:
          l2tp:
            tunnel_id: 5
            session_id: 9
"""

RETURN = r"""
pairs:
  description: One entry per requested pair, in the order given.
  returned: always
  type: list
  elements: dict
  contains:
    number:
      description: The pair's position in O(pairs), from 1.
      type: int
      sample: 1
    name:
      description: The pair's O(pairs[].name), or null.
      type: str
      sample: subscriber-17
    a:
      description: End a as resolved.
      type: dict
      contains:
        channel:
          description: The channel index, or null when it could not be resolved.
          type: int
          sample: 17
        description:
          description: The end in words.
          type: str
          sample: PPPoE session 17 on eth1
        pppoe:
          description: The PPPoE session (interface, session_id, peer_mac), or null.
          type: dict
          sample: {"interface": "eth1", "session_id": 17, "peer_mac": "02:00:5e:00:53:11"}
        l2tp:
          description: The L2TP session as getsockname returns it, or as given when no socket was found, or null.
          type: dict
          sample: {"tunnel_id": 5, "session_id": 9, "peer_tunnel_id": 6, "peer_session_id": 10}
        owner_pid:
          description: The pid of the process holding the session's socket, or null for a channel index.
          type: int
          sample: 1234
        owner_command:
          description: That process's command name, or null.
          type: str
          sample: pppoe-server
      sample: {"channel": 17, "description": "PPPoE session 17 on eth1", "owner_pid": 1234}
    b:
      description: End b as resolved, with the same keys as RV(pairs[].a).
      type: dict
      sample: {"channel": 42, "description": "L2TP session 9 in tunnel 5", "owner_pid": 1300}
    action:
      description:
        - What happened to the pair.
        - V(bridged) and V(unbridged) are changes. V(already bridged) and V(not bridged) are not.
        - V(no record) means O(state=unbridged) skipped a pair that the records do not list (see O(force)).
        - V(failed) is the pair the kernel rejected, and V(not done) a pair that was not attempted.
      type: str
      choices: [bridged, already bridged, unbridged, not bridged, no record, failed, not done]
      sample: bridged
    changed:
      description: Whether this pair changed.
      type: bool
      sample: true
    error:
      description: Why the kernel rejected this pair, or null.
      type: str
      sample: null
    unbridged_first:
      description: Channels whose old bridge O(force) removed before bridging this pair.
      type: list
      elements: int
      sample: [17]
    before:
      description: The pair's state before the task, as the records show it.
      type: str
      sample: not bridged (no record)
    after:
      description: The pair's state after the task, as the records show it.
      type: str
      sample: bridged to channel 42 (record)
stale_records_removed:
  description: Number of record entries dropped because one of their channels no longer exists.
  returned: always
  type: int
  sample: 0
record_file:
  description: The bridge record file.
  returned: always
  type: str
  sample: /run/l2tp-lac/bridges.json
netns:
  description: The network namespace the task worked in, in words.
  returned: always
  type: str
  sample: network namespace 'lac-a'
inaccessible_processes:
  description: Processes whose sockets could not be read during the session search, with the reason.
  returned: always
  type: list
  elements: dict
  sample: [{"pid": 812, "command": "sshd", "reason": "pidfd_getfd: Operation not permitted"}]
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.l2tp.lac.plugins.module_utils import bridge_plan, bridge_records
from ansible_collections.l2tp.lac.plugins.module_utils.bridge_records import RecordError, RecordStore
from ansible_collections.l2tp.lac.plugins.module_utils.discovery import DiscoveryError
from ansible_collections.l2tp.lac.plugins.module_utils.netns import (
    ChildFailed,
    NamespaceError,
    netns_inode,
    resolve_netns,
)
from ansible_collections.l2tp.lac.plugins.module_utils.ppp_ioctl import PppError

END_OPTIONS = dict(
    channel=dict(type="int"),
    pppoe=dict(type="dict", options=dict(
        interface=dict(type="str", required=True),
        session_id=dict(type="int", required=True),
        peer_mac=dict(type="str"),
    )),
    l2tp=dict(type="dict", options=dict(
        tunnel_id=dict(type="int", required=True),
        session_id=dict(type="int", required=True),
        peer_tunnel_id=dict(type="int"),
        peer_session_id=dict(type="int"),
    )),
)
END_KINDS = ["channel", "pppoe", "l2tp"]


def _end_spec():
    return dict(type="dict", required=True, options=END_OPTIONS,
                mutually_exclusive=[END_KINDS], required_one_of=[END_KINDS])


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            pairs=dict(type="list", elements="dict", required=True, options=dict(
                name=dict(type="str"),
                a=_end_spec(),
                b=_end_spec(),
            )),
            state=dict(type="str", choices=["bridged", "unbridged"], default="bridged"),
            force=dict(type="bool", default=False),
            netns=dict(type="str"),
            processes=dict(type="list", elements="str"),
            record_dir=dict(type="path", default=bridge_records.DEFAULT_RECORD_DIR),
            lock_timeout=dict(type="float", default=30.0),
        ),
        supports_check_mode=True,
    )


def build_diff(results):
    """Return the before/after texts of the diff, one line per pair."""
    before = []
    after = []
    for result in results:
        label = "pair %d%s: %s <-> %s" % (result["number"], " (%s)" % result["name"] if result["name"] else "",
                                          result["a"]["description"], result["b"]["description"])
        before.append("%s: %s\n" % (label, result["before"] or "unknown"))
        after.append("%s: %s\n" % (label, result["after"] or result["before"] or "unknown"))
    return {"before": "".join(before), "after": "".join(after)}


class BridgeTask:
    """One run of the module: lock the records, run the batch in the namespace, store the records."""

    def __init__(self, module):
        self.module = module
        self.params = module.params
        self.result = dict(changed=False, pairs=[], stale_records_removed=0, inaccessible_processes=[],
                           netns=self.params["netns"],
                           record_file=os.path.join(self.params["record_dir"], bridge_records.RECORD_FILE_NAME))

    def fail(self, message, **extra):
        self.result.update(extra)
        self.module.fail_json(msg=message, **self.result)

    def run(self):
        try:
            pairs = bridge_plan.validate_pairs(self.params["pairs"])
        except bridge_plan.BatchInvalid as exc:
            self.fail("invalid pairs, nothing was changed: %s" % "; ".join(exc.problems), problems=exc.problems)

        try:
            target = resolve_netns(self.params["netns"])
            self.result["netns"] = target.label
            netns_key = netns_inode(target.path, target.label)
        except NamespaceError as exc:
            self.fail(str(exc))

        record_dir = self.params["record_dir"]
        if self.module.check_mode and not os.path.isdir(record_dir):
            # Check mode creates nothing, and without the directory there are no records to read.
            return self._run_batch(pairs, target, [], None, None, netns_key)

        try:
            with RecordStore(record_dir, lock_timeout=self.params["lock_timeout"]) as store:
                records = store.load()
                entries = bridge_records.namespace_entries(records, netns_key)
                return self._run_batch(pairs, target, entries, store, records, netns_key)
        except RecordError as exc:
            self.fail(str(exc))

    def _run_batch(self, pairs, target, entries, store, records, netns_key):
        check_mode = self.module.check_mode
        try:
            outcome = bridge_plan.run_batch_in_netns(
                target, pairs, self.params["state"], self.params["force"], check_mode, entries,
                processes=self.params["processes"])
        except PppError as exc:
            self.fail("nothing was changed: %s" % bridge_plan.explain_error(exc, target.label),
                      exception=getattr(exc, "child_traceback", None))
        except (DiscoveryError, NamespaceError, ChildFailed) as exc:
            self.fail("nothing was changed: %s" % exc, exception=getattr(exc, "child_traceback", None))

        self.result["pairs"] = outcome["results"]
        self.result["changed"] = any(result["changed"] for result in outcome["results"])
        self.result["stale_records_removed"] = len(outcome["stale"])
        self.result["inaccessible_processes"] = outcome["inaccessible"]
        if self.module._diff:
            self.result["diff"] = build_diff(outcome["results"])

        # Records are stored even after a mid-batch failure, so the pairs that were done stay known.
        if store is not None and not check_mode and outcome["entries_after"] != entries:
            bridge_records.replace_namespace_entries(records, netns_key, target.label, outcome["entries_after"])
            store.save(records)

        self._warn(outcome)
        if outcome["message"]:
            self.fail(outcome["message"])
        self.module.exit_json(**self.result)

    def _warn(self, outcome):
        skipped = [result["number"] for result in outcome["results"] if result["action"] == bridge_plan.ACTION_NO_RECORD]
        if skipped:
            self.module.warn("%d pair(s) were left alone because no record lists their bridge (pairs %s). "
                             "Set force: true to unbridge them anyway."
                             % (len(skipped), ", ".join(str(number) for number in skipped[:20])))
        if outcome["inaccessible"]:
            self.module.warn("%d process(es) could not be searched for sessions; see inaccessible_processes."
                             % len(outcome["inaccessible"]))


def main():
    module = build_module()
    try:
        BridgeTask(module).run()
    except RecordError as exc:
        module.fail_json(msg=str(exc), exception=traceback.format_exc())


if __name__ == "__main__":
    main()
