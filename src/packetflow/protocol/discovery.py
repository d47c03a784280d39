"""Build and parse the two self-advertisements of PFAP §8.1 (the §8.1.2 multicast announce
and the §8.1.3 DNS-SD TXT record) and turn either into the §4.2.5 DISCOVER ``announce``
payload the gateway registers.

How this works: both channels carry the same facts, an ``Advertisement``. A reactor builds
one from its own announce (``advertisement``) and renders it as a datagram
(``multicast_envelope``) or a TXT record (``txt_record``); a gateway parses what it heard
(``parse_datagram`` / ``parse_multicast`` / ``parse_txt``) back into an ``Advertisement``
and registers ``announce_payload(adv)``, exactly as if the reactor had announced directly.

Extensions beyond the spec's examples, needed because a gateway must dial what it finds
(DESIGN §2: reactors serve, gateways dial) and size its routing:

- multicast ``announcement``: ``endpoints`` (the §4.2.5 endpoints object, at least
  ``websocket``), ``specializations`` (list) and ``max_capacity`` (number of packets the
  reactor runs at once). An announcement without ``endpoints.websocket`` is refused (PF002):
  nothing could be dialled.
- TXT keys: ``id`` (reactor_id; default: the service instance name), ``ws`` (the
  websocket URL; default: ``ws://<SRV address>:<SRV port>/ws``), ``capacity``
  (max_capacity; default 1, so an unknown reactor is never overloaded) and ``caps1``,
  ``caps2``, ... continuing ``caps`` because RFC 6763 §6.1 limits each TXT string to 255
  bytes and a full reactor serves ~40 elements. ``version`` is read as the PFAP protocol
  version (§8.1.3 does not say; §8.1.1's meta calls the same "1.0" protocol_version).

Every parse error is a PF002 naming the offending field (``payload.announcement.load_factor``
or ``txt.load``); an undecodable datagram is PF001, as for any frame (DESIGN §3).
"""

from __future__ import annotations

import ipaddress
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from .chemistry import GROUPS, Group
from .errors import InvalidMessage, invalid_field, json_type
from .messages import (
    PROTOCOL_VERSION,
    SUPPORTED_MAJOR,
    Discover,
    DiscoverPayload,
    FrameError,
    ReactorInfo,
    SupportedPacket,
    decode_frame,
)
from .packets import ELEMENT_NAME

# DESIGN §2 channel 3: §8.1.2's group and port are the defaults; both are configurable.
MULTICAST_GROUP: Final = "224.0.1.100"
MULTICAST_PORT: Final = 9999
# §8.1.3's service type.
SERVICE_TYPE: Final = "_packetflow._tcp.local."
# The largest UDP payload over IPv4 (65535 - 8 UDP - 20 IP header bytes): a receive buffer
# of this size never truncates a datagram. An announce is ~1.5 KB.
MAX_DATAGRAM_BYTES: Final = 65_507
# RFC 6763 §6.1: one TXT string (``key=value``) is at most 255 bytes.
TXT_STRING_MAX: Final = 255
# Continuation keys ``caps1``..``capsN``: 64 x ~250 bytes holds ~1,000 capabilities, far
# more than any reactor serves, and bounds what one TXT record can make us parse.
MAX_CAPS_KEYS: Final = 64
# Bounds on what one advertisement may make the gateway keep (STYLE 5): ids as long as
# packet ids (DESIGN §4), at most 1,024 group:element pairs and 16 specializations or
# endpoints. A real reactor has ~40 elements, 1-5 specializations and 4 endpoints.
MAX_ID_LEN: Final = 128
MAX_CAPABILITIES: Final = 1024
MAX_LIST_ITEMS: Final = 16
MAX_URL_LEN: Final = 2048
# A reactor that names no specialization is what ``packetflow reactor`` defaults to.
DEFAULT_SPECIALIZATIONS: Final = ("general_purpose",)
# Capacity of a reactor that does not say: one packet at a time, never an overload.
DEFAULT_CAPACITY: Final = 1.0

_TXT: Final = "txt"
_CAP_EXPECTED: Final = (
    f'"group:element", group one of {", ".join(GROUPS)}, element matching [a-z][a-z0-9_]*'
)
_ANN: Final = "payload.announcement"


