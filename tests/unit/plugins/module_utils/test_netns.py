"""Tests of namespace option parsing, the thread's namespace switch and the fork-and-pipe transport.

The switch tests need root: they start a process in a namespace of its own
(`unshare --net`) and run functions in that namespace. The transport tests
fork with a no-op namespace step, so they exercise how results and
exceptions travel back to the parent, not setns or unshare.
"""

import errno
import os
import subprocess
import time

import pytest

from ansible_collections.l2tp.lac.plugins.module_utils import netns
from ansible_collections.l2tp.lac.plugins.module_utils.ppp_ioctl import ChannelBusy, error_from_errno


def no_namespace_change():
    pass


@pytest.mark.parametrize("value", [None, ""])
def test_resolve_netns_empty_is_host(value):
    target = netns.resolve_netns(value)

    assert target.path is None
    assert target.label == "the host network namespace"


def test_resolve_netns_digits_are_pid():
    target = netns.resolve_netns("4242")

    assert target.path == "/proc/4242/ns/net"
    assert target.label == "the network namespace of pid 4242"


def test_resolve_netns_int_is_pid():
    assert netns.resolve_netns(17).path == "/proc/17/ns/net"


def test_resolve_netns_name_under_run():
    target = netns.resolve_netns("lac-a")

    assert target.path == "/run/netns/lac-a"
    assert target.label == "network namespace 'lac-a'"


@pytest.mark.parametrize("name", ["../etc", "a/b", ".", ".."])
def test_resolve_netns_rejects_path_names(name):
    with pytest.raises(netns.NamespaceError, match="must not contain '/'"):
        netns.resolve_netns(name)


def test_run_in_netns_host_runs_inline():
    target = netns.resolve_netns(None)

    assert netns.run_in_netns(target, os.getpid) == os.getpid()


def test_run_in_netns_missing_namespace():
    target = netns.NetnsTarget("network namespace 'absent'", "/run/netns/l2tp-lac-test-absent")

    with pytest.raises(netns.NamespaceError, match="does not exist"):
        netns.run_in_netns(target, os.getpid)


def thread_netns_inode():
    return os.stat(netns.THREAD_NETNS).st_ino


@pytest.fixture
def other_netns():
    """Yield the NetnsTarget of a namespace that a sleeping `unshare --net` process keeps alive."""
    if os.geteuid() != 0:
        pytest.skip("entering another network namespace needs root")
    holder = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    path = "/proc/%d/ns/net" % holder.pid
    try:
        deadline = time.monotonic() + 10
        while os.stat(path).st_ino == thread_netns_inode():
            assert time.monotonic() < deadline, "unshare --net did not create a namespace within 10 s"
            time.sleep(0.05)
        yield netns.NetnsTarget("the test's namespace", path)
    finally:
        holder.kill()
        holder.wait()


def test_run_in_netns_switches_and_returns(other_netns):
    home = thread_netns_inode()

    inside = netns.run_in_netns(other_netns, thread_netns_inode)

    assert inside == os.stat(other_netns.path).st_ino
    assert inside != home
    assert thread_netns_inode() == home


def test_run_in_netns_returns_after_error(other_netns):
    home = thread_netns_inode()

    def fail():
        raise error_from_errno(errno.EALREADY, "bridge", channel=5, peer=6)

    with pytest.raises(ChannelBusy) as raised:
        netns.run_in_netns(other_netns, fail)

    assert raised.value.channel == 5
    assert thread_netns_inode() == home


def test_fork_returns_child_result():
    result = netns._fork_and_run(no_namespace_change, lambda base: {"pid": os.getpid(), "sum": base + 1},
                                 (41,), {}, timeout=30)

    assert result["sum"] == 42
    assert result["pid"] != os.getpid()


def test_fork_returns_large_result():
    result = netns._fork_and_run(no_namespace_change, lambda: list(range(200000)), (), {}, timeout=30)

    assert len(result) == 200000
    assert result[-1] == 199999


def test_fork_raises_child_error_with_fields():
    def fail():
        raise error_from_errno(errno.EALREADY, "bridge", channel=5, peer=6)

    with pytest.raises(ChannelBusy) as raised:
        netns._fork_and_run(no_namespace_change, fail, (), {}, timeout=30)

    assert raised.value.channel == 5
    assert raised.value.peer == 6
    assert "Traceback" in raised.value.child_traceback


def test_fork_reports_enter_failure():
    def refuse():
        raise netns.NamespaceError("joining network namespace x failed: Operation not permitted")

    with pytest.raises(netns.NamespaceError, match="Operation not permitted"):
        netns._fork_and_run(refuse, os.getpid, (), {}, timeout=30)


def test_fork_reports_unpicklable_result():
    with pytest.raises(netns.ChildFailed, match="could not be sent"):
        netns._fork_and_run(no_namespace_change, lambda: (lambda: None), (), {}, timeout=30)


def test_fork_kills_child_after_timeout():
    import time

    with pytest.raises(netns.ChildFailed, match="within 0.5 s"):
        netns._fork_and_run(no_namespace_change, time.sleep, (30,), {}, timeout=0.5)
