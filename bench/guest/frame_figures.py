#!/usr/bin/env python3
"""Figure P4 of the l2tp.lac benchmarks: frames per second through the kernel bridge
against a userspace relay, run as root inside a lab guest.

The path is the session fixture's first session (ppp_sessions.py):

  cpe: sender --cpe-eth0--> lac: PPPoE channel ==> L2TP channel --lac-lns--> lns: L2TP session counters

The sender, in namespace cpe, writes PPPoE session frames (the session's id,
from the CPE's MAC to the lac's) to cpe-eth0 through an AF_PACKET TX ring. In
namespace lac the fixture's holder owns the PPPoE and PPPoL2TP sockets, both
bound to their PPP channels. The frames cross from one channel to the other
by the kernel bridge (PPPIOCBRIDGECHAN) or by a relay process. The relay
attaches a /dev/ppp descriptor to each channel, reads the frames that the
PPPoE channel queues and writes them to the L2TP channel, which is how a
userspace LAC without the bridge ioctl forwards them. The L2TP session's
rx_packets counter in namespace lns, read over generic netlink, counts what
arrived.

Besides frames per second, each run reports the guest's busy CPU time per
delivered frame. The bridged path runs on the sender's vCPU alone, while the
relay runs on a second vCPU in parallel, so the relay's rate depends on how
much host CPU that second vCPU gets; its CPU cost per frame depends less on it.

Both modes send the same number of frames of the same size, in alternating
order after one warm-up run each. On a kernel that cannot bridge, only the
relay is measured. The fixture runs a fixed number of sessions (default
1,000, as in P1 and P2), because the rate falls as the session count grows.
One likely reason is that PPPoE finds each received frame's session in a
hash table of 16 buckets (PPPOE_HASH_BITS 4 in drivers/net/ppp/pppoe.c).
"""

import argparse
import json
import mmap
import os
import select
import socket
import struct
import sys
import time
import traceback

import benchlib
from benchlib import BenchError

from ansible_collections.l2tp.lac.plugins.module_utils.netns import run_in_netns  # noqa: E402

# include/uapi/linux/if_ether.h and ppp_defs.h.
ETH_P_PPP_SES = 0x8864
PPP_IP = 0x0021
PPPOE_VERSION_TYPE = 0x11
PPPOE_CODE_SESSION = 0x00

# include/uapi/linux/if_packet.h, the TPACKET_V2 transmit ring.
SOL_PACKET = 263
PACKET_VERSION = 10
PACKET_TX_RING = 13
TPACKET_V2 = 1
TP_STATUS_AVAILABLE = 0
TP_STATUS_SEND_REQUEST = 1
# A TX frame's data starts at TPACKET2_HDRLEN - sizeof(struct sockaddr_ll):
# the 32-byte struct tpacket2_hdr, aligned to 16.
TPACKET2_DATA_OFFSET = 32
RING_SLOT_SIZE = 2048
RING_BLOCK_SIZE = 65536
RING_SLOTS = 1024

CPE_INTERFACE = "cpe-eth0"
LNS_NETNS = "lns"
PPP_READ_SIZE = 4096

CHILD_TIMEOUT = 300.0
POLL_INTERVAL = 0.01
# Delivery is over once the counter has not moved for this long.
QUIET_PERIOD = 0.5
SETTLE_TIME = 0.2


def monotonic():
    # CLOCK_MONOTONIC is system-wide, so the sender's timestamps compare with the driver's.
    return time.clock_gettime(time.CLOCK_MONOTONIC)


def busy_cpu_seconds():
    """Return the CPU time all of the guest's CPUs have spent busy since boot, from /proc/stat.

    Busy is user, nice, system, irq and softirq time. /proc/stat counts in
    USER_HZ ticks, which os.sysconf("SC_CLK_TCK") gives.
    """
    with open("/proc/stat") as stat:
        fields = stat.readline().split()
    if fields[0] != "cpu":
        raise BenchError("the first line of /proc/stat is not the 'cpu' total: %r" % " ".join(fields))
    user, nice, system, _idle, _iowait, irq, softirq = (int(value) for value in fields[1:8])
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def mac_bytes(mac):
    return bytes(int(part, 16) for part in mac.split(":"))


