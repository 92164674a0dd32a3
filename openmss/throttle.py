"""Failed-login throttling: per account and per client address, sliding window."""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable


class LoginThrottle:
    """Counts failures per key in a sliding window; a key over the limit is refused until its
    oldest failure leaves the window. Memory is bounded: the least recently failed keys go first.

    The counts live in this process; with several instances each counts on its own (an
    attacker spread over N instances gets N times the attempts).
    """

    def __init__(
        self,
        *,
        max_failures: int = 5,
        max_failures_per_address: int = 20,
        window: float = 300.0,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        # A client address may stand for a whole hospital behind NAT: it gets a higher limit
        # than one account, so one person's typos do not lock everybody out.
        self.max_failures_per_address = max_failures_per_address
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()

    def _recent(self, key: str, now: float) -> deque[float] | None:
        stamps = self._failures.get(key)
        if stamps is None:
            return None
        while stamps and stamps[0] <= now - self.window:
            stamps.popleft()
        if not stamps:
            del self._failures[key]
            return None
        return stamps

    def _limit(self, key: str) -> int:
        return self.max_failures_per_address if key.startswith("ip:") else self.max_failures

    def retry_after(self, keys: Iterable[str]) -> float:
        """Seconds until every key may try again; 0 when none is blocked."""
        now = self._clock()
        wait = 0.0
        for key in keys:
            stamps = self._recent(key, now)
            limit = self._limit(key)
            if stamps is not None and len(stamps) >= limit:
                wait = max(wait, stamps[-limit] + self.window - now)
        return wait

    def failure(self, keys: Iterable[str]) -> None:
        now = self._clock()
        for key in keys:
            stamps = self._failures.setdefault(key, deque(maxlen=self._limit(key) * 2))
            stamps.append(now)
            self._failures.move_to_end(key)
        while len(self._failures) > self.max_keys:
            self._failures.popitem(last=False)

    def success(self, keys: Iterable[str]) -> None:
        for key in keys:
            if key.startswith("account:"):
                self._failures.pop(key, None)


def throttle_keys(address: str, client_ip: str) -> tuple[str, str]:
    return (f"account:{address.lower()}", f"ip:{client_ip}")
