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
@click.option("--data-dir", default="data", show_default=True,
              help="Where the molecule journal (molecules.sqlite3) lives")  # fmt: skip
@click.option("--journal", "journal_path", default=None,
              help="Molecule journal file (default: DATA_DIR/molecules.sqlite3)")  # fmt: skip
@click.pass_context
def gateway(ctx: click.Context, host: str, port: int, gateway_id: str | None,
            static: tuple[str, ...], max_queue: int | None, health_scale: float,
            departure_after: float | None, seed: int | None, multicast: bool, dnssd: bool,
            multicast_group: str, multicast_port: int, data_dir: str = "data",
            journal_path: str | None = None) -> None:  # fmt: skip
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
    config.data_dir = Path(data_dir)
    config.journal_path = Path(journal_path) if journal_path else None
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
@click.option(
    "--announce-interval",
    default=60.0,
    show_default=True,
    type=float,
    help="Seconds between capability re-announcements (0: only on connect)",
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
            max_concurrent: int | None, heartbeat_interval: float, announce_interval: float,
            data_dir: str,
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
        announce_interval_s=announce_interval,
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


class _MoleculeView:
    """Live progress of one molecule in the terminal: a bar per stage and a packet count
    (rich); plain lines on stderr when it is not a terminal."""

    _DONE = ("completed_packets", "failed_packets", "skipped_packets", "aborted_packets")

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self.console = Console(stderr=True)
        self.live = self.console.is_terminal
        self.progress = Progress(
            TextColumn("{task.description:<28}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"), console=self.console, disable=not self.live,
        )  # fmt: skip
        self.stage_of: dict[str, int] = {}
        self.stage_tasks: dict[int, Any] = {}
        self.total_task: Any = None
        self.last_line = ""

    def __enter__(self) -> _MoleculeView:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def plan(self, molecule_id: str, plan: dict[str, Any]) -> None:
        stages = plan.get("stages") or []
        count = sum(len(s["packets"]) for s in stages)
        self.total_task = self.progress.add_task(f"{molecule_id}", total=count, note="")
        for s in stages:
            for pid in s["packets"]:
                self.stage_of[pid] = s["stage_id"]
            self.stage_tasks[s["stage_id"]] = self.progress.add_task(
                f"  stage {s['stage_id']}", total=len(s["packets"]), note=""
            )

    def update(self, payload: dict[str, Any]) -> None:
        state = payload.get("execution_state") or {}
        done = [p for key in self._DONE for p in state.get(key, [])]
        failed = set(state.get("failed_packets", []))
        if self.total_task is not None:
            note = f"[red]{len(failed)} failed[/red]" if failed else ""
            self.progress.update(self.total_task, completed=len(done), note=note)
            per_stage: dict[int, list[str]] = {}
            for pid in done:
                per_stage.setdefault(self.stage_of.get(pid, 0), []).append(pid)
            for stage, task in self.stage_tasks.items():
                bad = [p for p in per_stage.get(stage, []) if p in failed]
                note = f"[red]{', '.join(bad)} failed[/red]" if bad else ""
                self.progress.update(task, completed=len(per_stage.get(stage, [])), note=note)
        if not self.live:
            line = (f"stage {state.get('current_stage', 0)}/{state.get('total_stages', 0)}, "
                    f"{len(done)} packets done, {len(state.get('active_packets', []))} "
                    f"running, {len(failed)} failed")  # fmt: skip
            if line != self.last_line:
                self.last_line = line
                click.echo(f"{payload.get('molecule_id')}: {line}", err=True)


def _print_final(payload: dict[str, Any]) -> None:
    """The final state: a table of packets, the status, then the results as JSON."""
    from rich.console import Console
    from rich.table import Table

    state = payload.get("execution_state") or {}
    console = Console(width=None if sys.stdout.isatty() else 160)
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
        err = payload["error"]
        console.print(f"[red]{err.get('error_code')}[/red] {err.get('error_message')}")
    click.echo(json.dumps(payload.get("results") or {}, indent=2))


@molecule.command("run")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--url", default=DEFAULT_URL, show_default=True)
@click.option("--id", "molecule_id", default=None, help="Run under this molecule_id")
@click.option("--json", "as_json", is_flag=True, help="Print only the final state, as JSON")
def molecule_run(file: Path, url: str, molecule_id: str | None, as_json: bool) -> None:
    """Run the molecule in FILE with live progress; print the results (exit 1 unless the
    status is success)."""
    import msgspec

    from .client import AsyncClient
    from .protocol.errors import PacketFlowError

    try:
        payload = _initiate_payload(json.loads(file.read_text()), molecule_id)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{file} is not JSON: {exc}") from None

    async def go(view: _MoleculeView) -> dict[str, Any]:
        async with AsyncClient(url) as pf:
            async for msg in pf.coordinate(payload):
                body = msgspec.to_builtins(msg.payload)
                kind = body.get("coordination_type")
                if kind == "initiate" and body.get("execution_plan"):
                    view.plan(str(body.get("molecule_id")), body["execution_plan"])
                view.update(body)
                if kind in ("complete", "abort"):
                    return dict(body)
        raise click.ClickException("the gateway closed the stream before the molecule ended")

    try:
        with _MoleculeView() as view:
            final = asyncio.run(go(view))
    except PacketFlowError as err:
        click.echo(json.dumps({"error": err.to_payload(err.packet_id)}, indent=2), err=True)
        sys.exit(1)
    except (OSError, msgspec.ValidationError) as exc:
        click.echo(f"cannot run the molecule at {url}: {exc}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        mid = payload.get("molecule_id", "ID")
        click.echo(f"stopped watching; the molecule keeps running on the gateway "
                   f"(packetflow molecule abort {mid})", err=True)  # fmt: skip
        sys.exit(130)
    if as_json:
        click.echo(json.dumps(final, indent=2))
    else:
        _print_final(final)
    sys.exit(0 if final.get("status") == "success" else 1)


def _molecule_http(method: str, url: str, molecule_id: str) -> tuple[int, dict[str, Any]]:
    import urllib.error
    import urllib.parse
    import urllib.request

    target = f"{http_base(url)}/v1/molecules/{urllib.parse.quote(molecule_id, safe='')}"
    request = urllib.request.Request(target, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as resp:
            return resp.status, json.load(resp)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc)


def _molecule_answer(code: int, body: dict[str, Any], as_json: bool) -> None:
    if code >= 400:
        click.echo(json.dumps(body.get("payload", body), indent=2), err=True)
        sys.exit(1)
    if as_json:
        click.echo(json.dumps(body, indent=2))
        return
    if body.get("coordination_type") in ("complete", "abort"):
        _print_final(body)
        return
    state = body.get("execution_state") or {}
    click.echo(f"molecule {body.get('molecule_id')}: {body.get('status')}, stage "
               f"{state.get('current_stage')}/{state.get('total_stages')}; "
               f"{len(state.get('completed_packets', []))} done, "
               f"{len(state.get('active_packets', []))} running, "
               f"{len(state.get('pending_packets', []))} pending, "
               f"{len(state.get('failed_packets', []))} failed")  # fmt: skip


@molecule.command("status")
@click.argument("molecule_id")
@click.option("--url", default=DEFAULT_URL, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON")
def molecule_status(molecule_id: str, url: str, as_json: bool) -> None:
    """Show a molecule's state (exit 1 if the gateway knows no such molecule)."""
    _molecule_request("GET", url, molecule_id, as_json)


@molecule.command("abort")
@click.argument("molecule_id")
@click.option("--url", default=DEFAULT_URL, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the final state as JSON")
def molecule_abort(molecule_id: str, url: str, as_json: bool) -> None:
    """Abort a running molecule (exit 1 if it is unknown or already finished)."""
    _molecule_request("DELETE", url, molecule_id, as_json)


def _molecule_request(method: str, url: str, molecule_id: str, as_json: bool) -> None:
    try:
        code, body = _molecule_http(method, url, molecule_id)
    except OSError as exc:
        click.echo(f"cannot reach {http_base(url)}: {exc}", err=True)
        sys.exit(2)
    _molecule_answer(code, body, as_json)


if __name__ == "__main__":  # pragma: no cover
    main()
