"""Tests of the ioctl request encoding and the errno-to-exception mapping."""

import errno
import os
import pickle

import pytest
import yaml

from ansible_collections.l2tp.lac.plugins.module_utils import ppp_ioctl

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def load_fixture(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return yaml.safe_load(handle)


@pytest.mark.parametrize("case", load_fixture("ioctl_numbers.yml"), ids=lambda case: case["name"])
def test_request_number_matches_header(case):
    assert getattr(ppp_ioctl, case["name"]) == case["value"]


def test_unbridge_differs_from_l2tp_stats():
    assert ppp_ioctl.PPPIOCUNBRIDGECHAN != ppp_ioctl.PPPIOCGL2TPSTATS


@pytest.mark.parametrize(
    "case", load_fixture("errno_mapping.yml"),
    ids=lambda case: "%s-%s" % (case["operation"].replace(" ", "_"), case["errno"]))
def test_errno_maps_to_named_exception(case):
    error = ppp_ioctl.error_from_errno(getattr(errno, case["errno"]), case["operation"], channel=17, peer=42)

    assert type(error) is getattr(ppp_ioctl, case["exception"])
    assert error.errno == getattr(errno, case["errno"])
    assert error.operation == case["operation"]


def test_bridge_error_names_both_channels():
    error = ppp_ioctl.error_from_errno(errno.EALREADY, ppp_ioctl.OPERATION_BRIDGE, channel=17, peer=42)

    assert str(error).startswith("bridging channel 17 to channel 42 failed:")
    assert "errno %d" % errno.EALREADY in str(error)
    assert error.channel == 17
    assert error.peer == 42


def test_unbridge_error_names_channel():
    error = ppp_ioctl.error_from_errno(errno.EINVAL, ppp_ioctl.OPERATION_UNBRIDGE, channel=9)

    assert str(error).startswith("unbridging channel 9 failed:")


def test_open_error_names_device():
    error = ppp_ioctl.error_from_errno(errno.ENOENT, ppp_ioctl.OPERATION_OPEN)

    assert "opening /dev/ppp failed" in str(error)


def test_error_survives_pickling():
    error = ppp_ioctl.error_from_errno(errno.ENXIO, ppp_ioctl.OPERATION_BRIDGE, channel=3, peer=4)

    copy = pickle.loads(pickle.dumps(error))

    assert type(copy) is ppp_ioctl.ChannelNotFound
    assert str(copy) == str(error)
    assert (copy.operation, copy.channel, copy.peer, copy.errno) == ("bridge", 3, 4, errno.ENXIO)
