"""GET /docs in real headless Chromium: the page renders every operation of
/openapi.json without credentials, expands a schema on click, and loads nothing from
elsewhere. Saves artifacts/screenshots/<test name>.png."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest

from ..integration.cluster import Cluster, Node
from .conftest import UI_TIMEOUT_MS, Browsing, skip_without_browser

skip_without_browser()
from playwright.sync_api import expect  # noqa: E402  (only once Playwright is known)

pytestmark = pytest.mark.xdist_group("browser")


@pytest.fixture(scope="module")
def gateway() -> Iterator[Node]:
    cluster = Cluster()
    try:
        yield cluster.gateway()
    finally:
        cluster.stop()


def test_docs_page_lists_every_operation_and_expands_schemas(
    gateway: Node, browsing: Browsing
) -> None:
    with urllib.request.urlopen(gateway.http + "/openapi.json", timeout=30) as resp:
        doc = json.load(resp)
    page = browsing.page
    page.goto(gateway.http + "/docs")  # no credentials: the contract is public
    page.wait_for_selector("section h2", timeout=UI_TIMEOUT_MS)
    headings = page.locator("section h2").all_inner_texts()
    expected = [f"{m.upper()} {p}" for p, item in doc["paths"].items() for m in item]
    assert [h.split(" (")[0] for h in headings] == expected
    assert any(h.startswith("GET /health (no credentials)") for h in headings)

    packets = page.locator("section", has_text="POST /v1/packets").first
    packets.locator("details > summary", has_text="Packet").first.click()
    # The schema is rendered by the <details> toggle event, after the click returns.
    expect(packets.get_by_text("group (required)").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    browsing.screenshot("api-docs")

    assert not browsing.console_errors, browsing.console_errors
    assert not browsing.page_errors
    assert all(r.url.startswith(gateway.http) for r in browsing.requests)
