#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Ansible module l2tp.lac.ppp_channel_info: report PPP channels and bridging support."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: ppp_channel_info
short_description: Report PPP channels, their sessions and whether the kernel can bridge them
version_added: 0.1.0
description:
  - Finds out whether the running kernel can bridge PPP channels, by a probe in a throwaway network namespace that
    never touches live channels.
  - Lists the PPPoE and PPPoL2TP sockets that running processes hold, with their sessions, owners and channel
    indices, and the bridged peer of each channel as this collection's records show it.
  - Changes nothing, so it runs the same in check mode.
author:
  - l2tp.lac maintainers
options:
  netns:
    description:
      - The network namespace to list channels in, as a name under C(/run/netns) or as the pid of a process in it.
      - Omit it for the namespace of the module process. The probe always runs in a namespace of its own.
    type: str
  processes:
    description:
      - Command names (as in C(/proc/PID/comm), cut to 15 characters) of the processes to search. Omit it to
        search every process.
    type: list
    elements: str
  probe:
    description:
      - Whether to run the bridging probe. It needs CAP_SYS_ADMIN to create a network namespace, and the
        C(l2tp_ppp) and C(ppp_generic) kernel modules.
    type: bool
    default: true
  channels:
    description:
      - Whether to search processes for PPPoX sockets and list them.
    type: bool
    default: true
  l2tp_netlink:
    description:
      - Whether to also list the kernel's L2TP sessions over generic netlink, including L2TPv3 sessions and
        sessions that no socket carries. Needs the Python library pyroute2 on the target and the C(l2tp_netlink)
        kernel module.
    type: bool
    default: false
  record_dir:
    description:
      - The directory of the bridge record file that M(l2tp.lac.ppp_bridge) writes.
    type: path
    default: /run/l2tp-lac
attributes:
  check_mode:
    description: Can run in check_mode and return changed status prediction without modifying target.
    support: full
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in check_mode), when in diff mode.
    support: none
  idempotent:
    description: Running the task again with the same options changes nothing.
    support: full
notes:
  - Needs root. Sockets of other processes are read through C(pidfd_getfd) (Linux 5.6 or later), which needs
    ptrace rights over them.
  - A channel index is read only from a socket already bound to its channel. Reading it from any other socket would
    divert the socket's frames from its owner, so such channels are listed with RV(channels[].channel) null and
    the reason.
  - The kernel cannot report whether a channel is bridged. RV(channels[].bridged_peer) comes from the records of
    M(l2tp.lac.ppp_bridge) only, marked by RV(channels[].bridged_peer_source), and misses bridges made by other
    tools.
requirements:
  - pyroute2, only for O(l2tp_netlink=true).
seealso:
  - module: l2tp.lac.ppp_bridge
"""

EXAMPLES = r"""
- name: Find out whether the kernel bridges PPP channels
  l2tp.lac.ppp_channel_info:
    channels: false
  register: ppp_info
  become: true

- name: Fail early on a kernel without channel bridging
  ansible.builtin.assert:
    that: ppp_info.bridging.supported
    fail_msg: "{{ ppp_info.bridging.reason }}"

- name: List the channels of the PPPoE server and the L2TP daemon in namespace lac-a
  l2tp.lac.ppp_channel_info:
    netns: lac-a
    probe: false
    processes:
      - pppoe-server
      - l2tp-lac-daemon
  register: lac_channels
  become: true
"""

RETURN = r"""
bridging:
  description: The probe result, or null when O(probe=false).
  returned: always
  type: dict
  contains:
    supported:
      description: True if the kernel bridged two throwaway channels, false if it returned ENOTTY, null if the probe
        could not run.
      type: bool
      sample: true
    reason:
      description: How the result was reached, or why the probe could not run.
      type: str
      sample: bridged and unbridged two throwaway channels (1 and 2)
    kernel:
      description: The running kernel release.
      type: str
      sample: 6.1.0-18-amd64
    ppp_generic_version:
      description: The MODULE_VERSION of the loaded ppp_generic, or null when it has none (in-tree builds).
      type: str
      sample: null
  sample: {"supported": true, "reason": "bridged and unbridged two throwaway channels (1 and 2)",
           "kernel": "6.1.0-18-amd64", "ppp_generic_version": null}
