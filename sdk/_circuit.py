"""Circuit breakers, one per tool name, shared by every thread of the process."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from . import _attributes as A
from ._exceptions import CircuitOpen
from ._options import CircuitBreaker

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
_EVENTS = {CLOSED: A.EVENT_CIRCUIT_CLOSED, OPEN: A.EVENT_CIRCUIT_OPEN, HALF_OPEN: A.EVENT_CIRCUIT_HALF_OPEN}


@dataclass
class _State:
    state: str = CLOSED
    failures: int = 0
    opened_at: float = 0.0
    trial_in_flight: bool = False


Event = tuple[str, dict[str, object]]


class Circuits:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._states: dict[str, _State] = {}
        self.clock = time.monotonic

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()

    def state(self, tool: str) -> str:
        with self._lock:
            state = self._states.get(tool)
            return state.state if state else CLOSED

    def _event(self, tool: str, state: _State, policy: CircuitBreaker) -> Event:
        return _EVENTS[state.state], {
            A.CIRCUIT_TOOL: tool,
            A.CIRCUIT_STATE: state.state,
            A.CIRCUIT_FAILURES: state.failures,
            A.CIRCUIT_THRESHOLD: policy.failures,
            A.CIRCUIT_COOLDOWN_S: float(policy.cooldown_s),
        }

    def before(self, tool: str, policy: CircuitBreaker) -> tuple[CircuitOpen | None, Event | None]:
        """Admit a call: ``(CircuitOpen, None)`` to fail fast, or ``(None, half-open event or None)``."""
        with self._lock:
            state = self._states.get(tool)
            if state is None or state.state == CLOSED:
                return None, None
            now = self.clock()
            if state.state == OPEN:
                remaining = policy.cooldown_s - (now - state.opened_at)
                if remaining > 0:
                    return CircuitOpen(tool, state.failures, remaining), None
                state.state, state.trial_in_flight = HALF_OPEN, True
                return None, self._event(tool, state, policy)
            if state.trial_in_flight:  # half-open: one trial at a time, the others fail fast
                return CircuitOpen(tool, state.failures, 0.0), None
            state.trial_in_flight = True
            return None, None

    def after(self, tool: str, policy: CircuitBreaker, *, failed: bool) -> Event | None:
        """Record how a call went; the state-change event, if any."""
        with self._lock:
            state = self._states.get(tool)
            if state is None:
                if not failed:
                    return None
                state = self._states[tool] = _State()
            state.trial_in_flight = False
            if not failed:
                was = state.state
                state.state, state.failures = CLOSED, 0
                return self._event(tool, state, policy) if was != CLOSED else None
            state.failures += 1
            if state.state == HALF_OPEN or (state.state == CLOSED and state.failures >= policy.failures):
                state.state, state.opened_at = OPEN, self.clock()
                return self._event(tool, state, policy)
            return None
