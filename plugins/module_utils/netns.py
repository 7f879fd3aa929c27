# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Run a function inside a network namespace.

Channel indices belong to a network namespace, and /dev/ppp looks them up in
the namespace of the calling thread. ``run_in_netns`` switches the calling
thread into the namespace with setns() and back again when the function
returns or raises. ``run_in_new_netns`` needs a namespace that dies with its
work, so it forks a child that makes one with unshare(), runs the function
and sends the result or the exception back over a pipe, pickled.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import collections
import ctypes
import errno
import os
import pickle
import select
import time
import traceback

from ansible_collections.l2tp.lac.plugins.module_utils.pppox_sockaddr import libc

CLONE_NEWNET = 0x40000000
NETNS_RUN_DIR = "/run/netns"
# The calling thread's own namespace, which setns() changes (Linux 3.17 or later).
THREAD_NETNS = "/proc/thread-self/ns/net"

NetnsTarget = collections.namedtuple("NetnsTarget", ["label", "path"])
NetnsTarget.__doc__ = (
    "A network namespace to work in: label names it in messages, path is its "
    "nsfs file, or None for the namespace of the module process.")


class NamespaceError(Exception):
    """A network namespace that cannot be found or entered."""


class ChildFailed(Exception):
    """The forked child died or timed out without sending a result."""


def resolve_netns(netns):
    """Return the NetnsTarget for a netns option: None, a name or a pid.

    A value of digits only is a pid, and the namespace is that process's.
    Anything else is a name under /run/netns, as ``ip netns`` creates them.
    """
    if netns is None or netns == "":
        return NetnsTarget("the host network namespace", None)

    text = str(netns)
    if text.isdigit():
        return NetnsTarget("the network namespace of pid %s" % text, "/proc/%s/ns/net" % text)

    if "/" in text or text in (".", ".."):
        raise NamespaceError("invalid network namespace name %r: a name under %s must not contain '/' "
                             "or be '.' or '..'" % (text, NETNS_RUN_DIR))
    return NetnsTarget("network namespace '%s'" % text, os.path.join(NETNS_RUN_DIR, text))


def netns_inode(path=None, label=None):
    """Return the inode number that identifies a network namespace.

    Two paths name the same namespace when their inodes (and devices) match.
    ``path`` None means the namespace of the calling process. ``label``
    names the namespace in the error raised when it does not exist.
    """
    try:
        return os.stat(path or "/proc/self/ns/net").st_ino
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise NamespaceError("%s does not exist (%s is missing)" % (label or "network namespace " + path, path))
        raise NamespaceError("network namespace %s cannot be read: %s" % (path, exc.strerror))


def _setns_fd(fd, action):
    """Move the calling thread into the network namespace of ``fd``; ``action`` names the step in errors."""
    if libc().setns(fd, CLONE_NEWNET) != 0:
        error_number = ctypes.get_errno()
        raise NamespaceError("%s failed: %s" % (action, os.strerror(error_number)))


def _setns(path):
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NamespaceError("network namespace %s cannot be opened: %s" % (path, exc.strerror))
    try:
        _setns_fd(fd, "joining network namespace %s" % path)
    finally:
        os.close(fd)


def _unshare_netns():
    if libc().unshare(CLONE_NEWNET) != 0:
        error_number = ctypes.get_errno()
        raise NamespaceError("creating a network namespace failed: %s (needs CAP_SYS_ADMIN)"
                             % os.strerror(error_number))


def _encode_outcome(succeeded, value, trace=None):
    try:
        return pickle.dumps((succeeded, value, trace))
    except Exception as exc:  # pylint: disable=broad-except
        # An unpicklable result or exception still has to reach the parent.
        return pickle.dumps((False, ChildFailed("result could not be sent from the child: %r (%s)" % (value, exc)),
                             trace))


def _run_child(write_fd, enter, func, args, kwargs):
    try:
        enter()
        outcome = _encode_outcome(True, func(*args, **kwargs))
    except Exception as exc:  # pylint: disable=broad-except
        outcome = _encode_outcome(False, exc, traceback.format_exc())

    view = memoryview(outcome)
    while view:
        written = os.write(write_fd, view)
        view = view[written:]


def _read_all(read_fd, pid, timeout):
    chunks = []
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([read_fd], [], [], wait)
        if not ready:
            os.kill(pid, 9)
            raise ChildFailed("the namespace child (pid %d) sent no result within %s s and was killed" % (pid, timeout))
        chunk = os.read(read_fd, 1 << 16)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def _fork_and_run(enter, func, args, kwargs, timeout):
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        # Child: never return into the caller's stack, which would run the
        # module's exit handlers twice.
        status = 0
        try:
            os.close(read_fd)
            _run_child(write_fd, enter, func, args, kwargs)
        except BaseException:  # pylint: disable=broad-except
            status = 1
        finally:
            os._exit(status)

    os.close(write_fd)
    try:
        payload = _read_all(read_fd, pid, timeout)
    finally:
        os.close(read_fd)
        _, status = os.waitpid(pid, 0)

    if not payload:
        raise ChildFailed("the namespace child (pid %d) exited with status %d and sent no result" % (pid, status))

    succeeded, value, trace = pickle.loads(payload)
    if succeeded:
        return value
    value.child_traceback = trace
    raise value


def run_in_netns(target, func, *args, **kwargs):
    """Call ``func(*args, **kwargs)`` inside ``target`` and return its result.

    ``target`` is a NetnsTarget. With ``target.path`` None the function runs
    in the current namespace. Otherwise the calling thread joins the
    namespace for the call and returns to its own afterwards, also when
    ``func`` raises. The thread switches rather than forking a child, because
    for a large batch the fork, its copy-on-write faults and the pickled
    result cost more than the work itself.
    """
    if target.path is None:
        return func(*args, **kwargs)

    if not os.path.exists(target.path):
        raise NamespaceError("%s does not exist (%s is missing)" % (target.label, target.path))
    try:
        home_fd = os.open(THREAD_NETNS, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise NamespaceError("the current network namespace cannot be opened (%s): %s" % (THREAD_NETNS, exc.strerror))
    try:
        _setns(target.path)
        try:
            return func(*args, **kwargs)
        finally:
            _setns_fd(home_fd, "returning to the original network namespace")
    finally:
        os.close(home_fd)


def run_in_new_netns(func, *args, **kwargs):
    """Call ``func`` in a fresh, empty network namespace that dies with the child.

    Keyword ``timeout`` (seconds, default 60) bounds the wait for the child.
    """
    timeout = kwargs.pop("timeout", 60)
    return _fork_and_run(_unshare_netns, func, args, kwargs, timeout=timeout)
