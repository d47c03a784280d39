"""Writing secrets to disk: owner-only files, replaced atomically so a reader never sees
half a key file."""

from __future__ import annotations

import os
from pathlib import Path

SECRET_FILE_MODE = 0o600
SECRET_DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=SECRET_DIR_MODE)
    return path


def write_secret(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 (never readable by others, not even for
    the instant between create and chmod)."""
    private_dir(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, SECRET_FILE_MODE)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def read_secret(path: str | Path) -> str:
    """The first line of a credential file, stripped."""
    lines = Path(path).read_text().strip().splitlines()
    return lines[0].strip() if lines else ""
