# -*- coding: utf-8 -*-
# Copyright: contributors to the l2tp.lac collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

"""PPP channel ioctls on /dev/ppp and on PPPoX sockets, and their errors.

Constants carry the names of the kernel's uapi headers
``include/uapi/linux/ppp-ioctl.h`` (the PPPIOC* requests) and
``include/uapi/linux/if_pppox.h`` (AF_PPPOX, PX_PROTO_*). Every errno that
these ioctls return is turned into a named exception by ``error_from_errno``
and nowhere else.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import fcntl
import os
import resource
import select
import struct

# asm-generic/ioctl.h: the request number packs direction, argument size,
# type and number. The encoding below is the one of x86, arm and most other
# architectures. NOTE: alpha, mips, powerpc and sparc use other direction bits,
# so these values are wrong there.
_IOC_NRBITS = 8
_IOC_TYPEBITS = 8
_IOC_SIZEBITS = 14
_IOC_NRSHIFT = 0
_IOC_TYPESHIFT = _IOC_NRSHIFT + _IOC_NRBITS
_IOC_SIZESHIFT = _IOC_TYPESHIFT + _IOC_TYPEBITS
_IOC_DIRSHIFT = _IOC_SIZESHIFT + _IOC_SIZEBITS
_IOC_NONE = 0
_IOC_WRITE = 1
_IOC_READ = 2

_INT_SIZE = struct.calcsize("i")


def _ioc(direction, ioc_type, number, size):
    return ((direction << _IOC_DIRSHIFT) | (ord(ioc_type) << _IOC_TYPESHIFT)
            | (number << _IOC_NRSHIFT) | (size << _IOC_SIZESHIFT))


def _io(ioc_type, number):
    return _ioc(_IOC_NONE, ioc_type, number, 0)


def _ior(ioc_type, number, size):
    return _ioc(_IOC_READ, ioc_type, number, size)


def _iow(ioc_type, number, size):
    return _ioc(_IOC_WRITE, ioc_type, number, size)


def _iowr(ioc_type, number, size):
    return _ioc(_IOC_READ | _IOC_WRITE, ioc_type, number, size)


# ppp-ioctl.h. PPPIOCBRIDGECHAN and PPPIOCUNBRIDGECHAN exist since Linux 5.11.
# Drafts of that series used _IO('t', 54) for the unbridge request. That value
# is PPPIOCGL2TPSTATS's number, so it is never sent here.
PPPIOCUNBRIDGECHAN = _io("t", 52)
PPPIOCBRIDGECHAN = _iow("t", 53, _INT_SIZE)
PPPIOCGL2TPSTATS = _ior("t", 54, 72)
PPPIOCGCHAN = _ior("t", 55, _INT_SIZE)
PPPIOCATTCHAN = _iow("t", 56, _INT_SIZE)
PPPIOCDISCONN = _io("t", 57)
PPPIOCCONNECT = _iow("t", 58, _INT_SIZE)
PPPIOCNEWUNIT = _iowr("t", 62, _INT_SIZE)

# if_pppox.h and linux/socket.h.
AF_PPPOX = 24
PX_PROTO_OE = 0
PX_PROTO_OL2TP = 1

# PPPoX socket states, from include/linux/if_pppox.h (kernel internal, shown
# in the state column of /proc/net/pppol2tp).
PPPOX_NONE = 0
PPPOX_CONNECTED = 1
PPPOX_BOUND = 2
PPPOX_RELAY = 4
PPPOX_ZOMBIE = 8
PPPOX_DEAD = 16

PPP_DEVICE = "/dev/ppp"

OPERATION_OPEN = "open"
OPERATION_ATTACH = "attach"
OPERATION_BRIDGE = "bridge"
OPERATION_UNBRIDGE = "unbridge"
OPERATION_GET_CHANNEL = "get channel"


class PppError(Exception):
    """A PPP ioctl or /dev/ppp failure.

    ``operation`` is one of the OPERATION_* names, ``channel`` the channel
    index the request was issued on (or None), ``peer`` the peer index of a
    bridge request (or None) and ``errno`` the kernel's error number.
    """

    def __init__(self, message, operation=None, channel=None, peer=None, error_number=None):
        super(PppError, self).__init__(message)
        self.operation = operation
        self.channel = channel
        self.peer = peer
        self.errno = error_number

    def __reduce__(self):
        # Keeps the fields when the error is pickled back from a namespace child.
        return (self.__class__, (str(self), self.operation, self.channel, self.peer, self.errno))


class PppDeviceMissing(PppError):
    """/dev/ppp is absent or has no driver: ppp_generic is not loaded."""


class PermissionDenied(PppError):
    """The kernel rejected the request for lack of CAP_NET_ADMIN or ptrace rights."""


class ChannelNotFound(PppError):
    """No channel with that index exists in the caller's network namespace (ENXIO)."""