def pppoe_session_frame(destination_mac, source_mac, session_id, ppp_size):
    """Return an Ethernet frame carrying a PPP frame of ``ppp_size`` bytes in a PPPoE session.

    The PPP frame is an IPv4 protocol field and zero bytes. Nothing on the
    path looks inside it.
    """
    ppp = struct.pack("!H", PPP_IP) + bytes(ppp_size - 2)
    pppoe = struct.pack("!BBHH", PPPOE_VERSION_TYPE, PPPOE_CODE_SESSION, session_id, len(ppp))
    return mac_bytes(destination_mac) + mac_bytes(source_mac) + struct.pack("!H", ETH_P_PPP_SES) + pppoe + ppp


class TxRing:
    """A PACKET_TX_RING on a bound AF_PACKET socket, every slot holding the same frame.

    One send() hands the kernel every slot marked for sending, so the sender
    costs one system call per ring of frames instead of one per frame.
    """

    def __init__(self, sock, frame):
        if TPACKET2_DATA_OFFSET + len(frame) > RING_SLOT_SIZE:
            raise BenchError("a frame of %d bytes does not fit a ring slot of %d bytes" % (len(frame), RING_SLOT_SIZE))
        self.sock = sock
        blocks = RING_SLOTS * RING_SLOT_SIZE // RING_BLOCK_SIZE
        sock.setsockopt(SOL_PACKET, PACKET_VERSION, TPACKET_V2)
        sock.setsockopt(SOL_PACKET, PACKET_TX_RING,
                        struct.pack("IIII", RING_BLOCK_SIZE, blocks, RING_SLOT_SIZE, RING_SLOTS))
        self.ring = mmap.mmap(sock.fileno(), RING_BLOCK_SIZE * blocks, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
        for slot in range(RING_SLOTS):
            start = slot * RING_SLOT_SIZE
            # struct tpacket2_hdr: tp_status, then tp_len.
            struct.pack_into("II", self.ring, start, TP_STATUS_AVAILABLE, len(frame))
            self.ring[start + TPACKET2_DATA_OFFSET:start + TPACKET2_DATA_OFFSET + len(frame)] = frame
        # The kernel walks the ring from slot 0 and wraps around, and so does send().
        self.head = 0

    def send(self, count):
        """Send ``count`` frames; return when the kernel has transmitted all of them."""
        remaining = count
        while remaining:
            batch = min(remaining, RING_SLOTS)
            for _ in range(batch):
                struct.pack_into("I", self.ring, self.head * RING_SLOT_SIZE, TP_STATUS_SEND_REQUEST)
                self.head = (self.head + 1) % RING_SLOTS
            # A blocking send waits until every marked slot has gone out.
            self.sock.send(b"")
            remaining -= batch

        stuck = [slot for slot in range(RING_SLOTS)
                 if struct.unpack_from("I", self.ring, slot * RING_SLOT_SIZE)[0] != TP_STATUS_AVAILABLE]
        if stuck:
            status = struct.unpack_from("I", self.ring, stuck[0] * RING_SLOT_SIZE)[0]
            raise BenchError("%d TX ring slots were not sent; slot %d has status %#x" % (len(stuck), stuck[0], status))


# ---------------------------------------------------------------------------
# Helper processes


class Child:
    """A forked helper process, with a control pipe to it and a report pipe from it.

    ``function(control, reports, *args)`` runs in the child with the two
    pipes as text files and writes one JSON object per line to ``reports``.
    """

    def __init__(self, name, function, *args):
        self.name = name
        control_read, control_write = os.pipe()
        report_read, report_write = os.pipe()
        pid = os.fork()
        if pid == 0:
            status = 0
            try:
                os.close(control_write)
                os.close(report_read)
                function(os.fdopen(control_read, "r"), os.fdopen(report_write, "w"), *args)
            except BaseException:  # pylint: disable=broad-except
                traceback.print_exc()
                status = 1
            finally:
                os._exit(status)

        os.close(control_read)
        os.close(report_write)
        self.pid = pid
        self.control = os.fdopen(control_write, "w")
        self.reports = os.fdopen(report_read, "r")

    def tell(self, word):
        self.control.write(word + "\n")
        self.control.flush()

    def receive(self):
        ready, _, _ = select.select([self.reports], [], [], CHILD_TIMEOUT)
        if not ready:
            raise BenchError("the %s (pid %d) sent nothing within %.0f s" % (self.name, self.pid, CHILD_TIMEOUT))
        line = self.reports.readline()
        if not line:
            raise BenchError("the %s (pid %d) exited early; its traceback is above" % (self.name, self.pid))
        return json.loads(line)

    def finish(self):
        self.control.close()
        self.reports.close()
        _, status = os.waitpid(self.pid, 0)
        if status != 0:
            raise BenchError("the %s (pid %d) exited with status %d" % (self.name, self.pid, status))


def report(reports, **fields):
    reports.write(json.dumps(fields) + "\n")
    reports.flush()


def run_sender(control, reports, frame, count):
    """Send ``count`` copies of ``frame`` from the cpe namespace once "go" arrives on ``control``.

    The main function of the sender Child.
    """
    benchlib.enter_netns("cpe")
    # Protocol 0: this socket receives nothing, it only transmits.
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    sock.bind((CPE_INTERFACE, 0))
    ring = TxRing(sock, frame)
    report(reports, ready=True)

    if control.readline().strip() != "go":
        return
    started = monotonic()
    ring.send(count)
    finished = monotonic()
    report(reports, started=started, finished=finished, sent=count)


def run_relay(control, reports, pppoe_channel, l2tp_channel):
    """Forward frames between two channels in the lac namespace until the control pipe closes.

    The main function of the relay Child.

    Each channel gets its own non-blocking /dev/ppp descriptor. A frame that
    arrives on a channel with no bridge and no PPP unit waits in the
    channel's queue, which keeps at most 32 frames and drops the oldest.
    read() takes it from there, and write() on the other descriptor
    transmits it.
    """
    benchlib.enter_netns("lac")
    pppoe_fd = benchlib.attach_channel(pppoe_channel, nonblocking=True)
    l2tp_fd = benchlib.attach_channel(l2tp_channel, nonblocking=True)
    peer = {pppoe_fd: l2tp_fd, l2tp_fd: pppoe_fd}
    relayed = {pppoe_fd: 0, l2tp_fd: 0}
    write_errors = 0

    poller = select.poll()
    for fd in (pppoe_fd, l2tp_fd, control.fileno()):
        poller.register(fd, select.POLLIN)
    report(reports, ready=True)

    running = True
    while running:
        for fd, _ in poller.poll():
            if fd == control.fileno():
                running = False
                continue
            while True:
                try:
                    frame = os.read(fd, PPP_READ_SIZE)
                except BlockingIOError:
                    break
                try:
                    os.write(peer[fd], frame)
                    relayed[fd] += 1
                except OSError:
                    write_errors += 1

    report(reports, cpe_to_lns=relayed[pppoe_fd], lns_to_cpe=relayed[l2tp_fd], write_errors=write_errors)


# ---------------------------------------------------------------------------
# Measurement


class SessionCounter:
    """The rx_packets counter of one L2TP session in the lns namespace, over generic netlink."""

    def __init__(self, tunnel_id, session_id):
        from pyroute2 import L2tp
        from pyroute2.netlink import NLM_F_REQUEST
        from pyroute2.netlink.generic.l2tp import L2TP_CMD_SESSION_GET, L2TP_GENL_VERSION, l2tpmsg

        with benchlib.InNetns(LNS_NETNS):
            self.l2tp = L2tp()
        # One session by its ids. pyroute2's get_session dumps every session instead.
        self.request = l2tpmsg()
        self.request["cmd"] = L2TP_CMD_SESSION_GET
        self.request["version"] = L2TP_GENL_VERSION
        self.request["attrs"].append(["L2TP_ATTR_CONN_ID", tunnel_id])
        self.request["attrs"].append(["L2TP_ATTR_SESSION_ID", session_id])
        self.flags = NLM_F_REQUEST
        self.label = "L2TP session %d in tunnel %d (namespace %s)" % (session_id, tunnel_id, LNS_NETNS)

    def rx_packets(self):
        replies = self.l2tp.nlm_request(self.request, msg_type=self.l2tp.prid, msg_flags=self.flags)
        if len(replies) != 1:
            raise BenchError("reading %s returned %d replies, expected 1" % (self.label, len(replies)))
        return replies[0].get_attr("L2TP_ATTR_STATS").get_attr("L2TP_ATTR_RX_PACKETS")


class FrameBench:
    """One P4 setup: the first fixture session, its frame and the lns counter."""

    def __init__(self, state, frame_count, ppp_size):
        session = state["sessions"][0]
        self.target = benchlib.lac_target()
        self.pppoe_channel = session["pppoe"]["channel"]
        self.l2tp_channel = session["l2tp"]["channel"]
        self.frame_count = frame_count
        self.frame = pppoe_session_frame(state["lac_mac"], state["cpe_mac"], session["pppoe"]["session_id"],
                                         ppp_size)
        self.counter = SessionCounter(session["l2tp"]["peer_tunnel_id"], session["l2tp"]["peer_session_id"])

    def bridging_problem(self):
        return run_in_netns(self.target, benchlib.probe_bridging, self.pppoe_channel, self.l2tp_channel)

    def run(self, mode, count):
        """Send ``count`` frames across the lac in ``mode`` ("bridge" or "relay") and return the figures."""
        relay = None
        if mode == "bridge":
            run_in_netns(self.target, benchlib.bridge_loop, [(self.pppoe_channel, self.l2tp_channel)])
        else:
            relay = Child("relay", run_relay, self.pppoe_channel, self.l2tp_channel)
            relay.receive()

        try:
            sender = Child("sender", run_sender, self.frame, count)
            sender.receive()
            # Let a relay drain frames queued on the channel before this run.
            time.sleep(SETTLE_TIME)
            baseline = self.counter.rx_packets()
            busy_before = busy_cpu_seconds()
            sender.tell("go")
            sent = sender.receive()
            sender.finish()
            delivered, delivered_at = self.wait_for_delivery(baseline, count)
            busy_seconds = busy_cpu_seconds() - busy_before
        finally:
            if relay is not None:
                relay.control.close()
                relayed = relay.receive()
                relay.finish()
            else:
                _, not_bridged, _ = run_in_netns(self.target, benchlib.unbridge_channels, [self.pppoe_channel])
                if not_bridged:
                    raise BenchError("the bridge of channel %d was gone after the run" % self.pppoe_channel)

        seconds = delivered_at - sent["started"]
        figures = {
            "mode": mode, "sent": count, "delivered": delivered, "seconds": seconds,
            "fps": delivered / seconds,
            "offered_fps": count / (sent["finished"] - sent["started"]),
            "busy_cpu_seconds": busy_seconds,
            "busy_cpu_us_per_frame": busy_seconds / delivered * 1e6 if delivered else None,
        }
        if relay is not None:
            figures["relayed"] = relayed["cpe_to_lns"]
            figures["relay_write_errors"] = relayed["write_errors"]
        return figures

    def wait_for_delivery(self, baseline, count):
        """Poll the lns counter until it reaches ``count`` new frames or stops moving.

        Returns the frames delivered and the time of the first poll that saw
        the final count, which is at most one poll late.
        """
        delivered = self.counter.rx_packets() - baseline
        changed_at = monotonic()
        while delivered < count:
            time.sleep(POLL_INTERVAL)
            now_delivered = self.counter.rx_packets() - baseline
            now = monotonic()
            if now_delivered != delivered:
                delivered = now_delivered
                changed_at = now
            elif now - changed_at >= QUIET_PERIOD:
                break
        return delivered, changed_at


def run_rounds(bench, modes, frame_count, repeat, warm_up_frames):
    """Return {mode: [figures per round]} after one warm-up run per mode, alternating the order."""
    for mode in modes:
        bench.run(mode, warm_up_frames)

    results = dict((mode, []) for mode in modes)
    for round_number in range(repeat):
        shift = round_number % len(modes)
        for mode in modes[shift:] + modes[:shift]:
            results[mode].append(bench.run(mode, frame_count))
        print("  round %d of %d done" % (round_number + 1, repeat), flush=True)
    return results


def describe_mode(figures_list):
    fps_runs = [figures["fps"] for figures in figures_list]
    cost_runs = [figures["busy_cpu_us_per_frame"] for figures in figures_list
                 if figures["busy_cpu_us_per_frame"] is not None]
    return {
        "fps_median": benchlib.median(fps_runs),
        "fps_runs": fps_runs,
        "busy_cpu_us_per_frame_median": benchlib.median(cost_runs) if cost_runs else None,
        "busy_cpu_us_per_frame_runs": cost_runs,
        "delivered_runs": [figures["delivered"] for figures in figures_list],
        "offered_fps_median": benchlib.median([figures["offered_fps"] for figures in figures_list]),
        "runs": figures_list,
    }


def print_mode(label, summary, frame_count):
    print("    %-30s median %8.0f fps   runs (fps): %s"
          % (label, summary["fps_median"], benchlib.format_runs(summary["fps_runs"], "%.0f")))
    print("    %-30s delivered per run: %s of %d; sender offered median %.0f fps"
          % ("", ", ".join(str(count) for count in summary["delivered_runs"]), frame_count,
             summary["offered_fps_median"]))
    if summary["busy_cpu_us_per_frame_median"] is not None:
        print("    %-30s guest CPU busy per delivered frame: median %.1f us   runs (us): %s"
              % ("", summary["busy_cpu_us_per_frame_median"],
                 benchlib.format_runs(summary["busy_cpu_us_per_frame_runs"], "%.1f")))


def measure_p4(session_count, frame_count, ppp_size, repeat, json_path):
    guest = benchlib.describe_guest()
    state = benchlib.fixture_sessions(session_count, exact=True)
    bench = FrameBench(state, frame_count, ppp_size)
    problem = bench.bridging_problem()
    modes = ["relay"] if problem else ["bridge", "relay"]
    if problem:
        print("  %s: measuring the relay only" % problem, flush=True)

    warm_up_frames = min(frame_count, 5000)
    print("  measuring %s: %d frames of %d bytes, %d warm-up frames per mode, %d timed rounds"
          % (" and ".join(modes), frame_count, len(bench.frame), warm_up_frames, repeat), flush=True)
    results = run_rounds(bench, modes, frame_count, repeat, warm_up_frames)
    summaries = dict((mode, describe_mode(results[mode])) for mode in modes)

    print()
    print("P4  frames per second from cpe to lns: kernel bridge against a userspace relay")
    print("    %s" % benchlib.guest_line(guest))
    print("    %d frames per run, each %d bytes on the wire (a %d-byte PPP frame in PPPoE), on session 1 of %d; "
          "counted by the lns L2TP session's rx_packets" % (frame_count, len(bench.frame), ppp_size, session_count))
    record = {"figure": "P4", "guest": guest, "sessions": session_count, "frames": frame_count,
              "ethernet_bytes": len(bench.frame), "ppp_bytes": ppp_size, "modes": summaries}
    if "bridge" in summaries:
        print_mode("kernel bridge (PPPIOCBRIDGECHAN)", summaries["bridge"], frame_count)
    else:
        print("    kernel bridge: not measured: %s" % problem)
        record["bridge_problem"] = problem
    print_mode("relay (Python, /dev/ppp fds)", summaries["relay"], frame_count)
    relayed = [figures["relayed"] for figures in results["relay"]]
    print("    %-30s relayed per run: %s; frames beyond the channel queue's 32 are dropped before the relay"
          % ("", ", ".join(str(count) for count in relayed)))
    if "bridge" in summaries:
        ratio = summaries["bridge"]["fps_median"] / summaries["relay"]["fps_median"]
        record["ratio"] = ratio
        print("    ratio bridge / relay: %.2f" % ratio)
        bridge_cost = summaries["bridge"]["busy_cpu_us_per_frame_median"]
        relay_cost = summaries["relay"]["busy_cpu_us_per_frame_median"]
        if bridge_cost and relay_cost:
            record["cpu_ratio"] = relay_cost / bridge_cost
            print("    guest CPU per delivered frame, relay / bridge: %.2f" % record["cpu_ratio"])
    print("    NOTE: the relay is Python (a poll, a read and a write per frame), so it is slower than a C relay")
    benchlib.append_json(json_path, record)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100000, help="frames per run (default 100000)")
    parser.add_argument("--ppp-size", type=int, default=100,
                        help="bytes of each PPP frame, protocol field included (default 100)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument("--sessions", type=int, default=1000,
                        help="number of fixture sessions; the first one carries the frames (default 1000)")
    parser.add_argument("--json", help="append the result as a JSON line to this file")
    args = parser.parse_args(argv)
    if args.ppp_size < 2:
        parser.error("--ppp-size must be at least 2, the PPP protocol field")

    try:
        measure_p4(args.sessions, args.frames, args.ppp_size, args.repeat, args.json)
    except BenchError as exc:
        print("benchmark failed: %s" % exc, file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
