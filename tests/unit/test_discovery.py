"""The §8.1.2 multicast announce and §8.1.3 DNS-SD TXT record (``protocol/discovery.py``):
round trips, the spec's own examples, and malformed input answered as one PF001/PF002."""

from __future__ import annotations

import copy
import dataclasses
import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from packetflow.protocol import discovery
from packetflow.protocol.chemistry import GROUPS, SPECIALIZATIONS
from packetflow.protocol.discovery import Advertisement
from packetflow.protocol.errors import PacketFlowError
from packetflow.protocol.messages import (
    Discover,
    DiscoverPayload,
    ReactorInfo,
    SupportedPacket,
    decode_one,
    encode,
)

# §8.1.2's example, verbatim, inside a §4.1 envelope (the spec shows only the two fields).
SPEC_MULTICAST_PAYLOAD = """{
    "discovery_type": "multicast_announce",
    "multicast_group": "224.0.1.100",
    "port": 9999,
    "announcement": {
      "reactor_id": "reactor-zig-02",
      "implementation": "zig",
      "capabilities": ["ed:signal", "rm:monitor"],
      "load_factor": 0.3,
      "accepts_connections": true
    }
  }"""

# §8.1.3's example TXT strings, verbatim.
SPEC_TXT = [
    "version=1.0",
    "impl=javascript",
    "spec=memory_bound,io_intensive",
    "load=0.45",
    "caps=df:transform,df:validate,ed:signal",
]

WS = "ws://127.0.0.1:8443/ws"


def envelope(payload: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "protocol_version": "1.0",
        "message_type": "discover",
        "message_id": "msg_1",
        "timestamp": 1640995200000,
        "source_id": "reactor-zig-02",
        "payload": payload,
        **fields,
    }


def spec_payload_with_endpoints() -> dict[str, Any]:
    payload: dict[str, Any] = json.loads(SPEC_MULTICAST_PAYLOAD)
    payload["announcement"]["endpoints"] = {"websocket": WS}
    return payload


def txt_dict(strings: list[str]) -> dict[bytes, bytes | None]:
    """TXT strings as zeroconf hands them over: bytes keys, bytes values."""
    out: dict[bytes, bytes | None] = {}
    for s in strings:
        key, sep, value = s.partition("=")
        out[key.encode()] = value.encode() if sep else None
    return out


def as_bytes(record: dict[str, str]) -> dict[bytes, bytes | None]:
    return {k.encode(): v.encode() for k, v in record.items()}


def sample(**overrides: Any) -> Advertisement:
    fields: dict[str, Any] = {
        "reactor_id": "reactor-py-1",
        "implementation": "python",
        "endpoints": {"websocket": WS, "http": "http://127.0.0.1:8443"},
        "capabilities": (("cf", "ping"), ("df", "transform")),
        "specializations": ("cpu_intensive", "general_purpose"),
        "load_factor": 0.25,
        "max_capacity": 64.0,
    }
    fields.update(overrides)
    return Advertisement(**fields)


def pf_error(exc: pytest.ExceptionInfo[PacketFlowError]) -> tuple[str, str | None]:
    return exc.value.code, exc.value.field


# ---------------------------------------------------------------- §8.1.2 multicast


def test_spec_multicast_example_decodes_as_discover_pfap_8_1_2() -> None:
    raw = json.dumps(envelope(json.loads(SPEC_MULTICAST_PAYLOAD))).encode()
    msg = decode_one(raw)
    assert isinstance(msg, Discover)
    assert msg.payload.discovery_type == "multicast_announce"
    assert msg.payload.multicast_group == "224.0.1.100"
    assert msg.payload.port == 9999


def test_spec_multicast_example_without_endpoints_is_undialable_pfap_8_1_2() -> None:
    """§8.1.2's example names no endpoint: a gateway could not dial it, so PF002."""
    raw = json.dumps(envelope(json.loads(SPEC_MULTICAST_PAYLOAD))).encode()
    with pytest.raises(PacketFlowError) as exc:
        discovery.parse_datagram(raw)
    assert pf_error(exc) == ("PF002", "payload.announcement.endpoints")