class ChannelBusy(PppError):
    """A channel of the bridge request is bridged or connected to a PPP unit (EALREADY)."""


class NotBridged(PppError):
    """The channel has no bridge to remove (EINVAL on PPPIOCUNBRIDGECHAN)."""


class BridgingUnsupported(PppError):
    """The running ppp_generic has no channel bridging (ENOTTY)."""


class ChannelNotConnected(PppError):
    """The PPPoX socket is not connected, so it has no channel (ENOTCONN)."""


def _describe_target(operation, channel, peer):
    if operation == OPERATION_BRIDGE:
        return "bridging channel %s to channel %s" % (channel, peer)
    if operation == OPERATION_UNBRIDGE:
        return "unbridging channel %s" % channel
    if operation == OPERATION_ATTACH:
        return "attaching to channel %s" % channel
    if operation == OPERATION_GET_CHANNEL:
        return "reading the channel index of a PPPoX socket"
    return "opening %s" % PPP_DEVICE


def error_from_errno(error_number, operation, channel=None, peer=None):
    """Return the named PppError for an errno of a PPP operation.

    The same errno means different things for different requests: ENXIO on
    open means /dev/ppp has no driver, on attach or bridge it means an
    unknown channel index. For a bridge request the ENXIO is about ``peer``,
    because the channel itself was already attached.
    """
    target = _describe_target(operation, channel, peer)
    reason = os.strerror(error_number)
    message = "%s failed: %s (errno %d)" % (target, reason, error_number)
    details = dict(operation=operation, channel=channel, peer=peer, error_number=error_number)

    if error_number in (errno.EPERM, errno.EACCES):
        return PermissionDenied(message, **details)

    if operation == OPERATION_OPEN:
        if error_number in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            return PppDeviceMissing(message, **details)
        return PppError(message, **details)

    if error_number == errno.ENOTTY and operation in (OPERATION_BRIDGE, OPERATION_UNBRIDGE):
        return BridgingUnsupported(message, **details)
    if error_number == errno.ENXIO and operation in (OPERATION_ATTACH, OPERATION_BRIDGE):
        return ChannelNotFound(message, **details)
    if error_number == errno.EALREADY and operation == OPERATION_BRIDGE:
        return ChannelBusy(message, **details)
    if error_number == errno.EINVAL and operation == OPERATION_UNBRIDGE:
        return NotBridged(message, **details)
    if error_number == errno.ENOTCONN and operation == OPERATION_GET_CHANNEL:
        return ChannelNotConnected(message, **details)
    return PppError(message, **details)


