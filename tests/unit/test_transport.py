"""transport.py: the ids every envelope carries (§4.1: message_id is a UUID v4) and how a
Peer writes frames."""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable

from packetflow.transport import Peer, new_message_id, new_packet_id


def test_message_ids_are_unique_version_4_uuids() -> None:
    ids = [new_message_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for mid in ids[:500]:
        assert mid.startswith("msg_")
        parsed = uuid.UUID(mid.removeprefix("msg_"))
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert new_packet_id().startswith("packet_")


def _in_forked_child(make: Callable[[], str]) -> str:
    """``make()`` as called in a forked child (which reports it and leaves at once)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, make().encode())
        os._exit(0)
    os.close(write)
    value = os.read(read, 200).decode()
    os.waitpid(pid, 0)
    os.close(read)
    return value


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    child = _in_forked_child(new_message_id)
    assert child != new_message_id()
    assert child.startswith("msg_")


def test_packet_ids_are_random_and_fresh_after_fork() -> None:
    """Packet ids are replayed from the idempotency window to whoever knows them: random
    (not a counter), and a forked child draws its own."""
    ids = [new_packet_id() for _ in range(600)]  # more than one pool of OS randomness
    assert len(set(ids)) == len(ids)
    assert len({i[-12:] for i in ids}) == len(ids)
    for pid_ in ids[:100]:
        assert uuid.UUID(pid_.removeprefix("packet_")).version == 4
    assert _in_forked_child(new_packet_id) != new_packet_id()


class _Transport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, parts: list[bytes]) -> None:
        self.writes.append(b"".join(parts))

    def is_closing(self) -> bool:
        return False

    def get_write_buffer_size(self) -> int:
        return 0


class _Stream:
    def __init__(self) -> None:
        self.transport = _Transport()

    async def drain(self) -> None:
        return None


class _Socket:
    closed = False
    compress = 0


async def test_a_burst_leaves_as_the_first_frame_then_one_write_for_the_rest() -> None:
    """Server side: the first frame of a loop iteration is written at once; the others
    sent in the same iteration leave together in one write."""
    stream = _Stream()
    peer = Peer(_Socket(), "test", stream)  # type: ignore[arg-type]
    try:
        for i in range(5):
            assert peer.send(b'{"n":%d}' % i)
        assert stream.transport.writes == [b"\x81\x07" + b'{"n":0}']
        await peer.flush(timeout=2.0)
        assert stream.transport.writes[1:] == [
            b"".join(b"\x81\x07" + b'{"n":%d}' % i for i in range(1, 5))
        ]
        await asyncio.sleep(0)  # a later iteration: its first frame leaves at once again
        peer.send(b'{"n":5}')
        assert stream.transport.writes[-1] == b"\x81\x07" + b'{"n":5}'
    finally:
        await peer.close()
