"""The ``packetflow`` command: run a gateway, a reactor or a local cluster; submit packets;
show the cluster's status."""

from __future__ import annotations

import asyncio
import errno
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from .addresses import ENV_URL, LOCAL_GATEWAY, gateway_ws_url, http_base
from .cli_views import (
    affinity_table,
    error_lines,
    reactor_detail_table,
    reactors_table,
    result_lines,
)
from .protocol.chemistry import SPECIALIZATIONS
from .protocol.errors import (
    AuthenticationFailed,
    GatewayUnreachable,
    InvalidAddress,
    PacketFlowError,
)
from .protocol.limits import MAX_FRAME_BYTES

if TYPE_CHECKING:
    from rich.console import Console


@click.group(invoke_without_command=True,
             context_settings={"help_option_names": ["-h", "--help"]})  # fmt: skip
@click.version_option(package_name="packetflow")
@click.option("--log-level", default=None,
              help="DEBUG, INFO or WARNING for servers' logs (env PACKETFLOW_LOG)")  # fmt: skip
@click.pass_context
def main(ctx: click.Context, log_level: str | None) -> None:
    """PacketFlow Affinity Protocol v1.0: gateway, reactors, molecules.

    Client commands find the gateway in --gateway, else $PACKETFLOW_URL, else
    ws://127.0.0.1:8080/ws, and its credentials by themselves on the gateway's machine.
    Shell completion: eval "$(_PACKETFLOW_COMPLETE=bash_source packetflow)"."""
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = log_level
    if ctx.invoked_subcommand is None:
        click.echo(ctx.get_help())
        ctx.exit(0)


def _with(options: list[Any], command: Any) -> Any:
    """``command`` decorated with ``options``, shown in --help in the order listed."""
    for option in reversed(options):
        command = option(command)
    return command


def discovery_options(command: Any) -> Any:
    """DESIGN §2 announce channels 3 and 4, for both sides: a reactor advertises on them,
    a gateway listens on them."""
    options = [
        click.option("--multicast", is_flag=True, help="§8.1.2 multicast discovery"),
        click.option("--dnssd", is_flag=True, help="§8.1.3 DNS-SD (_packetflow._tcp.local.)"),
        click.option(
            "--multicast-group",
            default="224.0.1.100",
            show_default=True,
            help="IPv4 group for --multicast",
        ),
        click.option(
            "--multicast-port",
            default=9999,
            show_default=True,
            type=int,
            help="UDP port for --multicast",
        ),
    ]
    return _with(options, command)


def connection_options(command: Any) -> Any:
    """The gateway's connection bounds; unset ones keep GatewayConfig's defaults."""
    options = [
        click.option("--max-outbox-bytes", type=click.IntRange(min=1024), default=None,
                     help="Unsent bytes per client connection before it stops being read "
                          "[default: 4 MiB]"),
        click.option("--slow-consumer-timeout", "slow_consumer_s", default=None,
                     type=click.FloatRange(min=0.1),
                     help="Seconds a connection may stay full before it is closed "
                          "[default: 30]"),
        click.option("--max-requests-per-connection", default=None,
                     type=click.IntRange(min=1),
                     help="Unanswered packets per connection before it stops being read "
                          "[default: 10000]"),
        click.option("--max-subscriptions-per-connection", default=None,
                     type=click.IntRange(min=1),
                     help="ed:subscribe/listen subscriptions per connection [default: 100]"),
        click.option("--max-connections", default=None, type=click.IntRange(min=1),
                     help="Client WebSocket connections (also bounded by the fd limit) "
                          "[default: 10000]"),
        click.option("--handshake-timeout", "handshake_timeout_s", default=None,
                     type=click.FloatRange(min=0.1),
                     help="Seconds a new connection has to send its HTTP request or "
                          "WebSocket upgrade [default: 10]"),
        click.option("--max-frame-bytes", default=None, type=click.IntRange(min=4096),
                     help="§12.4.1 max_frame_size of client frames, replies and HTTP bodies "
                          "[default: 1048576]"),
        click.option("--ping-interval", "ping_interval_s", default=None,
                     type=click.FloatRange(min=0.1),
                     help="§12.4.1 WebSocket ping interval, seconds [default: 30]"),
        click.option("--pong-timeout", "pong_timeout_s", default=None,
                     type=click.FloatRange(min=0.1),
                     help="§12.4.1 seconds to wait for a pong [default: 5]"),
    ]  # fmt: skip
    return _with(options, command)


def authorization_options(command: Any) -> Any:
    """DESIGN §8 authorization, audit and data-protection flags of ``gateway``."""
    options = [
        click.option("--security-config", type=click.Path(dir_okay=False, exists=True),
                     default=None, help="TOML roles, admin actions, ABAC rules (docs/security.md)"),
        click.option("--audit-log", default=None,
                     help="Audit log file (default: DATA_DIR/security/audit.log)"),
        click.option("--audit-stdout", is_flag=True, help="Also write audit lines to stdout"),
        click.option("--audit-submits", is_flag=True, default=None,
                     help="Audit every submit (default: admin actions, denials, molecules)"),
        click.option("--journal-key-file", type=click.Path(dir_okay=False, exists=True),
                     default=None, help="Encrypt the molecule journal at rest (AES-256-GCM)"),
    ]  # fmt: skip
    return _with(options, command)


def tls_server_options(command: Any) -> Any:
    """DESIGN §8 transport security for a server (gateway or reactor)."""
    options = [
        click.option("--tls-cert", default=None, help="PEM certificate: serve wss/https"),
        click.option("--tls-key", default=None, help="PEM private key of --tls-cert"),
        click.option(
            "--tls-client-ca",
            default=None,
            help="PEM CA: require client certificates it signed (mTLS)",
        ),
        click.option(
            "--insecure",
            is_flag=True,
            help="Allow a non-loopback bind without TLS (credentials in clear)",
        ),
    ]
    return _with(options, command)


