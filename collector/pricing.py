"""Cost of one LLM call, at ingest: genai-prices (bundled data, no network) plus a user price file.

Token semantics follow OTel GenAI and genai-prices: ``input_tokens`` is the total input and includes
``cache_read_tokens`` and ``cache_write_tokens``; ``reasoning_tokens`` is a subset of ``output_tokens``.
Each cached token is priced once, at its own rate.

Speed: ``genai_prices.calc_price`` costs ~100 us a call, too slow for every span. A model's price for
a given time (and input-size tier) is an affine function of the five token counts, so the first call
for a (provider, model) finds the model once and derives that function's coefficients by probing
genai-prices' own calculation with a few usages (verified by one more probe; a price that does not fit
the form keeps using genai-prices' calculation). Later calls are a dict lookup and a few
multiplications. Time-conditional prices (start dates, off-peak hours) and tiers are respected.

``Pricer.price`` never raises: bad input is clamped or the call is returned unpriced.
"""

from __future__ import annotations

import bisect
import fnmatch
import logging
import math
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import genai_prices
from genai_prices import Usage, data_snapshot, types

__all__ = ["PRICES_VERSION", "Priced", "PriceFileError", "Pricer", "provider_id_for"]

logger = logging.getLogger(__name__)

PRICES_VERSION: str = genai_prices.__version__
"""Installed genai-prices version; the price data changes only with it."""

UNPRICED = "unpriced"
_GENAI_SOURCE = f"genai-prices {PRICES_VERSION}"
_MAX_MODEL_LEN = 256
_MAX_CACHE = 4096
_NS_PER_DAY = 86_400 * 10**9
_EPOCH = date(1970, 1, 1)
_MTOK = Decimal(1_000_000)

# OTel gen_ai.provider.name, legacy gen_ai.system and OpenInference llm.provider / llm.system values
# -> genai-prices provider ids. Values not listed are passed through lower-cased (openai, anthropic,
# groq, deepseek, cohere, ...); an id genai-prices does not know falls back to auto-detection.
_PROVIDER_ALIASES: dict[str, str] = {
    "x_ai": "x-ai",
    "xai": "x-ai",
    "gcp.gen_ai": "google",
    "gcp.vertex_ai": "google",
    "gcp.gemini": "google",
    "vertex_ai": "google",
    "vertexai": "google",
    "gemini": "google",
    "google": "google",
    "aws.bedrock": "aws",
    "amazon": "aws",
    "bedrock": "aws",
    "aws": "aws",
    "azure.ai.openai": "azure",
    "azure.ai.inference": "azure",
    "az.ai.openai": "azure",
    "az.ai.inference": "azure",
    "azure": "azure",
    "mistral_ai": "mistral",
    "mistralai": "mistral",
    "moonshot_ai": "moonshotai",
    "moonshot": "moonshotai",
    "meta": "meta",
}


def provider_id_for(provider: str | None) -> str | None:
    """The genai-prices provider id for an OTel / OpenInference / OpenLLMetry provider name."""
    if not provider or not isinstance(provider, str):
        return None
    key = provider.strip().lower()
    return _PROVIDER_ALIASES.get(key, key) or None


@dataclass(frozen=True, slots=True)
class Priced:
    """A price: ``cost_usd`` is None when unpriced; ``source`` says where the price came from."""

    cost_usd: float | None
    source: str


_UNPRICED = Priced(None, UNPRICED)


class PriceFileError(ValueError):
    """The user price file is missing, not YAML, or has an invalid entry."""


# --- user price file -----------------------------------------------------------------------------

_PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "cache_read_per_mtok", "cache_write_per_mtok")
_ENTRY_FIELDS = frozenset({"match", "provider", *_PRICE_FIELDS})


@dataclass(frozen=True, slots=True)
class _UserPrice:
    pattern: str
    provider: str | None
    input: Decimal
    output: Decimal
    cache_read: Decimal
    cache_write: Decimal

    def matches(self, provider: str | None, model: str) -> bool:
        if self.provider is not None:
            raw = provider.strip().lower() if isinstance(provider, str) else None
            if self.provider != raw and provider_id_for(self.provider) != provider_id_for(provider):
                return False
        return fnmatch.fnmatchcase(model.lower(), self.pattern)


def _load_price_file(path: Path) -> list[_UserPrice]:
    import yaml

    name = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PriceFileError(f"{name}: cannot read price file: {e.strerror or e}") from e
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PriceFileError(f"{name}: not valid YAML: {e}") from e
    if doc is None:
        return []
    if not isinstance(doc, dict) or set(doc) - {"models"}:
        raise PriceFileError(f"{name}: expected a mapping with a single key 'models'")
    entries = doc.get("models") or []
    if not isinstance(entries, list):
        raise PriceFileError(f"{name}: 'models' must be a list of entries")
    return [_parse_entry(name, i, entry) for i, entry in enumerate(entries)]


