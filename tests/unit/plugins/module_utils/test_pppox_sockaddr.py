"""Tests of the PPPoX address layouts against byte offsets from the uapi headers."""

import binascii
import os
import struct

import pytest
import yaml

from ansible_collections.l2tp.lac.plugins.module_utils import pppox_sockaddr
from ansible_collections.l2tp.lac.plugins.module_utils.pppox_sockaddr import SockaddrError

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
AF_PPPOX = 24

with open(os.path.join(FIXTURES, "pppox_addresses.yml")) as handle:
    ADDRESSES = yaml.safe_load(handle)


def build(size, protocol, layout):
    """Place each field at its offset in a zeroed buffer, independently of the module's structs."""
    raw = bytearray(size)
    struct.pack_into("=H", raw, 0, AF_PPPOX)
    struct.pack_into("=I", raw, 2, protocol)
    for field in layout:
        offset = field["offset"]
        if "be16" in field:
            struct.pack_into(">H", raw, offset, field["be16"])
        elif "u16" in field:
            struct.pack_into("=H", raw, offset, field["u16"])
        elif "u32" in field:
            struct.pack_into("=I", raw, offset, field["u32"])
        elif "i32" in field:
            struct.pack_into("=i", raw, offset, field["i32"])
        elif "bytes" in field:
            value = binascii.unhexlify(field["bytes"])
            raw[offset:offset + len(value)] = value
        else:
            value = field["text"].encode("ascii")
            raw[offset:offset + len(value)] = value
    return bytes(raw)


@pytest.mark.parametrize("case", ADDRESSES, ids=lambda case: case["id"])
def test_parse_reads_documented_offsets(case):
    parsed = pppox_sockaddr.parse_pppox(build(case["size"], case["protocol"], case["layout"]))

    assert parsed._asdict() == case["fields"]


def test_layout_sizes_match_headers():
    assert pppox_sockaddr.SOCKADDR_PPPOX_SIZE == 30
    assert pppox_sockaddr.SOCKADDR_PPPOL2TP_SIZE == 38
    assert pppox_sockaddr.SOCKADDR_PPPOL2TPIN6_SIZE == 50
    assert pppox_sockaddr.SOCKADDR_PPPOL2TPV3_SIZE == 46
    assert pppox_sockaddr.SOCKADDR_PPPOL2TPV3IN6_SIZE == 58


def test_pack_pppoe_matches_layout():
    case = ADDRESSES[0]

    packed = pppox_sockaddr.pack_pppoe(17, "02:00:00:00:00:01", "eth1")

    assert packed == build(case["size"], case["protocol"], case["layout"])


def test_pack_pppoe_accepts_dashed_upper_mac():
    packed = pppox_sockaddr.pack_pppoe(17, "02-00-00-00-00-0A", "eth1")

    assert pppox_sockaddr.parse_pppox(packed).peer_mac == "02:00:00:00:00:0a"


def test_pack_pppol2tp_v2_matches_layout():
    case = [entry for entry in ADDRESSES if entry["id"] == "l2tp-v2-ipv4"][0]

    packed = pppox_sockaddr.pack_pppol2tp(7, 5, 9, 6, 10, "192.0.2.1", 1701, owner_pid=4242)

    assert packed == build(case["size"], case["protocol"], case["layout"])


def test_pack_pppol2tp_tunnel_socket_round_trip():
    packed = pppox_sockaddr.pack_pppol2tp(4, 1, 0, 1, 0, "127.0.0.1", 40000)

    parsed = pppox_sockaddr.parse_pppox(packed)

    assert (parsed.tunnel_id, parsed.session_id, parsed.peer_session_id) == (1, 0, 0)
    assert (parsed.peer_address, parsed.peer_port, parsed.tunnel_fd) == ("127.0.0.1", 40000, 4)


@pytest.mark.parametrize("mac", ["02:00:00:00:00", "02:00:00:00:00:01:02", "0g:00:00:00:00:01", "2:0:0:0:0:1", ""])
def test_parse_mac_rejects_malformed(mac):
    with pytest.raises(SockaddrError, match="invalid MAC address"):
        pppox_sockaddr.parse_mac(mac)


@pytest.mark.parametrize("interface", ["", "abcdefghijklmnop"])
def test_pack_pppoe_rejects_bad_interface(interface):
    with pytest.raises(SockaddrError, match="invalid interface name"):
        pppox_sockaddr.pack_pppoe(1, "02:00:00:00:00:01", interface)


def test_pack_pppol2tp_rejects_32_bit_id():
    with pytest.raises(SockaddrError, match="session_id 65536"):
        pppox_sockaddr.pack_pppol2tp(3, 1, 65536, 1, 1)


def test_parse_rejects_unknown_length():
    raw = build(40, 1, [])

    with pytest.raises(SockaddrError, match="40 bytes matches no known layout"):
        pppox_sockaddr.parse_pppox(raw)


def test_parse_rejects_other_family():
    raw = bytearray(build(30, 0, []))
    struct.pack_into("=H", raw, 0, 2)

    with pytest.raises(SockaddrError, match="not AF_PPPOX"):
        pppox_sockaddr.parse_pppox(bytes(raw))


def test_parse_rejects_short_pppoe():
    with pytest.raises(SockaddrError, match="PPPoE address of 29 bytes"):
        pppox_sockaddr.parse_pppox(build(29, 0, []))


def test_parse_rejects_unknown_protocol():
    with pytest.raises(SockaddrError, match="unknown PPPoX protocol 2"):
        pppox_sockaddr.parse_pppox(build(30, 2, []))
