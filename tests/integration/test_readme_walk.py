"""Every shell command and Python snippet in README.md and docs/*.md runs as written, in
order, against a real ``packetflow up --port 0`` (the newcomer's first hour).

A fenced block right after ``<!-- not-run: reason -->`` is skipped; one after
``<!-- known-defect: reason -->`` must fail until the defect is fixed (``packetflow up``
itself, the test suite, a reactor that runs forever). The commands stay flag-free: the
test points them at the ephemeral gateway with ``PACKETFLOW_URL`` and lets them find the
credentials the way a user's shell would. A ``json`` block right after
``<!-- output -->`` is what the previous command prints: its top-level keys must be in
the real output; ``# {'key': ...}`` comments under a Python ``print`` must name keys the
real output has.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!--\s*not-run:\s*\S.*-->")
KNOWN_DEFECT = re.compile(r"<!--\s*known-defect:\s*\S.*-->")
OUTPUT = re.compile(r"<!--\s*output\s*-->")
SHELL = {"sh", "bash", "shell", "console"}
STARTUP_S = 90.0
COMMAND_S = 120.0
# A Python repr key in an example's output comment: '# {'pong': True, ...'.
COMMENT_KEY = re.compile(r"'([A-Za-z_]\w*)':")


@dataclass
class Snippet:
    doc: str
    line: int
    lang: str
    code: str
    shown_keys: list[str] = field(default_factory=list)
    known_defect: bool = False

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"


def extract(path: Path) -> list[Snippet]:
    """The runnable fenced blocks of one Markdown file, in order."""
    out: list[Snippet] = []
    lines = path.read_text().splitlines()
    i = 0
    last_text = ""
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^```(\w*)\s*$", line)
        if not m:
            if line.strip():
                last_text = line.strip()
            i += 1
            continue
        lang, start = m.group(1), i + 1
        i += 1
        body: list[str] = []
        while i < len(lines) and not lines[i].startswith("```"):
            body.append(lines[i])
            i += 1
        i += 1
        marker, last_text = last_text, ""
        if NOT_RUN.search(marker):
            continue
        if lang == "json" and OUTPUT.search(marker) and out:
            value = json.loads("\n".join(body))
            out[-1].shown_keys.extend(value)
            continue
        if lang in SHELL or lang == "python":
            kind = "python" if lang == "python" else "sh"
            defect = bool(KNOWN_DEFECT.search(marker))
            out.append(Snippet(path.name, start, kind, "\n".join(body), known_defect=defect))
    return out


def snippets() -> list[Snippet]:
    return [s for doc in DOCS for s in extract(doc)]


def shell_commands(code: str) -> list[str]:
    """One command per line; a trailing backslash continues it, `#` starts a comment."""
    commands, pending = [], ""
    for raw in code.splitlines():
        line = raw.rstrip()
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        commands.append(pending + line)
        pending = ""
    return commands


@pytest.fixture(scope="module")
def walk_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``packetflow up --port 0`` in a temporary data dir; the environment a user's shell
    would have (``packetflow`` on PATH), pointed at it by PACKETFLOW_URL."""
    tmp = tmp_path_factory.mktemp("walk")
    bin_dir = tmp / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "packetflow"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m packetflow "$@"\n')
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
           "PACKETFLOW_STATE_DIR": str(tmp / "state"), "PYTHONUNBUFFERED": "1"}  # fmt: skip
    for name in ("PACKETFLOW_URL", "PACKETFLOW_API_KEY", "PACKETFLOW_API_KEY_FILE"):
        env.pop(name, None)
    up = subprocess.Popen(
        [sys.executable, "-m", "packetflow", "up", "--port", "0", "--data-dir",
         str(tmp / "data")],
        cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True,
    )  # fmt: skip
    assert up.stdout is not None
    url, seen = None, []
    deadline = time.monotonic() + STARTUP_S
    try:
        while time.monotonic() < deadline:
            line = up.stdout.readline()
            if not line:
                break
            seen.append(line)
            m = re.match(r"packetflow gateway\s+(ws://\S+)", line)
            if m:
                url = m.group(1)
            if line.startswith("Ready."):
                break
        assert url is not None and seen[-1].startswith("Ready."), "".join(seen)
        yield {**env, "PACKETFLOW_URL": url}
    finally:
        with_signal(up, signal.SIGINT)


