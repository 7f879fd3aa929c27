# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""Find the PPPoX sockets that other processes hold, and their channels.

The kernel lists PPPoE and L2TP sessions in /proc/net/pppoe and
/proc/net/pppol2tp, but without channel indices or socket inodes. So the scan
walks /proc/PID/fd, duplicates each socket descriptor into this process with
pidfd_open + pidfd_getfd (Linux 5.6 or later, ptrace rights on the owner),
keeps the AF_PPPOX ones and reads their addresses with getsockname.

The channel index comes from PPPIOCGCHAN, which has a side effect: it marks
the socket PPPOX_BOUND, and from then on the kernel hands the socket's
received frames to the channel instead of to the owner's recv(). The rule
used here is to issue PPPIOCGCHAN only on sockets that are already bound. A
bound socket rejects recv() with EIO before anything else (pppoe_recvmsg
and pppol2tp_recvmsg both do), so a recv(MSG_PEEK | MSG_DONTWAIT) on the
duplicate shows the state without consuming a frame. On a bound socket the
mark is already set, so the PPPIOCGCHAN changes nothing.

NOTE: a socket that is connected but not bound yet gets no channel index.
That covers an owner caught between connect() and its own PPPIOCGCHAN, and
an owner that reads PPP frames from the socket itself. Such a session can be
bridged only by channel index, once its owner made it a channel.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ctypes
import errno
import fcntl
import os
import re
import socket

from ansible_collections.l2tp.lac.plugins.module_utils.ppp_ioctl import (
    AF_PPPOX,
    PX_PROTO_OE,
    PX_PROTO_OL2TP,
    PppError,
    read_channel_index,
)
from ansible_collections.l2tp.lac.plugins.module_utils.pppox_sockaddr import (
    L2tpAddress,
    PppoeAddress,
    SockaddrError,
    libc,
    parse_pppox,
    pppox_getsockname,
)

# Syscall numbers. Since Linux 5.1 a new syscall gets the same number on every
# architecture except alpha (include/uapi/asm-generic/unistd.h, and
# arch/x86/entry/syscalls/syscall_64.tbl for x86_64).
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438

SOL_SOCKET = 1
SO_PROTOCOL = 38
SO_DOMAIN = 39
# include/uapi/linux/sockios.h: returns a descriptor of the socket's network namespace.
SIOCGSKNS = 0x894C

# include/linux/sched.h: TASK_COMM_LEN is 16, so comm contains at most 15 characters.
COMM_MAX_LENGTH = 15

KIND_PPPOE = "pppoe"
KIND_L2TP = "l2tp"

UNIT_CONNECTED = "connected"
UNIT_NOT_CONNECTED = "not connected"
UNIT_UNKNOWN = "unknown"

_SESSION_LINE = re.compile(
    r"^\s+SESSION '(?P<name>[^']*)' [0-9A-Fa-f]+/\d+ "
    r"(?P<tunnel>[0-9A-Fa-f]+)/(?P<session>[0-9A-Fa-f]+) -> "
    r"(?P<peer_tunnel>[0-9A-Fa-f]+)/(?P<peer_session>[0-9A-Fa-f]+) "
    r"(?P<state>\d+) [YN]\s*$")
_INTERFACE_LINE = re.compile(r"^\s+interface (?P<interface>\S+)\s*$")
_SOCKET_LINK = re.compile(r"^socket:\[(?P<inode>\d+)\]$")


class DiscoveryError(Exception):
    """The process scan cannot run on this host at all."""


# ---------------------------------------------------------------------------
# Pure parsers


def parse_proc_pppol2tp(text):
    """Parse /proc/net/pppol2tp into {(tunnel_id, session_id): session}.

    Each session is a dict with peer_tunnel_id, peer_session_id, the socket
    state bits (``state``) and ``interface``: the pppN interface of the PPP
    unit the channel is connected to, or None. The kernel prints "(null)" for
    a channel connected to no unit, and prints no interface line for a
    session without a socket. The file lists L2TPv2 sessions only.
    """
    sessions = {}
    current = None
    for line in text.splitlines():
        match = _SESSION_LINE.match(line)
        if match:
            current = {
                "peer_tunnel_id": int(match.group("peer_tunnel"), 16),
                "peer_session_id": int(match.group("peer_session"), 16),
                "state": int(match.group("state")),
                "has_socket": False,
                "interface": None,
            }
            sessions[(int(match.group("tunnel"), 16), int(match.group("session"), 16))] = current
            continue

        match = _INTERFACE_LINE.match(line)
        if match and current is not None:
            current["has_socket"] = True
            interface = match.group("interface")
            current["interface"] = None if interface == "(null)" else interface
            continue

        if line.lstrip().startswith("TUNNEL "):
            current = None
    return sessions


def parse_fd_link(target):
    """Classify a /proc/PID/fd link target: ('socket', inode), ('ppp', None) or None."""
    match = _SOCKET_LINK.match(target)
    if match:
        return ("socket", int(match.group("inode")))
    if target == "/dev/ppp":
        return ("ppp", None)
    return None


