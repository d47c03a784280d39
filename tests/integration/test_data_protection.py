"""PFAP §11.3 data protection with real processes: end-to-end payload encryption between
the SDK and a reactor through a gateway that only routes ciphertext, and the molecule
journal encrypted at rest."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import packetflow
from packetflow.protocol.errors import PacketFlowError

from .cluster import Cluster, wait_for

USER_ELEMENTS = ("--module", "tests.integration.user_elements")
MARKER = "Zebra-Quokka-4417"  # plaintext that must never show up where it should not
SECRET = "correct horse battery staple"
RUN_TIMEOUT_S = 60.0


def key_file(tmp_path: Path, name: str, secret: str) -> Path:
    path = tmp_path / name
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return path


async def test_payload_round_trip_gateway_sees_only_ciphertext_pfap_11_3(
    cluster: Cluster, tmp_path: Path
) -> None:
    gateway = cluster.gateway()
    cluster.reactor(gateway, *USER_ELEMENTS, "--payload-key-file",
                    str(key_file(tmp_path, "payload.key", SECRET)))  # fmt: skip
    text = f"{MARKER} rides along"
    async with asyncio.timeout(RUN_TIMEOUT_S):
        async with packetflow.connect(gateway.url, encryption_key=SECRET) as pf:
            result = await pf.submit("df", "tokenize", {"text": text}, packet_id="sealed-1")
        assert result.data["tokens"] == [MARKER, "rides", "along"]
        # What the gateway holds about the packet (its story and stored reply) is sealed.
        story = gateway.get("/v1/packets/sealed-1")
        assert story["state"] == "completed"
        stored = json.dumps(story["reply"])
        assert "encrypted" in stored and "AES-256-GCM" in stored
        assert MARKER not in stored and "rides" not in stored
        # Another key cannot open it: the reactor answers PF002 on payload.packet.data.
        async with packetflow.connect(gateway.url, encryption_key="wrong key") as pf:
            with pytest.raises(PacketFlowError) as info:
                await pf.submit("df", "tokenize", {"text": text})
        assert info.value.code == "PF002"
        assert info.value.field == "payload.packet.data"


def journal_bytes(data_dir: Path) -> bytes:
    return b"".join(p.read_bytes() for p in data_dir.glob("molecules.sqlite3*")
                    if p.is_file())  # fmt: skip


@pytest.mark.parametrize("encrypted", [True, False], ids=["with-key", "control-no-key"])
async def test_journal_is_encrypted_at_rest_pfap_11_3_1(
    cluster: Cluster, tmp_path: Path, encrypted: bool
) -> None:
    data_dir = tmp_path / "gateway"
    args = ["--data-dir", str(data_dir)]
    if encrypted:
        args += ["--journal-key-file", str(key_file(tmp_path, "journal.key", "journal secret"))]
    gateway = cluster.gateway(*args)
    cluster.reactor(gateway, *USER_ELEMENTS)
    payload = {
        "coordination_type": "initiate", "molecule_id": "mol-at-rest",
        "molecular_structure": {"packets": [{"id": "t", "group": "df", "element": "tokenize",
                                             "data": {"text": f"{MARKER} in the journal"}}],
                                "bonds": [], "properties": {}},
    }  # fmt: skip
    async with asyncio.timeout(RUN_TIMEOUT_S), packetflow.connect(gateway.url) as pf:
        async for msg in pf.coordinate(payload):
            if msg.payload.coordination_type in ("complete", "abort"):
                final = msg.payload
                break
    assert final.status == "success", final
    assert wait_for(lambda: journal_bytes(data_dir), 10, "the journal file")
    found = MARKER.encode() in journal_bytes(data_dir)
    assert found is not encrypted
    # The journal still answers for the molecule (decrypted on read).
    body = gateway.get("/v1/molecules/mol-at-rest")
    assert body["status"] == "success"
