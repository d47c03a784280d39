"""DESIGN §8 authorization at a real gateway (PFAP §11.2, §11.3.2, §11.4): a gateway and a
reactor in this process on 127.0.0.1, driven through ``Gateway.accept`` and the coordinator
with reply targets that carry a principal, as authentication makes them.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from packetflow.client import AsyncClient
from packetflow.gateway.server import Gateway, GatewayConfig
from packetflow.protocol.messages import decode_one, encode_json
from packetflow.protocol.principals import (
    MOLECULE_ORCHESTRATOR,
    PACKET_USER,
    REACTOR,
    SYSTEM_ADMIN,
    Principal,
)
from packetflow.reactor.server import Reactor

from .user_elements import register as register_user_elements

SECURITY_TOML = """
[roles.limited]
permissions = ["cf:ping"]
rate_limits = { packets_per_minute = 120 }

[roles.tokenizer]
permissions = ["df:tokenize", "cf:ping"]

[roles.listener]
permissions = ["ed:subscribe", "ed:publish", "topic:orders.eu.*"]

[[abac.policy_rules]]
rule_id = "apollo_only"
condition = "packet.metadata.project == 'apollo'"
requirements = ["user.team == 'apollo'"]
action = "allow_with_audit"

[[abac.policy_rules]]
rule_id = "no_urgent_tokenizing"
condition = "packet.element == 'tokenize' and packet.priority >= 9"
action = "deny"
"""

DEADLINE_S = 30.0


def who(pid: str, *roles: str, **attributes: Any) -> Principal:
    return Principal(pid, frozenset(roles), "api_key", attributes=attributes)


class Conn:
    """A reply target carrying a principal, shaped like a ``Peer``."""

    def __init__(self, principal: Principal, *, secure: bool = False) -> None:
        self.principal = principal
        self.secure = secure
        self.source_ip = "10.9.8.7"
        self.user_agent = "pytest"
        self.remote_id: str | None = None  # the reactor this connection announced (Peer)
        self.name = f"test<-{principal.id}"
        from packetflow.protocol.reactor_access import is_reactor_only

        self.attrs: dict[str, Any] = {"reactor_only": is_reactor_only(principal)}
        self.frames: list[dict[str, Any]] = []

    def next_seq(self) -> int | None:
        return None

    def send(self, frame: bytes) -> bool:
        self.frames.append(json.loads(frame))
        return True


async def until(predicate: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


class Stack:
    def __init__(self, gateway: Gateway, reactor: Reactor, audit: Path) -> None:
        self.gateway = gateway
        self.reactor = reactor
        self.audit = audit
        self.sdk = AsyncClient("ws://127.0.0.1:1/ws")  # builds envelopes only

    async def ask(
        self, conn: Conn, group: str, element: str, data: dict[str, Any] | None = None,
        **options: Any,
    ) -> dict[str, Any]:  # fmt: skip
        """Submit one packet as ``conn`` and return the one reply it gets."""
        before = len(conn.frames)
        self.gateway.accept(self.sdk.build_submit(group, element, data, **options), conn)
        await until(lambda: len(conn.frames) > before, f"a reply to {group}:{element}")
        assert len(conn.frames) == before + 1
        return conn.frames[-1]

    def coordinate(self, conn: Conn, payload: dict[str, Any]) -> None:
        envelope = {**self.sdk.envelope_fields(), "message_type": "coordinate",
                    "payload": payload}  # fmt: skip
        msg = decode_one(encode_json(envelope))
        self.gateway.coordinator.on_message(conn, msg)  # type: ignore[arg-type]

    def audit_lines(self) -> list[dict[str, Any]]:
        self.gateway.guard.audit.flush()
        if not self.audit.exists():
            return []
        return [json.loads(line) for line in self.audit.read_text().splitlines()]


@pytest.fixture
async def stack(tmp_path: Path) -> AsyncIterator[Stack]:
    config_file = tmp_path / "security.toml"
    config_file.write_text(SECURITY_TOML)
    audit = tmp_path / "audit.log"
    gateway = Gateway(GatewayConfig(port=0, data_dir=tmp_path / "gateway",
                                    security_config=config_file, audit_log=audit))  # fmt: skip
    await gateway.start()
    reactor = Reactor(reactor_id="reactor-authz", gateway=f"ws://127.0.0.1:{gateway.port}/ws",
                      data_dir=tmp_path / "reactor")  # fmt: skip
    register_user_elements(reactor)
    await reactor.start()
    try:
        await until(lambda: (r := gateway.registry.get("reactor-authz")) is not None
                    and r.link is not None and r.link.up, "the reactor to link")  # fmt: skip
        yield Stack(gateway, reactor, audit)
    finally:
        await reactor.stop(0)
        await gateway.stop()


def error_of(frame: dict[str, Any]) -> dict[str, Any]:
    assert frame["message_type"] == "error", frame
    payload: dict[str, Any] = frame["payload"]
    return payload


def assert_denied(frame: dict[str, Any], permission: str, field: str) -> None:
    err = error_of(frame)
    assert err["error_code"] == "PF403"
    assert err["error_category"] == "security_error"
    assert err["retry_possible"] is False
    assert err["error_details"]["required_permission"] == permission
    assert err["error_details"]["field"] == field


# (principal's role, an element it may use, one it may not, the permission named)
ROLE_CASES = [
    (PACKET_USER, ("cf", "ping"), ("cf", "shutdown"), "cf:shutdown"),
    (MOLECULE_ORCHESTRATOR, ("mc", "analyze"), ("cf", "ping"), "cf:ping"),
    (SYSTEM_ADMIN, ("cf", "health"), None, None),
    (REACTOR, None, ("cf", "ping"), "cf:ping"),
]


@pytest.mark.parametrize(("role", "allowed", "forbidden", "permission"), ROLE_CASES)
async def test_default_roles_at_the_gateway_pfap_11_2_1(
    stack: Stack, role: str, allowed: tuple[str, str] | None,
    forbidden: tuple[str, str] | None, permission: str | None,
) -> None:  # fmt: skip
    conn = Conn(who(f"key:{role}", role))
    if forbidden is not None:
        assert_denied(await stack.ask(conn, *forbidden), str(permission),
                      "payload.packet.element")  # fmt: skip
    if allowed is not None:
        data = {"input": [1, 2, 3]} if allowed == ("mc", "analyze") else None
        reply = await stack.ask(conn, *allowed, data)
        assert reply["message_type"] == "result", reply  # the connection is still usable
    if forbidden is not None:
        denial = [a for a in stack.audit_lines() if a["action"] == "deny"]
        assert denial[-1]["user_id"] == f"key:{role}"
        assert denial[-1]["required_permission"] == permission
        assert denial[-1]["source_ip"] == "10.9.8.7" and denial[-1]["user_agent"] == "pytest"


async def test_broadcast_of_an_admin_element_names_destination(stack: Stack) -> None:
    conn = Conn(who("key:u", PACKET_USER))
    reply = await stack.ask(conn, "cf", "restart", destination_id=None)
    assert_denied(reply, "cf:restart", "destination_id")


async def test_admin_actions_are_audited(stack: Stack) -> None:
    admin = Conn(who("key:root", SYSTEM_ADMIN))
    update = {"matrix_updates": {"cf": {"general_purpose": 0.81}}}
    reply = await stack.ask(admin, "mc", "update_affinity", update)
    assert reply["message_type"] == "result", reply
    user = Conn(who("key:u", MOLECULE_ORCHESTRATOR))
    assert_denied(await stack.ask(user, "mc", "optimize", {"apply": True}),
                  "mc:optimize:apply", "payload.packet.element")  # fmt: skip
    assert (await stack.ask(user, "mc", "optimize", {"apply": False}))["message_type"] == "result"
    lines = stack.audit_lines()
    admin_lines = [a for a in lines if a["action"] == "admin_action"]
    assert [(a["user_id"], a["resource"]) for a in admin_lines] == [
        ("key:root", "mc:update_affinity")
    ]
    assert admin_lines[0]["data"].startswith("sha256:")
    # Packet data is hashed, never clear (the timestamp may hold "0.81" by chance).
    clear = json.dumps({k: v for k, v in admin_lines[0].items() if k != "timestamp"})
    assert "general_purpose" not in clear and "0.81" not in clear


async def test_rate_limit_exceeded_then_recovered_pfap_11_2_1(stack: Stack) -> None:
    conn = Conn(who("key:lim", "limited"))  # 120/minute: a burst of 120, then 2/s
    refused: dict[str, Any] | None = None
    for _ in range(1000):
        reply = await stack.ask(conn, "cf", "ping")
        if reply["message_type"] == "error":
            refused = error_of(reply)
            break
    assert refused is not None, "the limit never applied"
    assert refused["error_code"] == "PF004"
    assert 0 < refused["retry_delay_ms"] <= 500
    other = Conn(who("key:lim2", "limited"))  # another principal has its own bucket
    assert (await stack.ask(other, "cf", "ping"))["message_type"] == "result"
    await asyncio.sleep(refused["retry_delay_ms"] / 1000.0)

    async def recovered() -> bool:
        return (await stack.ask(conn, "cf", "ping"))["message_type"] == "result"

    deadline = time.monotonic() + DEADLINE_S
    while not await recovered():
        assert time.monotonic() < deadline, "never recovered"
        await asyncio.sleep(0.1)
    assert any(a["action"] == "rate_limited" for a in stack.audit_lines())
    assert stack.gateway.guard.intrusion.totals["rate_limited"] >= 1


async def test_abac_allow_with_audit_and_deny_pfap_11_2_2(stack: Stack) -> None:
    apollo = Conn(who("key:ann", "tokenizer", team="apollo"))
    gemini = Conn(who("key:gus", "tokenizer", team="gemini"))
    meta = {"project": "apollo"}
    ok = await stack.ask(apollo, "df", "tokenize", {"text": "a b"}, metadata=meta)
    assert ok["message_type"] == "result", ok
    refused = error_of(await stack.ask(gemini, "df", "tokenize", {"text": "a b"}, metadata=meta))
    assert refused["error_code"] == "PF403"
    assert refused["error_details"]["reason"] == "user.team == 'apollo'"
    urgent = error_of(await stack.ask(apollo, "df", "tokenize", {"text": "x"}, priority=9))
    assert urgent["error_details"]["required_permission"] == "abac:no_urgent_tokenizing"
    plain = await stack.ask(gemini, "df", "tokenize", {"text": "x"})  # no rule applies
    assert plain["message_type"] == "result"
    lines = stack.audit_lines()
    allowed = [a for a in lines if a["action"] == "abac_allow"]
    assert [(a["user_id"], a["rule_id"]) for a in allowed] == [("key:ann", "apollo_only")]
    assert allowed[0]["reactor_id"] == "reactor-authz"


async def test_same_packet_id_from_two_principals_runs_twice(stack: Stack) -> None:
    """Tenancy of state: the idempotency window, stories and the reactor's own window are
    per principal; each gets its own execution and result, a repeat its own replay."""
    alice = Conn(who("key:alice", "tokenizer"))
    bob = Conn(who("key:bob", "tokenizer"))
    a = await stack.ask(alice, "df", "tokenize", {"text": "alpha beta"}, packet_id="same-id")
    b = await stack.ask(bob, "df", "tokenize", {"text": "gamma"}, packet_id="same-id")
    assert a["payload"]["data"]["tokens"] == ["alpha", "beta"]
    assert b["payload"]["data"]["tokens"] == ["gamma"]
    assert a["payload"]["packet_id"] == b["payload"]["packet_id"] == "same-id"
    again = await stack.ask(alice, "df", "tokenize", {"text": "ignored"}, packet_id="same-id")
    assert again["payload"]["data"]["tokens"] == ["alpha", "beta"]  # alice's replay
    stories = [s for s in stack.gateway.stories.values() if s.packet_id == "same-id"]
    assert len(stories) == 2
    runtime = stack.reactor.runtime
    assert runtime is not None
    # The reactor ran it twice under two wire ids, neither naming a principal.
    wire_ids = [k for k in runtime.window._entries if k.startswith("same-id")]
    assert len(wire_ids) == 2 and not any("alice" in k or "bob" in k for k in wire_ids)


async def test_molecule_abort_by_another_principal_is_refused(stack: Stack) -> None:
    owner = Conn(who("key:olga", MOLECULE_ORCHESTRATOR))
    other = Conn(who("key:otto", MOLECULE_ORCHESTRATOR))
    structure = {"packets": [{"id": "nap", "group": "mc", "element": "nap",
                              "data": {"seconds": 60}}], "bonds": [], "properties": {}}  # fmt: skip
    stack.coordinate(owner, {"coordination_type": "initiate", "molecule_id": "mol-authz",
                             "molecular_structure": structure})  # fmt: skip
    await until(lambda: owner.frames, "the initiate acknowledgement")
    assert owner.frames[0]["message_type"] == "coordinate", owner.frames[0]
    for kind in ("abort", "status"):
        stack.coordinate(other, {"coordination_type": kind, "molecule_id": "mol-authz"})
        await until(lambda: other.frames, f"the answer to {kind}")
        err = error_of(other.frames.pop())
        assert err["error_code"] == "PF403"
        assert err["error_details"]["field"] == "payload.molecule_id"
    stack.coordinate(owner, {"coordination_type": "abort", "molecule_id": "mol-authz"})
    await until(lambda: any(f["payload"].get("coordination_type") == "abort"
                            for f in owner.frames), "the owner's abort")  # fmt: skip
    actions = [(a["action"], a["user_id"]) for a in stack.audit_lines()]
    assert ("molecule_start", "key:olga") in actions
    assert ("molecule_abort", "key:olga") in actions
    assert ("deny", "key:otto") in actions


async def test_subscribe_is_scoped_to_readable_topics(stack: Stack) -> None:
    conn = Conn(who("key:lis", "listener"))
    assert_denied(await stack.ask(conn, "ed", "subscribe", {"topic": "orders.*"}),
                  "topic:orders.*", "payload.packet.data.topic")  # fmt: skip
    assert_denied(await stack.ask(conn, "ed", "subscribe", {"topic": "**"}),
                  "topic:**", "payload.packet.data.topic")  # fmt: skip
    ok = await stack.ask(conn, "ed", "subscribe", {"topic": "orders.eu.*"})
    assert ok["payload"]["data"]["topic"] == "orders.eu.*"
    publisher = Conn(who("key:pub", "listener"))
    assert_denied(await stack.ask(publisher, "ed", "publish",
                                  {"topic": "orders.us.new", "event": {}}),
                  "topic:orders.us.new", "payload.packet.data.topic")  # fmt: skip
    sent = await stack.ask(
        publisher, "ed", "publish", {"topic": "orders.eu.new", "event": {"n": 1}}
    )
    assert sent["payload"]["data"]["delivered"] == 1
    await until(lambda: conn.frames[-1]["payload"].get("status") == "event", "the event")


async def test_confidential_packets_need_tls_pfap_11_3_2(stack: Stack) -> None:
    meta = {"classification": "confidential"}
    clear = Conn(who("key:c", PACKET_USER))
    err = error_of(await stack.ask(clear, "cf", "ping", metadata=meta))
    assert err["error_code"] == "PF403"
    assert err["error_details"]["field"] == "payload.packet.metadata.classification"
    tls = Conn(who("key:c", PACKET_USER), secure=True)
    assert (await stack.ask(tls, "cf", "ping", metadata=meta))["message_type"] == "result"
    submits = [a for a in stack.audit_lines() if a["action"] == "submit"]
    assert submits and submits[-1]["classification"] == "confidential"
    assert submits[-1]["retention_days"] == 2555


async def test_reactor_role_and_announce_rights(stack: Stack) -> None:
    from packetflow.protocol.messages import Discover, DiscoverPayload, ReactorInfo

    user = Conn(who("key:u", PACKET_USER))
    announce = Discover(**stack.sdk.envelope_fields(), payload=DiscoverPayload(
        discovery_type="announce", reactor_info=ReactorInfo(reactor_id="rogue")))  # fmt: skip
    stack.gateway.on_frame(user, encode_json(announce))  # type: ignore[arg-type]
    assert_denied(user.frames[-1], "reactor:announce", "payload.discovery_type")
    assert stack.gateway.registry.get("rogue") is None
    target = ReactorInfo(reactor_id="reactor-authz")
    withdraw = Discover(**stack.sdk.envelope_fields(), payload=DiscoverPayload(
        discovery_type="withdraw", reactor_info=target))  # fmt: skip
    impostor = Conn(who("key:r2", REACTOR))
    stack.gateway.on_frame(impostor, encode_json(withdraw))  # type: ignore[arg-type]
    assert_denied(impostor.frames[-1], "reactor:withdraw_other", "payload.discovery_type")
    assert stack.gateway.registry.get("reactor-authz") is not None


async def test_auth_failures_block_a_source_and_show_in_metrics(stack: Stack) -> None:
    guard = stack.gateway.guard
    for _ in range(5):  # the default threshold
        guard.record_auth_failure("10.6.6.6", "curl", reason="bad key", claimed_id="key:x")
    assert guard.is_blocked("10.6.6.6") and not guard.is_blocked("10.6.6.7")
    lines = stack.audit_lines()
    assert sum(a["action"] == "authenticate" and a["result"] == "failure" for a in lines) == 5
    assert any(a["action"] == "block_source" and a["resource"] == "10.6.6.6" for a in lines)
    from prometheus_client import generate_latest

    text = generate_latest(stack.gateway.metrics.registry).decode()
    assert (
        'packetflow_security_source_signals_total{signal="auth_failure",source="10.6.6.6"} 5.0'
        in text
    )
    assert "packetflow_security_blocks 1.0" in text


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[Any]:
    """The gateway's HTTP API on its own port, with one real API key per role; a test
    names the role in ``X-Test-Principal`` and a first middleware swaps in that role's
    key, so the gateway's own authentication makes the principal."""
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from packetflow.protocol.authentication import API_KEY_HEADER
    from packetflow.security.keystore import KeyStore

    store = KeyStore(stack.gateway.config.data_dir)
    keys = {name: store.create({role}, label=f"http-{name}")[0]
            for name, role in (("user", PACKET_USER), ("orch", MOLECULE_ORCHESTRATOR),
                               ("admin", SYSTEM_ADMIN))}  # fmt: skip
    stack.gateway.gatekeeper.keys.reload()  # at once, not at its next once-a-second look

    @web.middleware
    async def as_role(request: web.Request, handler: Any) -> web.StreamResponse:
        name = request.headers.get("X-Test-Principal")
        if name is not None:
            request = request.clone(headers={**request.headers, API_KEY_HEADER: keys[name]})
        response: web.StreamResponse = await handler(request)
        return response

    app = stack.gateway.app()
    app.middlewares.insert(0, as_role)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    client.keys = keys  # type: ignore[attr-defined]
    try:
        yield client
    finally:
        await client.close()


