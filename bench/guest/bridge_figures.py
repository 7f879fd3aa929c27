#!/usr/bin/env python3
"""Figures P1, P2 and memory of the l2tp.lac benchmarks, run as root inside a lab guest.

P1      ppp_bridge bridging N channel pairs by channel index, against a bare
        loop of the same syscalls per pair. Goal: at most 2.0 times the loop.
P2      the process scan and resolution of N PPPoE and N L2TP session
        descriptors, against P1's bridge time. Goal: at most 3 times.
memory  ppp_bridge's peak RSS while bridging 1,000 and 10,000 pairs, and
        whether the cost per pair grows no worse than linearly. The module
        process's peak is its VmHWM. ppp_bridge forks no child, and the
        figure fails if it waits for one, whose memory VmHWM would miss.

Every round bridges all pairs and then unbridges them, which also checks
that each pair was bridged. Rounds alternate the order of the measurements
and follow one untimed warm-up round. The session fixture (ppp_sessions.py)
provides the channels in the network namespace lac.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import benchlib
from benchlib import BenchError, CannotRun

from ansible_collections.l2tp.lac.plugins.module_utils import bridge_plan, pppox_sockaddr  # noqa: E402
from ansible_collections.l2tp.lac.plugins.module_utils.discovery import discover_pppox_sockets  # noqa: E402
from ansible_collections.l2tp.lac.plugins.module_utils.netns import run_in_netns  # noqa: E402

P1_GOAL = 2.0
P2_GOAL = 3.0
# The cost per pair at the largest size may exceed the one at the smallest by
# this factor and still count as linear growth, because RSS grows in whole
# pages and allocator arenas, which is noise at 1,000 pairs.
LINEAR_TOLERANCE = 1.10


def channel_pairs(sessions):
    return [(session["pppoe"]["channel"], session["l2tp"]["channel"]) for session in sessions]


def require_unbridged(target, expected, what):
    """Unbridge every pair, raise BenchError unless all of them were bridged, return the seconds."""
    _, not_bridged, seconds = run_in_netns(target, benchlib.unbridge_channels, [a for a, _ in expected])
    if not_bridged:
        raise BenchError("after %s, %d of %d pairs were not bridged" % (what, not_bridged, len(expected)))
    return seconds


def resolve_descriptors(raw_pairs, netns_label):
    """Scan processes and resolve every descriptor end to its channel, timing both steps.

    Runs inside the channels' namespace, the way ppp_bridge's batch does.
    Validation is not timed: P1 pays it too.
    """
    pairs = bridge_plan.validate_pairs(raw_pairs)

    started = time.perf_counter()
    scan = discover_pppox_sockets()
    scanned = time.perf_counter()

    index = bridge_plan.build_socket_index(scan["sockets"])
    channels = []
    problems = []
    for pair in pairs:
        resolved = [bridge_plan.resolve_end(end, index, netns_label) for end in (pair.a, pair.b)]
        problems.extend(end.problem for end in resolved if end.problem)
        channels.append((resolved[0].channel, resolved[1].channel))
    finished = time.perf_counter()

    return {"scan_seconds": scanned - started, "resolve_seconds": finished - scanned,
            "sockets": len(scan["sockets"]), "channels": channels, "problems": problems}


class BridgeBench:
    """The measurements of P1 and P2 over one set of fixture sessions."""

    def __init__(self, sessions):
        self.target = benchlib.lac_target()
        self.expected = channel_pairs(sessions)
        self.bridge_module = benchlib.import_bridge_module()
        self.channel_ends = [(benchlib.channel_end(a), benchlib.channel_end(b)) for a, b in self.expected]
        self.descriptor_ends = [(benchlib.pppoe_end(session["pppoe"]), benchlib.l2tp_end(session["l2tp"]))
                                for session in sessions]
        self.unbridge_seconds = []

    def check_kernel(self):
        reason = run_in_netns(self.target, benchlib.probe_bridging, *self.expected[0])
        if reason:
            raise CannotRun(reason)
        # Bridges left by an aborted run would make every bridge request fail.
        run_in_netns(self.target, benchlib.unbridge_channels, [a for a, _ in self.expected])

    def loop(self):
        seconds = run_in_netns(self.target, benchlib.bridge_loop, self.expected)
        self.unbridge_seconds.append(require_unbridged(self.target, self.expected, "the syscall loop"))
        return seconds

    def module(self, ends, what):
        params = benchlib.module_params(ends, benchlib.fresh_dir("records"))
        seconds, result = benchlib.run_bridge_module(self.bridge_module, params)
        benchlib.check_all_bridged(result, self.expected)
        require_unbridged(self.target, self.expected, what)
        return seconds

    def module_by_channel(self):
        return self.module(self.channel_ends, "ppp_bridge by channel index")

    def module_by_descriptor(self):
        return self.module(self.descriptor_ends, "ppp_bridge by descriptor")

    def resolve(self):
        raw_pairs = benchlib.module_params(self.descriptor_ends, None)["pairs"]
        outcome = run_in_netns(self.target, resolve_descriptors, raw_pairs, self.target.label)
        if outcome["problems"]:
            raise BenchError("%d descriptor(s) did not resolve; first: %s"
                             % (len(outcome["problems"]), outcome["problems"][0]))
        if [tuple(pair) for pair in outcome["channels"]] != self.expected:
            raise BenchError("descriptors resolved to other channels than the fixture created")
        return outcome


def run_rounds(steps, repeat):
    """Run one warm-up round and ``repeat`` timed rounds of ``steps`` {name: callable}.

    Each round starts one step later in the list than the previous one, so
    that no step always runs first. Returns {name: [result per round]}.
    """
    names = list(steps)
    for name in names:
        steps[name]()

    results = dict((name, []) for name in names)
    for round_number in range(repeat):
        shift = round_number % len(names)
        for name in names[shift:] + names[:shift]:
            results[name].append(steps[name]())
        print("  round %d of %d done" % (round_number + 1, repeat), flush=True)
    return results


def measure_p1_p2(figures, pair_count, repeat, json_path):
    guest = benchlib.describe_guest()
    state = benchlib.fixture_sessions(pair_count, exact=True)
    bench = BridgeBench(state["sessions"][:pair_count])
    bench.check_kernel()

    steps = {"module": bench.module_by_channel}
    if "p1" in figures:
        steps["loop"] = bench.loop
    if "p2" in figures:
        steps["resolve"] = bench.resolve
        steps["descriptor module"] = bench.module_by_descriptor
    print("  measuring %s: %d pairs, 1 warm-up round and %d timed rounds"
          % (", ".join(steps), pair_count, repeat), flush=True)
    results = run_rounds(steps, repeat)

    module_median = benchlib.median(results["module"])
    if "p1" in figures:
        results["unbridge"] = bench.unbridge_seconds[-repeat:]
        report_p1(guest, pair_count, results, module_median, json_path)
    if "p2" in figures:
        report_p2(guest, pair_count, results, module_median, json_path)


def report_p1(guest, pair_count, results, module_median, json_path):
    loop_median = benchlib.median(results["loop"])
    ratio = module_median / loop_median
    print()
    print("P1  bridging %d channel pairs: ppp_bridge against a bare syscall loop" % pair_count)
    print("    %s" % benchlib.guest_line(guest))
    print("    ppp_bridge, BridgeTask.run on channel indices:   median %.3f s   runs (s): %s"
          % (module_median, benchlib.format_runs(results["module"])))
    print("    loop of open, ATTCHAN, BRIDGECHAN, close:        median %.3f s   runs (s): %s"
          % (loop_median, benchlib.format_runs(results["loop"])))
    print("    per pair: ppp_bridge %.0f us, loop %.0f us"
          % (module_median / pair_count * 1e6, loop_median / pair_count * 1e6))
    print("    ratio ppp_bridge / loop: %.2f   goal at most %.1f: %s"
          % (ratio, P1_GOAL, benchlib.verdict(ratio, P1_GOAL)))
    print("    for reference, unbridging the %d pairs in a bare loop: median %.3f s   runs (s): %s"
          % (pair_count, benchlib.median(results["unbridge"]), benchlib.format_runs(results["unbridge"])))
    benchlib.append_json(json_path, {
        "figure": "P1", "guest": guest, "pairs": pair_count,
        "module_seconds": results["module"], "loop_seconds": results["loop"],
        "unbridge_loop_seconds": results["unbridge"],
        "module_median": module_median, "loop_median": loop_median,
        "ratio": ratio, "goal": P1_GOAL, "met": ratio <= P1_GOAL})


def profile_module(pair_count):
    """Print where one ppp_bridge run on channel indices spends its time, by cProfile."""
    import cProfile
    import pstats

    state = benchlib.fixture_sessions(pair_count, exact=True)
    bench = BridgeBench(state["sessions"][:pair_count])
    bench.check_kernel()
    params = benchlib.module_params(bench.channel_ends, benchlib.fresh_dir("records"))
    profiler = cProfile.Profile()
    profiler.enable()
    benchlib.run_bridge_module(bench.bridge_module, params)
    profiler.disable()
    require_unbridged(bench.target, bench.expected, "the profiled ppp_bridge run")
    print()
    print("Profile of one ppp_bridge run on %d channel pairs (cProfile, times inflated by profiling):" % pair_count)
    pstats.Stats(profiler, stream=sys.stdout).sort_stats("cumulative").print_stats(15)


def report_p2(guest, pair_count, results, module_median, json_path):
    resolve_runs = [outcome["scan_seconds"] + outcome["resolve_seconds"] for outcome in results["resolve"]]
    scan_runs = [outcome["scan_seconds"] for outcome in results["resolve"]]
    lookup_runs = [outcome["resolve_seconds"] for outcome in results["resolve"]]
    resolve_median = benchlib.median(resolve_runs)
    descriptor_median = benchlib.median(results["descriptor module"])
    ratio = resolve_median / module_median
    sockets = results["resolve"][0]["sockets"]
    print()
    print("P2  resolving %d sessions by descriptor (%d PPPoE and %d L2TP ends) against P1's bridge time"
          % (pair_count, pair_count, pair_count))
    print("    %s" % benchlib.guest_line(guest))
    print("    process scan + resolution:                       median %.3f s   runs (s): %s"
          % (resolve_median, benchlib.format_runs(resolve_runs)))
    print("      of which the scan (%d PPPoX sockets found):    median %.3f s, resolution median %.3f s"
          % (sockets, benchlib.median(scan_runs), benchlib.median(lookup_runs)))
    print("    ppp_bridge on channel indices (P1's bridge time): median %.3f s   runs (s): %s"
          % (module_median, benchlib.format_runs(results["module"])))
    print("    ratio resolution / bridge: %.2f   goal at most %.1f: %s"
          % (ratio, P2_GOAL, benchlib.verdict(ratio, P2_GOAL)))
    print("    for reference, ppp_bridge by descriptor end to end: median %.3f s   runs (s): %s"
          % (descriptor_median, benchlib.format_runs(results["descriptor module"])))
    benchlib.append_json(json_path, {
        "figure": "P2", "guest": guest, "pairs": pair_count, "sockets_found": sockets,
        "resolve_seconds": resolve_runs, "scan_seconds": scan_runs, "lookup_seconds": lookup_runs,
        "module_seconds": results["module"], "descriptor_module_seconds": results["descriptor module"],
        "resolve_median": resolve_median, "module_median": module_median,
        "descriptor_module_median": descriptor_median,
        "ratio": ratio, "goal": P2_GOAL, "met": ratio <= P2_GOAL})


# ---------------------------------------------------------------------------
# Memory


def peak_rss_kib():
    """Return this process's peak RSS since it started its program (VmHWM), in KiB.

    ru_maxrss (RUSAGE_SELF) would also count the RSS that the launching
    process had when it forked, because Linux carries that high-water mark
    across execve. VmHWM belongs to this address space alone.
    """
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise BenchError("/proc/self/status has no VmHWM line")


class ChildPeaks:
    """The peak RSS (ru_maxrss, KiB) of every child this process waits for, by pid.

    Installed as os.waitpid, it waits with os.wait4 instead, which also
    returns the child's resource usage. RUSAGE_CHILDREN would merge all
    children ever waited for into one maximum.
    """

    def __init__(self):
        self.kib = {}
        self.original_waitpid = os.waitpid

    def waitpid(self, pid, options):
        waited, status, usage = os.wait4(pid, options)
        if waited:
            self.kib[waited] = usage.ru_maxrss
        return waited, status


def memory_run(channels_path):
    """Bridge the pairs listed in ``channels_path`` once and print peak RSS figures as JSON.

    Runs in a fresh process, because peak RSS is a high-water mark. The
    baseline is taken after the imports, the C library load and reading the
    channel list, so the growth covers the module's parameters and its work.
    ppp_bridge must fork no child, because VmHWM would not count its memory.
    """
    bridge_module = benchlib.import_bridge_module()
    # Loading libc runs ldconfig in a subprocess (ctypes.util.find_library).
    # Done here, it stays out of the figures.
    pppox_sockaddr.libc()
    with open(channels_path) as source:
        expected = [tuple(int(word) for word in line.split()) for line in source]
    baseline_kib = peak_rss_kib()

    child_peaks = ChildPeaks()
    os.waitpid = child_peaks.waitpid
    try:
        ends = [(benchlib.channel_end(a), benchlib.channel_end(b)) for a, b in expected]
        params = benchlib.module_params(ends, benchlib.fresh_dir("records"))
        seconds, result = benchlib.run_bridge_module(bridge_module, params)
    finally:
        os.waitpid = child_peaks.original_waitpid
    benchlib.check_all_bridged(result, expected)
    if child_peaks.kib:
        raise BenchError("ppp_bridge waited for %d child process(es), whose memory this figure does not count"
                         % len(child_peaks.kib))

    print(json.dumps({
        "pairs": len(expected),
        "seconds": seconds,
        "baseline_kib": baseline_kib,
        "module_process_kib": peak_rss_kib(),
    }))


def measure_memory(sizes, repeat, json_path):
    """Measure the peak RSS of ppp_bridge runs of each size, ``repeat`` times.

    Each run bridges sessions that no earlier run used, so the fixture runs
    repeat * sum(sizes) sessions. Unbridging between runs would cost far more
    than the runs, because the kernel waits for an RCU grace period on every
    unbridge (synchronize_rcu in ppp_unbridge_channels). The pairs stay
    bridged afterwards, until the fixture or the guest stops.
    """
    guest = benchlib.describe_guest()
    needed = repeat * sum(sizes)
    state = benchlib.fixture_sessions(needed, exact=False)
    target = benchlib.lac_target()
    all_pairs = channel_pairs(state["sessions"])[:needed]
    reason = run_in_netns(target, benchlib.probe_bridging, *all_pairs[0])
    if reason:
        raise CannotRun(reason)
    # A reused fixture may still carry the bridges of an earlier memory figure.
    _, _, seconds = run_in_netns(target, benchlib.unbridge_channels, [a for a, _ in all_pairs])
    print("  checked %d pairs for old bridges in %.0f s" % (needed, seconds), flush=True)

    runs = dict((size, []) for size in sizes)
    next_session = 0
    for _ in range(repeat):
        for size in sizes:
            pairs = all_pairs[next_session:next_session + size]
            next_session += size
            channels_path = os.path.join(benchlib.fresh_dir("memory"), "channels.txt")
            with open(channels_path, "w") as out:
                out.writelines("%d %d\n" % pair for pair in pairs)
            completed = subprocess.run([sys.executable, os.path.abspath(__file__), "_memory-run", channels_path],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
            if completed.returncode != 0:
                raise BenchError("the memory run with %d pairs failed: %s" % (size, completed.stderr.strip()))
            runs[size].append(json.loads(completed.stdout))
            print("  %d pairs measured" % size, flush=True)

    report_memory(guest, sizes, runs, json_path)


def summarize_memory(size_runs):
    """Return the medians of one size's runs: peak, growth over the baseline and cost per pair."""
    size = size_runs[0]["pairs"]
    peaks = [run["module_process_kib"] for run in size_runs]
    growth = [peak - run["baseline_kib"] for peak, run in zip(peaks, size_runs)]
    return {
        "pairs": size,
        "peak_kib": benchlib.median(peaks),
        "baseline_kib": benchlib.median([run["baseline_kib"] for run in size_runs]),
        "growth_kib": benchlib.median(growth),
        "kib_per_pair": benchlib.median(growth) / size,
        "seconds": benchlib.median([run["seconds"] for run in size_runs]),
    }