def test_spec_multicast_example_with_endpoints_parses_pfap_8_1_2() -> None:
    raw = json.dumps(envelope(spec_payload_with_endpoints())).encode()
    adv = discovery.parse_datagram(raw)
    assert adv.reactor_id == "reactor-zig-02"
    assert adv.implementation == "zig"
    assert adv.capabilities == (("ed", "signal"), ("rm", "monitor"))
    assert adv.load_factor == 0.3
    assert adv.accepts_connections is True
    assert adv.websocket == WS
    # Extensions absent: defaults.
    assert adv.specializations == discovery.DEFAULT_SPECIALIZATIONS
    assert adv.max_capacity == discovery.DEFAULT_CAPACITY


def test_multicast_round_trip_pfap_8_1_2() -> None:
    adv = sample()
    msg = discovery.multicast_envelope(
        adv, group="224.0.1.100", port=9999, message_id="msg_x", timestamp=1, sequence_id=3
    )
    wire = json.loads(encode(msg))
    assert wire["message_type"] == "discover"
    assert wire["destination_id"] is None  # broadcast (§4.1)
    assert wire["source_id"] == "reactor-py-1"
    payload = wire["payload"]
    assert payload["discovery_type"] == "multicast_announce"
    assert payload["multicast_group"] == "224.0.1.100"
    assert payload["port"] == 9999
    assert payload["announcement"] == {
        "reactor_id": "reactor-py-1",
        "implementation": "python",
        "capabilities": ["cf:ping", "df:transform"],
        "load_factor": 0.25,
        "accepts_connections": True,
        "endpoints": {"websocket": WS, "http": "http://127.0.0.1:8443"},
        "specializations": ["cpu_intensive", "general_purpose"],
        "max_capacity": 64.0,
    }
    assert discovery.parse_datagram(encode(msg)) == adv


def test_advertisement_from_a_reactor_announce_pfap_4_2_5() -> None:
    announce = DiscoverPayload(
        discovery_type="announce",
        reactor_info=ReactorInfo(
            reactor_id="r1",
            specializations=["io_intensive"],
            max_capacity=32.0,
            endpoints={"websocket": WS},
        ),
        supported_packets=[SupportedPacket(group="cf", element="ping")],
    )
    adv = discovery.advertisement(announce, load_factor=1.7, accepts_connections=False)
    assert adv.reactor_id == "r1"
    assert adv.specializations == ("io_intensive",)
    assert adv.capabilities == (("cf", "ping"),)
    assert adv.max_capacity == 32.0
    assert adv.load_factor == 1.0  # clamped: a load factor is 0.0-1.0
    assert adv.accepts_connections is False


def test_advertisement_needs_reactor_info() -> None:
    with pytest.raises(PacketFlowError) as exc:
        discovery.advertisement(DiscoverPayload(discovery_type="announce"), load_factor=0.0)
    assert pf_error(exc) == ("PF002", "payload.reactor_info")


def _mutate(path: list[str], value: Any) -> dict[str, Any]:
    payload = spec_payload_with_endpoints()
    target = payload
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return payload