channels:
  description: One entry per PPPoX socket found, whether or not its index is known. Empty when O(channels=false).
  returned: always
  type: list
  elements: dict
  contains:
    kind:
      description: V(pppoe) or V(l2tp).
      type: str
      sample: pppoe
    channel:
      description: The channel index, or null when reading it is not safe (see RV(channels[].channel_unknown_reason)).
      type: int
      sample: 17
    channel_unknown_reason:
      description: Why the channel index is null, or null.
      type: str
      sample: null
    bound:
      description: Whether the socket is bound to its channel (PPPOX_BOUND), so its frames go to the channel.
      type: bool
      sample: true
    in_netns:
      description: Whether the socket belongs to the network namespace of O(netns).
      type: bool
      sample: true
    tunnel_socket:
      description: Whether this is an L2TP tunnel management socket (session 0), which has no channel.
      type: bool
      sample: false
    pppoe:
      description: For PPPoE, the interface, session id and peer MAC. Null otherwise.
      type: dict
      sample: {"interface": "eth1", "session_id": 17, "peer_mac": "02:00:5e:00:53:11"}
    l2tp:
      description: For L2TP, version, local and peer tunnel and session ids, and the tunnel's peer address and port.
        Null otherwise.
      type: dict
      sample: {"version": 2, "tunnel_id": 5, "session_id": 9, "peer_tunnel_id": 6, "peer_session_id": 10,
               "peer_address": "192.0.2.1", "peer_port": 1701}
    socket_inode:
      description: The inode of the socket.
      type: int
      sample: 918273
    owner_pid:
      description: The first process found holding the socket.
      type: int
      sample: 1234
    owner_command:
      description: That process's command name.
      type: str
      sample: pppoe-server
    owner_fd:
      description: The socket's descriptor number in that process.
      type: int
      sample: 12
    owner_ppp_device_fds:
      description: How many descriptors on /dev/ppp that process holds.
      type: int
      sample: 1
    holders:
      description: Other processes holding the same socket, with pid, command and fd.
      type: list
      elements: dict
      sample: []
    ppp_unit:
      description:
        - Whether the channel is connected to a PPP unit. RV(channels[].ppp_unit.state) is V(connected),
          V(not connected) or V(unknown), with the pppN interface when connected and the reason when unknown.
        - Only /proc/net/pppol2tp reports it, for L2TPv2 sessions.
      type: dict
      sample: {"state": "unknown", "interface": null, "reason": "the kernel reports no PPP unit for PPPoE channels"}
    bridged_peer:
      description: The channel this one is bridged to according to the records, or null.
      type: int
      sample: 42
    bridged_peer_source:
      description: V(record) when RV(channels[].bridged_peer) comes from the records, null when there is none.
      type: str
      sample: record
inaccessible_processes:
  description: Processes whose sockets could not be read, with the reason.
  returned: always
  type: list
  elements: dict
  sample: []
l2tp_sessions:
  description:
    - The kernel's L2TP sessions from generic netlink, when O(l2tp_netlink=true). Each has tunnel and session ids,
      peer ids, the pseudowire type, the interface (for Ethernet pseudowires) and C(pppox_socket_found), which is
      null when O(channels=false).
  returned: when O(l2tp_netlink=true)
  type: list
  elements: dict
  sample: [{"tunnel_id": 5, "session_id": 9, "peer_tunnel_id": 6, "peer_session_id": 10, "pseudowire": "ppp",
            "interface": null, "pppox_socket_found": true}]
netns:
  description: The network namespace the channels were listed in, in words.
  returned: always
  type: str
  sample: the host network namespace
ended_bridges:
  description:
    - Bridges that the records list but that have ended, because one of their channels no longer exists (its
      socket was closed, or its PPPoE session was torn down). Empty when O(channels=false).
    - This module only reports them. The next M(l2tp.lac.ppp_bridge) run in the namespace drops them from the
      records.
  returned: always
  type: list
  elements: dict
  contains:
    channels:
      description: The two recorded channel indices.
      type: list
      elements: int
      sample: [5, 6]
    descriptors:
      description: The sessions the two ends were given by, or null for an end given by channel index.
      type: list
      elements: dict
      sample: [{"pppoe": {"interface": "eth1", "session_id": 3, "peer_mac": null}}, null]
    bridged_at:
      description: When the bridge was made, in UTC.
      type: str
      sample: "2026-12-04T21:55:38Z"
  sample: []
record_file:
  description: The bridge record file that was read.
  returned: always
  type: str
  sample: /run/l2tp-lac/bridges.json
