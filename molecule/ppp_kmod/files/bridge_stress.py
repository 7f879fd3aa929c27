#!/usr/bin/env python3
"""Stress the kernel's PPP channel bridge of one fixture session, inside a lab guest.

Runs as root in a guest where the session fixture (l2tp-lac-sessions) is up.
Prints one JSON object and exits 0 when every outcome was one that the ioctls
document, 1 otherwise.

Commands:
  race I [--rounds N] [--hold-ms M] [--flood]
      N rounds on session I's two lac channels. In each round two threads
      bridge at once, one from each end (A to B and B to A), then, M ms
      later, both unbridge at once. The ioctls run under one kernel mutex,
      so in every round one bridge returns 0 and the other EALREADY, and
      one unbridge returns 0 and the other EINVAL. With --flood, the CPE
      pings the LNS 500 times a second meanwhile, and at least one reply
      must come back, so frames do cross the bridge while it changes.
      Leaves the session unbridged.
  runt I [--sizes 0,1,...]
      Sends PPPoE session frames of session I from the cpe namespace, through
      a raw AF_PACKET socket on cpe-eth0, one per payload size. Size 0 is an
      empty payload, size 1 half a protocol field, and sizes 2 to 5 are LCP
      frames cut short (protocol 0xc021 and at most 3 bytes more). A last
      frame carries an IPv4 protocol field and 2 bytes.
"""

import argparse
import ctypes
import errno
import fcntl
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

FIXTURE_STATE = "/run/l2tp-lac-fixture/sessions.json"

# From include/uapi/linux/ppp-ioctl.h (Linux 5.11 and the 5.10 backport).
PPPIOCATTCHAN = 0x40047438
PPPIOCBRIDGECHAN = 0x40047435
PPPIOCUNBRIDGECHAN = 0x00007434
CLONE_NEWNET = 0x40000000

# From include/uapi/linux/if_ether.h and RFC 2516.
ETH_P_PPP_SES = 0x8864
PPPOE_VER_TYPE = 0x11
PPPOE_CODE_SESSION = 0x00
PPP_LCP = 0xC021
PPP_IP = 0x0021

LNS_PPP_ADDRESS = "198.51.100.1"

libc = ctypes.CDLL(None, use_errno=True)


