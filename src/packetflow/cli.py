"""The ``packetflow`` command: run a gateway, a reactor or a local cluster; submit packets;
show the cluster's status."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from .protocol.chemistry import SPECIALIZATIONS

DEFAULT_URL = os.environ.get("PACKETFLOW_URL", "ws://127.0.0.1:8080/ws")


def http_base(ws_url: str) -> str:
    """``ws://h:p/ws`` → ``http://h:p``."""
    base = ws_url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
    return base[: -len("/ws")] if base.endswith("/ws") else base.rstrip("/")


@click.group()
@click.version_option(package_name="packetflow")
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (env PACKETFLOW_LOG)")
@click.pass_context
def main(ctx: click.Context, log_level: str | None) -> None:
    """PacketFlow Affinity Protocol v1.0: gateway, reactors, molecules."""
    ctx.ensure_object(dict)
    ctx.obj["log_level"] = log_level


def discovery_options(command: Any) -> Any:
    """DESIGN §2 announce channels 3 and 4, for both sides: a reactor advertises on them,
    a gateway listens on them."""
    options = [
        click.option("--multicast", is_flag=True, help="§8.1.2 multicast discovery"),
        click.option("--dnssd", is_flag=True, help="§8.1.3 DNS-SD (_packetflow._tcp.local.)"),
        click.option("--multicast-group", default="224.0.1.100", show_default=True),
        click.option("--multicast-port", default=9999, show_default=True, type=int),
    ]
    for option in reversed(options):
        command = option(command)
    return command


@main.command()
@discovery_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
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
@click.pass_context
def gateway(ctx: click.Context, host: str, port: int, gateway_id: str | None,
            static: tuple[str, ...], max_queue: int | None, health_scale: float,
            departure_after: float | None, seed: int | None, multicast: bool, dnssd: bool,
            multicast_group: str, multicast_port: int) -> None:  # fmt: skip
    """Run a gateway: routes packets from clients to reactors."""
    import dataclasses

    from .gateway.server import Gateway, GatewayConfig
    from .protocol.health import DEFAULT_HEALTH_CONFIG
    from .runner import configure_logging, run_main

    configure_logging(ctx.obj["log_level"])
    health = DEFAULT_HEALTH_CONFIG.scaled(health_scale)
    if departure_after is not None:
        health = dataclasses.replace(health, departure_after_s=departure_after)
    config = GatewayConfig(host=host, port=port, static_reactors=static, health=health,
                           seed=seed)  # fmt: skip
    if gateway_id:
        config.gateway_id = gateway_id
    if max_queue:
        config.max_queue = max_queue
    config.multicast, config.dnssd = multicast, dnssd
    config.multicast_group, config.multicast_port = multicast_group, multicast_port
    run_main(Gateway(config).serve_forever())


@main.command()
@discovery_options
@click.option("--gateway", "gateway_url", default=None, help="Gateway ws:// URL to announce to")
@click.option(
    "--specialization",
    "-s",
    "specializations",
    multiple=True,
    type=click.Choice(SPECIALIZATIONS),
    help="Repeatable; default general_purpose",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=0, show_default=True, type=int, help="0 picks a free port")
@click.option("--id", "reactor_id", default=None, help="Reactor id (default: random)")
@click.option("--implementation", default="python", show_default=True)
@click.option("--max-concurrent", default=None, type=int, help="max_concurrent_packets")
@click.option(
    "--heartbeat-interval",
    default=5.0,
    show_default=True,
    type=float,
    help="Seconds between HEARTBEATs",
)
@click.option("--data-dir", default="data", show_default=True, help="Files df:load/df:save see")
@click.option("--locality", default=None, help="Locality label for routing hints")
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
@click.pass_context
def reactor(ctx: click.Context, gateway_url: str | None, specializations: tuple[str, ...],
            host: str, port: int, reactor_id: str | None, implementation: str,
            max_concurrent: int | None, heartbeat_interval: float, data_dir: str,
            locality: str | None, grace: float, modules: tuple[str, ...], multicast: bool,
            dnssd: bool, multicast_group: str, multicast_port: int) -> None:  # fmt: skip
    """Run a reactor: a worker serving every standard element."""
    from .reactor.server import Reactor
    from .runner import configure_logging

    configure_logging(ctx.obj["log_level"])
    r = Reactor(
        reactor_id=reactor_id, specializations=specializations or ("general_purpose",),
        gateway=gateway_url, host=host, port=port, implementation=implementation,
        max_concurrent_packets=max_concurrent, heartbeat_interval_s=heartbeat_interval,
        data_dir=data_dir, locality=locality, grace_s=grace, multicast=multicast,
        multicast_group=multicast_group, multicast_port=multicast_port, dnssd=dnssd,
    )  # fmt: skip
    for name in modules:
        import importlib

        module = importlib.import_module(name)
        register = getattr(module, "register", None)
        if callable(register):
            register(r)
    r.run()


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--data-dir", default="data", show_default=True)
@click.pass_context
def up(ctx: click.Context, host: str, port: int, data_dir: str) -> None:
    """Start a local cluster: one gateway and one reactor per specialization."""
    from .cluster import run_cluster

    sys.exit(run_cluster(host=host, port=port, data_dir=Path(data_dir),
                         log_level=ctx.obj["log_level"]))  # fmt: skip


