"""The dashboard at the gateway's ``/`` in real headless Chromium: it loads cleanly, shows
the cluster, follows health and molecules live, and refuses a wrong key. Each test saves a
screenshot to artifacts/screenshots/<test name>.png."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest

from ..integration.cluster import Node, wait_for
from .conftest import UI_TIMEOUT_MS, Browsing, Dash, credential, skip_without_browser

skip_without_browser()
pytestmark = pytest.mark.xdist_group("browser")


def post_json(node: Node, path: str, body: Any) -> Any:
    request = urllib.request.Request(
        node.http + path, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json", **node.auth_headers()},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=30) as resp:
        return json.load(resp)


def traffic(gateway: Node) -> None:
    """Some packets, one error and one event, so every panel has something to show."""
    for _ in range(12):
        post_json(gateway, "/v1/packets", {"group": "cf", "element": "ping", "data": {}})
    post_json(
        gateway,
        "/v1/packets",
        {
            "group": "df",
            "element": "transform",
            "data": {"input": "packetflow", "operation": "uppercase"},
        },
    )
    post_json(
        gateway,
        "/v1/packets",
        {
            "group": "ed",
            "element": "publish",
            "data": {"topic": "orders.created", "event": {"id": 1}},
        },
    )
    with pytest.raises(urllib.error.HTTPError) as refused:  # PF002: shows in the errors panel
        post_json(
            gateway,
            "/v1/packets",
            {
                "group": "df",
                "element": "transform",
                "data": {"input": "x", "operation": "no_such_op"},
            },
        )
    assert refused.value.code == 400


def reactor_row(reactor_id: str, health: str | None = None) -> str:
    sel = f'#reactors tr[data-reactor-id="{reactor_id}"]'
    return sel + (f'[data-health="{health}"]' if health else "")


def test_page_loads_without_console_errors(dash: Dash, browsing: Browsing) -> None:
    browsing.sign_in(dash.gateway)
    page = browsing.page
    page.wait_for_selector(reactor_row(dash.reactors[0].id))
    page.wait_for_selector('#conn[data-state="live"]')
    # A few polling rounds, so errors from later renders would show too.
    first = page.text_content("#conn")
    wait_for(lambda: page.text_content("#conn") != first, UI_TIMEOUT_MS / 1000, "a later poll")
    browsing.screenshot("test_page_loads_without_console_errors")
    assert browsing.page_errors == []
    assert browsing.console_errors == []
    # The key travels in a header, never in a URL, and is kept in sessionStorage only.
    key = credential(dash.gateway)
    assert all(key not in r.url for r in browsing.requests)
    snapshots = [r for r in browsing.requests if "/v1/dashboard" in r.url]
    assert snapshots and all(
        key in (r.headers.get("x-packetflow-api-key", "") + r.headers.get("authorization", ""))
        for r in snapshots
    )
    assert page.evaluate("sessionStorage.getItem('packetflow.credential')") == key
    assert page.evaluate("localStorage.length") == 0
    assert page.context.cookies() == []


def test_shows_every_reactor_of_a_running_cluster(dash: Dash, browsing: Browsing) -> None:
    traffic(dash.gateway)
    browsing.sign_in(dash.gateway)
    page = browsing.page
    for reactor in dash.reactors:
        page.wait_for_selector(reactor_row(reactor.id, "healthy"))
    # The rest of the picture: the routed packets with their reactor, the error by code,
    # the published topic, the matrix heatmap.
    page.wait_for_selector('#packets tr[data-state="completed"]')
    page.wait_for_selector('#errors-legend [data-code="PF002"]')
    page.wait_for_selector('#topics tr[data-topic="orders.created"]')
    page.wait_for_selector('#matrix g[data-row="cf"][data-col="cpu_intensive"]')
    rows = page.query_selector_all("#reactors tbody tr[data-reactor-id]")
    assert {r.get_attribute("data-reactor-id") for r in rows} >= {n.id for n in dash.reactors}
    routes = page.locator("#packets tbody").inner_text()
    assert any(f"→ {n.id}" in routes for n in dash.reactors)
    browsing.screenshot("test_shows_every_reactor_of_a_running_cluster")


def test_killed_reactor_turns_failed(dash: Dash, browsing: Browsing) -> None:
    """A reactor SIGKILLed shows as failed: its work connection drops, which marks it
    failed at once (DESIGN §6), well within the gateway's (scaled) health interval."""
    doomed = dash.cluster.reactor(dash.gateway, "--id", f"reactor-doomed-{uuid.uuid4().hex[:6]}")
    browsing.sign_in(dash.gateway)
    page = browsing.page
    page.wait_for_selector(reactor_row(doomed.id, "healthy"))
    killed = time.monotonic()
    os.kill(doomed.proc.pid, signal.SIGKILL)
    doomed.proc.wait(10)
    page.wait_for_selector(reactor_row(doomed.id, "failed"), timeout=UI_TIMEOUT_MS)
    print(f"reactor shown failed {time.monotonic() - killed:.2f} s after SIGKILL")
    assert "failed" in page.locator(reactor_row(doomed.id)).inner_text()
    for reactor in dash.reactors:  # the others are untouched
        assert page.query_selector(reactor_row(reactor.id, "healthy")) is not None
    browsing.screenshot("test_killed_reactor_turns_failed")


