from __future__ import annotations

import math
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from genai_prices import Usage, calc_price, data_snapshot

from agentwatch.collector.pricing import PRICES_VERSION, Priced, PriceFileError, Pricer, provider_id_for

GENAI = f"genai-prices {PRICES_VERSION}"


def ns(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp()) * 10**9


@pytest.fixture(scope="module")
def pricer() -> Pricer:
    return Pricer()


def test_version_is_the_installed_genai_prices() -> None:
    import genai_prices

    assert PRICES_VERSION == genai_prices.__version__ == Pricer().version


# --- known prices, computed by hand from the genai-prices data --------------------------------------


def test_gpt_4o_mini_with_cached_input_and_dated_name(pricer: Pricer) -> None:
    # gpt-4o-mini: $0.15 in, $0.075 cached in, $0.60 out per MTok; 1000 in of which 400 cached, 200 out.
    expected = (600 * 0.15 + 400 * 0.075 + 200 * 0.60) / 1e6
    for model in ("gpt-4o-mini", "gpt-4o-mini-2024-07-18"):
        got = pricer.price(provider="openai", model=model, input_tokens=1000, output_tokens=200, cache_read_tokens=400)
        assert got.source == GENAI
        assert got.cost_usd == pytest.approx(expected, rel=1e-12)


def test_claude_with_cache_read_and_write(pricer: Pricer) -> None:
    # claude-sonnet-4: $3 in, $0.30 cache read, $3.75 cache write, $15 out per MTok.
    got = pricer.price(
        provider="anthropic",
        model="claude-sonnet-4-20250514",
        input_tokens=1000,
        output_tokens=100,
        cache_read_tokens=800,
        cache_write_tokens=100,
    )
    assert got == Priced((100 * 3 + 800 * 0.30 + 100 * 3.75 + 100 * 15) / 1e6, GENAI)
    assert got.cost_usd == 0.002415


def test_cached_tokens_are_not_counted_twice(pricer: Pricer) -> None:
    def cost(cache_read: int) -> float | None:
        return pricer.price(
            provider="openai", model="gpt-4o-mini", input_tokens=1000, output_tokens=0, cache_read_tokens=cache_read
        ).cost_usd

    assert cost(0) == pytest.approx(1000 * 0.15 / 1e6)
    assert cost(1000) == pytest.approx(1000 * 0.075 / 1e6)  # all cached: only the cached rate


def test_reasoning_tokens_are_part_of_output(pricer: Pricer) -> None:
    # o3 since 2025-06-10: $2 in, $8 out. 1000 in, 500 out of which 300 reasoning = $0.006.
    when = ns(2025, 7, 1)
    with_reasoning = pricer.price(
        provider="openai", model="o3", input_tokens=1000, output_tokens=500, reasoning_tokens=300, timestamp_ns=when
    )
    without = pricer.price(provider="openai", model="o3", input_tokens=1000, output_tokens=500, timestamp_ns=when)
    assert with_reasoning.cost_usd == without.cost_usd == pytest.approx(0.006)


def test_price_follows_the_request_date(pricer: Pricer) -> None:
    # o3 cost $10 / $40 per MTok before 2025-06-10.
    before = pricer.price(
        provider="openai", model="o3", input_tokens=1000, output_tokens=500, timestamp_ns=ns(2025, 6, 9)
    )
    after = pricer.price(
        provider="openai", model="o3", input_tokens=1000, output_tokens=500, timestamp_ns=ns(2025, 6, 10)
    )
    assert before.cost_usd == pytest.approx((1000 * 10 + 500 * 40) / 1e6)
    assert after.cost_usd == pytest.approx((1000 * 2 + 500 * 8) / 1e6)


def test_price_follows_the_time_of_day(pricer: Pricer) -> None:
    # deepseek-chat: $0.27 / $1.10 from 00:30 to 16:30 UTC, half that off-peak.
    def at(hour: int) -> float | None:
        return pricer.price(
            provider="deepseek",
            model="deepseek-chat",
            input_tokens=1000,
            output_tokens=1000,
            timestamp_ns=ns(2025, 3, 1, hour),
        ).cost_usd

    assert at(12) == pytest.approx((0.27 + 1.10) * 1000 / 1e6)
    assert at(20) == pytest.approx((0.135 + 0.55) * 1000 / 1e6)