def enter_netns(name):
    fd = os.open("/run/netns/" + name, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise OSError(code, "setns into %s: %s" % (name, os.strerror(code)))
    finally:
        os.close(fd)


def load_session(index):
    with open(FIXTURE_STATE) as source:
        state = json.load(source)
    return state, state["sessions"][index]


def errno_name(code):
    return "ok" if code == 0 else errno.errorcode.get(code, str(code))


def attach(channel):
    fd = os.open("/dev/ppp", os.O_RDWR)
    fcntl.ioctl(fd, PPPIOCATTCHAN, struct.pack("i", channel))
    return fd


def call(fd, request, peer=None):
    """Issue one bridge ioctl and return its errno name ("ok" on success)."""
    try:
        if peer is None:
            fcntl.ioctl(fd, request)
        else:
            fcntl.ioctl(fd, request, struct.pack("i", peer))
    except OSError as error:
        return errno_name(error.errno)
    return "ok"


def start_pinger(index):
    """Start pinging the LNS from the CPE of session index; return once ping runs."""
    pinger = subprocess.Popen(["ip", "netns", "exec", "cpe", "ping", "-q", "-n", "-i", "0.002",
                               "-I", "cpe%d" % index, LNS_PPP_ADDRESS],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    # ip execs ping after entering the namespace, keeping the pid.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with open("/proc/%d/comm" % pinger.pid) as comm:
                if comm.read().strip() == "ping":
                    break
        except OSError:
            break
        time.sleep(0.05)
    time.sleep(0.5)
    return pinger


def stop_pinger(pinger):
    """Stop ping and return its summary lines and the number of replies."""
    # ping prints its statistics on SIGINT, not on SIGTERM.
    pinger.send_signal(signal.SIGINT)
    output, _ = pinger.communicate(timeout=30)
    lines = output.decode(errors="replace").strip().splitlines()
    received = 0
    for line in lines:
        match = re.search(r"(\d+) received", line)
        if match:
            received = int(match.group(1))
    return lines[-2:], received


def race(index, rounds, hold_ms, flood):
    _state, session = load_session(index)
    pppoe_channel = session["pppoe"]["channel"]
    l2tp_channel = session["l2tp"]["channel"]

    enter_netns("lac")
    ends = {"a": attach(pppoe_channel), "b": attach(l2tp_channel)}
    peers = {"a": l2tp_channel, "b": pppoe_channel}

    pinger = None
    if flood:
        # In the lab, ping sent only about 12 requests in 4 s when its first
        # ones went unanswered, so it starts while the session is bridged.
        call(ends["a"], PPPIOCBRIDGECHAN, l2tp_channel)
        pinger = start_pinger(index)
    start = call(ends["a"], PPPIOCUNBRIDGECHAN)

    barrier = threading.Barrier(2)
    outcomes = {}

    def worker(end, request):
        barrier.wait()
        outcomes[end] = call(ends[end], request, peers[end] if request == PPPIOCBRIDGECHAN else None)

    def both(request):
        outcomes.clear()
        threads = [threading.Thread(target=worker, args=(end, request)) for end in ("a", "b")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sorted(outcomes.values())

    expected_bridge = ["EALREADY", "ok"]
    expected_unbridge = ["EINVAL", "ok"]
    unexpected = []
    started = time.monotonic()
    for number in range(rounds):
        bridged = both(PPPIOCBRIDGECHAN)
        if bridged != expected_bridge:
            unexpected.append({"round": number, "request": "bridge", "outcomes": bridged})
        time.sleep(hold_ms / 1000.0)
        unbridged = both(PPPIOCUNBRIDGECHAN)
        if unbridged != expected_unbridge:
            unexpected.append({"round": number, "request": "unbridge", "outcomes": unbridged})
    seconds = time.monotonic() - started

    # The last round must have left both ends unbridged.
    after = [call(ends["a"], PPPIOCUNBRIDGECHAN), call(ends["b"], PPPIOCUNBRIDGECHAN)]
    for fd in ends.values():
        os.close(fd)

    flood_summary, replies = (None, None)
    if pinger is not None:
        flood_summary, replies = stop_pinger(pinger)

    result = {
        "session": index, "pppoe_channel": pppoe_channel, "l2tp_channel": l2tp_channel,
        "rounds": rounds, "hold_ms": hold_ms, "seconds": round(seconds, 1), "unbridge_before": start,
        "unexpected": unexpected, "unbridge_after": after, "flood": flood_summary, "flood_replies": replies,
    }
    passed = not unexpected and after == ["EINVAL", "EINVAL"] and (replies is None or replies > 0)
    return result, passed


def pppoe_session_frame(destination, source, session_id, payload):
    header = struct.pack("!BBHH", PPPOE_VER_TYPE, PPPOE_CODE_SESSION, session_id, len(payload))
    return destination + source + struct.pack("!H", ETH_P_PPP_SES) + header + payload


def runt(index, sizes):
    state, session = load_session(index)
    lac_mac = bytes(int(part, 16) for part in state["lac_mac"].split(":"))
    cpe_mac = bytes(int(part, 16) for part in state["cpe_mac"].split(":"))
    session_id = session["pppoe"]["session_id"]

    payloads = []
    for size in sizes:
        if size == 0:
            payloads.append(b"")
        elif size == 1:
            payloads.append(b"\xc0")
        else:
            # LCP frames cut short. A whole LCP header needs 4 bytes after the protocol field.
            payloads.append(struct.pack("!H", PPP_LCP) + bytes([0x01, 0x7f, 0x00][:size - 2]))
    payloads.append(struct.pack("!H", PPP_IP) + b"\x45\x00")

    enter_netns("cpe")
    sender = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sender.bind(("cpe-eth0", 0))
    sent = []
    for payload in payloads:
        sender.send(pppoe_session_frame(lac_mac, cpe_mac, session_id, payload))
        sent.append(payload.hex())
    sender.close()
    return {"session": index, "session_id": session_id, "payloads_hex": sent}, True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    racing = sub.add_parser("race")
    racing.add_argument("index", type=int)
    racing.add_argument("--rounds", type=int, default=100)
    racing.add_argument("--hold-ms", type=float, default=10, help="how long each bridge stays up, in milliseconds")
    racing.add_argument("--flood", action="store_true")
    short = sub.add_parser("runt")
    short.add_argument("index", type=int)
    short.add_argument("--sizes", default="0,1,2,3,4,5",
                       help="payload sizes in bytes; 2 to 5 are LCP frames cut short")
    args = parser.parse_args(argv)

    if args.command == "race":
        result, passed = race(args.index, args.rounds, args.hold_ms, args.flood)
    else:
        sizes = [int(size) for size in args.sizes.split(",")]
        if any(size < 0 or size > 5 for size in sizes):
            parser.error("--sizes takes sizes from 0 to 5 bytes")
        result, passed = runt(args.index, sizes)
    print(json.dumps(result, indent=1))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
