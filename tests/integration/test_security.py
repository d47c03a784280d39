"""DESIGN §8 / PFAP §11.1 with real processes: every credential defect refused at the door
(401 with what was wrong, no packet run), keys created and revoked on a running gateway,
JWT rules, mTLS, announce authentication, reactors reachable only through the gateway,
browser Origin and credentials in URLs, and `packetflow up` secure by default."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

import packetflow
from packetflow.cluster import stop_all
from packetflow.protocol.authentication import API_KEY_HEADER, DIAL_TOKEN_HEADER
from packetflow.protocol.errors import PacketFlowError
from packetflow.security.tls import make_local_pki

from .cluster import Cluster, Node

PF = [sys.executable, "-m", "packetflow"]
GOOD_KEY_SHAPE = "pf_" + "A" * 32  # well formed, never issued


def run_cli(*args: str, env: dict[str, str] | None = None,
            timeout: float = 60) -> subprocess.CompletedProcess[str]:  # fmt: skip
    return subprocess.run([*PF, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})  # fmt: skip


async def upgrade_status(url: str, headers: dict[str, str], **kw: Any) -> int:
    """The HTTP status a WebSocket upgrade gets (101 when it is accepted)."""
    async with aiohttp.ClientSession() as session:
        try:
            ws = await session.ws_connect(url, headers=headers, **kw)
        except aiohttp.WSServerHandshakeError as exc:
            return exc.status
        await ws.close()
        return 101


async def http_get(url: str, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


def packets_completed(gateway: Node) -> float:
    import urllib.request

    req = urllib.request.Request(gateway.http + "/metrics", headers=gateway.auth_headers())
    with urllib.request.urlopen(req, timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(r"^packetflow_gateway_packets_completed_total (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


@pytest.fixture
def gateway(cluster: Cluster) -> Node:
    gw = cluster.gateway()
    cluster.reactor(gw, "--id", "sec-r1")
    return gw


# ---------------------------------------------------------------- API keys (§11.1.1)


def test_first_start_creates_an_owner_only_admin_key(gateway: Node) -> None:
    assert gateway.data_dir is not None
    key_file = gateway.data_dir / "security" / "admin.key"
    assert re.fullmatch(r"pf_[a-zA-Z0-9]{32}", key_file.read_text().strip())
    assert key_file.stat().st_mode & 0o777 == 0o600
    keys = gateway.data_dir / "security" / "keys.json"
    assert keys.stat().st_mode & 0o777 == 0o600
    assert key_file.read_text().strip() not in keys.read_text()  # stored hashed only


@pytest.mark.parametrize(
    ("headers", "rule"),
    [
        ({}, "credentials_required"),
        ({API_KEY_HEADER: GOOD_KEY_SHAPE}, "known_key"),
        ({API_KEY_HEADER: "pf_short"}, "key_format"),
        ({API_KEY_HEADER: "sk_" + "A" * 32}, "key_format"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "jwt_disabled"),
    ],
    ids=["no-key", "wrong-key", "malformed-key", "foreign-prefix", "basic-auth"],
)
async def test_bad_credentials_get_401_on_http_and_upgrade_and_run_nothing(
    gateway: Node, headers: dict[str, str], rule: str
) -> None:
    status, body = await http_get(gateway.http + "/v1/reactors", headers)
    assert status == 401
    assert body["error"]["error_code"] == "PF401"
    assert body["error"]["error_details"]["validation_rule"] == rule
    assert await upgrade_status(gateway.url, headers) == 401
    before = packets_completed(gateway)
    async with aiohttp.ClientSession() as session:
        post = session.post(gateway.http + "/v1/packets", headers=headers,
                            json={"group": "cf", "element": "ping"})  # fmt: skip
        async with post as resp:
            assert resp.status == 401
    assert packets_completed(gateway) == before


async def test_health_stays_open_without_credentials(gateway: Node) -> None:
    status, body = await http_get(gateway.http + "/health", {})
    assert status == 200 and body["status"] == "healthy"


async def test_sdk_refused_without_a_key_raises_pf401(gateway: Node, tmp_path: Path) -> None:
    """The SDK's own lookup can be bypassed; then the 401 becomes a PacketFlowError."""
    with pytest.raises(PacketFlowError) as caught:
        async with packetflow.connect(gateway.url, credentials=False):
            pass
    assert caught.value.code == "PF401"