def test_tiered_price_switches_on_total_input(pricer: Pricer) -> None:
    # gemini-2.5-pro: $1.25 / $10 per MTok up to 200k input tokens, then every token at $2.50 / $15.
    def cost(n: int) -> float | None:
        return pricer.price(
            provider="gcp.vertex_ai", model="gemini-2.5-pro", input_tokens=n, output_tokens=1000
        ).cost_usd

    assert cost(200_000) == pytest.approx((200_000 * 1.25 + 1000 * 10) / 1e6)
    assert cost(200_001) == pytest.approx((200_001 * 2.5 + 1000 * 15) / 1e6)


def test_every_bundled_model_matches_genai_prices() -> None:
    """The compiled fast path equals genai-prices' own calculation for every model in the data."""
    pricer = Pricer()
    rng = random.Random(7)
    when = datetime(2025, 9, 1, 3, 0, tzinfo=UTC)
    when_ns = int(when.timestamp()) * 10**9
    checked = 0
    for provider in data_snapshot.get_snapshot().providers:
        for model in provider.models:
            for n_in in (0, 1234, 250_000):
                cr = rng.randint(0, n_in // 2)
                cw = rng.randint(0, n_in - cr)
                out = rng.randint(0, 4000)
                usage = Usage(input_tokens=n_in, cache_read_tokens=cr, cache_write_tokens=cw, output_tokens=out)
                try:
                    calc = calc_price(usage, model.id, provider_id=provider.id, genai_request_timestamp=when)
                except LookupError:  # an id its own match logic does not accept
                    continue
                got = pricer.price(
                    provider=provider.id,
                    model=model.id,
                    input_tokens=n_in,
                    cache_read_tokens=cr,
                    cache_write_tokens=cw,
                    output_tokens=out,
                    timestamp_ns=when_ns,
                )
                assert got == Priced(float(calc.total_price), GENAI), (provider.id, model.id, n_in, cr, cw, out)
                checked += 1
    assert checked > 5000


# --- providers and model names --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("otel", "expected"),
    [
        ("x_ai", "x-ai"),
        ("xai", "x-ai"),
        ("gcp.gen_ai", "google"),
        ("gcp.vertex_ai", "google"),
        ("gcp.gemini", "google"),
        ("vertexai", "google"),
        ("aws.bedrock", "aws"),
        ("amazon", "aws"),
        ("azure.ai.openai", "azure"),
        ("az.ai.openai", "azure"),
        ("mistral_ai", "mistral"),
        ("mistralai", "mistral"),
        ("OpenAI", "openai"),
        (" anthropic ", "anthropic"),
        (None, None),
        ("", None),
    ],
)
def test_provider_alias(otel: str | None, expected: str | None) -> None:
    assert provider_id_for(otel) == expected


@pytest.mark.parametrize(
    ("provider", "model", "provider_id", "model_ref"),
    [
        ("x_ai", "grok-3", "x-ai", "grok-3"),
        ("gcp.gen_ai", "gemini-1.5-flash", "google", "gemini-1.5-flash"),
        ("gcp.gemini", "gemini-2.5-pro", "google", "gemini-2.5-pro"),
        (
            "aws.bedrock",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
            "aws",
            "anthropic.claude-3-5-sonnet-20240620-v1:0",
        ),
        ("amazon", "us.anthropic.claude-3-5-sonnet-20240620-v1:0", "aws", "anthropic.claude-3-5-sonnet-20240620-v1:0"),
        ("azure.ai.openai", "gpt-4o", "azure", "gpt-4o"),
        ("mistral_ai", "mistral-large-latest", "mistral", "mistral-large-latest"),
        ("mistralai", "mistral-large-latest", "mistral", "mistral-large-latest"),
        # unknown provider, or a provider without the model: the model decides
        ("my-gateway", "gpt-4o-mini", "openai", "gpt-4o-mini"),
        ("openai", "claude-3-5-haiku-20241022", "anthropic", "claude-3-5-haiku-20241022"),
        (None, "claude-3-5-haiku-20241022", "anthropic", "claude-3-5-haiku-20241022"),
        # OpenRouter / LiteLLM style names
        (None, "openai/gpt-4o", "openai", "gpt-4o"),
        ("openrouter", "anthropic/claude-3-5-haiku-20241022", "anthropic", "claude-3-5-haiku-20241022"),
    ],
)
def test_provider_and_model_resolution(
    pricer: Pricer, provider: str | None, model: str, provider_id: str, model_ref: str
) -> None:
    when = datetime(2025, 9, 1, tzinfo=UTC)
    usage = Usage(input_tokens=12_345, cache_read_tokens=2_000, output_tokens=678)
    expected = float(calc_price(usage, model_ref, provider_id=provider_id, genai_request_timestamp=when).total_price)
    got = pricer.price(
        provider=provider,
        model=model,
        input_tokens=12_345,
        cache_read_tokens=2_000,
        output_tokens=678,
        timestamp_ns=int(when.timestamp()) * 10**9,
    )
    assert got == Priced(expected, GENAI)
    assert expected > 0


