"""Cost of pricing one LLM span at ingest: agentwatch's cached Pricer against genai-prices' calc_price,
measured in the same run. Run: .venv/bin/python bench/pricing.py"""

from __future__ import annotations

import time

from genai_prices import Usage, calc_price

from agentwatch.collector.pricing import Pricer

CASES = [
    ("anthropic", "claude-sonnet-4-20250514", 1000, 100, 800, 100),
    ("openai", "gpt-4o-mini", 1500, 200, 300, 0),
    ("openai", "gpt-4o", 900, 50, 0, 0),
]


def per_call(fn, n: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> None:
    pricer = Pricer()
    print(f"{'model':32} {'Pricer us':>10} {'calc_price us':>14} {'ratio':>7}")
    for provider, model, i, o, cr, cw in CASES:
        kw = dict(provider=provider, model=model, input_tokens=i, output_tokens=o, cache_read_tokens=cr,
                  cache_write_tokens=cw)  # fmt: skip
        ours = per_call(lambda kw=kw: pricer.price(**kw), 20000)
        usage = Usage(input_tokens=i, output_tokens=o, cache_read_tokens=cr, cache_write_tokens=cw)
        base = per_call(lambda u=usage, m=model, p=provider: calc_price(u, model_ref=m, provider_id=p), 2000)
        print(f"{model:32} {ours:10.2f} {base:14.1f} {base / ours:6.1f}x")


if __name__ == "__main__":
    main()