@main.command()
@click.argument("group")
@click.argument("element")
@click.option("--data", "data_json", default="{}", help="The packet's data, as JSON")
@click.option("--priority", type=int, default=None)
@click.option("--timeout-ms", type=int, default=None)
@click.option("--id", "packet_id", default=None)
@click.option("--prefs", default=None, help="routing_preferences as JSON")
@click.option("--url", default=DEFAULT_URL, show_default=True)
def submit(group: str, element: str, data_json: str, priority: int | None,
           timeout_ms: int | None, packet_id: str | None, prefs: str | None,
           url: str) -> None:  # fmt: skip
    """Submit one packet and print its RESULT (exit 1 on an ERROR)."""
    from .client import AsyncClient
    from .protocol.errors import PacketFlowError

    try:
        data = json.loads(data_json)
        routing = json.loads(prefs) if prefs else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.BadParameter("--data must be a JSON object")

    async def go() -> dict[str, Any]:
        async with AsyncClient(url) as pf:
            res = await pf.submit(group, element, data, priority=priority,
                                  timeout_ms=timeout_ms, packet_id=packet_id,
                                  routing_preferences=routing)  # fmt: skip
            return {"packet_id": res.packet_id, "status": res.status, "data": res.data,
                    "processing_metadata": res.processing_metadata}  # fmt: skip

    try:
        out = asyncio.run(go())
    except PacketFlowError as err:
        payload = err.to_payload(err.packet_id)
        click.echo(json.dumps({"error": payload}, indent=2), err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"cannot reach {url}: {exc}", err=True)
        sys.exit(2)
    click.echo(json.dumps(out, indent=2))


@main.command()
@click.option("--url", default=DEFAULT_URL, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON")
def status(url: str, as_json: bool) -> None:
    """Show the reactors: specializations, health and load."""
    import urllib.request

    from rich.console import Console
    from rich.table import Table

    base = http_base(url)
    try:
        with urllib.request.urlopen(f"{base}/v1/reactors", timeout=5) as resp:
            reactors = json.load(resp)["reactors"]
        with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
            health = json.load(resp)
    except OSError as exc:
        click.echo(f"cannot reach {base}: {exc}", err=True)
        sys.exit(2)
    if as_json:
        click.echo(json.dumps({"gateway": health, "reactors": reactors}, indent=2))
        return
    table = Table(title=f"gateway {health['gateway_id']} — {len(reactors)} reactors")
    for col in ("reactor", "impl", "specializations", "health", "load", "in flight",
                "capacity", "endpoint"):  # fmt: skip
        table.add_column(col)
    colors = {"healthy": "green", "degraded": "yellow", "recovery": "cyan", "failed": "red"}
    for r in sorted(reactors, key=lambda r: r["reactor_id"]):
        color = colors.get(r["health"], "white")
        table.add_row(
            r["reactor_id"], r["implementation"], ",".join(r["specializations"]),
            f"[{color}]{r['health']}[/{color}]", f"{r['load_factor']:.2f}",
            str(r["in_flight"]), str(r["max_capacity"]), r["endpoints"].get("websocket", ""),
        )  # fmt: skip
    Console(width=None if sys.stdout.isatty() else 200).print(table)


if __name__ == "__main__":  # pragma: no cover
    main()