@pytest.mark.parametrize("model", ["my-own-model", "gpt-99-ultra", None, "", "   ", "x" * 10_000])
def test_unknown_model_is_unpriced_never_zero(pricer: Pricer, model: str | None) -> None:
    assert pricer.price(provider="openai", model=model, input_tokens=100, output_tokens=10) == Priced(None, "unpriced")


# --- bad input never raises -------------------------------------------------------------------------

WEIRD = [None, -5, "abc", "12", float("nan"), float("inf"), -1e300, 1e30, True, [], {}, object()]


@pytest.mark.parametrize("value", WEIRD)
def test_weird_token_values_never_raise(pricer: Pricer, value: object) -> None:
    for field in ("input_tokens", "output_tokens", "cache_read_tokens", "cache_write_tokens", "reasoning_tokens"):
        kwargs: dict = {"input_tokens": 1000, "output_tokens": 100, field: value}
        got = pricer.price(provider="openai", model="gpt-4o-mini", **kwargs)
        assert got.source == GENAI
        assert got.cost_usd is not None and math.isfinite(got.cost_usd) and got.cost_usd >= 0


@pytest.mark.parametrize("value", [123, ["x"], {"a": 1}, "\x00\xff", "*", "gpt-4o-mini\n", "é" * 300, b"gpt-4o"])
def test_weird_provider_model_and_timestamp_never_raise(pricer: Pricer, value: object) -> None:
    for kwargs in ({"provider": value, "model": "gpt-4o-mini"}, {"provider": "openai", "model": value}):
        got = pricer.price(**kwargs, input_tokens=10, output_tokens=1)  # type: ignore[arg-type]
        assert isinstance(got, Priced)
        assert got.cost_usd is None or got.cost_usd > 0
    for ts in (-1, 10**30, -(10**30), "x", value):
        for model in ("gpt-4o-mini", "deepseek-chat", "o3"):
            got = pricer.price(provider=None, model=model, input_tokens=10, output_tokens=1, timestamp_ns=ts)  # type: ignore[arg-type]
            assert got.source == GENAI and got.cost_usd is not None and got.cost_usd > 0


def test_negative_tokens_count_as_zero(pricer: Pricer) -> None:
    def cost(**kw: int) -> float | None:
        return pricer.price(
            provider="openai", model="gpt-4o-mini", **{"input_tokens": 0, "output_tokens": 0, **kw}
        ).cost_usd

    assert cost(input_tokens=-5, output_tokens=1000) == cost(output_tokens=1000) == pytest.approx(0.0006)


def test_cache_larger_than_input_means_input_excluded_the_cache(pricer: Pricer) -> None:
    # Anthropic-style reporting (input without cache): the total input is input + cache.
    def cost(n_in: int, cr: int, cw: int) -> float | None:
        return pricer.price(
            provider="anthropic",
            model="claude-sonnet-4-20250514",
            input_tokens=n_in,
            output_tokens=0,
            cache_read_tokens=cr,
            cache_write_tokens=cw,
        ).cost_usd

    assert cost(100, 800, 100) == cost(1000, 800, 100) == pytest.approx((100 * 3 + 800 * 0.3 + 100 * 3.75) / 1e6)


