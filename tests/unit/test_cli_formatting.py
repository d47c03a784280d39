"""The CLI's pure parts: gateway addresses, help texts, progress lines, error shapes, the
example-input seeding of ``packetflow up``."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from packetflow.addresses import gateway_ws_url, http_base
from packetflow.cli import MoleculeView, _print_final, main, packet_states, progress_note
from packetflow.cli_views import error_lines
from packetflow.cluster import seed_example_inputs
from packetflow.protocol.errors import InvalidAddress, ProcessingFailed


@pytest.mark.parametrize(("given", "ws"), [
    ("127.0.0.1:8080", "ws://127.0.0.1:8080/ws"),
    ("localhost:9", "ws://localhost:9/ws"),
    ("http://127.0.0.1:8080", "ws://127.0.0.1:8080/ws"),
    ("http://127.0.0.1:8080/", "ws://127.0.0.1:8080/ws"),
    ("https://gw.example:443", "wss://gw.example:443/ws"),
    ("ws://127.0.0.1:8080", "ws://127.0.0.1:8080/ws"),
    ("ws://127.0.0.1:8080/ws", "ws://127.0.0.1:8080/ws"),
    ("wss://gw.example/ws", "wss://gw.example/ws"),
    ("  ws://[::1]:8080/ws ", "ws://[::1]:8080/ws"),
])  # fmt: skip
def test_gateway_addresses(given: str, ws: str) -> None:
    assert gateway_ws_url(given) == ws


@pytest.mark.parametrize("bad", ["", "ftp://h:1", "h:port", "ws://:80/ws", "ws://"])
def test_bad_gateway_addresses_raise_a_packetflow_error(bad: str) -> None:
    with pytest.raises(InvalidAddress):
        gateway_ws_url(bad)


def test_the_env_var_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PACKETFLOW_URL", raising=False)
    assert gateway_ws_url(None) == "ws://127.0.0.1:8080/ws"
    monkeypatch.setenv("PACKETFLOW_URL", "127.0.0.1:9999")
    assert gateway_ws_url(None) == "ws://127.0.0.1:9999/ws"
    assert http_base(None) == "http://127.0.0.1:9999"
    assert http_base("wss://h:1/ws") == "https://h:1"


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name, cmd in group.commands.items():
        out.append((f"{prefix}{name}", cmd))
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, f"{prefix}{name} "))
    return out


def test_every_flag_says_what_it_does() -> None:
    missing = [f"{name} {param.opts[0]}" for name, cmd in _commands(main)
               for param in cmd.params
               if isinstance(param, click.Option) and not (param.help or "").strip()]  # fmt: skip
    assert missing == []


def test_client_commands_share_one_gateway_option() -> None:
    for name in ("submit", "status", "reactors", "affinity", "molecule run",
                 "molecule status", "molecule abort"):  # fmt: skip
        cmd = dict(_commands(main))[name]
        opts = [p.opts for p in cmd.params if isinstance(p, click.Option) and p.name == "url"]
        assert opts == [["--gateway", "--url"]], name
    reactor = dict(_commands(main))["reactor"]
    assert any("--gateway" in p.opts and "--url" in p.opts for p in reactor.params)


def test_no_arguments_prints_help_and_exits_0() -> None:
    result = CliRunner().invoke(main, [])
    assert result.exit_code == 0
    assert "Usage:" in result.output and "molecule" in result.output


def test_progress_counts_each_state_for_what_it_is() -> None:
    state = {"active_packets": ["b"], "completed_packets": ["a"], "failed_packets": ["c"],
             "skipped_packets": ["d"], "aborted_packets": ["e"]}  # fmt: skip
    states = packet_states(state)
    assert progress_note(states, ["a", "b", "c", "d", "e", "f"]) == (
        "1 running, 1 done, 1 failed, 1 skipped, 1 aborted, 1 waiting"
    )
    assert progress_note({}, ["x"]) == "1 waiting"
    view = MoleculeView()
    view.plan("m", {"stages": [{"stage_id": 1, "packets": ["a", "b"]},
                               {"stage_id": 2, "packets": ["c", "d", "e", "f"]}]})  # fmt: skip
    assert view.line(states) == (
        "m: 1 running, 1 done, 1 failed, 1 skipped, 1 aborted, 1 waiting; "
        "stage 1/2 [1 running, 1 done]; stage 2/2 [1 failed, 1 skipped, 1 aborted, 1 waiting]"
    )


def test_final_state_prints_no_empty_results(capsys: pytest.CaptureFixture[str]) -> None:
    _print_final({"molecule_id": "m", "status": "failed", "results": {},
                  "execution_state": {"stage_results": {}}})  # fmt: skip
    assert "{}" not in capsys.readouterr().out


def test_error_lines_lead_with_code_and_message() -> None:
    payload = ProcessingFailed("boom", details={"reason": "handler_exception"},
                               retryable=False).to_payload()  # fmt: skip
    lines = error_lines(payload)
    assert lines[0] == "PF005 processing_error: boom"
    assert not any("retry" in line.lower() for line in lines)


def test_up_seeds_missing_example_inputs_only(tmp_path: Path) -> None:
    source = tmp_path / "examples"
    source.mkdir()
    (source / "customers.csv").write_text("id\n1\n")
    (source / "pipeline.json").write_text("{}")
    data = tmp_path / "data"
    assert seed_example_inputs(data, source) == [data / "customers.csv"]
    assert not (data / "pipeline.json").exists()
    (data / "customers.csv").write_text("mine\n")
    assert seed_example_inputs(data, source) == []
    assert (data / "customers.csv").read_text() == "mine\n"
    assert seed_example_inputs(data, tmp_path / "nowhere") == []


def test_the_repository_examples_are_seeded(tmp_path: Path) -> None:
    copied = seed_example_inputs(tmp_path)
    assert tmp_path / "customers.csv" in copied
