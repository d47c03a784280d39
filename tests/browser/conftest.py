"""Real headless Chromium (Debian's ``chromium``, driven by Playwright) against a real
gateway and reactors on 127.0.0.1. Skipped, with the reason, when Playwright or the
browser is missing; scripts/test.sh installs the browser when it runs as root."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ..integration.cluster import Cluster, Node

CHROMIUM = os.environ.get("PACKETFLOW_CHROMIUM", "/usr/bin/chromium")
# This machine's network is closed: without these Chromium waits on refused connections
# (updates, sync, QUIC probes) before it is ready.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"
MODULE = "tests.integration.slow_elements"
# Dashboard updates arrive once a second; a busy 2-core machine may take several times
# that to start processes and render. Generous, never a speed assertion.
UI_TIMEOUT_MS = 30_000


def skip_without_browser() -> None:
    """Skip the calling test module, saying why, when Playwright or Chromium is missing."""
    pytest.importorskip("playwright.sync_api", reason="needs playwright (the browser extra)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"needs Chromium at {CHROMIUM} (apt-get install chromium)",
                    allow_module_level=True)  # fmt: skip


def credential(node: Node) -> str:
    """What a person would paste into the sign-in form: the node's API key or token, or a
    dummy key while the gateway requires none."""
    headers = node.auth_headers()
    if "X-PacketFlow-API-Key" in headers:
        return headers["X-PacketFlow-API-Key"]
    if "Authorization" in headers:
        return headers["Authorization"].removeprefix("Bearer ").strip()
    return "pf_" + "0" * 32


@dataclass
class Browsing:
    """A page plus everything it logged: console errors, uncaught exceptions, requests."""

    page: Any
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    requests: list[Any] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def sign_in(self, gateway: Node, key: str | None = None) -> None:
        self.page.goto(gateway.http + "/")
        self.page.fill("#credential", key if key is not None else credential(gateway))
        self.page.click("#signin-submit")


@dataclass
class Dash:
    gateway: Node
    reactors: list[Node]
    cluster: Cluster


@pytest.fixture(scope="module")
def dash() -> Iterator[Dash]:
    """One gateway (fast health timings, departure slow enough to see a failed reactor)
    and three reactors of different specializations serving the slow test elements."""
    cluster = Cluster()
    try:
        gateway = cluster.gateway("--health-scale", "0.05", "--departure-after", "300")
        reactors = [
            cluster.reactor(
                gateway,
                "--module",
                MODULE,
                "--specialization",
                spec,
                "--id",
                rid,
                "--heartbeat-interval",
                "0.5",
            )
            for rid, spec in (
                ("reactor-cpu", "cpu_intensive"),
                ("reactor-mem", "memory_bound"),
                ("reactor-io", "io_intensive"),
            )
        ]
        yield Dash(gateway, reactors, cluster)
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browsing(chromium: Any, request: pytest.FixtureRequest) -> Iterator[Browsing]:
    context = chromium.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(UI_TIMEOUT_MS)
    seen = Browsing(page)
    page.on("console", lambda m: seen.console_errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: seen.page_errors.append(str(exc)))
    page.on("request", lambda r: seen.requests.append(r))
    try:
        yield seen
    finally:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            seen.screenshot(f"{request.node.name}-failed")
        context.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.rep_call = report  # type: ignore[attr-defined]