def process_selected(command, names):
    """Return whether a process whose comm is ``command`` is among ``names``.

    The kernel keeps only the first 15 characters of a command name, so the
    names are cut the same way before comparing. An empty ``names`` selects
    every process.
    """
    if not names:
        return True
    return command in set(name[:COMM_MAX_LENGTH] for name in names)


def describe_address(address):
    """Return the JSON-friendly dict of a PppoeAddress or L2tpAddress."""
    if isinstance(address, PppoeAddress):
        return {"interface": address.interface, "session_id": address.session_id, "peer_mac": address.peer_mac}
    return {
        "version": address.version,
        "tunnel_id": address.tunnel_id,
        "session_id": address.session_id,
        "peer_tunnel_id": address.peer_tunnel_id,
        "peer_session_id": address.peer_session_id,
        "peer_address": address.peer_address,
        "peer_port": address.peer_port,
    }


def describe_ppp_unit(kind, address, proc_sessions):
    """Return whether the socket's channel is connected to a PPP unit.

    Only /proc/net/pppol2tp reports it (the "interface" line), and only for
    L2TPv2. A bridged channel is connected to no unit.
    """
    if kind == KIND_PPPOE:
        return {"state": UNIT_UNKNOWN, "interface": None,
                "reason": "the kernel reports no PPP unit for PPPoE channels"}

    if address.version != 2:
        return {"state": UNIT_UNKNOWN, "interface": None,
                "reason": "/proc/net/pppol2tp lists L2TPv2 sessions only"}

    session = proc_sessions.get((address.tunnel_id, address.session_id))
    if session is None or not session["has_socket"]:
        return {"state": UNIT_UNKNOWN, "interface": None,
                "reason": "the session is missing from /proc/net/pppol2tp"}
    if session["interface"] is None:
        return {"state": UNIT_NOT_CONNECTED, "interface": None, "reason": None}
    return {"state": UNIT_CONNECTED, "interface": session["interface"], "reason": None}


# ---------------------------------------------------------------------------
# Kernel access


def _syscall(number, *args):
    result = libc().syscall(ctypes.c_long(number), *[ctypes.c_long(arg) for arg in args])
    if result < 0:
        error_number = ctypes.get_errno()
        raise OSError(error_number, os.strerror(error_number))
    return result


def pidfd_open(pid):
    """Return a pidfd for ``pid`` (pidfd_open, Linux 5.3 or later)."""
    return _syscall(SYS_PIDFD_OPEN, pid, 0)


def pidfd_getfd(pidfd, target_fd):
    """Return a duplicate of descriptor ``target_fd`` of the pidfd's process.

    Needs PTRACE_MODE_ATTACH_REALCREDS on that process and Linux 5.6 or later.
    """
    return _syscall(SYS_PIDFD_GETFD, pidfd, target_fd, 0)


def socket_family(fd):
    """Return (domain, protocol) of a socket descriptor from SO_DOMAIN and SO_PROTOCOL."""
    values = []
    for option in (SO_DOMAIN, SO_PROTOCOL):
        value = ctypes.c_int(0)
        length = ctypes.c_uint32(ctypes.sizeof(value))
        if libc().getsockopt(fd, SOL_SOCKET, option, ctypes.byref(value), ctypes.byref(length)) != 0:
            error_number = ctypes.get_errno()
            raise OSError(error_number, os.strerror(error_number))
        values.append(value.value)
    return tuple(values)


def socket_netns_inode(fd):
    """Return the inode of the network namespace a socket belongs to (SIOCGSKNS)."""
    netns_fd = fcntl.ioctl(fd, SIOCGSKNS, 0)
    try:
        return os.fstat(netns_fd).st_ino
    finally:
        os.close(netns_fd)


def is_socket_bound(fd):
    """Return whether a PPPoX socket is PPPOX_BOUND, without taking any frame.

    pppoe_recvmsg and pppol2tp_recvmsg return EIO for a bound socket before
    they look at the queue. Otherwise MSG_PEEK leaves any queued frame in
    place, and MSG_DONTWAIT returns EAGAIN at once when nothing is queued.
    """
    flags = socket.MSG_PEEK | socket.MSG_DONTWAIT
    buffer = ctypes.create_string_buffer(1)
    if libc().recv(fd, buffer, 0, flags) >= 0:
        return False
    return ctypes.get_errno() == errno.EIO


def _read_text(path):
    try:
        with open(path) as handle:
            return handle.read()
    except (IOError, OSError):
        return None


def _list_process_fds(pid):
    """Return (socket fds as [(fd, inode)], count of /dev/ppp fds) of a process."""
    sockets = []
    ppp_fds = 0
    fd_dir = "/proc/%d/fd" % pid
    for name in os.listdir(fd_dir):
        try:
            link = parse_fd_link(os.readlink(os.path.join(fd_dir, name)))
        except OSError:
            continue
        if link is None:
            continue
        if link[0] == "socket":
            sockets.append((int(name), link[1]))
        else:
            ppp_fds += 1
    return sockets, ppp_fds


