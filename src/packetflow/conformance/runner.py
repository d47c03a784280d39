"""Runs the §12.3.1 conformance probes against one PFAP WebSocket endpoint: sends each probe,
times its reply and hands the reply to ``judge``; the outcome is a list of ``Check`` rows.

Probes go one at a time, so the reply to a probe is the next non-heartbeat message even when
the endpoint forgets ``correlation_id`` (that defect is then reported, not a timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp

from ..protocol.reactor_access import is_loopback_host
from . import judge
from .judge import Verdict
from .stand_in import ELEMENTS as STAND_IN_ELEMENTS
from .stand_in import PROBE_ELEMENT, StandIn

# §12.3.1 response_time_limits, and §5.2.1's timeout for cf:introspect.
PING_LIMIT_MS: Final = 5000.0
HEALTH_LIMIT_MS: Final = 10000.0
INTROSPECT_LIMIT_MS: Final = 15000.0
# The spec sets no limit for ERROR replies or discovery; a node that takes longer than a
# ping's limit to refuse a malformed frame is not answering it.
OTHER_LIMIT_MS: Final = 5000.0
# A forwarded packet waits for the gateway to dial and probe the stand-in reactor first.
FORWARD_LIMIT_MS: Final = 20000.0
# Wire example 2's priority (its df packet gives 0.7 / 0.56; a cf one 1.05 / 0.42).
FORWARD_PRIORITY: Final = 7
# How long past a probe's limit the kit still waits, so a slow reply is measured and
# reported as slow rather than as missing.
WAIT_FACTOR: Final = 2.0
CONNECT_TIMEOUT_S: Final = 10.0
MANDATORY_ECHO: Final = "conformance_echo_001"


@dataclass
class Check:
    name: str
    status: str  # "pass", "fail" or "skip"
    section: str
    expected: str
    received: str
    elapsed_ms: float | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.elapsed_ms is not None:
            out["elapsed_ms"] = round(self.elapsed_ms, 1)
        return out


@dataclass
class Report:
    url: str
    role: str | None
    checks: list[Check] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.status != "fail" for c in self.checks)

    def as_dict(self) -> dict[str, Any]:
        counts = {s: sum(1 for c in self.checks if c.status == s) for s in ("pass", "fail", "skip")}
        return {"url": self.url, "role": self.role, "passed": self.passed, "counts": counts,
                "checks": [c.as_dict() for c in self.checks]}  # fmt: skip

    def add(self, name: str, section: str, verdict: Verdict,
            elapsed_ms: float | None = None) -> None:  # fmt: skip
        status = "pass" if verdict.ok else "fail"
        self.checks.append(Check(name, status, section, verdict.expected, verdict.received,
                                 elapsed_ms))  # fmt: skip

    def skip(self, name: str, section: str, expected: str, why: str) -> None:
        self.checks.append(Check(name, "skip", section, expected, why))


def envelope_of(message_type: str, payload: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """A §4.1 envelope from the kit, with a fresh message_id."""
    return {
        "protocol_version": "1.0",
        "message_type": message_type,
        "message_id": f"msg_{uuid.uuid4()}",
        "timestamp": int(time.time() * 1000),
        "source_id": "packetflow-conformance",
        "payload": payload,
        **extra,
    }


def submit_of(group: str, element: str, data: Any, **packet: Any) -> dict[str, Any]:
    body = {"id": f"packet_conformance_{uuid.uuid4().hex[:12]}", "group": group,
            "element": element, "data": data, **packet}  # fmt: skip
    return envelope_of("submit", {"packet": body})


@dataclass
class _Reply:
    message: Any
    elapsed_ms: float


class _Session:
    """One WebSocket to the endpoint: sends probes, reads every frame, judges every
    envelope it receives on the way."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, report: Report) -> None:
        self.ws = ws
        self.report = report
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.sent: set[str] = set()
        self.received = 0
        self.envelope_fault: tuple[str, Verdict] | None = None
        self.version_fault: tuple[str, Verdict] | None = None
        self.correlation_fault: tuple[str, Verdict] | None = None
        self.current = "connect"
        self.closed = False
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        async for frame in self.ws:
            if frame.type == aiohttp.WSMsgType.TEXT:
                text = frame.data
            elif frame.type == aiohttp.WSMsgType.BINARY:
                text = frame.data.decode("utf-8", "replace")
            else:
                break
            try:
                value = json.loads(text)
            except ValueError:
                self._note_envelope(judge.failed("a UTF-8 JSON text frame", f"{text[:60]!r}"))
                continue
            for item in value if isinstance(value, list) else [value]:
                self._judge_envelope(item)
                await self.inbox.put(item)
        await self.inbox.put(None)  # closed

    def _note_envelope(self, verdict: Verdict) -> None:
        if self.envelope_fault is None:
            self.envelope_fault = (self.current, verdict)

    def _judge_envelope(self, item: Any) -> None:
        self.received += 1
        verdict = judge.envelope(item)
        if not verdict.ok:
            self._note_envelope(verdict)
        version = judge.protocol_version(item)
        if not version.ok and self.version_fault is None:
            self.version_fault = (self.current, version)

    async def exchange(self, probe: str, message: dict[str, Any] | str,
                       limit_ms: float) -> _Reply | None:  # fmt: skip
        """Send one probe; its reply (the next non-heartbeat message that does not answer an
        earlier probe), or None if none came within WAIT_FACTOR x the limit."""
        self.current = probe
        message_id = message["message_id"] if isinstance(message, dict) else None
        if message_id is not None:
            self.sent.add(message_id)
        text = message if isinstance(message, str) else json.dumps(message)
        started = time.perf_counter()
        if self.closed:
            return None
        try:
            await self.ws.send_str(text)
        except (aiohttp.ClientError, ConnectionError):
            self.closed = True
            return None
        deadline = started + limit_ms * WAIT_FACTOR / 1000.0
        while True:
            left = deadline - time.perf_counter()
            if left <= 0:
                return None
            try:
                item = await asyncio.wait_for(self.inbox.get(), left)
            except TimeoutError:
                return None
            if item is None:
                self.closed = True
                return None
            if not isinstance(item, dict) or item.get("message_type") == "heartbeat":
                continue
            answers = item.get("correlation_id")
            if answers in self.sent and answers != message_id:
                continue  # a late reply to an earlier probe
            elapsed = (time.perf_counter() - started) * 1000.0
            if message_id is not None:
                verdict = judge.correlation(item, message_id)
                if not verdict.ok and self.correlation_fault is None:
                    self.correlation_fault = (probe, verdict)
            return _Reply(item, elapsed)

    async def close(self) -> None:
        await self.ws.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


