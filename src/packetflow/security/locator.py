"""Where the CLI and SDK on this machine find a gateway's credentials without flags
(DESIGN §8): each gateway records, per user, a small owner-only file named after its
listening ``host:port`` that points at its admin key (and TLS files); a client looks up
the URL it dials. The file holds paths, never a key.

Lookup order for a client: explicit ``api_key``/``api_key_file`` arguments, then
``PACKETFLOW_API_KEY`` / ``PACKETFLOW_API_KEY_FILE``, then this index.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ..protocol.authentication import API_KEY_HEADER
from .files import private_dir, read_secret, write_secret

log = logging.getLogger("packetflow.security")

ENV_KEY = "PACKETFLOW_API_KEY"
ENV_KEY_FILE = "PACKETFLOW_API_KEY_FILE"
ENV_STATE_DIR = "PACKETFLOW_STATE_DIR"
_LOOPBACK_ALIASES = {"localhost": "127.0.0.1", "::1": "127.0.0.1", "0.0.0.0": "127.0.0.1"}


def index_dir() -> Path:
    """``$PACKETFLOW_STATE_DIR``, else ``$XDG_STATE_HOME/packetflow/gateways``, else
    ``~/.local/state/packetflow/gateways``."""
    explicit = os.environ.get(ENV_STATE_DIR)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "packetflow" / "gateways"


def _entry_name(host: str, port: int) -> str:
    host = _LOOPBACK_ALIASES.get(host, host)
    return f"{host.replace(':', '_')}_{port}.json"


def _host_port(url: str) -> tuple[str, int] | None:
    parts = urlsplit(url)
    if parts.hostname is None:
        return None
    secure = parts.scheme in ("wss", "https")
    return parts.hostname, parts.port or (443 if secure else 80)


@dataclass(frozen=True, slots=True)
class Entry:
    """What a gateway recorded: paths to its admin key and, under TLS, its CA and a
    client certificate for this user."""

    api_key_file: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    pid: int | None = None


def record(host: str, port: int, entry: Entry) -> Path | None:
    """Write this gateway's index entry (best effort: a read-only home must not stop a
    gateway)."""
    path = index_dir() / _entry_name(host, port)
    try:
        private_dir(path.parent)
        body = {k: v for k, v in dataclasses.asdict(entry).items() if v is not None}
        write_secret(path, json.dumps(body) + "\n")
    except OSError as exc:
        log.warning("cannot record credentials index %s: %s", path, exc)
        return None
    return path


def forget(path: Path | None, pid: int) -> None:
    """Remove the entry at ``path`` if it is still ours (another gateway may have taken
    the port since)."""
    if path is None:
        return
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()


def lookup(url: str) -> Entry | None:
    hp = _host_port(url)
    if hp is None:
        return None
    path = index_dir() / _entry_name(*hp)
    try:
        raw: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    names = [f.name for f in dataclasses.fields(Entry)]
    return Entry(**{name: raw.get(name) for name in names})


def find_api_key(
    url: str, api_key: str | None = None, api_key_file: str | None = None
) -> str | None:
    """The API key to present to ``url``, from the arguments, the environment or the index."""
    if api_key:
        return api_key
    if api_key_file:
        return read_secret(api_key_file)
    if os.environ.get(ENV_KEY):
        return os.environ[ENV_KEY].strip()
    if os.environ.get(ENV_KEY_FILE):
        return read_secret(os.environ[ENV_KEY_FILE])
    entry = lookup(url)
    if entry is not None and entry.api_key_file:
        with contextlib.suppress(OSError):
            return read_secret(entry.api_key_file) or None
    return None


def auth_headers(url: str, headers: dict[str, str] | None = None, *, api_key: str | None = None,
                 api_key_file: str | None = None) -> dict[str, str]:  # fmt: skip
    """``headers`` plus an API key header unless credentials are already there."""
    out = dict(headers or {})
    if any(h.lower() in (API_KEY_HEADER.lower(), "authorization") for h in out):
        return out
    key = find_api_key(url, api_key, api_key_file)
    if key:
        out[API_KEY_HEADER] = key
    return out