def test_reasoning_larger_than_output_is_clamped(pricer: Pricer) -> None:
    kw = {"provider": "openai", "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 100}
    assert pricer.price(**kw, reasoning_tokens=10**9) == pricer.price(**kw)


# --- user price file --------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "prices.yaml"
    path.write_text(text)
    return path


def test_user_price_file_wins_and_defaults_cache_to_input(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
models:
  - match: "my-finetune-*"
    input_per_mtok: 2.0
    output_per_mtok: 8.0
    cache_read_per_mtok: 0.2
    cache_write_per_mtok: 2.5
  - match: gpt-4o-mini*
    provider: openai
    input_per_mtok: 1
    output_per_mtok: 2
  - match: "*"
    provider: azure.ai.openai
    input_per_mtok: 5
    output_per_mtok: 5
""",
    )
    pricer = Pricer(path)
    ft = pricer.price(
        provider=None,
        model="My-Finetune-v3",
        input_tokens=1000,
        output_tokens=100,
        cache_read_tokens=500,
        cache_write_tokens=100,
    )
    assert ft == Priced(pytest.approx((400 * 2.0 + 500 * 0.2 + 100 * 2.5 + 100 * 8.0) / 1e6), "user:prices.yaml")
    # overrides genai-prices; cache read defaults to the input price
    mini = pricer.price(
        provider="openai", model="gpt-4o-mini-2024-07-18", input_tokens=1000, output_tokens=1000, cache_read_tokens=600
    )
    assert mini == Priced(pytest.approx((1000 * 1 + 1000 * 2) / 1e6), "user:prices.yaml")
    # provider-scoped entries: another provider keeps the genai-prices price
    assert pricer.price(provider="anthropic", model="gpt-4o-mini", input_tokens=1, output_tokens=1).source == GENAI
    # provider given by its OTel name in the file matches the genai-prices id and the raw name
    for provider in ("azure", "azure.ai.openai", "AZURE.AI.OPENAI"):
        got = pricer.price(provider=provider, model="gpt-4o", input_tokens=1000, output_tokens=0)
        assert got == Priced(pytest.approx(0.005), "user:prices.yaml")
    assert pricer.price(provider="openai", model="nope", input_tokens=1, output_tokens=1) == Priced(None, "unpriced")


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        (
            "models:\n  - match: a\n    input_per_mtok: 1\n    output_per_mtok: 1\n"
            "  - input_per_mtok: 1\n    output_per_mtok: 1\n",
            ["models[1]", "match"],
        ),
        ("models:\n  - match: a\n    input_per_mtok: -1\n    output_per_mtok: 1\n", ["models[0]", "input_per_mtok"]),
        ("models:\n  - match: a\n    input_per_mtok: '2'\n    output_per_mtok: 1\n", ["models[0]", "input_per_mtok"]),
        ("models:\n  - match: a\n    input_per_mtok: true\n    output_per_mtok: 1\n", ["models[0]", "input_per_mtok"]),
        ("models:\n  - match: a\n    input_per_mtok: .nan\n    output_per_mtok: 1\n", ["models[0]", "input_per_mtok"]),
        ("models:\n  - match: a\n    input_per_mtok: 1\n", ["models[0]", "output_per_mtok"]),
        (
            "models:\n  - match: a\n    input_per_mtok: 1\n    output_per_mtok: 1\n    cache_read_per_mtok: x\n",
            ["models[0]", "cache_read_per_mtok"],
        ),
        (
            "models:\n  - match: a\n    input_per_mtok: 1\n    output_per_mtok: 1\n    input_per_mtoken: 1\n",
            ["models[0]", "input_per_mtoken", "unknown"],
        ),
        (
            "models:\n  - match: a\n    provider: 3\n    input_per_mtok: 1\n    output_per_mtok: 1\n",
            ["models[0]", "provider"],
        ),
        ("models:\n  - match: ''\n    input_per_mtok: 1\n    output_per_mtok: 1\n", ["models[0]", "match"]),
        ("models:\n  - just-a-string\n", ["models[0]"]),
        ("models: {a: 1}\n", ["models", "list"]),
        ("- match: a\n", ["models"]),
        ("models: [\n", ["YAML"]),
    ],
)
def test_price_file_errors_name_file_entry_and_field(tmp_path: Path, text: str, needles: list[str]) -> None:
    with pytest.raises(PriceFileError) as e:
        Pricer(write(tmp_path, text))
    assert isinstance(e.value, ValueError)
    for needle in [str(tmp_path / "prices.yaml"), *needles]:
        assert needle in str(e.value)


def test_missing_price_file(tmp_path: Path) -> None:
    with pytest.raises(PriceFileError, match="nope.yaml"):
        Pricer(tmp_path / "nope.yaml")


def test_empty_price_file_is_fine(tmp_path: Path) -> None:
    pricer = Pricer(write(tmp_path, ""))
    assert pricer.price(provider="openai", model="gpt-4o-mini", input_tokens=1, output_tokens=0).source == GENAI
