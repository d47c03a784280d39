"""Ids every envelope carries (transport.py): §4.1 says message_id is a UUID v4."""

from __future__ import annotations

import os
import uuid

from packetflow.transport import new_message_id, new_packet_id


def test_message_ids_are_unique_version_4_uuids() -> None:
    ids = [new_message_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    for mid in ids[:500]:
        assert mid.startswith("msg_")
        parsed = uuid.UUID(mid.removeprefix("msg_"))
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    assert new_packet_id().startswith("packet_")


def test_a_forked_child_does_not_repeat_the_parents_ids() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report its next id and leave at once
        os.write(write, new_message_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 200).decode()
    os.waitpid(pid, 0)
    os.close(read)
    assert child != new_message_id()
    assert child.startswith("msg_")