async def test_http_denials_are_403_with_the_error_body(stack: Stack, http: Any) -> None:
    as_user = {"X-Test-Principal": "user"}
    resp = await http.put("/v1/affinity", headers=as_user,
                          json={"matrix_updates": {"cf": {"general_purpose": 0.7}}})  # fmt: skip
    assert resp.status == 403
    body = await resp.json()
    assert body["error"]["error_code"] == "PF403"
    assert body["error"]["error_details"]["required_permission"] == "affinity:update"
    for path in ("/v1/reactors", "/metrics", "/v1/affinity"):
        assert (await http.get(path, headers=as_user)).status == 403, path
        assert (await http.get(path, headers={"X-Test-Principal": "orch"})).status == 200
    packet = {"group": "cf", "element": "shutdown", "data": {}}
    resp = await http.post("/v1/packets", headers=as_user, json=packet)
    assert resp.status == 403
    assert (await resp.json())["payload"]["error_code"] == "PF403"
    resp = await http.post("/v1/packets", headers=as_user,
                           json={"group": "cf", "element": "ping", "id": "http-1"})  # fmt: skip
    assert resp.status == 200
    # Stories are per principal: another principal does not see it, an admin does.
    assert (await http.get("/v1/packets/http-1", headers=as_user)).status == 200
    assert (
        await http.get("/v1/packets/http-1", headers={"X-Test-Principal": "orch"})
    ).status == 404
    resp = await http.get("/v1/packets/http-1", headers={"X-Test-Principal": "admin"})
    assert resp.status == 200 and (await resp.json())["reply"]["message_type"] == "result"
    resp = await http.put("/v1/affinity", headers={"X-Test-Principal": "admin"},
                          json={"matrix_updates": {"cf": {"general_purpose": 0.7}}})  # fmt: skip
    assert resp.status == 200
    lines = stack.audit_lines()
    admin_id = stack.gateway.gatekeeper.keys.authenticate(http.keys["admin"]).id
    assert ("admin_action", admin_id, "PUT /v1/affinity") in [
        (a["action"], a["user_id"], a["resource"]) for a in lines
    ]
    assert any(a["action"] == "deny" and a["source_ip"] == "127.0.0.1" for a in lines)