_DELETE = object()


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        (["announcement", "reactor_id"], _DELETE, "payload.announcement.reactor_id"),
        (["announcement", "reactor_id"], 7, "payload.announcement.reactor_id"),
        (["announcement", "reactor_id"], "", "payload.announcement.reactor_id"),
        (["announcement", "reactor_id"], "x" * 129, "payload.announcement.reactor_id"),
        (["announcement", "implementation"], None, "payload.announcement.implementation"),
        (["announcement", "capabilities"], _DELETE, "payload.announcement.capabilities"),
        (["announcement", "capabilities"], "ed:signal", "payload.announcement.capabilities"),
        (["announcement", "capabilities"], ["ed:signal", 5],
         "payload.announcement.capabilities[1]"),
        (["announcement", "capabilities"], ["zz:ping"], "payload.announcement.capabilities[0]"),
        (["announcement", "capabilities"], ["df"], "payload.announcement.capabilities[0]"),
        (["announcement", "capabilities"], ["df:Bad"], "payload.announcement.capabilities[0]"),
        (["announcement", "capabilities"], ["cf:ping"] * 1025, "payload.announcement.capabilities"),
        (["announcement", "load_factor"], _DELETE, "payload.announcement.load_factor"),
        (["announcement", "load_factor"], 1.5, "payload.announcement.load_factor"),
        (["announcement", "load_factor"], "0.3", "payload.announcement.load_factor"),
        (["announcement", "load_factor"], True, "payload.announcement.load_factor"),
        (["announcement", "accepts_connections"], "yes",
         "payload.announcement.accepts_connections"),
        (["announcement", "endpoints"], ["ws://x/ws"], "payload.announcement.endpoints"),
        (["announcement", "endpoints"], {"http": "http://x"},
         "payload.announcement.endpoints.websocket"),
        (["announcement", "endpoints", "websocket"], "http://127.0.0.1:1/ws",
         "payload.announcement.endpoints.websocket"),
        (["announcement", "endpoints", "websocket"], 80,
         "payload.announcement.endpoints.websocket"),
        (["announcement", "specializations"], "cpu_intensive",
         "payload.announcement.specializations"),
        (["announcement", "specializations"], [1], "payload.announcement.specializations[0]"),
        (["announcement", "max_capacity"], 0, "payload.announcement.max_capacity"),
        (["announcement", "max_capacity"], "many", "payload.announcement.max_capacity"),
        (["announcement"], _DELETE, "payload.announcement"),
        (["discovery_type"], "announce", "payload.discovery_type"),
    ],
)  # fmt: skip
def test_malformed_multicast_announce_is_pf002_naming_the_field(
    path: list[str], value: Any, field: str
) -> None:
    raw = json.dumps(envelope(_mutate(path, value))).encode()
    with pytest.raises(PacketFlowError) as exc:
        discovery.parse_datagram(raw)
    assert pf_error(exc) == ("PF002", field)


@pytest.mark.parametrize(
    ("datagram", "code", "field"),
    [
        (b"\xff\xfe garbage", "PF001", "$"),
        (b"not json at all", "PF001", "$"),
        (b"", "PF001", "$"),
        (b"42", "PF001", "$"),
        (b"[]", "PF001", "$"),
        (b"{" * 10_000, "PF001", "$"),
        (b" " * (discovery.MAX_DATAGRAM_BYTES + 1), "PF001", "$"),
        (json.dumps(envelope(spec_payload_with_endpoints(), protocol_version="2.0")).encode(),
         "PF001", "protocol_version"),
        (json.dumps(envelope({"discovery_type": "nope"})).encode(), "PF002",
         "payload.discovery_type"),
        (json.dumps({**envelope({}), "message_type": "heartbeat",
                     "payload": {"reactor_id": "r"}}).encode(), "PF002", "message_type"),
    ],
)  # fmt: skip
def test_garbage_datagram_is_one_pfap_error(datagram: bytes, code: str, field: str) -> None:
    with pytest.raises(PacketFlowError) as exc:
        discovery.parse_datagram(datagram)
    assert pf_error(exc) == (code, field)


def test_batch_datagram_is_refused() -> None:
    one = envelope(spec_payload_with_endpoints())
    with pytest.raises(PacketFlowError) as exc:
        discovery.parse_datagram(json.dumps([one, one]).encode())
    assert exc.value.code == "PF001"


# ---------------------------------------------------------------- §8.1.3 DNS-SD TXT


def test_spec_txt_example_parses_pfap_8_1_3() -> None:
    """§8.1.3's record has neither ``id`` nor ``ws``: the instance name and the SRV/A
    records supply them."""
    adv = discovery.parse_txt(
        txt_dict(SPEC_TXT),
        instance_name="reactor-js-05._packetflow._tcp.local.",
        websocket="ws://127.0.0.1:9000/ws",
    )
    assert adv.reactor_id == "reactor-js-05"
    assert adv.implementation == "javascript"
    assert adv.specializations == ("memory_bound", "io_intensive")
    assert adv.load_factor == 0.45
    assert adv.capabilities == (("df", "transform"), ("df", "validate"), ("ed", "signal"))
    assert adv.websocket == "ws://127.0.0.1:9000/ws"
    assert adv.max_capacity == discovery.DEFAULT_CAPACITY


def test_spec_txt_example_without_fallbacks_names_the_missing_key() -> None:
    with pytest.raises(PacketFlowError) as exc:
        discovery.parse_txt(txt_dict(SPEC_TXT))
    assert pf_error(exc) == ("PF002", "txt.id")
    with pytest.raises(PacketFlowError) as exc:
        discovery.parse_txt(txt_dict(SPEC_TXT), instance_name="r._packetflow._tcp.local.")
    assert pf_error(exc) == ("PF002", "txt.ws")


