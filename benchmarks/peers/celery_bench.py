"""Celery + Redis on the peer workloads, with a Redis server and one worker started here."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from celery import Celery, chain, chord

from . import tasks
from .common import (
    Peer,
    check,
    free_port,
    parse_args,
    report,
    run_all,
    sizes_from,
    versions,
    wait_port,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_URL_ENV = "PEERS_CELERY_REDIS_URL"
WORKER_CONCURRENCY = 2
TIMEOUT = 300.0

_url = os.environ.get(REDIS_URL_ENV, "redis://127.0.0.1:6379")
app = Celery("peers", broker=f"{_url}/0", backend=f"{_url}/1")
app.conf.update(
    broker_connection_retry_on_startup=True,
    result_expires=3600,
    worker_hijack_root_logger=False,
)


# Registered under fixed names when this module is imported: by the driver (which runs it as
# __main__) and by the worker, started with -A benchmarks.peers.celery_bench:app.
ping = app.task(name="peers.ping")(tasks.ping)
upper = app.task(name="peers.upper")(tasks.upper)
lower = app.task(name="peers.lower")(tasks.lower)
reverse = app.task(name="peers.reverse")(tasks.reverse)
length = app.task(name="peers.length")(tasks.length)
aggregate = app.task(name="peers.aggregate")(tasks.aggregate)  # a chord passes a list


def ping_many(n: int) -> list[Any]:
    # Submit all, then wait for each: like Ray's refs and Dask's futures. (A celery.group's
    # GroupResult.get(), the Redis backend's join_native, measured the same at 2,000 tasks
    # but adds a fixed wait of about 0.5 s, which dominates small counts.)
    results = [ping.delay(i) for i in range(n)]
    return [result.get(timeout=TIMEOUT) for result in results]


def ping_one(i: int) -> Any:
    return ping.delay(i).get(timeout=TIMEOUT)


def run_chain(text: str) -> Any:
    flow = chain(upper.s(text), lower.s(), reverse.s(), length.s())
    return flow.apply_async().get(timeout=TIMEOUT)


def fanout(n: int) -> Any:
    return chord(ping.s(i) for i in range(n))(aggregate.s()).get(timeout=TIMEOUT)


def _stop(proc: subprocess.Popen[bytes], group_kill: bool) -> None:
    """SIGTERM (Celery's warm shutdown, Redis's clean exit), then SIGKILL after 15 s."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
        try:
            if group_kill:
                os.killpg(proc.pid, sig)  # the worker's own session: its prefork children too
            else:
                proc.send_signal(sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _start(
    stack: ExitStack, cmd: list[str], log: Path, new_session: bool, **kwargs: Any
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with its output in ``log``; the stack stops it (and closes the log)."""
    out = stack.enter_context(open(log, "wb"))  # noqa: SIM115 (closed by the stack)
    proc = subprocess.Popen(
        cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=new_session, **kwargs
    )
    stack.callback(_stop, proc, new_session)
    return proc


def redis_server_version() -> str:
    out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
    fields = dict(part.split("=", 1) for part in out.split() if "=" in part)
    return fields.get("v", out.strip())


def settings() -> dict[str, str]:
    return {
        "broker and result backend": f"redis-server {redis_server_version()} on 127.0.0.1 "
        "(an ephemeral port), db 0 and db 1, no persistence",
        "worker": f"1 worker, prefork pool, --concurrency {WORKER_CONCURRENCY}, "
        "--without-gossip --without-mingle --without-heartbeat; other settings default "
        "(JSON, prefetch multiplier 4, early ack)",
        "many in flight": "[ping.delay(i) ...] then .get() on each result",
        "chain": "celery.chain of 4 signatures, .apply_async().get()",
        "fan-out": "celery.chord(ping.s(i) ...)(aggregate.s()).get()",
    }


def main() -> None:
    args = parse_args("python -m benchmarks.peers.celery_bench")
    if shutil.which("redis-server") is None:
        sys.exit("celery_bench: redis-server is not on PATH (Debian: apt-get install redis-server)")
    sizes = sizes_from(args)
    peer = Peer("Celery+Redis", ping_many, ping_one, run_chain, fanout, settings())
    with ExitStack() as stack:
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="peers-celery-")))
        port = free_port()
        redis_cmd = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        redis_cmd += ["--appendonly", "no", "--dir", str(tmp), "--loglevel", "warning"]
        _start(stack, redis_cmd, tmp / "redis.log", new_session=False)
        wait_port(port)
        stack.callback(app.close)  # runs after the worker stops and before Redis does
        url = f"redis://127.0.0.1:{port}"
        app.conf.broker_url, app.conf.result_backend = f"{url}/0", f"{url}/1"
        worker_cmd = [sys.executable, "-m", "celery", "-A", "benchmarks.peers.celery_bench:app"]
        worker_cmd += ["worker", "--pool", "prefork", "--concurrency", str(WORKER_CONCURRENCY)]
        worker_cmd += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        worker_cmd += ["--loglevel", "WARNING", "--hostname", f"peers{os.getpid()}@127.0.0.1"]
        env = {**os.environ, REDIS_URL_ENV: url}
        # Its own session, so that stopping it reaches its prefork children too.
        _start(stack, worker_cmd, tmp / "worker.log", new_session=True, cwd=REPO_ROOT, env=env)
        try:
            check(ping.delay("ready").get(timeout=120) == "ready", "first ping")
        except Exception:
            sys.stderr.write((tmp / "worker.log").read_text(errors="replace"))
            raise
        figures = run_all(peer, sizes)
    packages = versions("celery", "kombu", "billiard", "redis")
    packages["redis-server"] = redis_server_version()
    report(peer, sizes, figures, packages, args.json)


if __name__ == "__main__":
    main()
