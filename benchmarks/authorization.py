"""``python -m benchmarks.authorization``: the per-packet cost of DESIGN §8 authorization
(``Guard.check_submit``: cached permission verdict, classification, token bucket) and of a
bare cached verdict, in µs per check, on this machine."""

from __future__ import annotations

import statistics
import time

from packetflow.client import AsyncClient
from packetflow.protocol.permissions import Authorizer
from packetflow.protocol.principals import PACKET_USER, SYSTEM_ADMIN, Principal
from packetflow.security.guard import Guard

ROUNDS = 5
CHECKS = 200_000


def _per_check_us(fn: object, count: int) -> float:
    call = fn  # type: ignore[assignment]
    start = time.perf_counter()
    for _ in range(count):
        call()  # type: ignore[operator]
    return (time.perf_counter() - start) / count * 1e6


def main() -> None:
    import asyncio

    async def build() -> object:
        return AsyncClient("ws://127.0.0.1:1/ws").build_submit("cf", "ping", {"x": 1})

    msg = asyncio.run(build())
    guard = Guard()
    # A principal without rate limits (admin roles) and one with (packet_user's 1000/min,
    # refilled by passing a far-apart `now` so the bucket never runs dry).
    admin = Principal("key:admin", frozenset({SYSTEM_ADMIN}), "api_key")
    user = Principal("key:user", frozenset({PACKET_USER}), "api_key")
    auth = Authorizer()
    now = [0.0]

    def user_check() -> None:
        now[0] += 1.0
        guard.check_submit(msg, None, user, now[0])  # type: ignore[arg-type]

    rows = {
        "Authorizer.allows (cached verdict)": lambda: auth.allows(user, "cf:ping"),
        "Guard.check_submit, admin (no rate limit)":
            lambda: guard.check_submit(msg, None, admin, 0.0),  # type: ignore[arg-type]
        "Guard.check_submit, packet_user (+ token bucket)": user_check,
    }  # fmt: skip
    for name, fn in rows.items():
        runs = [_per_check_us(fn, CHECKS) for _ in range(ROUNDS)]
        print(f"{name:<50} {statistics.median(runs):6.2f} µs/check "
              f"(min {min(runs):.2f}, max {max(runs):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