def test_txt_round_trip_pfap_8_1_3() -> None:
    adv = sample()
    record = discovery.txt_record(adv)
    assert record == {
        "version": "1.0",
        "impl": "python",
        "spec": "cpu_intensive,general_purpose",
        "load": "0.25",
        "caps": "cf:ping,df:transform",
        "id": "reactor-py-1",
        "ws": WS,
        "capacity": "64",
    }
    parsed = discovery.parse_txt(as_bytes(record))
    # TXT carries only the websocket endpoint.
    assert parsed == sample(endpoints={"websocket": WS})
    assert discovery.parse_txt(record) == parsed  # str keys and values work too


def test_txt_keys_are_case_insensitive_rfc_6763_6_4() -> None:
    strings = [key.upper() + "=" + value for key, _, value in (s.partition("=") for s in SPEC_TXT)]
    adv = discovery.parse_txt(txt_dict([*strings, "ID=r", f"WS={WS}"]))
    assert adv.reactor_id == "r"
    assert adv.implementation == "javascript"


def test_many_capabilities_continue_in_caps_n_keys_rfc_6763_6_1() -> None:
    caps = tuple((g, f"element_number_{i}") for g in GROUPS for i in range(12))
    adv = sample(capabilities=caps)
    record = discovery.txt_record(adv)
    assert {"caps", "caps1", "caps2"} <= record.keys()
    for key, value in record.items():
        assert len(f"{key}={value}".encode()) <= discovery.TXT_STRING_MAX
    assert discovery.parse_txt(as_bytes(record)).capabilities == caps


def test_txt_string_too_long_is_pf002() -> None:
    adv = sample(endpoints={"websocket": "ws://127.0.0.1:1/" + "x" * 300})
    with pytest.raises(PacketFlowError) as exc:
        discovery.txt_record(adv)
    assert pf_error(exc) == ("PF002", "txt.ws")


def _txt(**changes: str | None) -> dict[bytes, bytes | None]:
    record: dict[str, str | None] = dict(discovery.txt_record(sample()))
    record.update(changes)
    return {k.encode(): (None if v is None else v.encode()) for k, v in record.items() if v != "-"}


@pytest.mark.parametrize(
    ("txt", "field"),
    [
        (_txt(version="-"), "txt.version"),
        (_txt(version="2.0"), "txt.version"),
        (_txt(version=None), "txt.version"),  # a key without "=" has no value
        (_txt(impl="-"), "txt.impl"),
        (_txt(impl=""), "txt.impl"),
        (_txt(caps="-"), "txt.caps"),
        (_txt(caps="df"), "txt.caps[0]"),
        (_txt(caps="cf:ping,xx:y"), "txt.caps[1]"),
        (_txt(load="abc"), "txt.load"),
        (_txt(load="2"), "txt.load"),
        (_txt(load="nan"), "txt.load"),
        (_txt(capacity="-1"), "txt.capacity"),
        (_txt(capacity="inf"), "txt.capacity"),
        (_txt(ws="http://127.0.0.1/ws"), "txt.ws"),
        (_txt(ws="ws://"), "txt.ws"),
        (_txt(spec=",".join(["general_purpose"] * 17)), "txt.spec"),
        ({**_txt(), b"impl": b"\xff\xfe"}, "txt.impl"),
    ],
)
def test_malformed_txt_is_pf002_naming_the_key(txt: dict[bytes, bytes | None], field: str) -> None:
    with pytest.raises(PacketFlowError) as exc:
        discovery.parse_txt(txt)
    assert pf_error(exc) == ("PF002", field)


# ---------------------------------------------------------------- into the registry


def test_announce_payload_is_what_gateway_register_reads_pfap_4_2_5() -> None:
    payload = discovery.announce_payload(sample())
    assert payload.discovery_type == "announce"
    info = payload.reactor_info
    assert info is not None
    assert info.reactor_id == "reactor-py-1"
    assert info.endpoints["websocket"] == WS
    assert info.specializations == ["cpu_intensive", "general_purpose"]
    assert info.max_capacity == 64.0
    assert info.current_load == 16.0  # absolute, like §4.2.5's 67.5 of 200.0
    assert [(p.group, p.element) for p in payload.supported_packets] == [
        ("cf", "ping"), ("df", "transform"),
    ]  # fmt: skip
    # It survives the wire as a §4.2.5 announce.
    wire = msgspec.json.encode(payload)
    assert msgspec.json.decode(wire, type=DiscoverPayload) == payload