def _elapsed(reply: _Reply | None) -> float | None:
    return None if reply is None else reply.elapsed_ms


def _no_reply(limit_ms: float, session: _Session) -> Verdict:
    if session.closed:
        return judge.failed(f"a reply within {limit_ms:g} ms", "connection closed by the endpoint")
    return judge.failed(f"a reply within {limit_ms:g} ms",
                        f"no reply within {limit_ms * WAIT_FACTOR:g} ms")  # fmt: skip


def http_base(ws_url: str) -> str:
    base = ws_url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
    return base[: -len("/ws")] if base.endswith("/ws") else base.rstrip("/")


# The §10 probes: name, frame, expected code, the field a PF002 must name.
def _error_probes() -> list[tuple[str, dict[str, Any] | str, str, str | None]]:
    missing_source = envelope_of("submit", {"packet": {"group": "cf", "element": "ping"}})
    del missing_source["source_id"]
    return [
        ("error.pf001.not_json", "this is not JSON {", "PF001", None),
        ("error.pf002.missing_packet", envelope_of("submit", {}), "PF002", "packet"),
        ("error.pf002.missing_envelope_field", missing_source, "PF002", "source_id"),
        ("error.pf002.wrong_type", submit_of("cf", "ping", {}, priority="high"), "PF002",
         "priority"),
        ("error.pf002.out_of_range", submit_of("cf", "ping", {}, priority=11), "PF002",
         "priority"),
        ("error.pf002.unknown_group", submit_of("zz", "ping", {}), "PF002", "group"),
        ("error.pf002.data_not_object", submit_of("cf", "ping", [1, 2]), "PF002", "data"),
        ("error.pf003.unsupported_element",
         submit_of("cf", "conformance_no_such_element", {}), "PF003", None),
    ]  # fmt: skip