"""

import os

from ansible.module_utils.basic import AnsibleModule, missing_required_lib

from ansible_collections.l2tp.lac.plugins.module_utils import bridge_records, l2tp_netlink
from ansible_collections.l2tp.lac.plugins.module_utils.bridge_plan import split_live_records
from ansible_collections.l2tp.lac.plugins.module_utils.bridge_records import RecordError, RecordStore
from ansible_collections.l2tp.lac.plugins.module_utils.ppp_ioctl import PppError
from ansible_collections.l2tp.lac.plugins.module_utils.bridging_probe import probe_bridging_support
from ansible_collections.l2tp.lac.plugins.module_utils.discovery import DiscoveryError, discover_pppox_sockets
from ansible_collections.l2tp.lac.plugins.module_utils.netns import (
    ChildFailed,
    NamespaceError,
    netns_inode,
    resolve_netns,
    run_in_netns,
)

BRIDGED_PEER_SOURCE_RECORD = "record"


def build_module():
    return AnsibleModule(
        argument_spec=dict(
            netns=dict(type="str"),
            processes=dict(type="list", elements="str"),
            probe=dict(type="bool", default=True),
            channels=dict(type="bool", default=True),
            l2tp_netlink=dict(type="bool", default=False),
            record_dir=dict(type="path", default=bridge_records.DEFAULT_RECORD_DIR),
        ),
        supports_check_mode=True,
    )


def add_recorded_peers(sockets, entries):
    """Set bridged_peer and bridged_peer_source on each socket from the record entries."""
    by_channel = bridge_records.index_by_channel(entries)
    for found in sockets:
        peer = None
        # Channel indices are per namespace, so a record does not apply to a
        # socket of another namespace that has the same number.
        if found.get("channel") is not None and found.get("in_netns"):
            peer = bridge_records.recorded_peer(by_channel, found["channel"])
        found["bridged_peer"] = peer
        found["bridged_peer_source"] = BRIDGED_PEER_SOURCE_RECORD if peer is not None else None
    return sockets


def describe_ended_bridge(entry):
    """Describe a recorded bridge one of whose channels no longer exists."""
    return {"channels": [entry["a"]["channel"], entry["b"]["channel"]],
            "descriptors": [entry["a"].get("descriptor"), entry["b"].get("descriptor")],
            "bridged_at": entry.get("bridged_at")}


def read_entries(record_dir, netns_key):
    """Return the record entries of one namespace, or none when no record directory exists."""
    if not os.path.isdir(record_dir):
        return []
    with RecordStore(record_dir) as store:
        return bridge_records.namespace_entries(store.load(), netns_key)


def main():
    module = build_module()
    params = module.params
    result = dict(changed=False, bridging=None, channels=[], ended_bridges=[], inaccessible_processes=[],
                  netns=params["netns"],
                  record_file=os.path.join(params["record_dir"], bridge_records.RECORD_FILE_NAME))

    if params["l2tp_netlink"] and not l2tp_netlink.HAS_PYROUTE2:
        module.fail_json(msg=missing_required_lib("pyroute2", reason="for l2tp_netlink=true"),
                         exception=l2tp_netlink.PYROUTE2_IMPORT_ERROR, **result)

    try:
        target = resolve_netns(params["netns"])
        result["netns"] = target.label
        netns_key = netns_inode(target.path, target.label)
    except NamespaceError as exc:
        module.fail_json(msg=str(exc), **result)

    if params["probe"]:
        result["bridging"] = probe_bridging_support()

    sockets = []
    if params["channels"]:
        try:
            scan = run_in_netns(target, discover_pppox_sockets, params["processes"])
            entries = read_entries(params["record_dir"], netns_key)
            # A recorded bridge ends when either channel's socket closes, which
            # the records cannot show. Attaching by index tells which channels remain.
            live, stale = run_in_netns(target, split_live_records, entries, scan["sockets"])
        except (DiscoveryError, NamespaceError, ChildFailed, RecordError, PppError) as exc:
            module.fail_json(msg=str(exc), exception=getattr(exc, "child_traceback", None), **result)
        sockets = add_recorded_peers(scan["sockets"], live)
        result["ended_bridges"] = [describe_ended_bridge(entry) for entry in stale]
        result["channels"] = sorted(sockets, key=lambda found: (found["kind"], found["socket_inode"]))
        result["inaccessible_processes"] = scan["inaccessible"]

    if params["l2tp_netlink"]:
        try:
            sessions = run_in_netns(target, l2tp_netlink.list_l2tp_sessions)
        except (l2tp_netlink.L2tpNetlinkError, NamespaceError, ChildFailed) as exc:
            module.fail_json(msg=str(exc), **result)
        result["l2tp_sessions"] = l2tp_netlink.mark_carried_sessions(sessions, sockets if params["channels"] else None)

    module.exit_json(**result)


if __name__ == "__main__":
    main()