@dataclass(frozen=True, slots=True)
class Advertisement:
    """What a reactor says about itself on a discovery channel (§8.1.2 / §8.1.3)."""

    reactor_id: str
    implementation: str
    endpoints: Mapping[str, str] = field(hash=False)
    capabilities: tuple[tuple[Group, str], ...]
    specializations: tuple[str, ...] = DEFAULT_SPECIALIZATIONS
    load_factor: float = 0.0
    max_capacity: float = DEFAULT_CAPACITY
    accepts_connections: bool = True

    @property
    def websocket(self) -> str:
        return self.endpoints["websocket"]


# ---------------------------------------------------------------- reactor side


def advertisement(
    announce: DiscoverPayload, *, load_factor: float, accepts_connections: bool = True
) -> Advertisement:
    """The advertisement of a reactor whose §4.2.5 announce is ``announce``.

    Raises InvalidPacket (PF002) when the announce lacks reactor_info or a websocket endpoint.
    """
    info = announce.reactor_info
    if info is None:
        raise invalid_field("payload.reactor_info", "object", "missing", "required_field")
    adv = Advertisement(
        reactor_id=info.reactor_id,
        implementation=info.implementation,
        endpoints=dict(info.endpoints),
        capabilities=tuple((p.group, p.element) for p in announce.supported_packets),
        specializations=tuple(info.specializations) or DEFAULT_SPECIALIZATIONS,
        load_factor=min(1.0, max(0.0, load_factor)),
        max_capacity=info.max_capacity or DEFAULT_CAPACITY,
        accepts_connections=accepts_connections,
    )
    # The same checks a gateway applies, so a reactor never sends what it would refuse.
    return _parse_announcement(_announcement(adv), "payload.reactor_info")


def _announcement(adv: Advertisement) -> dict[str, Any]:
    return {
        # §8.1.2's fields
        "reactor_id": adv.reactor_id,
        "implementation": adv.implementation,
        "capabilities": [f"{g}:{e}" for g, e in adv.capabilities],
        "load_factor": round(adv.load_factor, 4),
        "accepts_connections": adv.accepts_connections,
        # extensions (module docstring)
        "endpoints": dict(adv.endpoints),
        "specializations": list(adv.specializations),
        "max_capacity": adv.max_capacity,
    }


def multicast_payload(adv: Advertisement, *, group: str, port: int) -> DiscoverPayload:
    """The §8.1.2 ``multicast_announce`` payload for ``adv``."""
    return DiscoverPayload(
        discovery_type="multicast_announce",
        multicast_group=group,
        port=port,
        announcement=_announcement(adv),
    )


def multicast_envelope(
    adv: Advertisement,
    *,
    group: str,
    port: int,
    message_id: str,
    timestamp: int,
    sequence_id: int | None = None,
) -> Discover:
    """The whole §8.1.2 datagram: a §4.1 DISCOVER envelope, broadcast (no destination)."""
    return Discover(
        protocol_version=PROTOCOL_VERSION,
        message_id=message_id,
        timestamp=timestamp,
        source_id=adv.reactor_id,
        destination_id=None,
        sequence_id=sequence_id,
        payload=multicast_payload(adv, group=group, port=port),
    )


def txt_record(adv: Advertisement) -> dict[str, str]:
    """The §8.1.3 TXT record for ``adv`` (keys in the module docstring).

    Raises InvalidPacket (PF002) naming the key whose ``key=value`` string would exceed
    RFC 6763's 255 bytes (a single capability or URL that long cannot be advertised).
    """
    record = {
        "version": PROTOCOL_VERSION,
        "impl": adv.implementation,
        "spec": ",".join(adv.specializations),
        "load": _short_float(adv.load_factor),
        "id": adv.reactor_id,
        "ws": adv.websocket,
        "capacity": _short_float(adv.max_capacity),
    }
    chunks = _pack_caps([f"{g}:{e}" for g, e in adv.capabilities])
    for index, chunk in enumerate(chunks):
        record[_caps_key(index)] = chunk
    for key, value in record.items():
        size = len(key.encode()) + 1 + len(value.encode())
        if size > TXT_STRING_MAX:
            raise invalid_field(f"{_TXT}.{key}", f"<= {TXT_STRING_MAX} bytes as key=value",
                                f"{size} bytes", "length")  # fmt: skip
    return record


def _caps_key(index: int) -> str:
    return "caps" if index == 0 else f"caps{index}"