def open_ppp_device():
    """Open /dev/ppp and return the file descriptor.

    Raises PppDeviceMissing when the device node or its driver is absent and
    PermissionDenied without CAP_NET_ADMIN (ppp_open checks it).
    """
    try:
        return os.open(PPP_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise error_from_errno(exc.errno, OPERATION_OPEN)


def _ioctl_int_in(fd, request, value, operation, channel=None, peer=None):
    try:
        fcntl.ioctl(fd, request, struct.pack("i", value))
    except OSError as exc:
        raise error_from_errno(exc.errno, operation, channel=channel, peer=peer)


def attach_channel(index):
    """Open /dev/ppp, attach it to channel ``index`` and return the descriptor.

    The lookup happens in the calling process's network namespace. Attaching
    changes no channel state, so it is safe in check mode. Close the
    descriptor when done: a descriptor kept attached to a channel whose socket
    has closed can still be bridged, which leaves a bridge that carries
    nothing.
    """
    fd = open_ppp_device()
    try:
        _ioctl_int_in(fd, PPPIOCATTCHAN, index, OPERATION_ATTACH, channel=index)
    except PppError:
        os.close(fd)
        raise
    return fd


class AttachedChannel:
    """A /dev/ppp descriptor attached to one channel, closed on exit."""

    def __init__(self, index):
        self.index = index
        self.fd = None

    def __enter__(self):
        self.fd = attach_channel(self.index)
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()
        return False

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def bridge(self, peer_index):
        """Bridge this channel to ``peer_index``, both directions in one request."""
        _ioctl_int_in(self.fd, PPPIOCBRIDGECHAN, peer_index, OPERATION_BRIDGE,
                      channel=self.index, peer=peer_index)

    def unbridge(self):
        """Remove this channel's bridge, both directions."""
        try:
            fcntl.ioctl(self.fd, PPPIOCUNBRIDGECHAN, 0)
        except OSError as exc:
            raise error_from_errno(exc.errno, OPERATION_UNBRIDGE, channel=self.index)


def check_channel_exists(index):
    """Raise ChannelNotFound unless channel ``index`` exists in this namespace."""
    with AttachedChannel(index):
        pass


def bridge_channels(index, peer_index):
    """Bridge channel ``index`` to ``peer_index`` in the caller's namespace."""
    with AttachedChannel(index) as channel:
        channel.bridge(peer_index)


def unbridge_channel(index):
    """Remove the bridge of channel ``index``, whatever its peer is."""
    with AttachedChannel(index) as channel:
        channel.unbridge()


def read_channel_index(socket_fd):
    """Return the channel index of a connected PPPoX socket (PPPIOCGCHAN).

    NOTE: PPPIOCGCHAN marks the socket PPPOX_BOUND, and from then on its
    received frames go to the channel instead of the socket's reader. Call
    this only on sockets that are already bound (see discovery.is_socket_bound),
    where the mark is already set and the call changes nothing.
    """
    buffer = bytearray(_INT_SIZE)
    try:
        fcntl.ioctl(socket_fd, PPPIOCGCHAN, buffer, True)
    except OSError as exc:
        raise error_from_errno(exc.errno, OPERATION_GET_CHANNEL)
    return struct.unpack("i", bytes(buffer))[0]


# Descriptors left free for the rest of the run when the kept ones reach the limit.
_DESCRIPTOR_MARGIN = 256


def _descriptor_budget():
    """Return how many descriptors KernelChannelOps may keep open, raising the soft limit if allowed.

    The kept descriptors may number two per pair, beyond the usual soft limit
    of 1024. Raising the soft limit up to the hard one needs no privilege.
    The margin leaves room for the descriptors the rest of the run opens.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(0, soft - _DESCRIPTOR_MARGIN)


def _hung_up(fd):
    """Return True when the channel that ``fd`` is attached to has unregistered (POLLHUP)."""
    poller = select.poll()
    poller.register(fd, 0)
    return any(events & select.POLLHUP for _, events in poller.poll(0))


class KernelChannelOps:
    """The channel operations that the bridge executor issues, on the real kernel.

    Each method runs in the calling process's network namespace and raises
    the PppError subclasses of ``error_from_errno``.

    An existence check keeps its attached descriptor, and a bridge request
    from that channel later in the same run uses it, which saves an open and
    an attach per pair. Use the object as a context manager, or call close(),
    so that the descriptors it keeps are closed at the end of the run. They
    must never outlive it (see attach_channel).
    """

    def __init__(self, keep_limit=None):
        self._attached = {}
        self._keep_limit = _descriptor_budget() if keep_limit is None else keep_limit

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.close()
        return False

    def close(self):
        descriptors = list(self._attached.values())
        self._attached.clear()
        for fd in descriptors:
            os.close(fd)

    def check(self, index):
        if index in self._attached:
            return
        fd = attach_channel(index)
        if len(self._attached) < self._keep_limit:
            self._attached[index] = fd
        else:
            os.close(fd)

    def bridge(self, index, peer_index):
        fd = self._attached.pop(index, None)
        if fd is None:
            bridge_channels(index, peer_index)
            return
        try:
            self._bridge_attached(fd, index, peer_index)
        finally:
            os.close(fd)

    def _bridge_attached(self, fd, index, peer_index):
        _ioctl_int_in(fd, PPPIOCBRIDGECHAN, peer_index, OPERATION_BRIDGE, channel=index, peer=peer_index)
        # A descriptor attached to a channel whose socket closed since the check
        # still accepts the bridge, and the peer then sends into a dead channel.
        # The kernel marks the descriptor hung up after it removes the unregistered
        # channel's bridge. So a hang-up seen here means this bridge may have come
        # too late to be removed, and it is removed here. The error is the one a
        # fresh attach would raise. NOTE: a close that lands between the kernel's
        # unbridge and its hang-up mark is missed. That window is a few
        # instructions, and a fresh attach has a similar one between its lookup
        # and the bridge request.
        if _hung_up(fd):
            try:
                fcntl.ioctl(fd, PPPIOCUNBRIDGECHAN, 0)
            except OSError:
                pass
            raise error_from_errno(errno.ENXIO, OPERATION_ATTACH, channel=index)

    def unbridge(self, index):
        # A kept descriptor of a channel that closed since the check would
        # report "not bridged" where a fresh attach reports the channel gone.
        fd = self._attached.pop(index, None)
        if fd is not None:
            os.close(fd)
        unbridge_channel(index)
