"""The HTTP API contract: GET /openapi.json built from the msgspec structs the handlers
encode and decode (protocol/messages.py, gateway/views.py), and GET /docs rendering it.

How this works: ``msgspec.json.schema_components`` turns the structs into JSON Schema
components once; the operations below only say which struct each path takes and answers
with, so a field added to a struct appears in the document without anyone editing it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from importlib import resources
from typing import Any, Final

import msgspec
import msgspec._json_schema as _msgspec_json_schema
from aiohttp import web

from ..protocol.authentication import API_KEY_HEADER
from ..protocol.messages import (
    PROTOCOL_VERSION,
    Coordinate,
    CoordinatePayload,
    Error,
    Packet,
    Submit,
)
from ..protocol.messages import Result as ResultEnvelope
from . import views

OPENAPI_PATH: Final = "/openapi.json"
DOCS_PATH: Final = "/docs"
DOCS_SCRIPT_PATH: Final = "/docs/docs.js"
# Served without credentials (like the dashboard's static files): the contract holds no data.
OPENAPI_PUBLIC_PATHS: Final[frozenset[str]] = frozenset({OPENAPI_PATH, DOCS_PATH, DOCS_SCRIPT_PATH})

REF: Final = "#/components/schemas/{name}"
JSON: Final = "application/json"

# Every struct a path refers to; schema_components follows their fields to the rest.
_STRUCTS: Final = (
    Submit, Packet, ResultEnvelope, Error, Coordinate, CoordinatePayload, views.ErrorBody,
    views.GatewayStatus, views.ReactorList, views.AffinityView, views.AffinityUpdate,
    views.AffinityUpdated, views.AffinityRollback, views.AffinityCancelled,
    views.PacketAccepted, views.PacketView, views.MoleculeAccepted,
    views.MoleculeList, views.MoleculeStatus,
)  # fmt: skip

# What each refusal status means here (PFAP §10.1 codes, DESIGN §6 and §8).
_REFUSALS: Final[dict[str, str]] = {
    "400": "Invalid input (PF001 malformed, PF002 invalid value); the error names the field",
    "401": "No or invalid credentials (PF401)",
    "403": "The credentials may not do this (PF403)",
    "404": "No such resource",
    "409": "A molecule of this id is running, or it already finished (PF002)",
    "413": "Body over the 1 MiB frame limit (PF001)",
    "415": "Body not declared as JSON (PF001)",
    "429": "Rate limited or overloaded (PF004); see retry_delay_ms",
    "503": "No reactor can serve it now, or the gateway is draining (PF003/PF503)",
    "504": "The packet's deadline passed (PF504)",
}


@contextlib.contextmanager
def _raw_defaults_encodable() -> Iterator[None]:
    """msgspec's schema generator writes field defaults with ``to_builtins``, which cannot
    encode ``msgspec.Raw`` (Packet.data defaults to a Raw ``{}``) and keeps a tuple
    default (Packet.dependencies' ``()``) a tuple; during generation a Raw default is
    written as the JSON value it holds and a tuple as the array it is on the wire."""
    original = _msgspec_json_schema.to_builtins  # type: ignore[attr-defined]

    def to_builtins(obj: Any, **kwargs: Any) -> Any:
        if isinstance(obj, msgspec.Raw):
            return msgspec.json.decode(obj)
        if isinstance(obj, tuple):
            return list(original(obj, **kwargs))
        return original(obj, **kwargs)

    _msgspec_json_schema.to_builtins = to_builtins  # type: ignore[attr-defined]
    try:
        yield
    finally:
        _msgspec_json_schema.to_builtins = original  # type: ignore[attr-defined]


def _ref(struct: type[Any]) -> dict[str, str]:
    return {"$ref": REF.format(name=struct.__name__)}


# Request examples: shown by /docs, and sent first by schemathesis's examples phase, so the
# contract test reaches the success paths (RESULT, 202, molecule views) and not only refusals.
PACKET_EXAMPLE: Final = {"group": "cf", "element": "ping", "data": {}}
AFFINITY_EXAMPLE: Final = {
    "matrix_updates": {"cf": {"cpu_intensive": 0.85}},
    "rollback_policy": "manual",
}
MOLECULE_EXAMPLE: Final = {
    "packets": [{"id": "a", "group": "df", "element": "load", "data": {"rows": [1, 2]}}]
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _operation(
    op_id: str,
    summary: str,
    responses: dict[str, dict[str, Any]],
    *,
    tag: str,
    refusals: tuple[str, ...] = ("400", "401", "403"),
    body: dict[str, Any] | None = None,
    example: dict[str, Any] | None = None,
    parameters: list[dict[str, Any]] | None = None,
    open_: bool = False,
) -> dict[str, Any]:
    """One operation; every refusal answers the ERROR envelope or the ``{"error": ...}``
    body (which of the two depends on where the request was refused)."""
    refusal = {"anyOf": [_ref(Error), _ref(views.ErrorBody)]}
    out: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": [tag],
                           "responses": dict(responses)}  # fmt: skip
    for status in refusals:
        out["responses"].setdefault(status, _json(refusal, _REFUSALS[status]))
    if body is not None:
        media: dict[str, Any] = {"schema": body}
        if example is not None:
            media["example"] = example
        out["requestBody"] = {"required": True, "content": {JSON: media}}
    if parameters:
        out["parameters"] = parameters
    if open_:
        out["security"] = []
    return out


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "schema": schema,
            "description": description}  # fmt: skip


def _link(op_id: str, name: str) -> dict[str, Any]:
    """An OpenAPI link: the id in this answer is the path parameter of ``op_id``."""
    return {"operationId": op_id, "parameters": {name: f"$response.body#/{name}"}}


_WRITE: Final = ("400", "401", "403", "413", "415", "429", "503")


def _paths() -> dict[str, Any]:
    packet_id = _param("packet_id", "path", {"type": "string"}, "The packet's id")
    molecule_id = _param("molecule_id", "path", {"type": "string"}, "The molecule's id")
    health = _json(_ref(views.GatewayStatus), "The gateway's status")
    molecule = _json(_ref(views.MoleculeStatus), "The molecule as a COORDINATE payload")
    return {
        "/health": {"get": _operation("getHealth",
            "Liveness: 200 while the process answers, the truthful status in the body",
            {"200": health}, tag="health", refusals=(), open_=True)},
        "/health/ready": {"get": _operation("getReady",
            "Readiness: 200 when a packet sent now can be served, else 503 with reasons",
            {"200": health, "503": _json(_ref(views.GatewayStatus), "Not ready")},
            tag="health", refusals=(), open_=True)},
        "/metrics": {"get": _operation("getMetrics",
            "Prometheus metrics (text exposition format)",
            {"200": {"description": "Metrics", "content": {"text/plain": {
                "schema": {"type": "string"}}}}}, tag="health", refusals=("401", "403"))},
        "/v1/reactors": {"get": _operation("listReactors",
            "Registered reactors with their health, load and capabilities",
            {"200": _json(_ref(views.ReactorList), "The reactors")}, tag="reactors",
            refusals=("401", "403"))},
        "/v1/affinity": {
            "get": _operation("getAffinity",
                              "The §6.2 affinity matrix in force, and the ones it replaced",
                              {"200": _json(_ref(views.AffinityView), "The matrix")},
                              tag="affinity", refusals=("401", "403")),
            "put": _operation("updateAffinity", "Update the affinity matrix (§6.4)",
                              {"200": _json(_ref(views.AffinityUpdated), "Applied")},
                              tag="affinity", body=_ref(views.AffinityUpdate),
                              example=AFFINITY_EXAMPLE, refusals=_WRITE),
        },
        "/v1/affinity/rollback": {"post": _operation("rollbackAffinity",
            "Roll the affinity matrix back to an earlier version (§6.4; admin)",
            {"200": _json(_ref(views.AffinityUpdated), "Rolled back")}, tag="affinity",
            body=_ref(views.AffinityRollback), example={"version": "1.0"}, refusals=_WRITE)},
        "/v1/affinity/pending/{version}": {"delete": _operation("cancelAffinityUpdate",
            "Withdraw a scheduled affinity update before its effective_date (admin)",
            {"200": _json(_ref(views.AffinityCancelled), "Withdrawn")}, tag="affinity",
            parameters=[_param("version", "path", {"type": "string"},
                               "The scheduled update's version")],
            refusals=("400", "401", "403", "404"))},
        "/v1/packets": {"post": _operation("submitPacket",
            "Submit a packet (a SUBMIT envelope or a bare packet); the reply is its RESULT, "
            "or ERROR with the status of its PF code",
            {"200": _json(_ref(ResultEnvelope), "The packet's RESULT envelope"),
             "202": {**_json(_ref(views.PacketAccepted), "Accepted (?wait=false)"),
                     "links": {"GetPacket": _link("getPacket", "packet_id")}},
             "502": _json(_ref(Error), "The reactor failed the packet (PF005)")},
            tag="packets", body={"anyOf": [_ref(Submit), _ref(Packet)]}, example=PACKET_EXAMPLE,
            parameters=[{**_param("wait", "query", {"type": "string", "enum": ["true", "false"]},
                                  "false: answer 202 at once and GET the reply later"),
                         "example": "false"}],
            refusals=(*_WRITE, "504"))},
        "/v1/packets/{packet_id}": {"get": _operation("getPacket",
            "A packet's lifecycle state (§5.3), and its reply once it has one",
            {"200": _json(_ref(views.PacketView), "The packet")}, tag="packets",
            parameters=[packet_id], refusals=("401", "403", "404"))},
        "/v1/molecules": {
            "post": _operation(
                "startMolecule",
                "Start a molecule: a §7.1 structure, a COORDINATE initiate payload or the "
                "whole COORDINATE envelope",
                {"202": {**_json(_ref(views.MoleculeAccepted), "Journaled and running"),
                         "links": {"GetMolecule": _link("getMolecule", "molecule_id"),
                                   "AbortMolecule": _link("abortMolecule", "molecule_id")}},
                 "200": _json(_ref(views.MoleculeStatus), "Finished (?wait=true)")},
                tag="molecules", refusals=(*_WRITE, "409"), example=MOLECULE_EXAMPLE,
                body={"anyOf": [_ref(Coordinate), _ref(CoordinatePayload),
                                {"type": "object", "description": "A §7.1 molecular structure"}]},
                parameters=[_param("wait", "query", {"type": "string", "enum": ["true", "false"]},
                                   "true: answer once the molecule finished")]),
            "get": _operation(
                "listMolecules", "Running molecules, then the most recently finished ones",
                {"200": _json(_ref(views.MoleculeList), "The molecules")}, tag="molecules",
                parameters=[_param("limit", "query", {"type": "integer", "minimum": 1},
                                   "At most this many molecules")],
                refusals=("400", "401", "403")),
        },
        "/v1/molecules/{molecule_id}": {
            "get": _operation("getMolecule", "A molecule's state", {"200": molecule},
                              tag="molecules", parameters=[molecule_id],
                              refusals=("400", "401", "403", "404")),
            "delete": _operation("abortMolecule",
                                 "Abort a running molecule; answers its final state",
                                 {"200": molecule}, tag="molecules", parameters=[molecule_id],
                                 refusals=("400", "401", "403", "404", "409")),
        },
        "/v1/dashboard": {"get": _operation("getDashboard",
            "Everything the dashboard page draws, bounded (gateway/dashboard.py)",
            {"200": _json({"type": "object"}, "The snapshot")}, tag="dashboard",
            parameters=[_param("molecule", "query", {"type": "string"},
                               "The molecule whose DAG is included")],
            refusals=("401", "403"))},
        "/ws": {"get": _operation("openWebSocket",
            "The PFAP WebSocket (§3): upgrade, then JSON envelopes in both directions",
            {"101": {"description": "Switching Protocols to WebSocket"}}, tag="websocket",
            refusals=("400", "401", "403", "503"))},
        OPENAPI_PATH: {"get": _operation("getOpenApi",
            "This document", {"200": _json({"type": "object"}, "OpenAPI 3.1")},
            tag="contract", refusals=(), open_=True)},
    }  # fmt: skip


@functools.cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the gateway's HTTP API (built once, then shared)."""
    with _raw_defaults_encodable():
        _, components = msgspec.json.schema_components(_STRUCTS, ref_template=REF)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "PacketFlow gateway",
            "version": PROTOCOL_VERSION,
            "description": "The HTTP API of a PFAP v1.0 gateway. Every endpoint but the "
            "health probes, the dashboard's static files and this contract needs an API key "
            f"({API_KEY_HEADER}) or a JWT bearer token.",
        },
        "security": [{"ApiKey": []}, {"Bearer": []}],
        "paths": _paths(),
        "components": {
            "schemas": components,
            "securitySchemes": {
                "ApiKey": {"type": "apiKey", "in": "header", "name": API_KEY_HEADER},
                "Bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
            },
        },
    }


@functools.cache
def _encoded() -> bytes:
    return msgspec.json.encode(document())


def _asset(name: str) -> bytes:
    return resources.files("packetflow.gateway").joinpath("apidocs", name).read_bytes()


def add_openapi(app: web.Application, security_headers: dict[str, str]) -> None:
    """GET /openapi.json, /docs and its script (open paths: see OPENAPI_PUBLIC_PATHS)."""

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=_encoded(), content_type=JSON)

    async def docs(request: web.Request) -> web.Response:
        return web.Response(body=_asset("index.html"), content_type="text/html",
                            headers=security_headers)  # fmt: skip

    async def script(request: web.Request) -> web.Response:
        return web.Response(body=_asset("docs.js"), content_type="text/javascript",
                            headers=security_headers)  # fmt: skip

    app.router.add_get(OPENAPI_PATH, openapi)
    app.router.add_get(DOCS_PATH, docs)
    app.router.add_get(DOCS_SCRIPT_PATH, script)