def _pack_caps(caps: Sequence[str]) -> list[str]:
    """Comma-joined capabilities split into TXT strings that each fit 255 bytes, never
    splitting one ``group:element``. Always at least one (possibly empty) ``caps``."""
    chunks: list[str] = []
    current = ""
    for cap in caps:
        room = TXT_STRING_MAX - len(_caps_key(len(chunks))) - 1
        candidate = f"{current},{cap}" if current else cap
        if current and len(candidate.encode()) > room:
            chunks.append(current)
            current = cap
        else:
            current = candidate
    chunks.append(current)
    return chunks


def _short_float(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") or "0"


# ---------------------------------------------------------------- gateway side


def parse_datagram(data: bytes) -> Advertisement:
    """The advertisement in one received multicast datagram.

    Raises InvalidMessage (PF001) for bytes that are not one JSON envelope, InvalidPacket
    (PF002) naming the field for anything else wrong.
    """
    items = decode_frame(data, MAX_DATAGRAM_BYTES)
    if len(items) != 1:
        raise InvalidMessage(
            f"A multicast announce is one envelope, not a batch of {len(items)}",
            field="$", expected_type="JSON object", received_type="JSON array",
            validation_rule="multicast_announce",
        )  # fmt: skip
    item = items[0]
    if isinstance(item, FrameError):
        raise item.error
    if not isinstance(item, Discover):
        raise invalid_field("message_type", "discover", type(item).__name__.lower(), "enum")
    return parse_multicast(item)


def parse_multicast(msg: Discover) -> Advertisement:
    """The advertisement in a §8.1.2 DISCOVER ``multicast_announce``.

    Raises InvalidPacket (PF002) naming the first bad field.
    """
    payload = msg.payload
    if payload.discovery_type != "multicast_announce":
        raise invalid_field("payload.discovery_type", "multicast_announce",
                            payload.discovery_type, "enum")  # fmt: skip
    if payload.announcement is None:
        raise invalid_field(_ANN, "object", "missing", "required_field")
    return _parse_announcement(payload.announcement, _ANN)


def _parse_announcement(ann: Mapping[str, Any], path: str) -> Advertisement:
    reactor_id = _identifier(ann.get("reactor_id"), f"{path}.reactor_id")
    implementation = _identifier(ann.get("implementation"), f"{path}.implementation")
    caps_value = _required(ann, "capabilities", path)
    if not _is_list(caps_value):
        raise invalid_field(f"{path}.capabilities", "array of \"group:element\"",
                            json_type(caps_value), "type")  # fmt: skip
    capabilities = _capabilities(caps_value, f"{path}.capabilities")
    load = _unit(_required(ann, "load_factor", path), f"{path}.load_factor")
    accepts = _required(ann, "accepts_connections", path)
    if not isinstance(accepts, bool):
        raise invalid_field(f"{path}.accepts_connections", "bool", json_type(accepts), "type")
    endpoints = _endpoints(_required(ann, "endpoints", path), f"{path}.endpoints")
    specs_value = ann.get("specializations", list(DEFAULT_SPECIALIZATIONS))
    if not _is_list(specs_value):
        raise invalid_field(f"{path}.specializations", "array of strings", json_type(specs_value),
                            "type")  # fmt: skip
    specializations = _names(specs_value, f"{path}.specializations")
    capacity = _capacity(ann.get("max_capacity", DEFAULT_CAPACITY), f"{path}.max_capacity")
    return Advertisement(
        reactor_id=reactor_id,
        implementation=implementation,
        endpoints=endpoints,
        capabilities=capabilities,
        specializations=specializations or DEFAULT_SPECIALIZATIONS,
        load_factor=load,
        max_capacity=capacity,
        accepts_connections=accepts,
    )


def parse_txt(
    properties: Mapping[bytes, bytes | None] | Mapping[str, str | None],
    *,
    instance_name: str | None = None,
    websocket: str | None = None,
) -> Advertisement:
    """The advertisement in a §8.1.3 TXT record.

    ``properties`` is the record as zeroconf gives it (bytes) or as ``txt_record`` built it
    (str). ``instance_name`` (``<id>._packetflow._tcp.local.``) supplies a missing ``id``;
    ``websocket`` (built from the SRV and A records) a missing ``ws``, so a reactor that
    sends only §8.1.3's keys is still found. Keys are case-insensitive (RFC 6763 §6.4).

    Raises InvalidPacket (PF002) naming the bad key as ``txt.<key>``.
    """
    txt = _txt_strings(properties)
    version = _txt_required(txt, "version")
    if version.split(".", 1)[0] != SUPPORTED_MAJOR:
        raise invalid_field(f"{_TXT}.version", f"\"{SUPPORTED_MAJOR}.x\"", repr(version),
                            "protocol_major")  # fmt: skip
    implementation = _identifier(_txt_required(txt, "impl"), f"{_TXT}.impl")
    reactor_id_text = txt.get("id")
    if reactor_id_text is None and instance_name is not None:
        reactor_id_text = _instance_label(instance_name)
    if reactor_id_text is None:
        raise invalid_field(f"{_TXT}.id", "reactor id", "missing", "required_field")
    reactor_id = _identifier(reactor_id_text, f"{_TXT}.id")
    ws = txt.get("ws") or websocket
    if ws is None:
        raise invalid_field(f"{_TXT}.ws", "ws:// or wss:// URL", "missing", "required_field")
    endpoints = _endpoints({"websocket": ws}, f"{_TXT}.ws", websocket_path=f"{_TXT}.ws")
    caps_text = [_txt_required(txt, "caps")]
    for index in range(1, MAX_CAPS_KEYS):
        more = txt.get(_caps_key(index))
        if more is None:
            break
        caps_text.append(more)
    caps = [c.strip() for chunk in caps_text for c in chunk.split(",") if c.strip()]
    capabilities = _capabilities(caps, f"{_TXT}.caps")
    specs_text = txt.get("spec", "")
    specializations = _names([s.strip() for s in specs_text.split(",") if s.strip()],
                             f"{_TXT}.spec")  # fmt: skip
    load_text = txt.get("load")
    load = 0.0 if load_text is None else _unit(_number(load_text, f"{_TXT}.load"), f"{_TXT}.load")
    capacity_text = txt.get("capacity")
    capacity = (
        DEFAULT_CAPACITY
        if capacity_text is None
        else _capacity(_number(capacity_text, f"{_TXT}.capacity"), f"{_TXT}.capacity")
    )
    return Advertisement(
        reactor_id=reactor_id,
        implementation=implementation,
        endpoints=endpoints,
        capabilities=capabilities,
        specializations=specializations or DEFAULT_SPECIALIZATIONS,
        load_factor=load,
        max_capacity=capacity,
    )


def announce_payload(adv: Advertisement) -> DiscoverPayload:
    """The §4.2.5 ``announce`` a gateway registers for an advertised reactor."""
    return DiscoverPayload(
        discovery_type="announce",
        reactor_info=ReactorInfo(
            reactor_id=adv.reactor_id,
            implementation=adv.implementation,
            specializations=list(adv.specializations),
            max_capacity=adv.max_capacity,
            # §4.2.5's current_load is absolute (67.5 of max_capacity 200.0).
            current_load=round(adv.load_factor * adv.max_capacity, 4),
            endpoints=dict(adv.endpoints),
        ),
        supported_packets=[SupportedPacket(group=g, element=e) for g, e in adv.capabilities],
    )


def check_multicast(group: str, port: int) -> None:
    """Refuse a configured multicast destination that cannot work.

    Raises ValueError when ``group`` is not an IPv4 multicast address (224.0.0.0/4) or
    ``port`` is not 1-65535.
    """
    try:
        address = ipaddress.IPv4Address(group)
    except ValueError:
        raise ValueError(f"multicast group {group!r} is not an IPv4 address") from None
    if not address.is_multicast:
        raise ValueError(f"multicast group {group} is not in 224.0.0.0/4")
    if not 1 <= port <= 65535:
        raise ValueError(f"multicast port {port} is not 1-65535")


def discovery_interface(host: str) -> str | None:
    """The IPv4 address of the interface a node bound to ``host`` sends and listens for
    discovery traffic on, so a loopback node keeps it on loopback; None means the default
    interface (``host`` is unspecified or a name other than localhost)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        return None
    return None if address.is_unspecified else str(address)


# ---------------------------------------------------------------- field checks


def _is_list(value: object) -> TypeGuard[list[Any] | tuple[Any, ...]]:
    return isinstance(value, list | tuple)


def _required(obj: Mapping[str, Any], key: str, path: str) -> Any:
    if key not in obj:
        raise invalid_field(f"{path}.{key}", "present", "missing", "required_field")
    return obj[key]


def _identifier(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise invalid_field(path, "string", json_type(value), "type")
    if not 1 <= len(value) <= MAX_ID_LEN or not value.isprintable():
        raise invalid_field(path, f"printable string of 1-{MAX_ID_LEN} chars",
                            f"string of {len(value)} chars", "length")  # fmt: skip
    return value


def _names(values: Sequence[object], path: str) -> tuple[str, ...]:
    if len(values) > MAX_LIST_ITEMS:
        raise invalid_field(path, f"<= {MAX_LIST_ITEMS} items", f"{len(values)} items", "length")
    return tuple(_identifier(v, f"{path}[{i}]") for i, v in enumerate(values))


def _is_group(value: str) -> TypeGuard[Group]:
    return value in GROUPS


def _capabilities(values: Sequence[object], path: str) -> tuple[tuple[Group, str], ...]:
    if len(values) > MAX_CAPABILITIES:
        raise invalid_field(path, f"<= {MAX_CAPABILITIES} items", f"{len(values)} items",
                            "length")  # fmt: skip
    out: dict[tuple[Group, str], None] = {}  # ordered and de-duplicated
    for index, value in enumerate(values):
        item_path = f"{path}[{index}]"
        if not isinstance(value, str):
            raise invalid_field(item_path, '"group:element"', json_type(value), "type")
        group, sep, element = value.partition(":")
        if not sep or not _is_group(group) or not ELEMENT_NAME.match(element):
            raise invalid_field(item_path, _CAP_EXPECTED, repr(value), "pattern")
        out[(group, element)] = None
    return tuple(out)


def _number(text: str, path: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise invalid_field(path, "number", repr(text), "type") from None


def _unit(value: object, path: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise invalid_field(path, "number 0.0-1.0", json_type(value), "type")
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise invalid_field(path, "number 0.0-1.0", repr(value), "range")
    return float(value)


def _capacity(value: object, path: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise invalid_field(path, "positive number", json_type(value), "type")
    if not (value > 0 and math.isfinite(value)):
        raise invalid_field(path, "positive number", repr(value), "range")
    return float(value)


def _endpoints(value: object, path: str, *, websocket_path: str | None = None) -> dict[str, str]:
    if not isinstance(value, Mapping):
        raise invalid_field(path, "object", json_type(value), "type")
    if len(value) > MAX_LIST_ITEMS:
        raise invalid_field(path, f"<= {MAX_LIST_ITEMS} entries", f"{len(value)} entries",
                            "length")  # fmt: skip
    out: dict[str, str] = {}
    for key, url in value.items():
        item_path = f"{path}.{key}"
        if not isinstance(key, str) or not isinstance(url, str):
            raise invalid_field(item_path, "string URL", json_type(url), "type")
        if len(url) > MAX_URL_LEN:
            raise invalid_field(item_path, f"URL of <= {MAX_URL_LEN} chars",
                                f"{len(url)} chars", "length")  # fmt: skip
        out[key] = url
    ws_path = websocket_path or f"{path}.websocket"
    ws = out.get("websocket")
    if ws is None:
        raise invalid_field(ws_path, "ws:// or wss:// URL", "missing", "required_field")
    if not ws.startswith(("ws://", "wss://")) or len(ws.split("://", 1)[1]) == 0:
        raise invalid_field(ws_path, "ws:// or wss:// URL", repr(ws), "pattern")
    return out


def _txt_strings(
    properties: Mapping[bytes, bytes | None] | Mapping[str, str | None],
) -> dict[str, str]:
    """The TXT record as lower-case str keys; a key without ``=`` has no value and is
    dropped, like an absent one (RFC 6763 §6.4 boolean attributes mean nothing here)."""
    out: dict[str, str] = {}
    for raw_key, raw_value in properties.items():
        key = _txt_text(raw_key, f"{_TXT}.{raw_key!r}").lower()
        if raw_value is None:
            continue
        out.setdefault(key, _txt_text(raw_value, f"{_TXT}.{key}"))
    return out


def _txt_text(value: str | bytes, path: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid_field(path, "UTF-8 text", "invalid UTF-8", "utf8") from None


def _txt_required(txt: Mapping[str, str], key: str) -> str:
    value = txt.get(key)
    if value is None:
        raise invalid_field(f"{_TXT}.{key}", "present", "missing", "required_field")
    return value


def _instance_label(name: str) -> str:
    """``reactor-7._packetflow._tcp.local.`` → ``reactor-7``."""
    suffix = "." + SERVICE_TYPE
    return name[: -len(suffix)] if name.endswith(suffix) else name