def with_signal(proc: subprocess.Popen[str], sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def run_snippet(snippet: Snippet, env: dict[str, str]) -> str:
    """Run it in the repository root (the README's paths are relative to it); its output."""
    if not snippet.known_defect:
        return _run(snippet, env)
    # A block marked <!-- known-defect: ... --> must still fail: when it passes, the
    # marker (and the defect's note in the report) must go.
    try:
        _run(snippet, env)
    except AssertionError:
        return ""
    raise AssertionError(f"{snippet.where} now runs: remove its known-defect marker")


def _run(snippet: Snippet, env: dict[str, str]) -> str:
    """Run it in the repository root (the README's paths are relative to it); its output."""
    if snippet.lang == "python":
        runs = [[sys.executable, "-W", "error::ResourceWarning", "-c", snippet.code]]
    else:
        runs = [["bash", "-e", "-o", "pipefail", "-c", cmd]
                for cmd in shell_commands(snippet.code)]  # fmt: skip
    out = ""
    for argv in runs:
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=COMMAND_S, check=False)  # fmt: skip
        shown = argv[-1] if snippet.lang == "sh" else "the snippet"
        assert proc.returncode == 0, (
            f"{snippet.where}: {shown} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
        )
        assert "Traceback" not in proc.stderr, f"{snippet.where}: {proc.stderr[-3000:]}"
        assert "Unclosed" not in proc.stderr, f"{snippet.where}: {proc.stderr[-3000:]}"
        out = proc.stdout
    return out


def comment_keys(code: str) -> list[str]:
    keys: list[str] = []
    for line in code.splitlines():
        text = line.strip()
        if text.startswith("#"):
            keys.extend(COMMENT_KEY.findall(text))
    return keys


def test_the_docs_have_runnable_snippets() -> None:
    found = snippets()
    assert any(s.doc == "README.md" and "molecule run" in s.code for s in found)
    assert sum(1 for s in found if s.doc == "elements.md") >= 20
    assert any(s.shown_keys for s in found), "no <!-- output --> block in the docs"


def test_extract_honours_not_run_and_output(tmp_path: Path) -> None:
    doc = tmp_path / "x.md"
    doc.write_text("<!-- not-run: forever -->\n```sh\npacketflow up\n```\n"
                   "```sh\npacketflow submit cf ping --json\n```\n<!-- output -->\n"
                   '```json\n{"status": "success", "data": {}}\n```\n'
                   "```text\nignored\n```\n")  # fmt: skip
    (only,) = extract(doc)
    assert only.code == "packetflow submit cf ping --json"
    assert only.shown_keys == ["status", "data"]
    assert shell_commands("a \\\n  b\n# c\n\nd  # e") == ["a    b", "d  # e"]


@pytest.mark.timeout(1800)  # some 40 snippets, each a fresh interpreter, on a shared machine
def test_every_snippet_runs_in_order(walk_env: dict[str, str]) -> None:
    ran = 0
    for snippet in snippets():
        out = run_snippet(snippet, walk_env)
        ran += 1
        if snippet.known_defect:
            continue
        if snippet.shown_keys:
            value = json.loads(out)
            missing = [k for k in snippet.shown_keys if k not in value]
            assert not missing, f"{snippet.where}: output lacks {missing}: {out[:2000]}"
        if snippet.lang == "python":
            missing = [k for k in comment_keys(snippet.code) if f"'{k}':" not in out]
            assert not missing, f"{snippet.where}: output lacks {missing}: {out[:2000]}"
    assert ran >= 20


def readme_envelopes() -> dict[str, dict[str, object]]:
    """README's literal wire messages, by message_type."""
    text = (ROOT / "README.md").read_text()
    out: dict[str, dict[str, object]] = {}
    for block in re.findall(r"^```json\n(.*?)^```", text, flags=re.S | re.M):
        value = json.loads(block)
        if isinstance(value, dict) and "message_type" in value:
            out[str(value["message_type"])] = value
    return out


def test_readme_envelopes_are_valid_wire_messages() -> None:
    from packetflow.protocol.messages import FrameError, Result, Submit, decode_frame

    envelopes = readme_envelopes()
    (submit,) = decode_frame(json.dumps(envelopes["submit"]).encode())
    (result,) = decode_frame(json.dumps(envelopes["result"]).encode())
    assert not isinstance(submit, FrameError) and isinstance(submit, Submit)
    assert not isinstance(result, FrameError) and isinstance(result, Result)
    assert result.correlation_id == submit.message_id


async def test_readme_submit_envelope_gets_the_shown_result(walk_env: dict[str, str]) -> None:
    """The README's SUBMIT, sent as written over /ws, is answered by a RESULT with the
    README's fields and data."""
    import aiohttp

    from packetflow.protocol.authentication import API_KEY_HEADER

    envelopes = readme_envelopes()
    data = Path(walk_env["PACKETFLOW_STATE_DIR"]).parent / "data"
    key_file = data / "gateway" / "security" / "admin.key"  # `up` keeps the gateway's apart
    headers = {API_KEY_HEADER: key_file.read_text().strip()}
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(walk_env["PACKETFLOW_URL"], headers=headers) as ws,
    ):
        await ws.send_str(json.dumps(envelopes["submit"]))
        reply = json.loads((await ws.receive(timeout=60)).data)
    shown = envelopes["result"]
    assert set(shown) <= set(reply), reply
    assert reply["correlation_id"] == shown["correlation_id"]
    payload, shown_payload = reply["payload"], shown["payload"]
    assert isinstance(shown_payload, dict)
    assert payload["status"] == shown_payload["status"]
    assert payload["data"] == shown_payload["data"]
    assert set(shown_payload["processing_metadata"]) <= set(payload["processing_metadata"])
