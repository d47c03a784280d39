"""``packetflow up``: a supervisor for a local cluster of child processes.

A child that exits (a reactor told cf:shutdown, a kill -9, a crash; the gateway too) is
restarted with the same arguments (same id, port and data dir) after the backoff that
``protocol/supervision.py`` decides; one that keeps dying stops the cluster, exit status 1.

Children run in their own session so a terminal's Ctrl-C reaches only this supervisor,
which then stops the reactors and then the gateway; on Linux each child also gets
PR_SET_PDEATHSIG so none outlives a supervisor that was killed outright.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import selectors
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from .protocol.authentication import API_KEY_HEADER
from .protocol.chemistry import SPECIALIZATIONS
from .protocol.errors import PacketFlowError
from .protocol.principals import REACTOR, REACTOR_FANOUT
from .protocol.supervision import (
    DEFAULT_RESTART_POLICY,
    ChildSupervisor,
    GiveUp,
    RestartPolicy,
)

STARTUP_DEADLINE_S = 30.0
STOP_GRACE_S = 15.0
# How often the supervisor looks at its children: a dead one is noticed within this.
SUPERVISE_TICK_S = 0.2


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG


def spawn(
    args: list[str],
    *,
    new_session: bool = True,
    ready_line: bool = True,
    env: dict[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m packetflow ARGS`` with its stdout piped for the ready line (or
    discarded, for a restarted child nobody waits for); ``env`` adds to this process's
    environment (credentials go there, not in ``ps``)."""
    return subprocess.Popen(
        [sys.executable, "-m", "packetflow", *args],
        stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL,
        env={**os.environ, **env} if env else None,
        start_new_session=new_session,
        preexec_fn=_die_with_parent,
    )