def _inspect_socket(duplicate, proc_sessions, netns_ino):
    """Return the description of one duplicated socket, or None if not a PPPoX channel."""
    domain, protocol = socket_family(duplicate)
    if domain != AF_PPPOX or protocol not in (PX_PROTO_OE, PX_PROTO_OL2TP):
        return None

    try:
        address = parse_pppox(pppox_getsockname(duplicate))
    except OSError as exc:
        if exc.errno in (errno.ENOTCONN, errno.EBADF):
            return None
        raise
    except SockaddrError:
        return None

    kind = KIND_PPPOE if isinstance(address, PppoeAddress) else KIND_L2TP
    if kind == KIND_PPPOE and address.session_id == 0:
        return None

    tunnel_socket = isinstance(address, L2tpAddress) and address.session_id == 0 and address.peer_session_id == 0
    bound = is_socket_bound(duplicate)
    channel = None
    reason = None
    if tunnel_socket:
        reason = "an L2TP tunnel management socket (session 0) has no channel"
    elif not bound:
        reason = ("the socket is not bound to its channel yet, and reading the index "
                  "would divert its frames from the owner")
    else:
        try:
            channel = read_channel_index(duplicate)
        except PppError as exc:
            reason = str(exc)

    return {
        "kind": kind,
        "pppoe": describe_address(address) if kind == KIND_PPPOE else None,
        "l2tp": describe_address(address) if kind == KIND_L2TP else None,
        "tunnel_socket": tunnel_socket,
        "bound": bound,
        "channel": channel,
        "channel_unknown_reason": reason,
        "in_netns": socket_netns_inode(duplicate) == netns_ino,
        "ppp_unit": describe_ppp_unit(kind, address, proc_sessions),
    }


def discover_pppox_sockets(processes=None):
    """Scan every process (or those named in ``processes``) for PPPoX sockets.

    Run it inside the network namespace of interest: membership is judged
    against the caller's namespace, and /proc/net/pppol2tp is read there.
    Returns a dict with ``sockets`` (one dict per socket inode, see
    _inspect_socket, plus owner_pid, owner_command, owner_fd, holders and
    owner_ppp_device_fds), ``inaccessible`` (processes that could not be read,
    with the reason) and ``netns_inode``. Raises DiscoveryError when the
    kernel lacks pidfd_getfd.
    """
    netns_ino = os.stat("/proc/self/ns/net").st_ino
    proc_sessions = parse_proc_pppol2tp(_read_text("/proc/net/pppol2tp") or "")
    skipped_pids = set([os.getpid(), os.getppid()])

    by_inode = {}
    inaccessible = []
    pids = sorted(int(entry) for entry in os.listdir("/proc") if entry.isdigit())
    for pid in pids:
        if pid in skipped_pids:
            continue
        command = (_read_text("/proc/%d/comm" % pid) or "").rstrip("\n")
        if not process_selected(command, processes):
            continue
        try:
            socket_fds, ppp_fds = _list_process_fds(pid)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                inaccessible.append({"pid": pid, "command": command, "reason": exc.strerror})
            continue

        unseen = [(fd, inode) for fd, inode in socket_fds if inode not in by_inode]
        for fd, inode in socket_fds:
            if inode in by_inode and by_inode[inode] is not None:
                by_inode[inode]["holders"].append({"pid": pid, "command": command, "fd": fd})
        if not unseen:
            continue

        try:
            pidfd = pidfd_open(pid)
        except OSError as exc:
            if exc.errno == errno.ENOSYS:
                raise DiscoveryError("finding PPPoX sockets needs pidfd_open and pidfd_getfd (Linux 5.6 or later)")
            if exc.errno != errno.ESRCH:
                inaccessible.append({"pid": pid, "command": command, "reason": exc.strerror})
            continue

        try:
            for fd, inode in unseen:
                try:
                    duplicate = pidfd_getfd(pidfd, fd)
                except OSError as exc:
                    if exc.errno == errno.ENOSYS:
                        raise DiscoveryError("finding PPPoX sockets needs pidfd_getfd (Linux 5.6 or later)")
                    if exc.errno in (errno.EPERM, errno.EACCES):
                        inaccessible.append({"pid": pid, "command": command,
                                             "reason": "pidfd_getfd: %s" % exc.strerror})
                        break
                    # EBADF or ESRCH: the descriptor or the process went away meanwhile.
                    continue
                try:
                    described = _inspect_socket(duplicate, proc_sessions, netns_ino)
                except OSError as exc:
                    inaccessible.append({"pid": pid, "command": command,
                                         "reason": "socket fd %d: %s" % (fd, exc.strerror)})
                    continue
                finally:
                    os.close(duplicate)

                if described is not None:
                    described.update({"socket_inode": inode, "owner_pid": pid, "owner_command": command,
                                      "owner_fd": fd, "owner_ppp_device_fds": ppp_fds, "holders": []})
                by_inode[inode] = described
        finally:
            os.close(pidfd)

    sockets = [entry for entry in by_inode.values() if entry is not None]
    return {"sockets": sockets, "inaccessible": inaccessible, "netns_inode": netns_ino}