async def test_http_molecule_abort_by_another_principal_is_refused(stack: Stack, http: Any) -> None:
    structure = {"molecule_id": "mol-http", "packets": [
        {"id": "nap", "group": "mc", "element": "nap", "data": {"seconds": 60}}]}  # fmt: skip
    resp = await http.post("/v1/molecules", headers={"X-Test-Principal": "orch"}, json=structure)
    assert resp.status == 202, await resp.text()
    resp = await http.delete("/v1/molecules/mol-http", headers={"X-Test-Principal": "user"})
    assert resp.status == 403
    assert (
        await http.get("/v1/molecules/mol-http", headers={"X-Test-Principal": "user"})
    ).status == 403

    async def listed(who: str) -> set[str]:
        resp = await http.get("/v1/molecules", headers={"X-Test-Principal": who})
        return {m["molecule_id"] for m in (await resp.json())["molecules"]}

    assert "mol-http" not in await listed("user")  # nor does the listing show it
    assert "mol-http" in await listed("orch")
    assert "mol-http" in await listed("admin")
    resp = await http.delete("/v1/molecules/mol-http", headers={"X-Test-Principal": "orch"})
    assert resp.status == 200


async def test_affinity_rollback_and_cancel_are_admin_only(stack: Stack, http: Any) -> None:
    """§6.4's manual rollback and the withdrawal of a scheduled update change routing for
    everyone: no credentials 401, a packet_user or orchestrator 403 naming the permission,
    the matrix untouched; an admin is let through."""
    before = (await (await http.get("/v1/affinity", headers={"X-Test-Principal": "admin"}))
              .json())["version"]  # fmt: skip
    calls = (("post", "/v1/affinity/rollback", {"version": "1.0"}),
             ("delete", "/v1/affinity/pending/2.0", None))  # fmt: skip
    for method, path, body in calls:
        send = getattr(http, method)
        assert (await send(path, json=body)).status == 401, path
        for who in ("user", "orch"):
            resp = await send(path, headers={"X-Test-Principal": who}, json=body)
            assert resp.status == 403, (path, who)
            error = (await resp.json())["error"]
            assert error["error_code"] == "PF403"
            assert error["error_details"]["required_permission"] == "affinity:update"
        resp = await send(path, headers={"X-Test-Principal": "admin"}, json=body)
        assert resp.status not in (401, 403), (path, resp.status)
    after = (await (await http.get("/v1/affinity", headers={"X-Test-Principal": "admin"}))
             .json())["version"]  # fmt: skip
    assert after == before  # no version to roll back to, nothing scheduled: a 4xx, no change