def read_ready(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, Any] | None:
    """The child's ``{"event": "ready", ...}`` line, or None if it exits or stays silent."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(max(0.0, deadline - time.monotonic())):
                continue
            line = proc.stdout.readline()
            if not line:
                return None
            with contextlib.suppress(ValueError):
                value = json.loads(line)
                if isinstance(value, dict) and value.get("event") == "ready":
                    return value
    return None


def _get_json(url: str, headers: dict[str, str] | None = None,
              context: ssl.SSLContext | None = None) -> dict[str, Any] | None:  # fmt: skip
    try:
        request = urllib.request.Request(url, headers=headers or {})
        with urllib.request.urlopen(request, timeout=2, context=context) as resp:
            value = json.load(resp)
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _wait(predicate: Callable[[], bool], procs: list[subprocess.Popen[bytes]], what: str) -> bool:
    deadline = time.monotonic() + STARTUP_DEADLINE_S
    while time.monotonic() < deadline:
        if predicate():
            return True
        if any(p.poll() is not None for p in procs):
            print(f"packetflow up: a process exited while waiting for {what}", file=sys.stderr)
            return False
        time.sleep(0.1)
    print(f"packetflow up: timed out waiting for {what}", file=sys.stderr)
    return False


def stop_all(procs: list[subprocess.Popen[bytes]], grace_s: float = STOP_GRACE_S) -> None:
    for proc in procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
    deadline = time.monotonic() + grace_s
    for proc in procs:
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``signal SIGKILL`` (Popen reports a signal as its negative)."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass(slots=True)
class Child:
    """One supervised child: how to start it, the running process, its restart rule."""

    name: str
    args: list[str]
    proc: subprocess.Popen[bytes]
    supervisor: ChildSupervisor
    env: dict[str, str] | None = None  # added to the environment (credentials)
    restart_at: float | None = None  # set while it waits out its backoff

    def check(self, now: float) -> GiveUp | None:
        """Carry out the restart rule for this child; GiveUp when it keeps dying."""
        if self.restart_at is not None:
            if now >= self.restart_at:
                self.restart_at = None
                if self.proc.stdout is not None:
                    self.proc.stdout.close()
                self.proc = spawn(self.args, ready_line=False, env=self.env)
                self.supervisor.started(now)
            return None
        code = self.proc.poll()
        if code is None:
            return None
        decision = self.supervisor.exited(now)
        if isinstance(decision, GiveUp):
            print(f"packetflow up: {self.name} exited with {describe_exit(code)}; "
                  f"{decision.reason}", file=sys.stderr, flush=True)  # fmt: skip
            return decision
        self.restart_at = decision.at
        print(f"packetflow up: {self.name} exited with {describe_exit(code)}; restarting in "
              f"{decision.delay_s:g} s (restart {decision.attempt})",
              file=sys.stderr, flush=True)  # fmt: skip
        return None


def _reactor_key(data_dir: Path) -> Path:
    """The key (role ``reactor``) this cluster's reactors announce with, made once and
    reused while it stays valid; the reactors read it from the file."""
    from .security.files import read_secret, write_secret
    from .security.keystore import KeyStore, security_dir

    path = security_dir(data_dir) / "reactor.key"
    store = KeyStore(data_dir)
    roles = {REACTOR, REACTOR_FANOUT}  # announce, and fan out (co:scatter, cf:coordinate...)
    if path.exists():
        try:
            if store.authenticate(read_secret(path)).roles == roles:
                return path
        except PacketFlowError:
            pass  # revoked or from another key file: make a new one
    key, _ = store.create(roles, label="packetflow up reactors")
    write_secret(path, key + "\n")
    return path


# The example molecules' input files (examples/molecules/*.csv, a source checkout such as
# the README's `pip install -e .`); every reactor's data directory gets a copy so the
# README's `packetflow molecule run examples/molecules/...` works right after `up`.
EXAMPLE_INPUTS = Path(__file__).resolve().parents[2] / "examples" / "molecules"
EXAMPLE_SUFFIXES = (".csv", ".jsonl")


def seed_example_inputs(data_dir: Path, source: Path = EXAMPLE_INPUTS) -> list[Path]:
    """Copy the example input files into ``data_dir`` when it lacks them (a user's own
    file of the same name is never overwritten); returns the files copied."""
    import shutil

    if not source.is_dir():
        return []
    copied: list[Path] = []
    for src in sorted(source.iterdir()):
        target = data_dir / src.name
        if src.suffix in EXAMPLE_SUFFIXES and src.is_file() and not target.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, target)
            copied.append(target)
    return copied


def run_cluster(
    *,
    host: str,
    port: int,
    data_dir: Path,
    log_level: str | None,
    specializations: Sequence[str] = SPECIALIZATIONS,
    policy: RestartPolicy = DEFAULT_RESTART_POLICY,
    tls: bool = False,
    gateways: int = 1,
) -> int:
    """Run the cluster until Ctrl-C/SIGTERM (0) or until it fails: it cannot start, or a
    child keeps dying (1). A child that exits is restarted (protocol/supervision.py).

    ``gateways`` > 1: a local nats-server (JetStream, its store under DATA/nats) and that
    many gateways sharing the cluster through it (issue 14); reactors announce to them in
    turn, and every gateway dials every reactor."""
    stop = False

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    level = ["--log-level", log_level or "WARNING"]
    # DESIGN §8: the gateway's journal and security files (DATA/gateway) live outside every
    # directory a reactor's df:load/df:save can reach (DATA/reactors/<name>).
    gateway_data = data_dir / "gateway"
    gateway_dir = ["--data-dir", str(gateway_data)]
    names = {spec: f"reactor-{spec.replace('_', '-')}" for spec in specializations}
    context: ssl.SSLContext | None = None
    pki = None
    if tls:
        from .security.keystore import security_dir
        from .security.tls import client_context, make_local_pki

        pki = make_local_pki(security_dir(gateway_data) / "tls",
                             ["gateway-local", "client-local", *names.values()])  # fmt: skip
        gateway_dir += [
            "--tls-cert", str(pki.cert("gateway-local")), "--tls-key",
            str(pki.key("gateway-local")), "--tls-client-ca", str(pki.ca),
            "--tls-allowed-subject", "CN=reactor-*", "--tls-allowed-subject", "CN=gateway-*",
            "--tls-allowed-subject", "CN=client-*",
        ]  # fmt: skip
        context = client_context(str(pki.ca), str(pki.cert("client-local")),
                                 str(pki.key("client-local")))  # fmt: skip
    nats = None
    if gateways > 1:
        from .natsserver import start_nats

        try:
            nats = start_nats(data_dir / "nats", host)
        except (FileNotFoundError, RuntimeError) as exc:
            print(f"packetflow up: {exc}", file=sys.stderr)
            return 1
        gateway_dir += ["--cluster", nats.url, "--id", "gateway-1"]
    gateway_args = [*level, "gateway", "--host", host, "--port", str(port), *gateway_dir]
    gateway = spawn(gateway_args)
    reactors: list[Child] = []
    children: list[Child] = []
    extra: list[Child] = []  # gateways 2..N
    try:
        ready = read_ready(gateway, STARTUP_DEADLINE_S)
        if ready is None:
            print("packetflow up: the gateway did not start", file=sys.stderr)
            return 1
        from .security.keystore import security_dir

        ws = str(ready["url"])
        base = ws.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
        base = base.removesuffix("/ws")
        admin = (security_dir(gateway_data) / "admin.key").read_text().strip()
        headers = {API_KEY_HEADER: admin}
        reactor_env = {"PACKETFLOW_API_KEY_FILE": str(_reactor_key(gateway_data))}
        # A restarted gateway comes back on the port it got, so reactors find it again.
        bound = urlsplit(ws).port or port
        gateway_args = [*level, "gateway", "--host", host, "--port", str(bound), *gateway_dir]
        now = time.monotonic()
        children.append(Child("gateway", gateway_args, gateway,
                              ChildSupervisor("gateway", now, policy)))  # fmt: skip
        urls = [ws]
        for n in range(2, gateways + 1):
            assert nats is not None
            more = _start_peer_gateway(n, data_dir, gateway_data, host, level, nats.url, policy)
            if more is None:
                return 1
            extra.append(more[0])
            urls.append(more[1])
        children.extend(extra)
        for i, (spec, name) in enumerate(names.items()):
            ws = urls[i % len(urls)]  # reactors announce to the gateways in turn
            reactor_tls: list[str] = []
            if pki is not None:
                reactor_tls = ["--tls-cert", str(pki.cert(name)), "--tls-key",
                               str(pki.key(name)), "--tls-client-ca", str(pki.ca),
                               "--gateway-ca", str(pki.ca)]  # fmt: skip
            seed_example_inputs(data_dir / "reactors" / name)
            args = [
                *level, "reactor", "--gateway", ws, "--specialization", spec, "--host", host,
                "--port", "0", "--id", name, "--data-dir", str(data_dir / "reactors" / name),
                *reactor_tls,
            ]  # fmt: skip
            reactors.append(Child(name, args, spawn(args, env=reactor_env),
                                  ChildSupervisor(name, now, policy), env=reactor_env))  # fmt: skip
        children.extend(reactors)

        def linked(url: str) -> bool:
            http = url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
            body = _get_json(f"{http.removesuffix('/ws')}/v1/reactors", headers, context)
            rows = body.get("reactors") if body else None
            return isinstance(rows, list) and sum(
                1 for r in rows if isinstance(r, dict) and r.get("health") == "healthy"
            ) >= len(specializations)

        def all_linked() -> bool:  # every gateway dials every reactor
            return all(linked(url) for url in urls)

        if not _wait(all_linked, [c.proc for c in children], "the reactors to link"):
            return 1
        for i, url in enumerate(urls):
            http = url.replace("wss://", "https://", 1).replace("ws://", "http://", 1)
            http = http.removesuffix("/ws")
            print(f"packetflow gateway   {url}" + (f"   (gateway-{i + 1})" if nats else ""))
            print(f"  HTTP API           {http}/v1/reactors  {http}/health  {http}/metrics")
        if nats is not None:
            print(f"  NATS JetStream     {nats.url}  (store {nats.store_dir})")
        rows = (_get_json(f"{base}/v1/reactors", headers, context) or {}).get("reactors", [])
        for r in sorted(rows, key=lambda r: str(r.get("reactor_id"))):
            print(f"  reactor {r['reactor_id']:<28} {r['endpoints'].get('websocket')}")
        print(f"  admin API key      {security_dir(gateway_data) / 'admin.key'}")
        print("Ready. Try: packetflow submit cf ping   (Ctrl-C stops the cluster)", flush=True)
        while not stop:
            now = time.monotonic()
            for child in children:
                if child.check(now) is not None:
                    print("packetflow up: stopping the cluster", file=sys.stderr, flush=True)
                    return 1
            if nats is not None and nats.proc.poll() is not None:
                from .natsserver import start_nats

                print("packetflow up: nats-server exited; restarting it", file=sys.stderr,
                      flush=True)  # fmt: skip
                nats = start_nats(nats.store_dir, nats.host, nats.port)
            time.sleep(SUPERVISE_TICK_S)
        return 0
    finally:
        # Reactors first: each drains and withdraws from the gateway before it exits.
        stop_all([c.proc for c in reactors])
        stop_all([c.proc for c in extra])
        stop_all([children[0].proc if children else gateway])  # the gateway, maybe restarted
        if nats is not None:
            nats.stop()
        print("packetflow up: stopped", flush=True)


def _start_peer_gateway(
    n: int,
    data_dir: Path,
    first_data: Path,
    host: str,
    level: list[str],
    nats_url: str,
    policy: RestartPolicy,
) -> tuple[Child, str] | None:
    """Gateway ``n`` (2, 3, ...) of a NATS cluster: its own data dir, the first gateway's
    admin key beside it (the key list itself comes through NATS), so the CLI and SDK on
    this machine find credentials for every gateway."""
    import shutil

    from .security.keystore import security_dir

    data = data_dir / f"gateway-{n}"
    security_dir(data).mkdir(parents=True, exist_ok=True)
    shutil.copy(security_dir(first_data) / "admin.key", security_dir(data) / "admin.key")
    args = [*level, "gateway", "--host", host, "--port", "0", "--data-dir", str(data),
            "--cluster", nats_url, "--id", f"gateway-{n}"]  # fmt: skip
    proc = spawn(args)
    ready = read_ready(proc, STARTUP_DEADLINE_S)
    if ready is None:
        print(f"packetflow up: gateway-{n} did not start", file=sys.stderr)
        stop_all([proc])
        return None
    url = str(ready["url"])
    args[args.index("0")] = str(urlsplit(url).port)  # a restart comes back on its port
    return Child(f"gateway-{n}", args, proc, ChildSupervisor(f"gateway-{n}", time.monotonic(),
                                                             policy)), url  # fmt: skip