def report_memory(guest, sizes, runs, json_path):
    summaries = [summarize_memory(runs[size]) for size in sizes]
    print()
    print("Memory  ppp_bridge's peak RSS while bridging by channel index, median of %d run(s) per size"
          % len(runs[sizes[0]]))
    print("    %s" % benchlib.guest_line(guest))
    for summary in summaries:
        print("    %6d pairs: peak %6.1f MiB (baseline %.1f); "
              "growth %.1f MiB = %.2f KiB per pair; run %.2f s"
              % (summary["pairs"], summary["peak_kib"] / 1024, summary["baseline_kib"] / 1024,
                 summary["growth_kib"] / 1024, summary["kib_per_pair"], summary["seconds"]))

    smallest, largest = summaries[0], summaries[-1]
    ratio = largest["kib_per_pair"] / smallest["kib_per_pair"]
    linear = ratio <= LINEAR_TOLERANCE
    print("    cost per pair at %d against %d pairs: ratio %.2f (at most %.2f counts as linear): %s"
          % (largest["pairs"], smallest["pairs"], ratio, LINEAR_TOLERANCE,
             "no worse than linear" if linear else "WORSE than linear"))
    benchlib.append_json(json_path, {"figure": "memory", "guest": guest, "sizes": summaries,
                                     "runs": dict((str(size), runs[size]) for size in sizes),
                                     "per_pair_ratio": ratio, "linear_tolerance": LINEAR_TOLERANCE,
                                     "linear": linear})


