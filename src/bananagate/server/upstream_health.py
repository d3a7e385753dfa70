"""What the router remembers between requests: key cooldowns and per-channel circuits.

Pure state machines over an injected clock (tests drive them with a fake one). Everything lives
in this process; several gateway processes each keep their own view, which is fine for both:
a cooldown or an open circuit is a local guess about an upstream, not shared truth.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

from bananagate.config import RoutingConfig

Clock = Callable[[], float]
CircuitState = Literal["closed", "open", "half-open"]


class Circuit:
    """closed → (N consecutive failures) → open → (cool-off) → half-open: one trial request;
    its success closes the circuit, its failure opens it again for another cool-off."""

    def __init__(self, failures_to_open: int, cooloff: float, clock: Clock) -> None:
        self._threshold = failures_to_open
        self._cooloff = cooloff
        self._clock = clock
        self.failures = 0
        self._open_until: float | None = None
        self._trial = False

    @property
    def state(self) -> CircuitState:
        if self._open_until is None:
            return "closed"
        return "half-open" if self._clock() >= self._open_until else "open"

    def allows(self) -> bool:
        """May a request go to this channel now? (A half-open circuit admits one at a time.)"""
        state = self.state
        return state == "closed" or (state == "half-open" and not self._trial)

    def begin(self) -> None:
        """A request is about to go out (after `allows()` said yes)."""
        if self.state == "half-open":
            self._trial = True

    def succeeded(self) -> None:
        self.failures = 0
        self._open_until = None
        self._trial = False

    def failed(self) -> None:
        self.failures += 1
        if self._trial or (self._open_until is None and self.failures >= self._threshold):
            self._open_until = self._clock() + self._cooloff
        self._trial = False

    def abandoned(self) -> None:
        """The request ended without a verdict (cancelled): let another one be the trial."""
        self._trial = False

    def reopens_in(self) -> float:
        """Seconds until a request may be tried again (0 when it may now; inf while a trial runs)."""
        if self._open_until is None:
            return 0.0
        if self._trial:
            return math.inf
        return max(0.0, self._open_until - self._clock())


class Health:
    """Cooldowns of upstream keys and circuits of channels, by name."""

    def __init__(self, policy: RoutingConfig, clock: Clock) -> None:
        self.policy = policy
        self.clock = clock
        self._cool_until: dict[str, float] = {}
        self._rejected: dict[str, bool] = {}
        self._circuits: dict[str, Circuit] = {}
        self._next_key: dict[str, int] = {}

    def circuit(self, channel: str) -> Circuit:
        circuit = self._circuits.get(channel)
        if circuit is None:
            circuit = Circuit(self.policy.circuit_failures, self.policy.circuit_cooloff, self.clock)
            self._circuits[channel] = circuit
        return circuit

    # --- keys -------------------------------------------------------------------------------

    def cool(self, key_id: str, seconds: float, *, rejected: bool = False) -> None:
        """Set the key aside for `seconds` (a longer cooldown already running is kept).
        `rejected`: the upstream refused the key itself, rather than rate-limiting it."""
        until = self.clock() + max(0.0, seconds)
        if until >= self._cool_until.get(key_id, 0.0):
            self._cool_until[key_id] = until
            self._rejected[key_id] = rejected

    def rejected(self, key_id: str) -> bool:
        """True while the key is set aside because the upstream refused it."""
        return self.cooling_for(key_id) > 0 and self._rejected.get(key_id, False)

    def cooling_for(self, key_id: str) -> float:
        until = self._cool_until.get(key_id)
        if until is None:
            return 0.0
        left = until - self.clock()
        if left <= 0:
            del self._cool_until[key_id]
            self._rejected.pop(key_id, None)
            return 0.0
        return left

    def pick_key(self, channel: str, key_ids: Sequence[str]) -> int | None:
        """Round-robin over the channel's keys that are not cooling; None when all are."""
        count = len(key_ids)
        start = self._next_key.get(channel, 0)
        for step in range(count):
            index = (start + step) % count
            if self.cooling_for(key_ids[index]) == 0:
                self._next_key[channel] = index + 1
                return index
        return None

    def keys_ready_in(self, key_ids: Sequence[str]) -> float:
        """Seconds until the first of these keys stops cooling."""
        return min((self.cooling_for(k) for k in key_ids), default=0.0)
