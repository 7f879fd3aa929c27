"""Shared parts of the l2tp.lac benchmarks, which run as root inside a lab guest.

run.sh copies this folder to /root/l2tp-bench/bench in the guest, next to the
collection's plugins (/root/l2tp-bench/ansible_collections/l2tp/lac/plugins)
and the session fixture (/root/l2tp-bench/ppp_sessions.py). Works on Python
3.9 (Debian 11) and later.
"""

import ctypes
import errno
import fcntl
import json
import os
import platform
import shutil
import statistics
import struct
import subprocess
import sys
import time
import types

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH_DIR)
FIXTURE = os.path.join(ROOT, "ppp_sessions.py")
FIXTURE_STATE = "/run/l2tp-lac-fixture/sessions.json"
WORK_DIR = "/run/l2tp-lac-bench"

# The collection is importable as ansible_collections.l2tp.lac from ROOT.
sys.path.insert(0, ROOT)

from ansible_collections.l2tp.lac.plugins.module_utils.netns import resolve_netns  # noqa: E402
from ansible_collections.l2tp.lac.plugins.module_utils.ppp_ioctl import (  # noqa: E402
    PPP_DEVICE,
    PPPIOCATTCHAN,
    PPPIOCBRIDGECHAN,
    PPPIOCUNBRIDGECHAN,
)

LAC_NETNS = "lac"
CLONE_NEWNET = 0x40000000

# Exit status of a figure that cannot run on this kernel, as opposed to one that failed.
EXIT_CANNOT_RUN = 3

_libc = ctypes.CDLL(None, use_errno=True)


class BenchError(Exception):
    """A benchmark step failed or measured something other than what it should."""


class CannotRun(Exception):
    """The figure cannot run on this guest, for example because the kernel cannot bridge."""


# ---------------------------------------------------------------------------
# Guest, fixture and namespaces


