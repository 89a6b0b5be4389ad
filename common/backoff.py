"""The one back-off policy for retry loops: exponential from ``initial_s`` up to ``max_s``, with jitter.

The maths is tenacity's (its exponential wait strategies); what is added here is what a service loop needs and a
decorator does not give: the delay is asked for explicitly (to log it), reset after a success, and slept on a
``threading.Event`` (or the service's shutdown), so that a shutdown interrupts the wait instead of sitting it out.
"""

from __future__ import annotations

from typing import Protocol

from tenacity import RetryCallState, Retrying, wait_exponential, wait_random_exponential
from tenacity.wait import wait_base


class Stop(Protocol):
    """What a back-off sleeps on: a ``threading.Event``, or anything whose ``wait`` returns early when set."""

    def wait(self, timeout: float) -> bool: ...


class Backoff:
    """Delays of ``initial_s``, twice that, ... capped at ``max_s``; each the cap's ``jitter`` share random.

    With ``jitter`` j, a delay is ``(1 - j) * c + uniform(0, j * c)`` for the exponential ceiling ``c``: 0 is
    plain doubling, 1 is "full jitter", 0.5 (the default) keeps at least half the ceiling while spreading the
    retries of many clients that failed together (cameras behind one switch, sinks of one database) apart.
    """

    def __init__(self, initial_s: float, max_s: float, jitter: float = 0.5) -> None:
        if initial_s <= 0 or max_s <= 0:  # max_s < initial_s is allowed: every delay is then max_s
            raise ValueError(f"back-off delays must be positive (got {initial_s}, {max_s})")
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"back-off jitter is a share of the delay, 0 to 1 (got {jitter})")
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        fixed, spread = 1.0 - jitter, jitter
        parts: list[wait_base] = []
        if fixed > 0:
            parts.append(wait_exponential(multiplier=initial_s * fixed, max=max_s * fixed))
        if spread > 0:
            parts.append(wait_random_exponential(multiplier=initial_s * spread, max=max_s * spread))
        self._wait = sum(parts[1:], parts[0])  # tenacity's wait_combine: the two shares added
        self._state = RetryCallState(Retrying(), None, (), {})
        self.attempt = 0
        """Delays handed out since the last reset."""

    def next_delay(self) -> float:
        """The delay before the next retry, in seconds; each call counts one more failure."""
        self.attempt += 1
        self._state.attempt_number = self.attempt
        return float(self._wait(self._state))

    def reset(self) -> None:
        """After a success: the next failure waits ``initial_s`` (give or take the jitter) again."""
        self.attempt = 0

    def wait(self, stop: Stop, delay: float | None = None) -> bool:
        """Sleep ``delay`` (by default the next one) unless ``stop`` is set first; True when it was (stop now)."""
        return stop.wait(self.next_delay() if delay is None else delay)

    def __repr__(self) -> str:
        return f"Backoff({self.initial_s}, {self.max_s}, jitter={self.jitter}, attempt={self.attempt})"
