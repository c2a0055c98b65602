"""Timeouts and a small bounded retry for the network steps that are safe to repeat.

Only idempotent steps go through `retry_call` (GETs, creating a repo with exist_ok,
re-uploading the same content); the callers decide which those are. The policy is a value,
so tests pass a fast one instead of sleeping through real backoffs.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class NetPolicy:
    """How long to wait for a server and how often to try again.

    `attempts` counts the first try; the wait before try n+1 is `backoff * 2**(n-1)`, capped
    at `max_backoff`. `github_write_interval` spaces GitHub write requests as GitHub asks
    clients to (secondary rate limits); 0 turns that off.
    """

    timeout: float = 30.0
    attempts: int = 4
    backoff: float = 1.0
    max_backoff: float = 8.0
    github_write_interval: float = 1.0

    def delays(self) -> list[float]:
        return [min(self.backoff * 2**i, self.max_backoff) for i in range(max(self.attempts - 1, 0))]


DEFAULT_POLICY = NetPolicy()  # what `policy=None` means; read at call time, so tests can swap it


def retry_call(fn: Callable[[], T], policy: NetPolicy, is_transient: Callable[[BaseException], bool]) -> T:
    """Call `fn`, retrying on errors `is_transient` accepts, and re-raise the last one."""
    delays = policy.delays()
    for attempt in range(len(delays) + 1):
        try:
            return fn()
        except Exception as e:
            if attempt == len(delays) or not is_transient(e):
                raise
            time.sleep(delays[attempt])
    raise AssertionError("unreachable: the loop returns or raises")