class Conformance:
    """The probes in order; ``scale`` multiplies every time limit (tests shrink them)."""

    def __init__(self, url: str, role: str | None, headers: dict[str, str], ssl: Any = None,
                 scale: float = 1.0) -> None:  # fmt: skip
        self.url = url
        self.role = role
        self.headers = headers
        # aiohttp's default verification unless a TLS context is given (None is deprecated).
        self.ssl = ssl if ssl is not None else True
        self.scale = scale
        self.report = Report(url, role)

    def limit(self, ms: float) -> float:
        return ms * self.scale

    async def run(self) -> Report:
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as http:
            try:
                ws = await http.ws_connect(self.url, headers=self.headers, ssl=self.ssl,
                                           max_msg_size=0, autoping=True)  # fmt: skip
            except aiohttp.WSServerHandshakeError as exc:
                self.report.add(
                    "connect",
                    "§2",
                    judge.failed("WebSocket upgrade accepted", f"HTTP {exc.status} {exc.message}"),
                )
                return self.report
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                self.report.add(
                    "connect",
                    "§2",
                    judge.failed("WebSocket upgrade accepted", f"{type(exc).__name__}: {exc}"),
                )
                return self.report
            self.report.add("connect", "§2", judge.passed("WebSocket upgrade accepted"))
            session = _Session(ws, self.report)
            try:
                await self._probes(session, http)
            finally:
                await session.close()
            self._aggregate(session)
        return self.report

    async def _probes(self, s: _Session, http: aiohttp.ClientSession) -> None:
        await self._query(s)
        introspected = await self._mandatory(s)
        for name, frame, code, leaf in _error_probes():
            limit = self.limit(OTHER_LIMIT_MS)
            reply = await s.exchange(name, frame, limit)
            verdict = _no_reply(limit, s) if reply is None else judge.error_reply(
                reply.message, code, leaf)  # fmt: skip
            self.report.add(name, "§10.1/§10.2", verdict, _elapsed(reply))
        limit = self.limit(PING_LIMIT_MS)
        message = submit_of("cf", "ping", {"echo_data": MANDATORY_ECHO})
        reply = await s.exchange("connection.usable_after_errors", message, limit)
        verdict = (
            _no_reply(limit, s) if reply is None else judge.ping(reply.message, MANDATORY_ECHO)
        )
        self.report.add("connection.usable_after_errors", "§10 / DESIGN §3", verdict,
                        _elapsed(reply))  # fmt: skip
        await self._chemistry(http, introspected)
        if self.role == "gateway":
            await self._announce(s)
        else:
            self.report.skip("discovery.announce", "§4.2.5", "announce accepted by a gateway",
                             "reactors are announced to, not announced at")  # fmt: skip
            self.report.skip(
                "chemistry.properties",
                "App. B / DESIGN §4",
                "computed chemical_properties within 0.001",
                "a reactor receives chemical properties, it does not compute them",
            )

    async def _query(self, s: _Session) -> None:
        limit = self.limit(OTHER_LIMIT_MS)
        reply = await s.exchange("discovery.query", envelope_of("discover", {
            "discovery_type": "query"}), limit)  # fmt: skip
        guessed = judge.guess_role(reply.message) if reply is not None else None
        if self.role is None:
            self.role = guessed or "reactor"
            self.report.role = self.role
        if reply is None:
            self.report.add("discovery.query", "§4.2.5", _no_reply(limit, s))
            return
        self.report.add("discovery.query", "§4.2.5",
                        judge.discover_response(reply.message, role=self.role),
                        reply.elapsed_ms)  # fmt: skip

    async def _mandatory(self, s: _Session) -> Any:
        """§12.3.1 mandatory packets with their §9.1 fields and time limits; returns the
        introspect data (for the chemistry checks)."""
        introspected: Any = None
        probes: list[tuple[str, dict[str, Any], float, Callable[[Any], Verdict]]] = [
            ("cf:ping", submit_of("cf", "ping", {"echo_data": MANDATORY_ECHO,
                                                  "timestamp": int(time.time() * 1000)},
                                  priority=10, timeout_ms=5000),
             PING_LIMIT_MS, lambda m: judge.ping(m, MANDATORY_ECHO)),
            ("cf:health", submit_of("cf", "health", {"include_metrics": True,
                                                      "include_capabilities": True,
                                                      "detail_level": "full"}),
             HEALTH_LIMIT_MS, judge.health),
            ("cf:introspect", submit_of("cf", "introspect", {}), INTROSPECT_LIMIT_MS,
             judge.introspect),
        ]  # fmt: skip
        for name, message, limit_ms, judging in probes:
            limit = self.limit(limit_ms)
            reply = await s.exchange(name, message, limit)
            if reply is None:
                self.report.add(name, "§9.1", _no_reply(limit, s))
                self.report.add(f"{name}.response_time", "§12.3.1", _no_reply(limit, s))
                continue
            self.report.add(name, "§9.1", judging(reply.message), reply.elapsed_ms)
            self.report.add(f"{name}.response_time", "§12.3.1",
                            judge.within(reply.elapsed_ms, limit), reply.elapsed_ms)  # fmt: skip
            if name == "cf:introspect" and isinstance(reply.message, dict):
                introspected = (reply.message.get("payload") or {}).get("data")
        return introspected

    async def _chemistry(self, http: aiohttp.ClientSession, introspected: Any) -> None:
        """§3.3 matrix where the endpoint exposes it: a gateway's GET /v1/affinity, or an
        ``affinity_matrix`` in cf:introspect."""
        matrix: Any = None
        version: Any = None
        source = ""
        if isinstance(introspected, dict) and "affinity_matrix" in introspected:
            matrix, source = introspected["affinity_matrix"], "cf:introspect"
        elif self.role == "gateway":
            url = http_base(self.url) + "/v1/affinity"
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, ValueError):
                async with http.get(url, headers=self.headers, ssl=self.ssl) as resp:
                    if resp.status == 200:
                        body = await resp.json()
                        if isinstance(body, dict):
                            matrix, version = body.get("matrix"), body.get("version")
                            source = "GET /v1/affinity"
        expected = f"§3.3 matrix within {judge.MATRIX_TOLERANCE}"
        if matrix is None:
            self.report.skip("chemistry.affinity_matrix", "§3.3", expected,
                             "not exposed by this endpoint")  # fmt: skip
        elif version not in (None, "1.0"):
            self.report.skip("chemistry.affinity_matrix", "§3.3", expected,
                             f"matrix updated (§6.4) to version {version!r}")  # fmt: skip
        else:
            verdict = judge.affinity_matrix(matrix)
            self.report.add("chemistry.affinity_matrix", "§3.3",
                            Verdict(verdict.ok, verdict.expected, f"{verdict.received} "
                                    f"({source})"))  # fmt: skip

    async def _announce(self, s: _Session) -> None:
        """§4.2.5 on a gateway: an announce is acknowledged and a query then lists the
        reactor; on a gateway on this machine the announced reactor is a live stand-in the
        gateway dials, so the kit also sees what it forwards (wire example 2). A withdraw
        removes it again: the kit leaves nothing behind."""
        reactor_id = f"conformance-{uuid.uuid4().hex[:10]}"
        limit = self.limit(OTHER_LIMIT_MS)
        host = urlsplit(self.url).hostname or ""
        stand_in = StandIn(reactor_id) if is_loopback_host(host) else None
        if stand_in is not None:
            await stand_in.start()
            info = stand_in.info()
            elements = list(STAND_IN_ELEMENTS)
        else:
            info = {"reactor_id": reactor_id, "implementation": "conformance",
                    "version": "1.0.0", "specializations": ["general_purpose"],
                    "max_capacity": 1.0, "current_load": 0.0, "endpoints": {}}  # fmt: skip
            elements = [PROBE_ELEMENT]
        payload: dict[str, Any] = {
            "discovery_type": "announce", "reactor_info": info,
            "supported_packets": [{"group": "cf", "element": e} for e in elements],
        }  # fmt: skip
        if stand_in is not None:
            payload["dial_token"] = stand_in.token
        try:
            reply = await s.exchange("discovery.announce", envelope_of("discover", payload),
                                     limit)  # fmt: skip
            verdict = _no_reply(limit, s) if reply is None else judge.discover_response(
                reply.message, role="gateway", accepted=True)  # fmt: skip
            self.report.add("discovery.announce", "§4.2.5", verdict, _elapsed(reply))
            if verdict.ok:
                reply = await s.exchange("discovery.announced_listed", envelope_of(
                    "discover", {"discovery_type": "query"}), limit)  # fmt: skip
                verdict = _no_reply(limit, s) if reply is None else judge.discover_response(
                    reply.message, role="gateway", reactor_id=reactor_id)  # fmt: skip
                self.report.add("discovery.announced_listed", "§4.2.5", verdict,
                                _elapsed(reply))  # fmt: skip
            if stand_in is not None and verdict.ok:
                await self._forwarding(s, stand_in)
            else:
                why = "the gateway is not on this machine: it cannot dial the kit's stand-in"
                if stand_in is not None:
                    why = "the stand-in reactor was not announced"
                self.report.skip("gateway.forwarded_submit", "wire example 2",
                                 "the SUBMIT a gateway forwards", why)  # fmt: skip
                self.report.skip("chemistry.properties", "App. B / DESIGN §4",
                                 "forwarded chemical_properties within 0.001", why)  # fmt: skip
            await s.exchange("discovery.withdraw", envelope_of("discover", {
                "discovery_type": "withdraw", "reactor_info": info}), limit)  # fmt: skip
        finally:
            if stand_in is not None:
                await stand_in.stop()

    async def _forwarding(self, s: _Session, stand_in: StandIn) -> None:
        """A packet only the stand-in serves goes through the gateway: the SUBMIT the
        stand-in receives must correlate to the kit's message, keep the packet id and
        timeout, and carry chemical_properties as the calculator computes them."""
        limit = self.limit(FORWARD_LIMIT_MS)
        message = submit_of("cf", PROBE_ELEMENT, {}, priority=FORWARD_PRIORITY,
                            timeout_ms=int(limit))  # fmt: skip
        packet = message["payload"]["packet"]
        reply = await s.exchange("gateway.forwarded_submit", message, limit)
        forwarded = None
        with contextlib.suppress(asyncio.QueueEmpty):
            forwarded = stand_in.received.get_nowait()
        if forwarded is None:
            got = "nothing reached the stand-in reactor"
            if reply is not None and isinstance(reply.message, dict):
                got += f"; the gateway answered {reply.message.get('message_type')} " \
                    f"{(reply.message.get('payload') or {}).get('error_code') or ''}"  # fmt: skip
            verdict = judge.failed("a SUBMIT forwarded to the announced reactor", got)
            self.report.add("gateway.forwarded_submit", "wire example 2", verdict,
                            _elapsed(reply))  # fmt: skip
            self.report.add("chemistry.properties", "App. B / DESIGN §4", verdict)
            return
        self.report.add("gateway.forwarded_submit", "wire example 2", judge.forwarded_submit(
            forwarded, message["message_id"], packet["id"], packet["timeout_ms"]),
            _elapsed(reply))  # fmt: skip
        props = ((forwarded.get("payload") or {}).get("packet") or {}).get(
            "chemical_properties")  # fmt: skip
        self.report.add("chemistry.properties", "App. B / DESIGN §4",
                        judge.properties(props, "cf", FORWARD_PRIORITY, 0))  # fmt: skip

    def _aggregate(self, s: _Session) -> None:
        """The message-format checks cover every message the endpoint sent."""
        for name, fault, expected in (
            ("envelope.fields", s.envelope_fault, "§4.1 required fields and types"),
            ("envelope.protocol_version", s.version_fault, 'protocol_version "1.x"'),
            ("envelope.correlation_id", s.correlation_fault,
             "every reply's correlation_id = the message_id it answers"),
        ):  # fmt: skip
            if s.received == 0:
                self.report.skip(name, "§4.1", expected, "the endpoint sent nothing")
            elif fault is None:
                self.report.add(name, "§4.1", judge.passed(
                    expected, f"{s.received} messages conform"))  # fmt: skip
            else:
                probe, verdict = fault
                self.report.add(name, "§4.1", judge.failed(
                    verdict.expected, f"{verdict.received} (reply to {probe})"))  # fmt: skip
