"""Reading the Prometheus text exposition (``/metrics``), for unit and integration tests."""

from __future__ import annotations


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels are exactly ``labels``, or None."""
    want = {key: f'"{value}"' for key, value in labels.items()}
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        head, _, value = line.rpartition(" ")
        metric, _, label_text = head.partition("{")
        if metric != name:
            continue
        got = dict(part.split("=", 1) for part in label_text.rstrip("}").split(",") if part)
        if got == want:
            return float(value)
    return None