async def test_key_created_by_cli_works_on_running_gateway_within_5_s(gateway: Node) -> None:
    out = run_cli("keys", "create", "--role", "packet_user", "--label", "ci",
                  "--data-dir", str(gateway.data_dir))  # fmt: skip
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip()
    assert re.fullmatch(r"pf_[a-zA-Z0-9]{32}", key)
    started = time.monotonic()

    async def accepted() -> bool:
        return await upgrade_status(gateway.url, {API_KEY_HEADER: key}) == 101

    while not await accepted():
        assert time.monotonic() - started < 5.0, "new key not accepted within 5 s"
        await asyncio.sleep(0.1)
    async with packetflow.connect(gateway.url, api_key=key) as pf:
        assert (await pf.submit("cf", "ping")).data["pong"] is True
    listed = run_cli("keys", "list", "--json", "--data-dir", str(gateway.data_dir))
    rows = json.loads(listed.stdout)
    assert {"packet_user"} in [set(r["roles"]) for r in rows]
    assert key not in listed.stdout


async def test_revoked_key_is_refused_and_its_open_connection_closed(gateway: Node) -> None:
    out = run_cli("keys", "create", "--role", "packet_user", "--data-dir", str(gateway.data_dir))
    key = out.stdout.strip()
    key_id = re.search(r"created key (\w+)", out.stderr).group(1)  # type: ignore[union-attr]
    await_until = time.monotonic() + 5
    while await upgrade_status(gateway.url, {API_KEY_HEADER: key}) != 101:
        assert time.monotonic() < await_until
        await asyncio.sleep(0.1)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(gateway.url, headers={API_KEY_HEADER: key})
        revoked = run_cli("keys", "revoke", key_id, "--data-dir", str(gateway.data_dir))
        assert revoked.returncode == 0, revoked.stderr
        msg = await ws.receive(timeout=5.0)  # the contract: closed within 5 s
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1008
        assert msg.extra == "credentials revoked"
    status, body = await http_get(gateway.http + "/v1/reactors", {API_KEY_HEADER: key})
    assert status == 401 and body["error"]["error_code"] == "PF401"
    assert run_cli("keys", "revoke", key_id, "--data-dir", str(gateway.data_dir)).returncode == 1


def test_keys_create_refuses_an_unknown_role(tmp_path: Path) -> None:
    out = run_cli("keys", "create", "--role", "root", "--data-dir", str(tmp_path))
    assert out.returncode != 0 and "unknown role" in out.stderr


# ---------------------------------------------------------------- JWT (§11.1.2)

SECRET = b"s3cret-for-tests-only-0123456789abcdef"


def token(key: Any = SECRET, alg: str = "HS256", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "packetflow-auth", "aud": "packetflow-cluster", "sub": "alice",
            "exp": now + 300, "permissions": ["cf:*"], "roles": ["packet_user"]}  # fmt: skip
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm=alg)


def unsigned(**claims: Any) -> str:
    """An ``alg: none`` token, built by hand (PyJWT refuses to make one for us)."""
    import base64

    def b64(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    body = {"iss": "packetflow-auth", "aud": "packetflow-cluster", "sub": "mallory",
            "exp": now + 300, **claims}  # fmt: skip
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(body)}."


@pytest.fixture
def jwt_gateway(cluster: Cluster, tmp_path: Path) -> Node:
    secret = tmp_path / "jwt.secret"
    secret.write_bytes(SECRET)
    gw = cluster.gateway("--jwt-secret-file", str(secret))
    cluster.reactor(gw, "--id", "jwt-r1")
    return gw


async def test_valid_jwt_is_accepted_and_names_the_principal(jwt_gateway: Node) -> None:
    headers = {"Authorization": f"Bearer {token()}"}
    async with packetflow.connect(jwt_gateway.url, headers=headers) as pf:
        assert (await pf.submit("cf", "ping")).data["pong"] is True