def _parse_entry(name: str, i: int, entry: Any) -> _UserPrice:
    where = f"{name}: models[{i}]"
    if not isinstance(entry, dict):
        raise PriceFileError(f"{where}: expected a mapping with 'match', 'input_per_mtok', 'output_per_mtok'")
    unknown = sorted(str(k) for k in set(entry) - _ENTRY_FIELDS)
    if unknown:
        raise PriceFileError(f"{where}.{unknown[0]}: unknown field (allowed: {', '.join(sorted(_ENTRY_FIELDS))})")
    match = entry.get("match")
    if not isinstance(match, str) or not match.strip():
        raise PriceFileError(f"{where}.match: required, a non-empty glob on the model name")
    provider = entry.get("provider")
    if provider is not None and (not isinstance(provider, str) or not provider.strip()):
        raise PriceFileError(f"{where}.provider: must be a non-empty string")
    prices: dict[str, Decimal] = {}
    for field in _PRICE_FIELDS:
        value = entry.get(field)
        if value is None:
            if field in ("input_per_mtok", "output_per_mtok"):
                raise PriceFileError(f"{where}.{field}: required, USD per million tokens")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
            raise PriceFileError(f"{where}.{field}: must be a non-negative number of USD per million tokens")
        prices[field] = Decimal(str(value))
    return _UserPrice(
        pattern=match.strip().lower(),
        provider=provider.strip().lower() if provider else None,
        input=prices["input_per_mtok"] / _MTOK,
        output=prices["output_per_mtok"] / _MTOK,
        cache_read=prices.get("cache_read_per_mtok", prices["input_per_mtok"]) / _MTOK,
        cache_write=prices.get("cache_write_per_mtok", prices["input_per_mtok"]) / _MTOK,
    )


# --- compiled genai-prices price -------------------------------------------------------------------


class _Plan:
    """One ModelPrice as cost = c0 + a_in*in + a_cr*cache_read + a_cw*cache_write + a_out*out + a_rs*reasoning.

    Tiers switch on the total input tokens; ``regions[k]`` holds the coefficients for inputs with
    exactly k tier thresholds below them (None: keep using genai-prices for that region).
    """

    __slots__ = ("model_price", "thresholds", "regions")

    def __init__(self, model_price: types.ModelPrice) -> None:
        self.model_price = model_price
        starts: set[int] = set()
        for value in model_price.__dict__.values():
            if isinstance(value, types.TieredPrices):
                starts.update(t.start for t in value.tiers)
        self.thresholds = sorted(starts)
        self.regions: list[tuple[Decimal, ...] | None] = []
        for k in range(len(self.thresholds) + 1):
            low = self.thresholds[k - 1] + 1 if k else 1
            high = self.thresholds[k] if k < len(self.thresholds) else None
            if high is not None and high - low < 1:  # fewer than two points to probe
                self.regions.append(None)
                continue
            try:
                self.regions.append(self._probe(low))
            except Exception:  # a price genai-prices cannot evaluate on probes: use it directly
                self.regions.append(None)

    def _cost(self, i: int, cr: int = 0, cw: int = 0, o: int = 0, r: int = 0) -> Decimal:
        usage = _usage(i, cr, cw, o, r)
        return self.model_price.calc_price(usage)["total_price"]

    def _probe(self, t: int) -> tuple[Decimal, ...] | None:
        m = 1_000_000
        base1 = self._cost(t)
        a_in = self._cost(t + 1) - base1
        c0 = base1 - a_in * t
        a_cr = (self._cost(t, cr=t) - base1) / t
        a_cw = (self._cost(t, cw=t) - base1) / t
        with_out = self._cost(t, o=m)
        a_out = (with_out - base1) / m
        a_rs = (self._cost(t, o=m, r=m) - with_out) / m
        coeffs = (c0, a_in, a_cr, a_cw, a_out, a_rs)
        # A mixed usage must agree exactly, or the price is not of this form.
        i, cr, cw, o, r = t + 1, 1, 1, 7, 3
        if _affine(coeffs, i, cr, cw, o, r) != self._cost(i, cr, cw, o, r):
            return None
        return coeffs

    def cost(self, i: int, cr: int, cw: int, o: int, r: int) -> Decimal:
        k = bisect.bisect_left(self.thresholds, i) if self.thresholds else 0
        coeffs = self.regions[k]
        if coeffs is None:
            return self._cost(i, cr, cw, o, r)
        return _affine(coeffs, i, cr, cw, o, r)


def _usage(i: int, cr: int, cw: int, o: int, r: int) -> Usage:
    return Usage(
        input_tokens=i, cache_read_tokens=cr, cache_write_tokens=cw, output_tokens=o, output_reasoning_tokens=r
    )


def _affine(c: tuple[Decimal, ...], i: int, cr: int, cw: int, o: int, r: int) -> Decimal:
    return c[0] + c[1] * i + c[2] * cr + c[3] * cw + c[4] * o + c[5] * r