@pytest.mark.parametrize(
    ("host", "interface"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("10.1.2.3", "10.1.2.3"),
        ("0.0.0.0", None),
        ("", None),
        ("reactor.example", None),
        ("::1", None),
    ],
)
def test_discovery_interface(host: str, interface: str | None) -> None:
    assert discovery.discovery_interface(host) == interface


# ---------------------------------------------------------------- properties

_names = st.text(
    st.characters(categories=("L", "N", "P", "S"), max_codepoint=0x2FF, exclude_characters=","),
    min_size=1,
    max_size=40,
)
_advertisements = st.builds(
    Advertisement,
    reactor_id=_names,
    implementation=_names,
    endpoints=st.integers(1, 65535).map(lambda p: {"websocket": f"ws://127.0.0.1:{p}/ws"}),
    capabilities=st.lists(
        st.tuples(st.sampled_from(GROUPS), st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)),
        max_size=60,
        unique=True,
    ).map(tuple),
    specializations=st.lists(st.sampled_from(SPECIALIZATIONS), min_size=1, max_size=5).map(tuple),
    load_factor=st.integers(0, 10_000).map(lambda i: i / 10_000),
    max_capacity=st.integers(1, 100_000).map(float),
    accepts_connections=st.booleans(),
)


@given(_advertisements)
def test_multicast_round_trip_property(adv: Advertisement) -> None:
    msg = discovery.multicast_envelope(adv, group="224.0.1.100", port=9999, message_id="m",
                                       timestamp=0)  # fmt: skip
    assert discovery.parse_datagram(encode(msg)) == adv


@given(_advertisements)
def test_txt_round_trip_property(adv: Advertisement) -> None:
    parsed = discovery.parse_txt(as_bytes(discovery.txt_record(adv)))
    # TXT has no accepts_connections: being registered is accepting.
    assert parsed == dataclasses.replace(adv, accepts_connections=True)


@given(st.binary(max_size=2048))
def test_any_datagram_is_an_advertisement_or_one_pf001_pf002(data: bytes) -> None:
    try:
        discovery.parse_datagram(data)
    except PacketFlowError as err:
        assert err.code in {"PF001", "PF002"}


_scalars = (
    st.none()
    | st.booleans()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers()
    | st.text(max_size=8)
)
_json_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=10,
)  # fmt: skip


@given(st.dictionaries(st.sampled_from(["reactor_id", "implementation", "capabilities",
                                        "load_factor", "accepts_connections", "endpoints",
                                        "specializations", "max_capacity"]),
                       _json_values))  # fmt: skip
def test_any_announcement_is_an_advertisement_or_one_pf002(ann: dict[str, Any]) -> None:
    base = copy.deepcopy(spec_payload_with_endpoints())
    base["announcement"].update(ann)
    raw = json.dumps(envelope(base)).encode()
    try:
        discovery.parse_datagram(raw)
    except PacketFlowError as err:
        assert err.code == "PF002"


@given(st.dictionaries(st.binary(max_size=10), st.none() | st.binary(max_size=40), max_size=8))
def test_any_txt_record_is_an_advertisement_or_one_pf002(txt: dict[bytes, bytes | None]) -> None:
    try:
        discovery.parse_txt({**_txt(), **txt})
    except PacketFlowError as err:
        assert err.code == "PF002"


@pytest.mark.parametrize(
    ("group", "port", "ok"),
    [
        ("224.0.1.100", 9999, True),
        ("239.255.0.1", 1, True),
        ("127.0.0.1", 9999, False),
        ("not-an-address", 9999, False),
        ("ff02::1", 9999, False),
        ("224.0.1.100", 0, False),
        ("224.0.1.100", 65536, False),
    ],
)
def test_check_multicast(group: str, port: int, ok: bool) -> None:
    if ok:
        discovery.check_multicast(group, port)
    else:
        with pytest.raises(ValueError):
            discovery.check_multicast(group, port)