def client_credentials(command: Any) -> Any:
    """How a client command authenticates (DESIGN §8); without any of these, the key a
    gateway on this machine recorded for the URL is used."""
    options = [
        click.option(
            "--api-key",
            default=None,
            envvar="PACKETFLOW_API_KEY",
            help="API key (env PACKETFLOW_API_KEY); prefer --api-key-file",
        ),
        click.option(
            "--api-key-file",
            default=None,
            envvar="PACKETFLOW_API_KEY_FILE",
            help="File holding the API key",
        ),
        click.option("--ca-file", default=None, help="CA to verify a wss:// gateway"),
        click.option("--cert", default=None, help="Client certificate (mTLS)"),
        click.option("--key", "cert_key", default=None, help="Client certificate's key"),
    ]
    return _with(options, command)


def _tls_config(cert: str | None, key: str | None, client_ca: str | None) -> Any:
    from .security.tls import TlsConfig

    if bool(cert) != bool(key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if client_ca and not cert:
        raise click.UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    return TlsConfig(cert, key, client_ca) if cert and key else None


def _refuse_plaintext(role: str, host: str, tls: Any, insecure: bool) -> None:
    from .protocol.authentication import plaintext_bind_refusal

    refusal = plaintext_bind_refusal(role, host, tls is not None, insecure)
    if refusal is not None:
        click.echo(f"packetflow {role}: {refusal}", err=True)
        sys.exit(2)


def _client_options(url: str, creds: dict[str, Any]) -> dict[str, Any]:
    return {
        "api_key": creds.get("api_key"),
        "api_key_file": creds.get("api_key_file"),
        "ca_file": creds.get("ca_file"),
        "cert": creds.get("cert"),
        "key": creds.get("cert_key"),
    }


def _urlopen(url: str, request: Any, creds: dict[str, Any], timeout: float) -> Any:
    """urllib with the same credentials the WebSocket client would send."""
    import urllib.request

    from .security import locator
    from .security.tls import client_context

    headers = locator.auth_headers(
        url, None, api_key=creds.get("api_key"), api_key_file=creds.get("api_key_file")
    )
    for name, value in headers.items():
        request.add_header(name, value)
    context = None
    if url.startswith("wss://"):
        entry = locator.lookup(url) or locator.Entry()
        context = client_context(
            creds.get("ca_file") or entry.ca_file,
            creds.get("cert") or entry.cert_file,
            creds.get("cert_key") or entry.key_file,
        )
    return urllib.request.urlopen(request, timeout=timeout, context=context)


@main.command()
@discovery_options
@tls_server_options
@authorization_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (non-loopback needs TLS or --insecure)")  # fmt: skip
@click.option("--port", default=8080, show_default=True, type=int,
              help="Port for /ws and the HTTP API (0 picks a free one)")  # fmt: skip
@click.option("--jwt-secret-file", default=None, help="HS256 secret: accept JWTs it signed")
@click.option("--jwt-public-key-file", default=None,
              help="PEM RSA or EC P-256 public key: accept RS256/ES256 JWTs")  # fmt: skip
@click.option("--jwt-issuer", default="packetflow-auth", show_default=True,
              help="Required iss claim of accepted JWTs")  # fmt: skip
@click.option("--jwt-audience", default="packetflow-cluster", show_default=True,
              help="Required aud claim of accepted JWTs")  # fmt: skip
@click.option("--tls-allowed-subject", "allowed_subjects", multiple=True,
              help="mTLS subject pattern, e.g. 'CN=reactor-*' (repeatable)")  # fmt: skip
@click.option("--allow-origin", "allowed_origins", multiple=True,
              help="Browser Origin allowed to open /ws (repeatable; '*' for any)")  # fmt: skip
@click.option("--trust-multicast", is_flag=True,
              help="Dial reactors found by (unauthenticated) multicast/DNS-SD")  # fmt: skip
@click.option("--reactor-token-file", default=None,
              help="Token shown to static/multicast reactors (--accept-token-file)")  # fmt: skip
@click.option("--id", "gateway_id", default=None, help="Gateway id (default: random)")
@click.option("--static", "static", multiple=True, help="Reactor ws:// URL to add (repeatable)")
@click.option("--max-queue", default=None, type=int, help="Packets waiting for a slot")
@click.option(
    "--health-scale",
    default=1.0,
    show_default=True,
    type=float,
    help="Multiply every §9.2/§9.4 interval and threshold duration (tests: 0.02)",
)
@click.option(
    "--departure-after",
    default=None,
    type=float,
    help="Seconds of silence before a reactor leaves the registry",
)
@click.option("--seed", default=None, type=int, help="Seed for retry jitter (reproducibility)")
@click.option("--data-dir", default="data", show_default=True,
              help="Where the molecule journal (molecules.sqlite3) lives")  # fmt: skip
@click.option("--journal", "journal_path", default=None,
              help="Molecule journal file (default: DATA_DIR/molecules.sqlite3)")  # fmt: skip
@click.option("--drain-grace", default=None, type=click.FloatRange(min=0.0),
              help="Seconds accepted packets get after SIGTERM [default: 10]")  # fmt: skip
@click.option("--resume-grace", "resume_grace", default=None, type=float,
              help="Seconds a resumed molecule packet waits for its reactor to return "
                   "after a restart (default 5)")  # fmt: skip
@click.option("--cluster", "cluster_url", default=None, metavar="nats://HOST:PORT[,...]",
              envvar="PACKETFLOW_CLUSTER",
              help="Share the cluster with other gateways through these NATS servers")  # fmt: skip
@click.option("--cluster-creds", default=None, help="NATS credentials file (.creds)")
@click.option("--cluster-ca", default=None, help="CA that signed the NATS servers' certs")
@click.option("--cluster-cert", default=None, help="Client certificate for NATS (mTLS)")
@click.option("--cluster-key", default=None, help="Key of --cluster-cert")
@click.option("--cluster-lease", default=None, type=click.FloatRange(min=0.1),
              help="Seconds before a silent gateway's molecules are taken over [10]")  # fmt: skip
@click.option("--cluster-replicas", default=1, show_default=True, type=click.IntRange(1, 5),
              help="JetStream copies of each bucket (3 on a 3-server NATS cluster)")  # fmt: skip
@connection_options
@click.pass_context
def gateway(ctx: click.Context, /, host: str, port: int, gateway_id: str | None,
            static: tuple[str, ...], max_queue: int | None, health_scale: float,
            departure_after: float | None, seed: int | None, multicast: bool, dnssd: bool,
            multicast_group: str, multicast_port: int, data_dir: str = "data",
            journal_path: str | None = None, drain_grace: float | None = None,
            resume_grace: float | None = None, security_config: str | None = None,
            audit_log: str | None = None, audit_stdout: bool = False,
            audit_submits: bool | None = None,
            journal_key_file: str | None = None, tls_cert: str | None = None,
            tls_key: str | None = None, tls_client_ca: str | None = None,
            insecure: bool = False, jwt_secret_file: str | None = None,
            jwt_public_key_file: str | None = None, jwt_issuer: str = "packetflow-auth",
            jwt_audience: str = "packetflow-cluster", allowed_subjects: tuple[str, ...] = (),
            allowed_origins: tuple[str, ...] = (), trust_multicast: bool = False,
            reactor_token_file: str | None = None, cluster_url: str | None = None,
            cluster_creds: str | None = None, cluster_ca: str | None = None,
            cluster_cert: str | None = None, cluster_key: str | None = None,
            cluster_lease: float | None = None, cluster_replicas: int = 1,
            **limits: Any) -> None:  # fmt: skip
    """Run a gateway: routes packets from clients to reactors.

    Every endpoint but /health needs credentials (DESIGN §8); on first start an admin key
    is written to DATA_DIR/security/admin.key."""
    import dataclasses

    from .gateway.server import Gateway, GatewayConfig
    from .protocol.authentication import DEFAULT_ALLOWED_SUBJECTS
    from .protocol.health import DEFAULT_HEALTH_CONFIG
    from .runner import configure_logging, run_main
    from .security.files import read_secret
    from .security.gatekeeper import SecurityConfig

    configure_logging(ctx.obj["log_level"])
    tls = _tls_config(tls_cert, tls_key, tls_client_ca)
    _refuse_plaintext("gateway", host, tls, insecure)
    if port and not _port_free(host, port):  # before any key or journal is made
        _die(_port_in_use(host, port))
    jwt = None
    if jwt_secret_file or jwt_public_key_file:  # PyJWT costs 8 MiB: only when asked for
        from .security.tokens import JwtVerifier

        try:
            jwt = JwtVerifier.from_files(jwt_secret_file, jwt_public_key_file, jwt_issuer,
                                         jwt_audience)  # fmt: skip
        except (OSError, ValueError) as exc:
            raise click.UsageError(f"cannot load the JWT key: {exc}") from None
    security = SecurityConfig(data_dir=Path(data_dir), jwt=jwt, tls=tls,
                              allowed_subjects=allowed_subjects or DEFAULT_ALLOWED_SUBJECTS,
                              allowed_origins=allowed_origins)  # fmt: skip
    health = DEFAULT_HEALTH_CONFIG.scaled(health_scale)
    if departure_after is not None:
        health = dataclasses.replace(health, departure_after_s=departure_after)
    config = GatewayConfig(host=host, port=port, static_reactors=static, health=health,
                           seed=seed)  # fmt: skip
    if drain_grace is not None:
        config.drain_grace_s = drain_grace
    if gateway_id:
        config.gateway_id = gateway_id
    if max_queue:
        config.max_queue = max_queue
    config.multicast, config.dnssd = multicast, dnssd
    config.multicast_group, config.multicast_port = multicast_group, multicast_port
    config.data_dir = Path(data_dir)
    config.journal_path = Path(journal_path) if journal_path else None
    config.security = security
    config.trust_multicast = trust_multicast
    config.insecure = insecure
    config.reactor_token = read_secret(reactor_token_file) if reactor_token_file else None
    if resume_grace is not None:
        config.resume_grace_s = resume_grace
    config.security_config = Path(security_config) if security_config else None
    config.audit_log = Path(audit_log) if audit_log else None
    config.audit_stdout, config.audit_submits = audit_stdout, audit_submits
    config.journal_key_file = Path(journal_key_file) if journal_key_file else None
    if cluster_url:
        try:
            import nats  # noqa: F401
        except ImportError:
            raise click.UsageError(
                "--cluster needs the NATS client: pip install 'packetflow[cluster]'"
            ) from None
        config.cluster_url = cluster_url
        config.cluster_creds = Path(cluster_creds) if cluster_creds else None
        config.cluster_ca = Path(cluster_ca) if cluster_ca else None
        config.cluster_cert = Path(cluster_cert) if cluster_cert else None
        config.cluster_key = Path(cluster_key) if cluster_key else None
        if cluster_lease is not None:
            config.cluster_lease_s = cluster_lease
        config.cluster_replicas = cluster_replicas
    for name, value in limits.items():  # connection_options: unset ones keep the defaults
        if value is not None:
            setattr(config, name, value)
    from .security.config import SecurityConfigError

    try:
        gw = Gateway(config)
    except SecurityConfigError as exc:
        raise click.UsageError(str(exc)) from exc
    from .protocol.errors import ServiceUnavailable

    try:
        run_main(gw.serve_forever())
    except ServiceUnavailable as exc:  # --cluster: NATS not reachable at start
        _die(exc.message, 1)
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise
        _die(_port_in_use(host, port))


def _port_in_use(host: str, port: int) -> str:
    return f"port {port} on {host} is in use: pick another with --port, or stop what holds it"


def _port_free(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (as aiohttp binds: SO_REUSEADDR)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return True  # let the server report a bad host itself
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
    return True


@main.command()
@discovery_options
@tls_server_options
@click.option("--api-key-file", default=None, envvar="PACKETFLOW_API_KEY_FILE",
              help="Key (reactor role) that authenticates the announce; or env "
              "PACKETFLOW_API_KEY")  # fmt: skip
@click.option("--accept-token-file", default=None, envvar="PACKETFLOW_ACCEPT_TOKEN_FILE",
              help="Also accept gateways/clients presenting this dial token")  # fmt: skip
@click.option("--gateway-ca", default=None, help="CA that signed a wss:// gateway's cert")
@click.option("--gateway", "--url", "gateway_url", default=None, metavar="URL",
              help="Gateway to announce to: ws://HOST:PORT/ws, http://HOST:PORT or "
              "HOST:PORT (none: wait to be dialled)")  # fmt: skip
@click.option(
    "--specialization",
    "-s",
    "specializations",
    multiple=True,
    type=click.Choice(SPECIALIZATIONS),
    help="Repeatable; default general_purpose",
)
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (non-loopback needs TLS or --insecure)")  # fmt: skip
@click.option("--port", default=0, show_default=True, type=int, help="0 picks a free port")
@click.option("--id", "reactor_id", default=None, help="Reactor id (default: random)")
@click.option(
    "--implementation",
    default="python",
    show_default=True,
    help="Announced implementation (routing_preferences.preferred_implementation)",
)
@click.option("--max-concurrent", default=None, type=int, help="max_concurrent_packets")
@click.option(
    "--heartbeat-interval",
    default=5.0,
    show_default=True,
    type=float,
    help="Seconds between HEARTBEATs",
)
@click.option(
    "--announce-interval",
    default=60.0,
    show_default=True,
    type=float,
    help="Seconds between capability re-announcements (0: only on connect)",
)
@click.option("--data-dir", default="data", show_default=True, help="Files df:load/df:save see")
@click.option(
    "--memory-limit-mb",
    default=None,
    type=float,
    help="Memory this reactor may use; §9.4.1 exhaustion is judged against it "
    "(default: the machine's or the container's)",
)
@click.option("--locality", default=None, help="Locality label for routing hints")
@click.option(
    "--payload-key-file",
    type=click.Path(dir_okay=False, exists=True),
    default=None,
    help="Shared secret for end-to-end payload encryption (AES-256-GCM)",
)
@click.option(
    "--grace",
    default=10.0,
    show_default=True,
    type=float,
    help="Seconds in-flight work gets to finish on shutdown",
)
@click.option(
    "--module",
    "modules",
    multiple=True,
    help="Python module to import first (it may register elements on REACTOR)",
)
@click.option(
    "--max-frame-bytes",
    default=None,
    type=click.IntRange(min=4096),
    help="§12.4.1 max_frame_size of the frames /ws reads [default: 1048576]",
)
@click.pass_context
def reactor(ctx: click.Context, gateway_url: str | None, specializations: tuple[str, ...],
            host: str, port: int, reactor_id: str | None, implementation: str,
            max_concurrent: int | None, heartbeat_interval: float, announce_interval: float,
            data_dir: str, memory_limit_mb: float | None,
            locality: str | None, grace: float, modules: tuple[str, ...], multicast: bool,
            dnssd: bool, multicast_group: str, multicast_port: int,
            payload_key_file: str | None = None,
            tls_cert: str | None = None, tls_key: str | None = None,
            tls_client_ca: str | None = None, insecure: bool = False,
            api_key_file: str | None = None, accept_token_file: str | None = None,
            gateway_ca: str | None = None,
            max_frame_bytes: int | None = None) -> None:  # fmt: skip
    """Run a reactor: a worker serving every standard element. It accepts work only from
    the gateway it announced to (DESIGN §8)."""
    from .reactor.server import Reactor
    from .runner import configure_logging
    from .security.files import read_secret

    configure_logging(ctx.obj["log_level"])
    tls = _tls_config(tls_cert, tls_key, tls_client_ca)
    _refuse_plaintext("reactor", host, tls, insecure)
    accept = (read_secret(accept_token_file),) if accept_token_file else ()
    r = Reactor(
        reactor_id=reactor_id, specializations=specializations or ("general_purpose",),
        gateway=gateway_url, host=host, port=port, implementation=implementation,
        max_concurrent_packets=max_concurrent, heartbeat_interval_s=heartbeat_interval,
        announce_interval_s=announce_interval,
        data_dir=data_dir, memory_limit_mb=memory_limit_mb, locality=locality, grace_s=grace,
        multicast=multicast,
        multicast_group=multicast_group, multicast_port=multicast_port, dnssd=dnssd,
        payload_key_file=payload_key_file,
        api_key_file=api_key_file, accept_tokens=accept, tls=tls, gateway_ca=gateway_ca,
        insecure=insecure, max_frame_bytes=max_frame_bytes or MAX_FRAME_BYTES,
    )  # fmt: skip
    for name in modules:
        import importlib

        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        if callable(register):
            register(r)
    r.run()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on")
@click.option("--port", default=8080, show_default=True, type=int,
              help="The gateway's port (0 picks a free one); reactors pick free ports")  # fmt: skip
@click.option("--data-dir", default="data", show_default=True,
              help="Journal, keys and the reactors' files live under it")  # fmt: skip
@click.option(
    "--specialization",
    "-s",
    "specializations",
    multiple=True,
    type=click.Choice(SPECIALIZATIONS),
    help="Repeatable: one reactor each (default: one per specialization)",
)
@click.option("--tls", is_flag=True, help="Make a local CA and run everything over wss + mTLS")
@click.option("--gateways", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Gateways sharing the cluster through a local NATS server")  # fmt: skip
@click.pass_context
def up(
    ctx: click.Context,
    host: str,
    port: int,
    data_dir: str,
    specializations: tuple[str, ...],
    tls: bool,
    gateways: int = 1,
) -> None:
    """Start a local cluster: one gateway and one reactor per specialization, each
    reactor's data directory seeded with the example input files. A child that exits is
    restarted with backoff; one that keeps dying stops the cluster (exit 1)."""
    from .cluster import run_cluster

    if port and not _port_free(host, port):
        _die(_port_in_use(host, port))
    if gateways > 1 and tls:
        raise click.UsageError("--tls with --gateways > 1 is not supported yet")

    sys.exit(run_cluster(host=host, port=port, data_dir=Path(data_dir),
                         log_level=ctx.obj["log_level"],
                         specializations=specializations or SPECIALIZATIONS,
                         tls=tls, gateways=gateways))  # fmt: skip


# ---------------------------------------------------------------- client commands


def gateway_address(command: Any) -> Any:
    """The one option naming the gateway a client command talks to (``--url`` is kept as
    an alias: earlier releases used it)."""
    return click.option(
        "--gateway", "--url", "url", default=None, metavar="URL",
        help="The gateway: ws://HOST:PORT/ws, http://HOST:PORT or HOST:PORT "
        f"(default: ${ENV_URL}, else {LOCAL_GATEWAY})",
    )(command)  # fmt: skip


def _die(message: str, code: int = 2) -> NoReturn:
    """One line on stderr and a non-zero exit: what went wrong and what to do."""
    click.echo(f"packetflow: {message}", err=True)
    sys.exit(code)


def _resolve(url: str | None) -> str:
    try:
        return gateway_ws_url(url)
    except PacketFlowError as err:
        _die(err.message)


def _show_error(payload: dict[str, Any], as_json: bool) -> NoReturn:
    """An ERROR payload, in the same shape for every command; exit 1."""
    if as_json:
        click.echo(json.dumps({"error": payload}, indent=2))
    else:
        for line in error_lines(payload):
            click.echo(line, err=True)
    sys.exit(1)


def _fail(err: PacketFlowError, as_json: bool) -> NoReturn:
    if isinstance(err, GatewayUnreachable | InvalidAddress | AuthenticationFailed):
        _die(err.message)
    _show_error(err.to_payload(err.packet_id), as_json)


def _http(url: str, path: str, creds: dict[str, Any], method: str = "GET",
          timeout: float = 10.0, body: Any = None) -> tuple[int, Any]:  # fmt: skip
    """One request to the gateway's HTTP API: (status, decoded body). An unreachable
    gateway ends the command with one line. ``body`` is sent as JSON."""
    import urllib.error
    import urllib.request

    target = f"{http_base(url)}{path}"
    data = None if body is None else json.dumps(body).encode()
    headers = {} if body is None else {"Content-Type": "application/json"}
    try:
        with _urlopen(url, urllib.request.Request(target, data=data, method=method,
                                                  headers=headers), creds,
                      timeout) as resp:  # fmt: skip
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        try:
            body = json.load(exc)
        except ValueError:
            body = {}
        if exc.code == 401:
            _die(f"{http_base(url)} refused the credentials: pass --api-key or run on the "
                 "gateway's machine (docs/security.md)")  # fmt: skip
        if exc.code == 404 and not body:
            _die(f"{target} is not a packetflow gateway (HTTP 404)")
        return exc.code, body
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        _die(f"cannot reach {http_base(url)} ({reason}): is packetflow up running?")
    except ValueError:
        _die(f"{target} did not answer JSON: is it a packetflow gateway?")


def _console() -> Console:
    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else 200)


@main.command()
@click.argument("group")
@click.argument("element")
@click.option("--data", "data_json", default="{}", help="The packet's data, a JSON object")
@click.option("--priority", type=click.IntRange(1, 10), default=None,
              help="1-10; higher goes first and scores higher (default 5)")  # fmt: skip
@click.option("--timeout-ms", type=int, default=None,
              help="How long the packet may take before PF504 (default 30000)")  # fmt: skip
@click.option("--id", "packet_id", default=None,
              help="Packet id (a repeated id is answered from the first run)")  # fmt: skip
@click.option("--prefs", default=None,
              help='routing_preferences as JSON, e.g. \'{"avoid_reactors": ["r1"]}\'')  # fmt: skip
@click.option("--json", "as_json", is_flag=True,
              help="Print the RESULT (or the ERROR) as JSON on stdout, for scripts")  # fmt: skip
@gateway_address
@client_credentials
def submit(group: str, element: str, data_json: str, priority: int | None,
           timeout_ms: int | None, packet_id: str | None, prefs: str | None,
           as_json: bool, url: str | None, **creds: Any) -> None:  # fmt: skip
    """Submit one packet GROUP:ELEMENT and print its RESULT (exit 1 on an ERROR)."""
    from .client import AsyncClient

    try:
        data = json.loads(data_json)
        routing = json.loads(prefs) if prefs else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter("--data must be a JSON object")
    ws = _resolve(url)

    async def go() -> dict[str, Any]:
        async with AsyncClient(ws, **_client_options(ws, creds)) as pf:
            res = await pf.submit(group, element, data, priority=priority,
                                  timeout_ms=timeout_ms, packet_id=packet_id,
                                  routing_preferences=routing)  # fmt: skip
            return {"packet_id": res.packet_id, "status": res.status, "data": res.data,
                    "processing_metadata": res.processing_metadata}  # fmt: skip

    try:
        out = asyncio.run(go())
    except PacketFlowError as err:
        _fail(err, as_json)
    if as_json:
        click.echo(json.dumps(out, indent=2))
    else:
        for line in result_lines(out):
            click.echo(line)


def _render_status(url: str, creds: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    _, reactors = _http(url, "/v1/reactors", creds)
    _, health = _http(url, "/health", creds)
    rows = reactors.get("reactors", []) if isinstance(reactors, dict) else []
    title = (
        f"gateway {health.get('gateway_id')} ({health.get('status', '?')}) — {len(rows)} reactors"
    )
    return {"gateway": health, "reactors": rows}, reactors_table(rows, title)


@main.command()
@gateway_address
@click.option("--json", "as_json", is_flag=True, help="Print the gateway and registry as JSON")
@click.option("--watch", is_flag=True, help="Keep the table on screen, refreshed (Ctrl-C quits)")
@click.option("--interval", default=2.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds between refreshes with --watch")  # fmt: skip
@client_credentials
def status(url: str | None, as_json: bool, watch: bool, interval: float, **creds: Any) -> None:
    """Show the gateway and its reactors: specializations, health and load."""
    import time

    ws = _resolve(url)
    body, table = _render_status(ws, creds)
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    console = _console()
    if not watch:
        console.print(table)
        return
    from rich.live import Live

    try:
        if console.is_terminal:
            with Live(table, console=console, refresh_per_second=4) as live:
                while True:
                    time.sleep(interval)
                    live.update(_render_status(ws, creds)[1])
        else:  # a pipe or a file gets one table per refresh
            console.print(table)
            while True:
                time.sleep(interval)
                console.print(_render_status(ws, creds)[1])
    except KeyboardInterrupt:
        pass


@main.command()
@gateway_address
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON")
@client_credentials
def reactors(url: str | None, as_json: bool, **creds: Any) -> None:
    """List the registered reactors: elements served, locality, how they were found and
    the routing adjustment learned for each group."""
    ws = _resolve(url)
    _, body = _http(ws, "/v1/reactors", creds)
    rows = body.get("reactors", []) if isinstance(body, dict) else []
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _console().print(reactor_detail_table(rows))


@main.command()
@gateway_address
@click.option("--json", "as_json", is_flag=True, help="Print the matrix and history as JSON")
@client_credentials
def affinity(url: str | None, as_json: bool, **creds: Any) -> None:
    """Show the affinity matrix (specialization × group) and, under each specialization,
    every reactor's learned adjustment."""
    ws = _resolve(url)
    _, body = _http(ws, "/v1/affinity", creds)
    _, listed = _http(ws, "/v1/reactors", creds)
    rows = listed.get("reactors", []) if isinstance(listed, dict) else []
    if as_json:
        adjustments = {r["reactor_id"]: r.get("adjustments") or {} for r in rows}
        click.echo(json.dumps({**body, "adjustments": adjustments}, indent=2))
        return
    console = _console()
    for table in affinity_table(body, rows):
        console.print(table)
    for update in body.get("pending") or []:
        console.print(f"scheduled: v{update['version']} at {_iso_ms(update['effective_date'])} "
                      f"(rollback policy {update['rollback_policy']['name']}): "
                      f"{json.dumps(update['matrix_updates'])}")  # fmt: skip
    watch = body.get("watch")
    if watch:
        rate = watch.get("success_rate")
        shown = "-" if rate is None else f"{rate:.3f}"
        console.print(
            f"watching v{watch['version']} until {_iso_ms(watch['until'])}: "
            f"{watch['samples']} packets, success rate {shown} (rolls back to "
            f"v{watch['rollback_to']} below {watch['success_rate_threshold']})"
        )


def _iso_ms(epoch_ms: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch_ms / 1000, datetime.UTC).isoformat()


@main.command("affinity-rollback")
@gateway_address
@click.option(
    "--version",
    "version",
    default=None,
    help="The version to restore (default: the one the current version replaced)",
)
@client_credentials
def affinity_rollback(url: str | None, version: str | None, **creds: Any) -> None:
    """Roll the affinity matrix back to an earlier version (PFAP §6.4; admin)."""
    ws = _resolve(url)
    status, body = _http(ws, "/v1/affinity/rollback", creds, method="POST",
                         body={"version": version} if version else {})  # fmt: skip
    if status != 200:
        err = body.get("error") if isinstance(body, dict) else None
        _die(f"rollback refused: {(err or {}).get('error_message', body)}")
    click.echo(f"affinity matrix v{body['previous_version']} -> v{body['version']}")


# ---------------------------------------------------------------- conformance (PFAP §12.3.1)


@main.command()
@click.argument("url")
@click.option(
    "--role",
    type=click.Choice(["reactor", "gateway"]),
    default=None,
    help="What URL is (default: guessed from its answer to a DISCOVER query)",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document")
@click.option(
    "--token-file",
    default=None,
    envvar="PACKETFLOW_ACCEPT_TOKEN_FILE",
    help="A reactor's accept token (its --accept-token-file)",
)
@click.option(
    "--time-scale",
    default=1.0,
    type=float,
    show_default=True,
    help="Multiply every §12.3.1 time limit (tests of the kit itself)",
)
@client_credentials
def conformance(url: str, role: str | None, as_json: bool, token_file: str | None,
                time_scale: float, **creds: Any) -> None:  # fmt: skip
    """Run the PFAP §12.3.1 conformance checks against a reactor's or gateway's /ws.

    Exits 1 if any check fails, 2 if the arguments are wrong."""
    from .conformance.runner import Conformance
    from .conformance.table import as_json as report_json
    from .conformance.table import print_table
    from .protocol.authentication import DIAL_TOKEN_HEADER
    from .security import locator
    from .security.files import read_secret
    from .security.tls import client_context

    if time_scale <= 0:
        raise click.UsageError("--time-scale must be > 0")
    if not url.startswith(("ws://", "wss://")):
        raise click.UsageError("URL is a PFAP WebSocket endpoint: ws://host:port/ws")
    headers = locator.auth_headers(
        url, None, api_key=creds.get("api_key"), api_key_file=creds.get("api_key_file")
    )
    if token_file:
        headers[DIAL_TOKEN_HEADER] = read_secret(token_file)
    ssl_ctx = None
    if url.startswith("wss://"):
        entry = locator.lookup(url) or locator.Entry()
        ssl_ctx = client_context(creds.get("ca_file") or entry.ca_file,
                                 creds.get("cert") or entry.cert_file,
                                 creds.get("cert_key") or entry.key_file)  # fmt: skip
    report = asyncio.run(Conformance(url, role, headers, ssl_ctx, time_scale).run())
    if as_json:
        click.echo(report_json(report))
    else:
        print_table(report, width=None if sys.stdout.isatty() else 200)
    sys.exit(0 if report.passed else 1)


# ---------------------------------------------------------------- molecules (PFAP §7)


@main.group()
def molecule() -> None:
    """Run and manage molecules (PFAP §7): run FILE, status ID, abort ID."""


def _initiate_payload(value: Any, molecule_id: str | None) -> dict[str, Any]:
    """A COORDINATE initiate payload from a file holding a §7.1 structure, an initiate
    payload, or a whole COORDINATE envelope."""
    if not isinstance(value, dict):
        raise click.BadParameter("the file must hold a JSON object (a molecule structure)")
    if "message_type" in value and isinstance(value.get("payload"), dict):
        value = value["payload"]
    if "molecular_structure" in value:
        payload = dict(value)
    else:
        payload = {"molecular_structure": value}
        if "molecule_id" in value:
            payload["molecule_id"] = value["molecule_id"]
    payload["coordination_type"] = "initiate"
    if molecule_id:
        payload["molecule_id"] = molecule_id
    return payload


# An execution_state list → the word the progress line uses for its packets.
_PACKET_STATES = (("active_packets", "running"), ("completed_packets", "done"),
                  ("failed_packets", "failed"), ("skipped_packets", "skipped"),
                  ("aborted_packets", "aborted"))  # fmt: skip
_FINISHED = ("done", "failed", "skipped", "aborted")


def packet_states(state: dict[str, Any]) -> dict[str, str]:
    """packet id → running/done/failed/skipped/aborted (absent: not started yet)."""
    out: dict[str, str] = {}
    for key, word in _PACKET_STATES:
        for pid in state.get(key) or []:
            out[str(pid)] = word
    return out


def progress_note(states: dict[str, str], packets: list[str]) -> str:
    """``1 running, 2 done, 1 failed`` over ``packets`` (states with no packet left out)."""
    counts = {word: 0 for _, word in _PACKET_STATES}
    for pid in packets:
        word = states.get(pid)
        if word is not None:
            counts[word] += 1
    waiting = len(packets) - sum(counts.values())
    parts = [f"{n} {word}" for word, n in counts.items() if n]
    if waiting:
        parts.append(f"{waiting} waiting")
    return ", ".join(parts) or "waiting"


class MoleculeView:
    """Live progress of one molecule: a bar per stage whose note counts its packets
    running/done/failed/skipped/aborted (rich, on a terminal); one plain line on stderr
    per change otherwise."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"), console=self.console, disable=not self.live,
        )  # fmt: skip
        self.stages: list[tuple[int, list[str]]] = []
        self.stage_tasks: dict[int, Any] = {}
        self.total_task: Any = None
        self.molecule_id = ""
        self.last_line = ""

    def __enter__(self) -> MoleculeView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def plan(self, molecule_id: str, plan: dict[str, Any]) -> None:
        self.molecule_id = molecule_id
        self.stages = [(int(s["stage_id"]), [str(p) for p in s["packets"]])
                       for s in plan.get("stages") or []]  # fmt: skip
        count = sum(len(p) for _, p in self.stages)
        self.total_task = self.progress.add_task(molecule_id, total=count, note="")
        for stage_id, packets in self.stages:
            self.stage_tasks[stage_id] = self.progress.add_task(
                f"  stage {stage_id}", total=len(packets), note=""
            )

    def line(self, states: dict[str, str]) -> str:
        every = [p for _, packets in self.stages for p in packets] or list(states)
        parts = [f"{self.molecule_id}: {progress_note(states, every)}"]
        for stage_id, packets in self.stages:
            parts.append(f"stage {stage_id}/{len(self.stages)} "
                         f"[{progress_note(states, packets)}]")  # fmt: skip
        return "; ".join(parts)

    def update(self, payload: dict[str, Any]) -> None:
        if "execution_state" not in payload:
            return
        states = packet_states(payload.get("execution_state") or {})
        if self.total_task is not None:
            every = [p for _, packets in self.stages for p in packets]
            finished = sum(1 for p in every if states.get(p) in _FINISHED)
            self.progress.update(self.total_task, completed=finished,
                                 note=progress_note(states, every))  # fmt: skip
            for stage_id, packets in self.stages:
                finished = sum(1 for p in packets if states.get(p) in _FINISHED)
                self.progress.update(self.stage_tasks[stage_id], completed=finished,
                                     note=progress_note(states, packets))  # fmt: skip
        if not self.live:
            line = self.line(states)
            if line != self.last_line:
                self.last_line = line
                click.echo(line, err=True)


def _print_final(payload: dict[str, Any]) -> None:
    """The final state: a table of packets, the status, then the results as JSON (when
    there are any)."""
    from rich.table import Table

    state = payload.get("execution_state") or {}
    console = _console()
    table = Table(title=f"molecule {payload.get('molecule_id')}")
    for col in ("packet", "status", "duration ms", "attempts", "reactor"):
        table.add_column(col)
    colors = {"success": "green", "error": "red", "skipped": "yellow", "aborted": "yellow"}
    for pid, entry in (state.get("stage_results") or {}).items():
        entry_status = str(entry.get("status"))
        color = colors.get(entry_status, "white")
        table.add_row(pid, f"[{color}]{entry_status}[/{color}]", str(entry.get("duration_ms", "")),
                      str(entry.get("attempts", "")), str(entry.get("reactor_id", "")))  # fmt: skip
    console.print(table)
    status = payload.get("status")
    color = "green" if status == "success" else "yellow" if status == "partial" else "red"
    elapsed = (payload.get("performance_metrics") or {}).get("elapsed_time_ms")
    console.print(f"status [{color}]{status}[/{color}] in {elapsed} ms")
    if payload.get("error"):
        for line in error_lines(payload["error"]):
            console.print(line, markup=False, highlight=False)
    if payload.get("results"):
        click.echo(json.dumps(payload["results"], indent=2))


@molecule.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@gateway_address
@click.option("--id", "molecule_id", default=None,
              help="Run under this molecule_id instead of the file's")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Print only the final state, as JSON")
@client_credentials
def molecule_run(file: Path, url: str | None, molecule_id: str | None, as_json: bool,
                 **creds: Any) -> None:  # fmt: skip
    """Run the molecule in FILE with live progress; print the results (exit 1 unless the
    status is success)."""
    import msgspec

    from .client import AsyncClient

    try:
        payload = _initiate_payload(json.loads(file.read_text()), molecule_id)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{file} is not JSON: {exc}") from None
    ws = _resolve(url)

    async def go(view: MoleculeView) -> dict[str, Any]:
        async with AsyncClient(ws, **_client_options(ws, creds)) as pf:
            async for msg in pf.coordinate(payload):
                body = msgspec.to_builtins(msg.payload)
                kind = body.get("coordination_type")
                if kind == "initiate" and body.get("execution_plan"):
                    view.plan(str(body.get("molecule_id")), body["execution_plan"])
                view.update(body)
                if kind in ("complete", "abort"):
                    return dict(body)
        _die("the gateway closed the stream before the molecule ended")

    try:
        with MoleculeView() as view:
            final = asyncio.run(go(view))
    except PacketFlowError as err:
        _fail(err, as_json)
    except msgspec.ValidationError as exc:
        _die(f"{file} is not a molecule: {exc}")
    except KeyboardInterrupt:
        mid = payload.get("molecule_id", "ID")
        _die(f"stopped watching; the molecule keeps running on the gateway "
             f"(packetflow molecule abort {mid})", 130)  # fmt: skip
    if as_json:
        click.echo(json.dumps(final, indent=2))
    else:
        _print_final(final)
    sys.exit(0 if final.get("status") == "success" else 1)


def _molecule_answer(code: int, body: dict[str, Any], as_json: bool) -> None:
    if code >= 400:
        error = body.get("payload", body.get("error", body))
        _show_error(error, as_json)
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    if body.get("coordination_type") in ("complete", "abort"):
        _print_final(body)
        return
    state = body.get("execution_state") or {}
    states = packet_states(state)
    every = sorted(states) + list(state.get("pending_packets") or [])
    click.echo(f"molecule {body.get('molecule_id')}: {body.get('status')}, stage "
               f"{state.get('current_stage')}/{state.get('total_stages')}; "
               f"{progress_note(states, every)}")  # fmt: skip


@molecule.command("status")
@click.argument("molecule_id")
@gateway_address
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON")
@client_credentials
def molecule_status(molecule_id: str, url: str | None, as_json: bool, **creds: Any) -> None:
    """Show a molecule's state (exit 1 if the gateway knows no such molecule)."""
    _molecule_request("GET", url, molecule_id, as_json, creds)


@molecule.command("abort")
@click.argument("molecule_id")
@gateway_address
@click.option("--json", "as_json", is_flag=True, help="Print the final state as JSON")
@client_credentials
def molecule_abort(molecule_id: str, url: str | None, as_json: bool, **creds: Any) -> None:
    """Abort a running molecule (exit 1 if it is unknown or already finished)."""
    _molecule_request("DELETE", url, molecule_id, as_json, creds)


def _molecule_request(method: str, url: str | None, molecule_id: str, as_json: bool,
                      creds: dict[str, Any]) -> None:  # fmt: skip
    import urllib.parse

    ws = _resolve(url)
    path = f"/v1/molecules/{urllib.parse.quote(molecule_id, safe='')}"
    code, body = _http(ws, path, creds, method, 60)
    _molecule_answer(code, body if isinstance(body, dict) else {}, as_json)


# ---------------------------------------------------------------- keys (PFAP §11.1.1)


@main.group()
def keys() -> None:
    """Manage API keys: create, list, revoke (a running gateway on the same data dir
    picks changes up within seconds)."""


@keys.command("create")
@click.option("--role", "roles", multiple=True, required=True,
              help="packet_user, molecule_orchestrator, system_admin, reactor")  # fmt: skip
@click.option("--label", default=None, help="A note on who holds the key")
@click.option(
    "--data-dir",
    default="data",
    show_default=True,
    help="The gateway's data directory (keys live in DATA_DIR/security)",
)
def keys_create(roles: tuple[str, ...], label: str | None, data_dir: str) -> None:
    """Print a new API key on stdout (it is stored only hashed: keep it now)."""
    from .security.keystore import KeyStore

    try:
        key, record = KeyStore(Path(data_dir)).create(set(roles), label)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--role") from None
    click.echo(f"created key {record.key_id} ({', '.join(sorted(record.roles))})", err=True)
    click.echo(key)


@keys.command("list")
@click.option(
    "--data-dir",
    default="data",
    show_default=True,
    help="The gateway's data directory (keys live in DATA_DIR/security)",
)
@click.option("--json", "as_json", is_flag=True, help="Print the keys' records as JSON")
def keys_list(data_dir: str, as_json: bool) -> None:
    """Key ids, roles, labels and creation times; never the keys."""
    import datetime

    from .security.keystore import KeyStore

    rows = [r.view() for r in KeyStore(Path(data_dir)).records.values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        created = datetime.datetime.fromtimestamp(r["created"], datetime.UTC)
        state = "revoked" if r["revoked"] else "active"
        click.echo(f"{r['id']}  {','.join(r['roles']):<24} {state:<8} "
                   f"{created:%Y-%m-%d %H:%M:%S}Z  {r['label'] or ''}")  # fmt: skip


@keys.command("revoke")
@click.argument("key_id")
@click.option(
    "--data-dir",
    default="data",
    show_default=True,
    help="The gateway's data directory (keys live in DATA_DIR/security)",
)
def keys_revoke(key_id: str, data_dir: str) -> None:
    """Revoke a key: its open connections are closed within seconds (exit 1 if unknown)."""
    from .security.keystore import KeyStore

    if not KeyStore(Path(data_dir)).revoke(key_id):
        click.echo(f"no active key {key_id}", err=True)
        sys.exit(1)
    click.echo(f"revoked {key_id}", err=True)


if __name__ == "__main__":  # pragma: no cover
    main()