class _Model:
    """A found genai-prices model: picks the ModelPrice for a timestamp and keeps its compiled plan."""

    __slots__ = ("info", "constant", "by_day", "time_of_day", "plans")

    def __init__(self, info: types.ModelInfo) -> None:
        self.info = info
        self.plans: dict[int, _Plan] = {}
        self.constant: _Plan | None = None
        self.by_day: list[tuple[int | None, types.ModelPrice]] | None = None
        self.time_of_day = False
        prices = info.prices
        if isinstance(prices, types.ModelPrice):
            self.constant = _Plan(prices)
        elif all(isinstance(c.constraint, types.StartDateConstraint | None) for c in prices):
            # get_prices: the last active conditional price wins, else the first one.
            self.by_day = [
                (None if c.constraint is None else (c.constraint.start_date - _EPOCH).days, c.prices)
                for c in reversed(prices)
            ]
        else:
            self.time_of_day = True

    def plan_at(self, timestamp_ns: int | None) -> _Plan:
        if self.constant is not None:
            return self.constant
        ts = timestamp_ns if type(timestamp_ns) is int else time.time_ns()
        if self.by_day is not None:
            day = ts // _NS_PER_DAY
            model_price = next((p for start, p in self.by_day if start is None or day >= start), None)
            if model_price is None:
                model_price = self.by_day[-1][1]
        else:
            try:
                when = datetime.fromtimestamp(ts / 1e9, UTC)
            except (OverflowError, OSError, ValueError):
                when = datetime.now(UTC)
            model_price = self.info.get_prices(when)
        plan = self.plans.get(id(model_price))
        if plan is None or plan.model_price is not model_price:
            plan = self.plans[id(model_price)] = _Plan(model_price)
        return plan


# --- the pricer ------------------------------------------------------------------------------------


def _tokens(value: object) -> int:
    """A token count as a non-negative int; anything unusable counts as 0."""
    if type(value) is int:
        return value if value > 0 else 0
    if isinstance(value, bool) or value is None:
        return 0
    try:
        n = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return 0
    return int(n) if math.isfinite(n) and n > 0 else 0


class Pricer:
    """Prices LLM calls; one instance per collector, safe to share between threads.

    Args:
        price_file: optional YAML of custom or negotiated prices, which win over genai-prices.
            Validated here; a bad file raises ``PriceFileError`` naming the file, entry and field.
    """

    def __init__(self, price_file: Path | None = None) -> None:
        self._user: list[_UserPrice] = _load_price_file(Path(price_file)) if price_file is not None else []
        self._user_source = f"user:{Path(price_file).name}" if price_file is not None else ""
        self._cache: dict[tuple[object, object], _Model | _UserPrice | None] = {}
        self._snapshot = data_snapshot.get_snapshot()

    @property
    def version(self) -> str:
        """The genai-prices version whose bundled data prices calls."""
        return PRICES_VERSION

    def price(
        self,
        *,
        provider: str | None,
        model: str | None,
        input_tokens: int,
        output_tokens: int,
        cache_read_tokens: int = 0,
        cache_write_tokens: int = 0,
        reasoning_tokens: int = 0,
        timestamp_ns: int | None = None,
    ) -> Priced:
        """Cost in USD of one call, or ``Priced(None, "unpriced")``. Never raises."""
        try:
            key = (provider, model)
            found = self._cache.get(key, _MISSING)
            if found is _MISSING:
                found = self._resolve(provider, model)
                if len(self._cache) >= _MAX_CACHE:  # unbounded model names must not grow memory
                    self._cache.clear()
                self._cache[key] = found
            if found is None:
                return _UNPRICED
            i = _tokens(input_tokens)
            o = _tokens(output_tokens)
            cr = _tokens(cache_read_tokens)
            cw = _tokens(cache_write_tokens)
            r = _tokens(reasoning_tokens)
            if cr + cw > i:
                # Against the convention: this reporter counted input without the cached tokens
                # (Anthropic's API does). Its total input is the sum.
                i += cr + cw
            if r > o:
                r = o
            if type(found) is _UserPrice:
                cost = (i - cr - cw) * found.input + cr * found.cache_read + cw * found.cache_write
                return Priced(float(cost + o * found.output), self._user_source)
            return Priced(float(found.plan_at(timestamp_ns).cost(i, cr, cw, o, r)), _GENAI_SOURCE)  # type: ignore[union-attr]
        except Exception:
            logger.debug("pricing failed for provider=%r model=%r", provider, model, exc_info=True)
            return _UNPRICED

    def _resolve(self, provider: object, model: object) -> _Model | _UserPrice | None:
        if not isinstance(model, str):
            return None
        name = model.strip()
        if not name or len(name) > _MAX_MODEL_LEN:
            return None
        prov = provider if isinstance(provider, str) else None
        for entry in self._user:
            if entry.matches(prov, name):
                return entry
        info = self._find(provider_id_for(prov), name)
        if info is None and "/" in name:  # "openai/gpt-4o" (OpenRouter, LiteLLM), "models/gemini-..."
            prefix, _, rest = name.partition("/")
            info = self._find(provider_id_for(prefix), rest) or self._find(provider_id_for(prov), rest)
        return _Model(info) if info is not None else None

    def _find(self, provider_id: str | None, model: str) -> types.ModelInfo | None:
        for pid in (provider_id, None) if provider_id else (None,):
            try:
                return self._snapshot.find_provider_model(model, None, pid, None)[1]
            except LookupError:
                continue
        return None


_MISSING: Any = object()
