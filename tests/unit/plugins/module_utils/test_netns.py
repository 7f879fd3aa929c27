"""Tests of namespace option parsing and of the fork-and-pipe transport.

The transport tests fork with a no-op namespace step, so they exercise how
results and exceptions travel back to the parent, not setns or unshare.
"""

import errno
import os

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
