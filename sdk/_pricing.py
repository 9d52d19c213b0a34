"""Cost of an LLM call for USD budgets, from the genai-prices data the collector uses (when it is installed).

``genai_prices.calc_price`` costs ~100 us a call, too much for the agent's thread, so the per-token rates of each
(provider, model) are looked up once and the cost is a few multiplications after that. Tiered prices fall back to
genai-prices' own calculation.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger("agentwatch")

# OTel gen_ai.provider.name values genai-prices does not know by that name (STANDARDS.md 7.1).
PROVIDER_ALIASES = {"x_ai": "x-ai", "xai": "x-ai", "gcp.gen_ai": "google"}

_MTOK = 1_000_000


@dataclass(frozen=True)
class Usage:
    """Token counts of one call; input includes the cached tokens, output includes reasoning (semconv)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


class _Rates:
    __slots__ = ("input", "output", "cache_read", "cache_write", "slow")

    def __init__(self, model_price: object) -> None:
        from decimal import Decimal

        def rate(name: str) -> float | None:
            value = getattr(model_price, name, None)
            if value is None:
                return None
            if isinstance(value, Decimal):
                return float(value) / _MTOK
            raise TypeError(name)  # tiered or unit prices: use the slow path

        self.slow: Callable[[Usage], float] | None = None
        try:
            self.input = rate("input_mtok") or 0.0
            self.output = rate("output_mtok") or 0.0
            read = rate("cache_read_mtok")
            write = rate("cache_write_mtok")
            self.cache_read = self.input if read is None else read
            self.cache_write = self.input if write is None else write
        except TypeError:
            self.input = self.output = self.cache_read = self.cache_write = 0.0
            self.slow = _slow_calculator(model_price)

    def cost(self, usage: Usage) -> float:
        if self.slow is not None:
            return self.slow(usage)
        uncached = max(usage.input_tokens - usage.cache_read_tokens - usage.cache_write_tokens, 0)
        return (
            uncached * self.input
            + usage.cache_read_tokens * self.cache_read
            + usage.cache_write_tokens * self.cache_write
            + usage.output_tokens * self.output
        )


def _slow_calculator(model_price: object) -> Callable[[Usage], float]:
    import genai_prices

    def calc(usage: Usage) -> float:
        price = model_price.calc_price(  # type: ignore[attr-defined]
            genai_prices.Usage(
                input_tokens=usage.input_tokens,
                output_tokens=usage.output_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_write_tokens=usage.cache_write_tokens,
            )
        )
        return float(price["total_price"])

    return calc


class Pricer:
    """Prices calls with cached per-model rates. ``available`` is False when genai-prices is not installed."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rates: dict[tuple[str | None, str], _Rates | None] = {}
        self._snapshot: object | None = None
        self._available: bool | None = None

    @property
    def available(self) -> bool:
        if self._available is None:
            self._load()
        return bool(self._available)

    def warm_up_in_background(self) -> None:
        """Import genai-prices off the agent's thread (it takes ~200 ms), the first time a USD budget is used."""
        if self._available is None:
            threading.Thread(target=self._load, name="agentwatch-pricing", daemon=True).start()

    def _load(self) -> None:
        with self._lock:
            if self._available is not None:
                return
            try:
                from genai_prices import data_snapshot

                self._snapshot = data_snapshot.get_snapshot()
                self._available = True
            except ImportError:
                self._available = False
                logger.warning("agentwatch: USD budgets need the genai-prices package; only other limits act")

    def _lookup(self, provider: str | None, model: str) -> _Rates | None:
        from datetime import UTC, datetime

        snapshot = self._snapshot
        provider_id = PROVIDER_ALIASES.get(provider, provider) if provider else None
        for candidate in dict.fromkeys((provider_id, None)):
            try:
                _, model_info = snapshot.find_provider_model(model, None, candidate, None)  # type: ignore[union-attr]
                return _Rates(model_info.get_prices(datetime.now(tz=UTC)))
            except LookupError:
                continue
        logger.warning("agentwatch: no price for %r (provider %r); its calls count 0 USD", model, provider)
        return None

    def cost(self, provider: str | None, model: str | None, usage: Usage) -> float | None:
        """USD cost of ``usage``, or None when the model has no known price."""
        if not model or not self.available:
            return None
        key = (provider, model)
        try:
            rates = self._rates[key]
        except KeyError:
            with self._lock:
                rates = self._rates[key] = self._lookup(provider, model)
        return None if rates is None else rates.cost(usage)


PRICER = Pricer()
