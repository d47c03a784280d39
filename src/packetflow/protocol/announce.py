"""Reads what a DISCOVER ``announce`` (§4.2.5, §8.2) says a reactor serves, accepting every
shape the spec shows for it.

The spec spells a reactor's capabilities three ways: §4.2.5's ``supported_packets``
(``[{group, element, priority_range}]``), §8.2's ``capabilities`` object
(``{packet_support: [{group, elements: [...]}], ...}``) and §4.2.4/§8.1.2's
``capabilities`` list (``["group:element", ...]``). An announce may carry any of them; the
reactor serves their union. §8.2's example also has no ``reactor_info``: the reactor is
then the envelope's ``source_id``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final, TypeGuard

from .chemistry import GROUPS, Group
from .errors import invalid_field, json_type
from .messages import DiscoverPayload, ReactorInfo
from .packets import ELEMENT_NAME

# The same bound the §8.1 advertisements keep (protocol.discovery.MAX_CAPABILITIES): a
# real reactor serves ~40 elements; this bounds what one announce makes the gateway keep.
MAX_CAPABILITIES: Final = 1024
_CAP_EXPECTED: Final = (
    f'"group:element", group one of {", ".join(GROUPS)}, element matching [a-z][a-z0-9_]*'
)
_CAPS: Final = "payload.capabilities"

Capability = tuple[Group, str]


def _is_group(value: object) -> TypeGuard[Group]:
    return value in GROUPS


def _element(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise invalid_field(path, "string", json_type(value), "type")
    if not ELEMENT_NAME.match(value):
        raise invalid_field(path, "[a-z][a-z0-9_]*", repr(value), "pattern")
    return value


def _from_list(values: Sequence[object]) -> list[Capability]:
    out: list[Capability] = []
    for index, value in enumerate(values):
        path = f"{_CAPS}[{index}]"
        if not isinstance(value, str):
            raise invalid_field(path, '"group:element"', json_type(value), "type")
        group, sep, element = value.partition(":")
        if not sep or not _is_group(group) or not ELEMENT_NAME.match(element):
            raise invalid_field(path, _CAP_EXPECTED, repr(value), "pattern")
        out.append((group, element))
    return out


def _from_object(caps: dict[str, Any]) -> list[Capability]:
    support = caps.get("packet_support")
    if support is None:
        return []
    path = f"{_CAPS}.packet_support"
    if not isinstance(support, list):
        raise invalid_field(path, "array of {group, elements}", json_type(support), "type")
    out: list[Capability] = []
    for index, entry in enumerate(support):
        at = f"{path}[{index}]"
        if not isinstance(entry, dict):
            raise invalid_field(at, "object {group, elements}", json_type(entry), "type")
        group = entry.get("group")
        if not _is_group(group):
            raise invalid_field(f"{at}.group", "one of " + ", ".join(GROUPS), repr(group),
                                "enum")  # fmt: skip
        elements = entry.get("elements")
        if not isinstance(elements, list):
            raise invalid_field(f"{at}.elements", "array of strings", json_type(elements),
                                "type")  # fmt: skip
        out.extend((group, _element(e, f"{at}.elements[{i}]")) for i, e in enumerate(elements))
    return out


def capabilities_of(payload: DiscoverPayload) -> frozenset[Capability]:
    """Every ``group:element`` an announce says its reactor serves, from all three shapes.

    Raises InvalidPacket (PF002) naming the first malformed capability, or when there are
    more than MAX_CAPABILITIES.
    """
    found: list[Capability] = [(p.group, p.element) for p in payload.supported_packets]
    caps = payload.capabilities
    if isinstance(caps, list):
        found.extend(_from_list(caps))
    elif isinstance(caps, dict):
        found.extend(_from_object(caps))
    out = frozenset(found)
    if len(out) > MAX_CAPABILITIES:
        raise invalid_field(_CAPS, f"<= {MAX_CAPABILITIES} capabilities", f"{len(out)}",
                            "length")  # fmt: skip
    return out


def reactor_info_of(payload: DiscoverPayload, source_id: str) -> ReactorInfo:
    """The announcing reactor: ``reactor_info``, or (§8.2's example has none) a reactor named
    by the envelope's ``source_id`` with no endpoints."""
    if payload.reactor_info is not None:
        return payload.reactor_info
    return ReactorInfo(reactor_id=source_id)