def describe_guest():
    """Return what a result must name: kernel, distribution, CPUs, Python and the UTC date."""
    pretty_name = "unknown distribution"
    try:
        with open("/etc/os-release") as source:
            for line in source:
                if line.startswith("PRETTY_NAME="):
                    pretty_name = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return {
        "kernel": os.uname().release,
        "distribution": pretty_name,
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def guest_line(guest):
    return "kernel %s, %s, %d vCPUs, Python %s, %s" % (
        guest["kernel"], guest["distribution"], guest["cpus"], guest["python"], guest["date"])


def fixture_sessions(count, exact):
    """Return the fixture's state with ``count`` sessions, starting the fixture if needed.

    With ``exact`` False, a running fixture with more sessions is reused.
    Starting the fixture replaces a running one, and it starts without pppd
    peers, because no figure needs PPP to converge.
    """
    state = None
    if os.path.exists(FIXTURE_STATE):
        with open(FIXTURE_STATE) as source:
            state = json.load(source)
    if state is not None and os.path.exists("/proc/%d" % state["holder_pid"]):
        session_count = len(state["sessions"])
        if session_count == count or (session_count > count and not exact):
            return state

    print("  starting the session fixture with %d sessions" % count, flush=True)
    started = time.monotonic()
    result = subprocess.run([sys.executable, FIXTURE, "up", "--sessions", str(count), "--peers", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    if result.returncode != 0:
        raise BenchError("the session fixture failed to start %d sessions: %s" % (count, result.stderr.strip()))
    print("  fixture ready in %.0f s" % (time.monotonic() - started), flush=True)
    return json.loads(result.stdout)


def lac_target():
    return resolve_netns(LAC_NETNS)


def enter_netns(name):
    """Move this single-threaded process into the network namespace /run/netns/NAME."""
    fd = os.open("/run/netns/" + name, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise BenchError("joining network namespace %s failed: %s" % (name, os.strerror(code)))
    finally:
        os.close(fd)


class InNetns:
    """Context manager that runs its block in /run/netns/NAME, then returns to the original namespace.

    A socket keeps the namespace it was created in, so a netlink socket
    opened inside the block keeps working after it.
    """

    def __init__(self, name):
        self.name = name
        self.home_fd = None

    def __enter__(self):
        self.home_fd = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        enter_netns(self.name)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        try:
            if _libc.setns(self.home_fd, CLONE_NEWNET) != 0:
                code = ctypes.get_errno()
                raise BenchError("returning from network namespace %s failed: %s" % (self.name, os.strerror(code)))
        finally:
            os.close(self.home_fd)
        return False


def fresh_dir(name):
    """Return an empty directory under WORK_DIR (a tmpfs, like /run/l2tp-lac)."""
    path = os.path.join(WORK_DIR, name)
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


# ---------------------------------------------------------------------------
# Bare channel syscalls, run inside the namespace of the channels


def _attach(channel, flags=0):
    fd = os.open(PPP_DEVICE, os.O_RDWR | os.O_CLOEXEC | flags)
    try:
        fcntl.ioctl(fd, PPPIOCATTCHAN, struct.pack("i", channel))
    except OSError:
        os.close(fd)
        raise
    return fd


def attach_channel(channel, nonblocking=False):
    """Return a /dev/ppp descriptor attached to ``channel`` in this process's namespace."""
    return _attach(channel, os.O_NONBLOCK if nonblocking else 0)


def bridge_loop(channel_pairs):
    """Bridge every (channel, peer) pair with bare syscalls and return the seconds it took.

    Per pair: open /dev/ppp, PPPIOCATTCHAN, PPPIOCBRIDGECHAN, close. This is
    the floor that the module's bridge run is compared against.
    """
    started = time.perf_counter()
    for channel, peer in channel_pairs:
        fd = os.open(PPP_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, PPPIOCATTCHAN, struct.pack("i", channel))
            fcntl.ioctl(fd, PPPIOCBRIDGECHAN, struct.pack("i", peer))
        finally:
            os.close(fd)
    return time.perf_counter() - started


def unbridge_channels(channels):
    """Unbridge each channel; return the counts (unbridged, not bridged) and the seconds it took.

    Unbridging a channel that is not bridged fails with EINVAL, which is
    counted. Any other error is raised.
    """
    started = time.perf_counter()
    unbridged = 0
    not_bridged = 0
    for channel in channels:
        fd = _attach(channel)
        try:
            fcntl.ioctl(fd, PPPIOCUNBRIDGECHAN, 0)
            unbridged += 1
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            not_bridged += 1
        finally:
            os.close(fd)
    return unbridged, not_bridged, time.perf_counter() - started


def probe_bridging(channel, peer):
    """Return None if ``channel`` and ``peer`` can be bridged here, else the reason.

    Bridges the two channels and unbridges them at once. ENOTTY means the
    running ppp_generic has no PPPIOCBRIDGECHAN. EALREADY means a bridge
    left by an aborted run, which is removed before the second attempt.
    """
    for attempt in (1, 2):
        fd = _attach(channel)
        try:
            fcntl.ioctl(fd, PPPIOCBRIDGECHAN, struct.pack("i", peer))
            fcntl.ioctl(fd, PPPIOCUNBRIDGECHAN, 0)
            return None
        except OSError as exc:
            if exc.errno == errno.ENOTTY:
                return ("kernel %s cannot bridge PPP channels (PPPIOCBRIDGECHAN returned ENOTTY); it needs "
                        "Linux 5.11 or later, or the patched ppp_generic of the l2tp.lac.ppp_kmod role"
                        % os.uname().release)
            if exc.errno != errno.EALREADY or attempt == 2:
                raise BenchError("bridging channel %d to channel %d failed: %s" % (channel, peer, exc))
        finally:
            os.close(fd)
        unbridge_channels([channel, peer])
    return None


# ---------------------------------------------------------------------------
# The ppp_bridge module, run in this process without Ansible


class ModuleExit(Exception):
    """Raised by StubModule.exit_json with the module's result."""

    def __init__(self, result):
        super(ModuleExit, self).__init__("module exited")
        self.result = result


class ModuleFailed(Exception):
    """Raised by StubModule.fail_json with the module's result."""

    def __init__(self, result):
        super(ModuleFailed, self).__init__(result.get("msg"))
        self.result = result


class StubModule:
    """The part of AnsibleModule that ppp_bridge's BridgeTask uses.

    ``params`` must already be in the form AnsibleModule produces (every
    suboption present, None when unset). exit_json serializes the result to
    JSON, as AnsibleModule does before it prints it, and raises ModuleExit.
    """

    def __init__(self, params):
        self.params = params
        self.check_mode = False
        self._diff = False
        self.warnings = []

    def warn(self, warning):
        self.warnings.append(warning)

    def exit_json(self, **result):
        json.dumps(result)
        raise ModuleExit(result)

    def fail_json(self, **result):
        raise ModuleFailed(result)


def import_bridge_module():
    """Import plugins/modules/ppp_bridge.py, standing in for ansible.module_utils.basic if needed.

    The guests have no Ansible installed. BridgeTask only needs the module
    object it is given, so a placeholder AnsibleModule that is never built
    lets the file import.
    """
    try:
        import ansible.module_utils.basic  # noqa: F401  pylint: disable=unused-import
    except ImportError:
        package = types.ModuleType("ansible")
        module_utils = types.ModuleType("ansible.module_utils")
        basic = types.ModuleType("ansible.module_utils.basic")
        basic.AnsibleModule = StubModule
        package.module_utils = module_utils
        module_utils.basic = basic
        sys.modules.update({"ansible": package, "ansible.module_utils": module_utils,
                            "ansible.module_utils.basic": basic})
    from ansible_collections.l2tp.lac.plugins.modules import ppp_bridge
    return ppp_bridge


def channel_end(channel):
    return {"channel": channel, "pppoe": None, "l2tp": None}


def pppoe_end(session):
    return {"channel": None, "l2tp": None,
            "pppoe": {"interface": session["interface"], "session_id": session["session_id"], "peer_mac": None}}


def l2tp_end(session):
    return {"channel": None, "pppoe": None,
            "l2tp": {"tunnel_id": session["tunnel_id"], "session_id": session["session_id"],
                     "peer_tunnel_id": None, "peer_session_id": None}}


def module_params(ends, record_dir):
    """Return ppp_bridge's parameters for bridging each (end a, end b) in the lac namespace."""
    return {
        "pairs": [{"name": None, "a": end_a, "b": end_b} for end_a, end_b in ends],
        "state": "bridged",
        "force": False,
        "netns": LAC_NETNS,
        "processes": None,
        "record_dir": record_dir,
        "lock_timeout": 30.0,
    }


def run_bridge_module(bridge_module, params):
    """Run BridgeTask.run with ``params``; return (seconds, result).

    The time covers the whole run: pair validation, the record lock and load,
    the batch in a child forked into the namespace, the record save and the
    JSON encoding of the result. Raises BenchError if the module fails.
    """
    module = StubModule(params)
    started = time.perf_counter()
    try:
        bridge_module.BridgeTask(module).run()
    except ModuleExit as exit_:
        result = exit_.result
    except ModuleFailed as failure:
        raise BenchError("ppp_bridge failed: %s" % failure.result.get("msg"))
    else:
        raise BenchError("ppp_bridge returned without calling exit_json")
    return time.perf_counter() - started, result


def check_all_bridged(result, expected_pairs):
    """Raise BenchError unless the module bridged exactly ``expected_pairs`` [(channel, peer)]."""
    actual = [(pair["a"]["channel"], pair["b"]["channel"]) for pair in result["pairs"]]
    if actual != list(expected_pairs):
        raise BenchError("ppp_bridge resolved other channels than the fixture created (first pairs %s, expected %s)"
                         % (actual[:3], list(expected_pairs)[:3]))
    not_bridged = [pair["number"] for pair in result["pairs"] if pair["action"] != "bridged"]
    if not_bridged:
        raise BenchError("ppp_bridge did not bridge %d pair(s), first pair %d"
                         % (len(not_bridged), not_bridged[0]))


# ---------------------------------------------------------------------------
# Statistics and output


def median(values):
    return statistics.median(values)


def format_runs(values, unit_format="%.3f"):
    return ", ".join(unit_format % value for value in values)


def verdict(ratio, goal):
    return "met" if ratio <= goal else "NOT met"


def append_json(path, record):
    """Append one figure's result as a JSON line to ``path`` (skipped when path is None)."""
    if path is None:
        return
    with open(path, "a") as out:
        out.write(json.dumps(record, sort_keys=True) + "\n")
