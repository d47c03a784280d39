"""The NATS molecule journal (gateway/nats_journal.py) against a real nats-server: what a
commit writes when its molecule moves on while the commit is under way."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from packetflow.gateway.nats_cluster import NatsCluster, kv_key
from packetflow.gateway.nats_journal import NatsJournal
from packetflow.gateway.server import GatewayConfig
from packetflow.natsserver import NatsServer, start_nats

pytest.importorskip("nats")
pytestmark = [pytest.mark.nats, pytest.mark.xdist_group("nats")]


class Coordinator:
    """What the journal asks of the molecule coordinator: nothing runs here."""

    def __init__(self) -> None:
        self.active: dict[str, Any] = {}
        self.abandoned: list[str] = []

    def abandon(self, molecule_id: str, reason: str) -> None:
        self.abandoned.append(molecule_id)

    def adopt(self, stored: Any) -> None:
        raise AssertionError("no other gateway's molecule to adopt here")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    try:
        nats = start_nats(Path(tmp_path_factory.mktemp("nats")))
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    yield nats
    nats.stop()


@pytest.fixture
async def journal(server: NatsServer) -> AsyncIterator[NatsJournal]:
    import nats

    cluster = NatsCluster(GatewayConfig(gateway_id="gateway-j", cluster_url=server.url))
    cluster.nc = await nats.connect(server.url)
    cluster.js = cluster.nc.jetstream(timeout=2.0)
    cluster.connected = True
    coordinator: Any = Coordinator()
    journal = NatsJournal(cluster, coordinator, lease_s=5.0)
    await journal.open_async()
    yield journal
    await cluster.stop()


async def _open_entry(journal: NatsJournal, molecule_id: str) -> bool:
    from nats.js.errors import KeyNotFoundError

    try:
        await journal.kv.get(f"open.{kv_key(molecule_id)}")
    except KeyNotFoundError:
        return False
    return True


async def _claim_seen(journal: NatsJournal, molecule_id: str) -> None:
    """Wait (bounded) until the watch of the claims shows this gateway's claim."""
    for _ in range(200):
        if journal.claimed_by(molecule_id) == "gateway-j":
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the claim of {molecule_id} was not seen within 2 s")


async def test_a_molecule_finishing_while_its_running_state_commits_is_not_lost(
    journal: NatsJournal,
) -> None:
    """Seen in CI: the running state was staged, the molecule finished before that commit
    ran, and the commit took the staged *running* document for a finished one: it dropped
    the molecule's claim and forgot it, so the finish was never written and no gateway
    would ever resume or report it."""
    mid = "race-1"
    journal.begin(mid, "run-1", {"stage": 0}, {"initiated_by": "t"}, now=1.0)
    journal.stage()
    await journal.commit_async()
    assert await _open_entry(journal, mid)
    await _claim_seen(journal, mid)

    journal.checkpoint(mid, {"stage": 1}, now=2.0)
    journal.stage()  # the running state, as the coordinator's flush stages it
    journal.finish(mid, "success", {"stage": 2}, now=3.0)  # a result lands meanwhile
    await journal.commit_async()
    stored = await journal.load_async(mid)
    assert stored is not None and stored.status is None and stored.checkpoint == {"stage": 1}
    assert await _open_entry(journal, mid), "a running molecule lost its claim"

    journal.stage()  # the next flush carries the finish
    await journal.commit_async()
    stored = await journal.load_async(mid)
    assert stored is not None and stored.status == "success", stored
    assert stored.checkpoint == {"stage": 2}
    assert not await _open_entry(journal, mid)
    assert mid not in journal.docs  # a finished molecule leaves memory
    assert journal.claimed_by(mid) is None  # at once: its id may be started again
    assert journal.coordinator.abandoned == []  # no write lost the molecule's ownership
