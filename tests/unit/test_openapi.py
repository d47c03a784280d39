"""GET /openapi.json's document (gateway/openapi.py) and the response structs it is built
from (gateway/views.py): a valid OpenAPI 3.1 document covering every route the gateway
serves, with producers and schemas that cannot drift apart silently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import msgspec._json_schema as msgspec_json_schema
import pytest
from openapi_spec_validator import validate

from packetflow.gateway import openapi, views
from packetflow.gateway.server import Gateway, GatewayConfig
from packetflow.protocol.chemical_health import ChemicalHistory
from packetflow.protocol.messages import Packet

STATUS: dict[str, Any] = {
    "status": "HEALTHY", "ready": True, "reasons": [], "gateway_id": "g", "protocol_version": "1.0",
    "uptime_seconds": 1.5, "reactors": 1, "healthy_reactors": 1, "routable_reactors": 1,
    "in_flight": 0, "queue_depth": 0, "max_queue": 10, "stopping": False,
    "affinity_matrix_version": "1.0", "cluster": {"mode": "standalone"},
    "chemical_health": ChemicalHistory().metrics(),
}  # fmt: skip


def _schema_of(name: str) -> dict[str, Any]:
    """The component ``name`` as a standalone JSON Schema (its $refs resolved in place)."""
    doc = openapi.document()
    return {**doc["components"]["schemas"][name], "components": doc["components"]}


def test_document_is_valid_openapi_3_1() -> None:
    doc = openapi.document()
    validate(doc)
    assert doc["openapi"] == "3.1.0"


def test_schemas_come_from_the_wire_structs() -> None:
    """No second copy: the Packet schema is msgspec's own for protocol/messages.Packet."""
    schemas = openapi.document()["components"]["schemas"]
    packet = schemas["Packet"]
    assert set(packet["required"]) == {"group", "element"}
    assert set(packet["properties"]) == {f.encode_name for f in msgspec.structs.fields(Packet)}
    assert packet["properties"]["data"]["default"] == {}  # a Raw default, written as JSON
    assert set(schemas["GatewayStatus"]["required"]) == set(STATUS)


def test_generation_leaves_msgspec_as_it_was() -> None:
    before = msgspec_json_schema.to_builtins  # type: ignore[attr-defined]
    openapi.document.cache_clear()
    openapi.document()
    assert msgspec_json_schema.to_builtins is before  # type: ignore[attr-defined]


async def test_every_route_the_gateway_serves_is_documented(tmp_path: Path) -> None:
    app = Gateway(GatewayConfig(data_dir=tmp_path)).app()
    paths = openapi.document()["paths"]
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.method != "HEAD" and route.resource is not None
    }
    # The dashboard's page and its assets and /docs are static files, not API operations.
    static = {"/", "/dashboard/{name}", openapi.DOCS_PATH, openapi.DOCS_SCRIPT_PATH}
    missing = {(m, p) for m, p in served if p not in static and m not in paths.get(p, {})}
    assert not missing
    documented = {(m, p) for p, item in paths.items() for m in item}
    assert documented <= served


def test_open_endpoints_are_marked_and_the_rest_need_credentials() -> None:
    doc = openapi.document()
    open_ = {p for p, item in doc["paths"].items() for op in item.values()
             if op.get("security") == []}  # fmt: skip
    assert open_ == {"/health", "/health/ready", "/openapi.json"}
    assert doc["security"] == [{"ApiKey": []}, {"Bearer": []}]
    schemes = doc["components"]["securitySchemes"]
    assert schemes["ApiKey"] == {"type": "apiKey", "in": "header", "name": "X-PacketFlow-API-Key"}
    assert schemes["Bearer"]["scheme"] == "bearer"
    refusal = doc["paths"]["/v1/reactors"]["get"]["responses"]["401"]
    refs = refusal["content"]["application/json"]["schema"]["anyOf"]
    assert {r["$ref"].rsplit("/", 1)[1] for r in refs} == {"Error", "ErrorBody"}


def test_a_producer_growing_a_key_fails_the_view() -> None:
    """The drift guard: a key the struct does not document is a bug, not a silent extra."""
    assert views.as_view(STATUS, views.GatewayStatus).ready is True
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        views.as_view({**STATUS, "surprise": 1}, views.GatewayStatus)
    with pytest.raises(msgspec.ValidationError, match="missing required field"):
        views.as_view({k: v for k, v in STATUS.items() if k != "ready"}, views.GatewayStatus)
    with pytest.raises(msgspec.ValidationError):
        views.as_view({**STATUS, "ready": "yes"}, views.GatewayStatus)


def test_a_view_encodes_to_what_its_schema_accepts() -> None:
    body = msgspec.json.decode(msgspec.json.encode(views.as_view(STATUS, views.GatewayStatus)))
    assert body == STATUS  # the same JSON the handler answered before the struct
    jsonschema.validate(body, _schema_of("GatewayStatus"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**STATUS, "ready": None}, _schema_of("GatewayStatus"))


async def test_gateway_status_is_a_valid_view(tmp_path: Path) -> None:
    """The real producer (Gateway.status) against the struct GET /health answers with."""
    status = views.as_view(Gateway(GatewayConfig(data_dir=tmp_path)).status(), views.GatewayStatus)
    jsonschema.validate(msgspec.to_builtins(status), _schema_of("GatewayStatus"))


def _subclasses(cls: type) -> list[type]:
    return [cls, *(s for sub in cls.__subclasses__() for s in _subclasses(sub))]


def test_every_http_status_an_error_declares_is_documented() -> None:
    """A refusal's status (``http_status`` on the error class, e.g. 409 for aborting a
    finished molecule) is one the document lists, so a client can expect it."""
    # Imported for the error classes they define (each declares its http_status).
    import packetflow.gateway.coordinator
    import packetflow.gateway.http  # noqa: F401
    from packetflow.protocol.errors import PacketFlowError

    declared = {str(c.http_status) for c in _subclasses(PacketFlowError)
                if isinstance(getattr(c, "http_status", None), int)}  # fmt: skip
    documented = {status for item in openapi.document()["paths"].values()
                  for op in item.values() for status in op["responses"]}  # fmt: skip
    assert declared and declared <= documented
    abort = openapi.document()["paths"]["/v1/molecules/{molecule_id}"]["delete"]
    assert "409" in abort["responses"]


def test_a_reactor_record_summary_is_a_valid_view() -> None:
    """GET /v1/reactors' rows come from ReactorRecord.summary(): the real producer."""
    from packetflow.gateway.registry import ReactorRecord

    record = ReactorRecord("r1", ("cpu_intensive",), "python", frozenset({("cf", "ping")}), 4,
                           {"ws": "ws://127.0.0.1:1/ws"})  # fmt: skip
    row = views.as_view(record.summary(), views.ReactorSummary)
    assert row.capabilities == ["cf:ping"]
    jsonschema.validate(msgspec.to_builtins(row), _schema_of("ReactorSummary"))
