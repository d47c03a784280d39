"""Assertions the unit tests share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from packetflow.protocol.errors import PacketFlowError


def fails(call: Callable[[], Any], code: str, field: str | None = None) -> PacketFlowError:
    """``call()`` raises a PacketFlowError with ``code`` (and ``field``, when given)."""
    with pytest.raises(PacketFlowError) as info:
        call()
    assert info.value.code == code, (info.value.code, info.value.message)
    if field is not None:
        assert info.value.field == field
    return info.value