def test_molecule_is_seen_progressing_to_complete(dash: Dash, browsing: Browsing) -> None:
    molecule_id = f"dash-{uuid.uuid4().hex[:8]}"
    structure = {
        "molecule_id": molecule_id,
        "packets": [
            {"id": "extract", "group": "df", "element": "sleep",
             "data": {"seconds": 2.0, "value": [3, 1, 2]}},
            {"id": "clean", "group": "df", "element": "sleep", "data": {"seconds": 2.0}},
            {"id": "enrich", "group": "df", "element": "sleep", "data": {"seconds": 1.0}},
            {"id": "report", "group": "df", "element": "echo_inputs", "data": {}},
        ],
        "bonds": [
            {"from": "extract", "to": "clean", "type": "ionic", "strength": 1.0},
            {"from": "extract", "to": "enrich", "type": "covalent", "strength": 0.8},
            {"from": "clean", "to": "report", "type": "ionic", "strength": 1.0},
            {"from": "enrich", "to": "report", "type": "metallic", "strength": 0.5},
        ],
    }  # fmt: skip
    browsing.sign_in(dash.gateway)
    page = browsing.page
    page.wait_for_selector("#reactors tbody tr[data-reactor-id]")
    accepted = post_json(dash.gateway, "/v1/molecules", structure)
    assert accepted["molecule_id"] == molecule_id
    item = f'#molecule-list li[data-molecule-id="{molecule_id}"]'
    page.click(item)
    dag = f'#dag[data-molecule-id="{molecule_id}"]'
    page.wait_for_selector(f'{dag} g.node[data-state="running"]')
    running = page.get_attribute(item, "data-status")
    browsing.screenshot("test_molecule_is_seen_progressing_to_complete-running")
    page.wait_for_selector(f'{dag}[data-status="success"]')
    states = [n.get_attribute("data-state") for n in page.query_selector_all(f"{dag} g.node")]
    assert running == "running"
    assert states == ["succeeded"] * 4
    page.wait_for_selector(f'{item}[data-status="success"]')
    browsing.screenshot("test_molecule_is_seen_progressing_to_complete")
    final = wait_for(lambda: dash.gateway.get(f"/v1/molecules/{molecule_id}"), 10, "status")
    assert final["status"] == "success"


def test_sign_in_with_wrong_key_fails(dash: Dash, browsing: Browsing) -> None:
    browsing.sign_in(dash.gateway, "pf_" + "x" * 32)
    page = browsing.page
    page.wait_for_selector("#signin-error:not([hidden])")
    assert "Sign-in failed" in page.text_content("#signin-error")
    assert page.is_hidden("#dashboard")
    assert page.evaluate("sessionStorage.getItem('packetflow.credential')") is None
    browsing.screenshot("test_sign_in_with_wrong_key_fails")


@pytest.mark.parametrize("status", [401, 403])
def test_refused_snapshot_shows_sign_in_failed(dash: Dash, browsing: Browsing, status: int) -> None:
    """The page's side of a refused key, which runs before authentication lands: the
    snapshot's 401 (unknown key) or 403 (a key without the permission) is answered by the
    browser here, standing in for the gatekeeper this branch does not have yet."""
    page = browsing.page
    page.route(
        "**/v1/dashboard*",
        lambda route: route.fulfill(status=status, content_type="application/json",
                                    body='{"error": {"error_code": "PF401"}}'),
    )  # fmt: skip
    browsing.sign_in(dash.gateway, "pf_" + "y" * 32)
    page.wait_for_selector("#signin-error:not([hidden])")
    assert "Sign-in failed" in page.text_content("#signin-error")
    assert f"HTTP {status}" in page.text_content("#signin-error")
    assert page.is_hidden("#dashboard")
    assert page.evaluate("sessionStorage.getItem('packetflow.credential')") is None
    browsing.screenshot(f"test_refused_snapshot_shows_sign_in_failed-{status}")
