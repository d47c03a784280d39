"""`packetflow conformance` refuses bad arguments (exit 2) before dialling anything."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from packetflow.cli import main


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["http://127.0.0.1:1/ws"], "ws://host:port/ws"),
        (["ws://127.0.0.1:1/ws", "--time-scale", "0"], "--time-scale must be > 0"),
        (["ws://127.0.0.1:1/ws", "--role", "client"], "Invalid value for '--role'"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["conformance", *args])
    assert result.exit_code == 2
    assert message in result.output


def test_unreachable_endpoint_fails_connect_exit_1() -> None:
    """Port 1 on loopback refuses the connection: one failing `connect` check, exit 1."""
    result = CliRunner().invoke(main, ["conformance", "ws://127.0.0.1:1/ws", "--json",
                                       "--api-key", "pf_" + "a" * 32])  # fmt: skip
    assert result.exit_code == 1
    assert '"name": "connect"' in result.output
    assert '"status": "fail"' in result.output