def parse_sizes(text):
    sizes = sorted(int(word) for word in text.split(","))
    if len(sizes) < 2 or sizes[0] < 1:
        raise argparse.ArgumentTypeError("give two or more positive sizes, such as 1000,10000")
    return sizes


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("figures", nargs="+", choices=("p1", "p2", "memory"), help="the figures to measure")
    parser.add_argument("--pairs", type=int, default=1000, help="pairs in P1 and P2 (default 1000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds of P1 and P2 (default 5)")
    parser.add_argument("--memory-sizes", type=parse_sizes, default=[1000, 10000],
                        help="comma-separated pair counts of the memory figure (default 1000,10000)")
    parser.add_argument("--memory-repeat", type=int, default=1,
                        help="runs per memory size, each on sessions of its own (default 1)")
    parser.add_argument("--profile", action="store_true",
                        help="after P1 or P2, print a cProfile summary of one ppp_bridge run")
    parser.add_argument("--json", help="append each figure's result as a JSON line to this file")
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_memory-run"]:
        # One memory measurement in a fresh process, started by measure_memory.
        memory_run(argv[1])
        return 0
    args = parser.parse_args(argv)

    try:
        if "p1" in args.figures or "p2" in args.figures:
            measure_p1_p2(args.figures, args.pairs, args.repeat, args.json)
            if args.profile:
                profile_module(args.pairs)
        if "memory" in args.figures:
            measure_memory(args.memory_sizes, args.memory_repeat, args.json)
    except CannotRun as exc:
        print("cannot measure %s: %s" % (", ".join(args.figures), exc), flush=True)
        return benchlib.EXIT_CANNOT_RUN
    except BenchError as exc:
        print("benchmark failed: %s" % exc, file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
