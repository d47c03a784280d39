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
        self.refused: list[tuple[str, str]] = []

    def abandon(self, molecule_id: str, reason: str) -> None:
        self.abandoned.append(molecule_id)

    def refuse_start(self, molecule_id: str, gateway_id: str) -> None:
        self.refused.append((molecule_id, gateway_id))

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


async def _journal(server: NatsServer, gateway_id: str) -> NatsJournal:
    import nats

    cluster = NatsCluster(GatewayConfig(gateway_id=gateway_id, cluster_url=server.url))
    cluster.nc = await nats.connect(server.url)
    cluster.js = cluster.nc.jetstream(timeout=2.0)
    cluster.connected = True
    coordinator: Any = Coordinator()
    journal = NatsJournal(cluster, coordinator, lease_s=5.0)
    await journal.open_async()
    return journal


@pytest.fixture
async def journal(server: NatsServer) -> AsyncIterator[NatsJournal]:
    journal = await _journal(server, "gateway-j")
    yield journal
    await journal.cluster.stop()


@pytest.fixture
async def other(server: NatsServer) -> AsyncIterator[NatsJournal]:
    """A second gateway's journal on the same NATS server."""
    journal = await _journal(server, "gateway-k")
    yield journal
    await journal.cluster.stop()


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


async def test_a_start_of_an_id_another_gateway_runs_is_refused_at_its_first_commit(
    journal: NatsJournal, other: NatsJournal
) -> None:
    """Seen in CI: gateway k's view of the claims had not caught up with j's start of the
    same id, so k's start passed the coordinator's check; its first commit then replaced
    j's document and claim, j lost its run and k ran the finished packets again. Now the
    new run's claim is a compare-and-set made before its document: k's start is refused
    and j's entry is untouched. Once j's run finished, k may run the id."""
    mid = "twice-1"
    journal.begin(mid, "run-j", {"stage": 0}, {"owner": "user-j"}, now=1.0)
    journal.stage()
    await journal.commit_async()

    # k's coordinator never asked claimed_by: as if the claim were still on its way.
    other.begin(mid, "run-k", {"stage": 0}, {"owner": "user-k"}, now=2.0)
    other.stage()
    await other.commit_async()
    assert other.coordinator.refused == [(mid, "gateway-j")]
    assert mid not in other.docs
    stored = await journal.load_async(mid)
    assert stored is not None and stored.run_token == "run-j", stored
    assert stored.meta["owner"] == "user-j"
    entry = await journal.kv.get(f"open.{kv_key(mid)}")
    assert b'"owner": "gateway-j"' in entry.value
    journal.checkpoint(mid, {"stage": 1}, now=3.0)  # j's run goes on writing
    journal.stage()
    await journal.commit_async()
    assert journal.coordinator.abandoned == []

    journal.finish(mid, "success", {"stage": 2}, now=4.0)
    journal.stage()
    await journal.commit_async()
    other.begin(mid, "run-k2", {"stage": 0}, {"owner": "user-k"}, now=5.0)
    other.stage()
    await other.commit_async()
    assert other.coordinator.refused == [(mid, "gateway-j")]  # no second refusal
    stored = await other.load_async(mid)
    assert stored is not None and stored.run_token == "run-k2" and stored.status is None
    entry = await other.kv.get(f"open.{kv_key(mid)}")
    assert b'"owner": "gateway-k"' in entry.value