@pytest.mark.parametrize(
    ("make", "rule"),
    [
        (lambda: unsigned(), "jwt_algorithm"),
        (lambda: token(key=b"another-secret-entirely-0123456789"), "jwt_signature"),
        (lambda: token(exp=int(time.time()) - 60), "jwt_exp"),
        (lambda: token(nbf=int(time.time()) + 600), "jwt_nbf"),
        (lambda: token(iss="someone-else"), "jwt_iss"),
        (lambda: token(aud="another-cluster"), "jwt_aud"),
        (lambda: token(exp=None), "jwt_required"),
        (lambda: "not.a.jwt", "jwt_format"),
    ],
    ids=[
        "alg-none",
        "bad-signature",
        "expired",
        "nbf-future",
        "wrong-iss",
        "wrong-aud",
        "missing-exp",
        "garbage",
    ],
)
async def test_jwt_defect_is_refused_with_401(jwt_gateway: Node, make: Any, rule: str) -> None:
    headers = {"Authorization": f"Bearer {make()}"}
    status, body = await http_get(jwt_gateway.http + "/v1/reactors", headers)
    assert status == 401, body
    assert body["error"]["error_details"]["validation_rule"] == rule
    assert await upgrade_status(jwt_gateway.url, headers) == 401


async def test_hs256_token_refused_when_rs256_configured(cluster: Cluster, tmp_path: Path) -> None:
    """Algorithm confusion: the public key used as an HMAC secret must not verify."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    pub = tmp_path / "jwt.pub"
    pub.write_bytes(public_pem)
    gw = cluster.gateway("--jwt-public-key-file", str(pub))
    signed = token(key=private, alg="RS256", roles=["molecule_orchestrator"])
    good = {"Authorization": f"Bearer {signed}"}
    assert (await http_get(gw.http + "/v1/reactors", good))[0] == 200
    import base64
    import hashlib
    import hmac as hmac_mod

    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    header = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"iss": "packetflow-auth", "aud": "packetflow-cluster",
                             "sub": "eve", "exp": int(time.time()) + 300}).encode())  # fmt: skip
    sig = hmac_mod.new(public_pem, f"{header}.{claims}".encode(), hashlib.sha256).digest()
    forged = {"Authorization": f"Bearer {header}.{claims}.{b64(sig)}"}
    status, body = await http_get(gw.http + "/v1/reactors", forged)
    assert status == 401 and body["error"]["error_details"]["validation_rule"] == "jwt_algorithm"


async def test_jwt_connection_is_closed_when_the_token_expires(jwt_gateway: Node) -> None:
    short = token(exp=int(time.time()) + 2)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(jwt_gateway.url, headers={"Authorization": f"Bearer {short}"})
        msg = await ws.receive(timeout=15.0)  # exp + 5 s leeway + one sweep
        assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1008


# ---------------------------------------------------------------- announces and reactors


def announce(reactor_id: str, ws_url: str) -> str:
    return json.dumps({
        "protocol_version": "1.0", "message_type": "discover", "message_id": "msg_forged",
        "timestamp": 0, "source_id": reactor_id,
        "payload": {"discovery_type": "announce",
                    "reactor_info": {"reactor_id": reactor_id,
                                     "specializations": ["general_purpose"],
                                     "endpoints": {"websocket": ws_url}},
                    "supported_packets": [{"group": "cf", "element": "ping"}]},
    })  # fmt: skip


def make_key(gateway: Node, role: str) -> str:
    out = run_cli("keys", "create", "--role", role, "--data-dir", str(gateway.data_dir))
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


async def wait_key(gateway: Node, key: str) -> None:
    deadline = time.monotonic() + 5
    while await upgrade_status(gateway.url, {API_KEY_HEADER: key}) != 101:
        assert time.monotonic() < deadline, "key not live within 5 s"
        await asyncio.sleep(0.1)


async def test_anonymous_announce_never_reaches_the_gateway(gateway: Node) -> None:
    assert await upgrade_status(gateway.url, {}) == 401
    assert Cluster.health_of(gateway, "forged") is None


@pytest.mark.parametrize(
    ("role", "endpoint", "rule"),
    [
        ("packet_user", "ws://127.0.0.1:9/ws", "reactor_role"),
        ("reactor", "ws://10.11.12.13:9/ws", "endpoint_host"),
    ],
    ids=["packet-user-key", "reactor-key-foreign-endpoint"],
)
async def test_forged_announce_is_refused_with_pf403(
    gateway: Node, role: str, endpoint: str, rule: str
) -> None:
    key = make_key(gateway, role)
    await wait_key(gateway, key)
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(gateway.url, headers={API_KEY_HEADER: key})
        await ws.send_str(announce("forged", endpoint))
        reply = json.loads((await ws.receive(timeout=10)).data)
        await ws.close()
    assert reply["message_type"] == "error"
    assert reply["payload"]["error_code"] == "PF403"
    assert reply["payload"]["error_details"]["validation_rule"] == rule
    rows = gateway.get("/v1/reactors")["reactors"]
    assert "forged" not in {r["reactor_id"] for r in rows}


async def test_reactor_key_speaks_for_one_reactor_and_may_not_submit(gateway: Node) -> None:
    key = make_key(gateway, "reactor")
    await wait_key(gateway, key)
    async with packetflow.connect(gateway.url, api_key=key) as pf:
        with pytest.raises(PacketFlowError) as caught:
            await pf.submit("cf", "ping", wait=10)
        assert caught.value.code == "PF403"


async def test_reactor_key_may_not_use_the_http_api(gateway: Node) -> None:
    key = make_key(gateway, "reactor")
    await wait_key(gateway, key)
    status, body = await http_get(gateway.http + "/v1/reactors", {API_KEY_HEADER: key})
    assert status == 403 and body["error"]["error_code"] == "PF403"


async def test_direct_connection_to_a_reactor_is_refused(cluster: Cluster, gateway: Node) -> None:
    reactor = next(n for n in cluster.nodes if n.role == "reactor")
    assert await upgrade_status(reactor.url, {}) == 401
    assert await upgrade_status(reactor.url, {DIAL_TOKEN_HEADER: "guess"}) == 401
    # The gateway's key is no use at a reactor: only a dial token is.
    assert await upgrade_status(reactor.url, gateway.auth_headers()) == 401
    assert await upgrade_status(reactor.url, reactor.auth_headers()) == 101
    status, _ = await http_get(reactor.http + "/health", {})
    assert status == 200


async def test_announce_carries_a_dial_token_that_is_never_listed(gateway: Node) -> None:
    rows = gateway.get("/v1/reactors")["reactors"]
    assert rows and all("dial_token" not in json.dumps(r) for r in rows)


# ---------------------------------------------------------------- browser-facing HTTP


async def test_foreign_origin_upgrade_is_refused_with_403(gateway: Node) -> None:
    headers = {**gateway.auth_headers(), "Origin": "https://evil.example"}
    assert await upgrade_status(gateway.url, headers) == 403
    same = {**gateway.auth_headers(), "Origin": gateway.http}
    assert await upgrade_status(gateway.url, same) == 101


async def test_allow_origin_admits_the_configured_origin(cluster: Cluster) -> None:
    gw = cluster.gateway("--allow-origin", "https://dash.example")
    ok = {**gw.auth_headers(), "Origin": "https://dash.example"}
    assert await upgrade_status(gw.url, ok) == 101
    bad = {**gw.auth_headers(), "Origin": "https://other.example"}
    assert await upgrade_status(gw.url, bad) == 403


async def test_credentials_in_the_url_are_refused_with_400(gateway: Node) -> None:
    key = gateway.auth_headers()[API_KEY_HEADER]
    status, body = await http_get(f"{gateway.http}/v1/reactors?api_key={key}", {})
    assert status == 400
    assert body["error"]["error_details"]["validation_rule"] == "no_credentials_in_url"
    assert key not in json.dumps(body)


# ---------------------------------------------------------------- mTLS (§11.1.3)


@pytest.fixture
def pki(tmp_path: Path) -> Any:
    return make_local_pki(tmp_path / "tls", ["gateway-test", "reactor-ok", "client-ok"])


async def test_mtls_requires_a_client_certificate_from_the_ca(
    cluster: Cluster, tmp_path: Path, pki: Any
) -> None:
    gw = cluster.gateway("--tls-cert", str(pki.cert("gateway-test")),
                         "--tls-key", str(pki.key("gateway-test")),
                         "--tls-client-ca", str(pki.ca))  # fmt: skip
    assert gw.url.startswith("wss://")
    from packetflow.security.tls import client_context

    good = client_context(str(pki.ca), str(pki.cert("reactor-ok")), str(pki.key("reactor-ok")))
    status = await upgrade_status(gw.url, {}, ssl=good)
    assert status == 101  # CN=reactor-* authenticates by itself
    # A client certificate CN outside allowed_subjects: authenticated TLS, refused 401.
    other_subject = client_context(str(pki.ca), str(pki.cert("client-ok")),
                                   str(pki.key("client-ok")))  # fmt: skip
    assert await upgrade_status(gw.url, {}, ssl=other_subject) == 401
    # No client certificate: the TLS handshake itself fails.
    no_cert = client_context(str(pki.ca))
    with pytest.raises((aiohttp.ClientError, OSError)):
        await upgrade_status(gw.url, gw.auth_headers(), ssl=no_cert)
    # A certificate from another CA: refused too.
    stranger = make_local_pki(tmp_path / "other", ["reactor-ok"])
    foreign = client_context(str(pki.ca), str(stranger.cert("reactor-ok")),
                             str(stranger.key("reactor-ok")))  # fmt: skip
    with pytest.raises((aiohttp.ClientError, OSError)):
        await upgrade_status(gw.url, gw.auth_headers(), ssl=foreign)


# ---------------------------------------------------------------- not in clear


@pytest.mark.parametrize("role", ["gateway", "reactor"])
def test_non_loopback_bind_without_tls_is_refused(role: str, tmp_path: Path) -> None:
    out = run_cli(role, "--host", "0.0.0.0", "--port", "0", "--data-dir", str(tmp_path))
    assert out.returncode == 2
    assert "--tls-cert" in out.stderr and "--insecure" in out.stderr


# ---------------------------------------------------------------- packetflow up


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_packetflow_up_is_secure_and_the_cli_needs_no_flags(tmp_path: Path, tls: bool) -> None:
    env = {**os.environ, "PACKETFLOW_STATE_DIR": str(tmp_path / "state")}
    env.pop("PACKETFLOW_API_KEY", None)
    args = [*PF, "--log-level", "WARNING", "up", "--port", "0",
            "--data-dir", str(tmp_path / "data"), *(["--tls"] if tls else [])]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, env=env, start_new_session=True)
    try:
        assert proc.stdout is not None
        url = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            line = proc.stdout.readline().decode()
            assert line, "packetflow up exited"
            if line.startswith("packetflow gateway"):
                url = line.split()[-1]
            if line.startswith("Ready."):
                break
        assert url is not None and url.startswith("wss://" if tls else "ws://")
        run = subprocess.run([*PF, "submit", "cf", "ping", "--json", "--url", url],
                             capture_output=True, text=True, timeout=60, env=env)  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["data"]["pong"] is True
        status = subprocess.run([*PF, "status", "--json", "--url", url], capture_output=True,
                                text=True, timeout=60, env=env)  # fmt: skip
        assert status.returncode == 0, status.stderr
        assert len(json.loads(status.stdout)["reactors"]) == 5
        # And without the recorded key, the same command is refused.
        bare = {**env, "PACKETFLOW_STATE_DIR": str(tmp_path / "elsewhere")}
        refused = subprocess.run([*PF, "submit", "cf", "ping", "--url", url],
                                 capture_output=True, text=True, timeout=60, env=bare)  # fmt: skip
        assert refused.returncode != 0
    finally:
        stop_all([proc], 30)
    assert not any((tmp_path / "state").glob("*.json"))  # the index entry went with it
