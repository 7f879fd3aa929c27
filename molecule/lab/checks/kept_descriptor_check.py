#!/usr/bin/env python3
"""Check KernelChannelOps when a channel's session ends between its check and its bridge, inside a lab guest.

Usage: kept_descriptor_check.py COLLECTION_ROOT INDEX

COLLECTION_ROOT is the folder that contains ansible_collections/l2tp/lac/plugins.
INDEX is a fixture session without pppd peers, which this check ends. It runs
in the lac namespace:

1. Remove any bridge of the session's PPPoE channel A, so both ends start free.
2. Check that A and the L2TP channel B exist, the way ppp_bridge's batch does,
   which keeps A's attached descriptor.
3. Close the session's PPPoE socket through the fixture, which unregisters A.
4. Bridge A to B through the same ops object. It must raise ChannelNotFound
   naming A, and B must be left without a bridge (unbridging B returns EINVAL).
   Without the hang-up check, the kept descriptor would bridge the dead A to B.

Prints one JSON object and exits 0 when every step saw what it expects, 1 otherwise.
"""

import json
import os
import subprocess
import sys

FIXTURE = "/usr/local/sbin/l2tp-lac-sessions"
FIXTURE_STATE = "/run/l2tp-lac-fixture/sessions.json"


def main(argv):
    if len(argv) != 3:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    sys.path.insert(0, argv[1])
    from ansible_collections.l2tp.lac.plugins.module_utils import ppp_ioctl
    from ansible_collections.l2tp.lac.plugins.module_utils.netns import resolve_netns, run_in_netns

    index = int(argv[2])
    with open(FIXTURE_STATE) as source:
        session = json.load(source)["sessions"][index]
    channel_a = session["pppoe"]["channel"]
    channel_b = session["l2tp"]["channel"]

    def steps():
        report = {"channel_a": channel_a, "channel_b": channel_b}
        try:
            ppp_ioctl.unbridge_channel(channel_a)
        except ppp_ioctl.NotBridged:
            pass
        with ppp_ioctl.KernelChannelOps() as ops:
            ops.check(channel_a)
            ops.check(channel_b)
            closed = subprocess.run([FIXTURE, "close", str(index), "pppoe"], stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, universal_newlines=True)
            report["close"] = closed.stdout.strip()
            try:
                ops.bridge(channel_a, channel_b)
                report["bridge"] = "returned without error"
            except ppp_ioctl.ChannelNotFound as exc:
                report["bridge"] = "ChannelNotFound on channel %s: %s" % (exc.channel, exc)
                report["bridge_named_a"] = exc.channel == channel_a
        try:
            ppp_ioctl.unbridge_channel(channel_b)
            report["unbridge_b"] = "removed a bridge"
        except ppp_ioctl.NotBridged:
            report["unbridge_b"] = "not bridged"
        return report

    report = run_in_netns(resolve_netns("lac"), steps)
    report["passed"] = (report["bridge"].startswith("ChannelNotFound") and report.get("bridge_named_a", False)
                        and report["unbridge_b"] == "not bridged")
    print(json.dumps(report, indent=1))
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
