"""Logins under load: failed logins throttled per name and per client address, and password checks
on a small pool of threads of their own.

Argon2id is slow on purpose (about 0.1 s of CPU and 64 MiB per check). Unbounded, anyone who can
reach `/login` could try passwords as fast as the CPU allows and, by flooding it, take every core,
the memory and the page threads from the people watching the line. `LoginGate` puts each login
through three bounds before any hashing or database query:

Guarantees:
- Failures per name and per address: within any `window_s` seconds, at most `per_name` failed
  logins of one user name and at most `per_address` from one client address are checked. Further
  logins of that name or from that address answer 429 at once (with the seconds to wait), with no
  hashing and no query. Unknown names count like real ones, so the throttle does not tell which
  names exist. A login being checked counts as a failure until it succeeds; a success clears its
  name's failures and takes its own attempt off its address.
- Bounded hashing: passwords are checked on `hashers` threads of the gate's own (never the page
  thread pool, never holding a database connection while hashing: `users.authenticate`), and at
  most `waiting` further logins wait for one; beyond that a login answers 503 at once and counts
  for nothing. A flood thus takes at most `hashers` threads and `hashers` × 64 MiB for hashing.
- Bounded memory: at most `max_keys` names and addresses are remembered (the least recently used
  first forgotten), each with at most its limit of timestamps.

Behind a reverse proxy the address is the one the proxy reports (`console serve
--forwarded-allow-ips`); without that every client shares the proxy's address, and its limit.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

from worker.core.errors import ConfigError

T = TypeVar("T")
MAX_KEYS = 10_000
MAX_NAME_CHARS = 64  # `users.MAX_NAME_CHARS`: a longer name is no user's, and is counted by its start


@dataclass(frozen=True)
class LoginLimits:
    """The gate's bounds (see the module doc); the defaults suit a control room's few users."""

    per_name: int = 5
    per_address: int = 20
    window_s: float = 300.0
    hashers: int = 1
    waiting: int = 8

    def __post_init__(self) -> None:
        for field in ("per_name", "per_address", "hashers"):
            value = getattr(self, field)
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"login limits: {field}: expected a whole number ≥ 1, received {value!r}")
        if not isinstance(self.waiting, int) or self.waiting < 0:
            raise ConfigError(
                f"login limits: waiting: expected a whole number ≥ 0, received {self.waiting!r}"
            )
        if not 1.0 <= self.window_s <= 86_400.0:  # NaN fails too
            raise ConfigError(
                f"login limits: window_s: expected 1..86400 seconds, received {self.window_s!r}"
            )


class LoginRefusedError(Exception):
    """A login the gate turned away before checking it: `status` 429 (too many failures) or 503
    (the hashing pool is full), and the whole seconds to wait (`retry_after_s`)."""

    def __init__(self, status: int, retry_after_s: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class _Attempt:
    name_key: str
    address_key: str
    at: float


class LoginGate:
    """Admission and a hashing pool for password checks (see the module doc); `hashed` counts the
    checks that ran. `clock` is monotonic seconds (a test may pass its own)."""

    def __init__(
        self,
        limits: LoginLimits | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = MAX_KEYS,
    ) -> None:
        self.limits = limits or LoginLimits()
        self.clock = clock
        self.max_keys = max_keys
        self.hashed = 0
        self._attempts: OrderedDict[str, list[float]] = OrderedDict()
        self._busy = 0
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    async def check(self, name: str, address: str, attempt: Callable[[], T | None]) -> T | None:
        """Run `attempt` (the password check: None for a failure) on the hashing pool, if the bounds
        allow; LoginRefusedError before running it otherwise. An exception from `attempt` (the
        database, not the password) propagates and counts as no failure."""
        admitted = self._admit(name, address)

        def run() -> T | None:
            with self._lock:
                self.hashed += 1
            return attempt()

        try:
            future = self._executor().submit(run)
        except RuntimeError:  # closed: the application is shutting down
            self._release(None)
            self._forget(admitted)
            raise
        future.add_done_callback(self._release)
        try:
            result = await asyncio.wrap_future(future)
        except Exception:
            self._forget(admitted)
            raise
        if result is not None:
            self._succeeded(admitted)
        return result

    def close(self) -> None:
        """Stop the hashing threads (checks waiting for one are dropped)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)

    # --- the bookkeeping, under the lock --------------------------------------------------------------

    def _admit(self, name: str, address: str) -> _Attempt:
        now = self.clock()
        keys = (("name", f"name:{name[:MAX_NAME_CHARS]}", self.limits.per_name),
                ("address", f"address:{address}", self.limits.per_address))  # fmt: skip
        with self._lock:
            for what, key, limit in keys:
                recent = self._recent(key, now)
                if len(recent) >= limit:
                    wait = max(1, math.ceil(recent[0] + self.limits.window_s - now))
                    raise LoginRefusedError(
                        429,
                        wait,
                        f"Too many failed logins {'of this name' if what == 'name' else 'from this address'}"
                        f" ({limit} in {self.limits.window_s:g} s): try again in {wait} s.",
                    )
            if self._busy >= self.limits.hashers + self.limits.waiting:
                raise LoginRefusedError(
                    503, 1, "Too many logins are being checked at once: try again in a second."
                )
            self._busy += 1
            for _, key, _limit in keys:
                self._recent(key, now).append(now)
            while len(self._attempts) > self.max_keys:
                self._attempts.popitem(last=False)
        return _Attempt(keys[0][1], keys[1][1], now)

    def _recent(self, key: str, now: float) -> list[float]:
        """The key's attempts within the window (older ones dropped), marked as used just now."""
        times = self._attempts.get(key)
        if times is None:
            times = self._attempts[key] = []
        else:
            self._attempts.move_to_end(key)
            horizon = now - self.limits.window_s
            while times and times[0] <= horizon:
                times.pop(0)
        return times

    def _release(self, _future: object) -> None:
        with self._lock:
            self._busy -= 1

    def _succeeded(self, attempt: _Attempt) -> None:
        with self._lock:
            self._attempts.pop(attempt.name_key, None)
            self._drop(attempt.address_key, attempt.at)

    def _forget(self, attempt: _Attempt) -> None:
        with self._lock:
            self._drop(attempt.name_key, attempt.at)
            self._drop(attempt.address_key, attempt.at)

    def _drop(self, key: str, at: float) -> None:
        times = self._attempts.get(key)
        if times is not None and at in times:
            times.remove(at)

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.limits.hashers, thread_name_prefix="console-login")
            return self._pool
