"""The README's examples work: the rules file validates, the price file loads, the curl example's span is
accepted and priced."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

from agentwatch.alerts.config import parse
from agentwatch.collector.pricing import Pricer

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def _yaml_blocks() -> list[str]:
    return re.findall(r"```yaml\n(.*?)```", README, re.S)


def test_readme_rules_example_validates():
    block = next(b for b in _yaml_blocks() if "rules:" in b)
    env = {"AGENTWATCH_SLACK_WEBHOOK_URL": "http://127.0.0.1:9/hook", "AGENTWATCH_PAGERDUTY_ROUTING_KEY": "k"}
    cfg = parse(yaml.safe_load(block), source="README", env=env)
    assert [r.name for r in cfg.rules] == ["agent-loop", "llm-p95-latency"]


def test_readme_price_file_example_loads(tmp_path):
    block = next(b for b in _yaml_blocks() if "match:" in b)
    f = tmp_path / "prices.yaml"
    f.write_text(block)
    got = Pricer(price_file=f).price(provider=None, model="my-finetune-v2", input_tokens=1_000_000, output_tokens=0)
    assert got.cost_usd == 2.0 and got.source == "user:prices.yaml"


def test_readme_curl_example_is_accepted_and_priced(collector):
    from harness import KEYS

    block = re.search(r"```sh\nKEY=.*?```", README, re.S).group(0)
    curl = block[block.index("curl -s http://127.0.0.1:4318/v1/traces"):block.index("curl -s \"http://127.0.0.1:4318/api")]
    script = curl.replace("http://127.0.0.1:4318", collector.url)
    r = subprocess.run(["bash", "-c", f"KEY={KEYS['ingest']}\n{script}"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    trace = collector.trace("5b8efff798038103d269b633813fc60c", spans=1)
    span = trace["spans"][0]
    got = (span["kind"], span["model"], span["input_tokens"], span["output_tokens"])
    assert got == ("llm", "gpt-4o-mini", 1200, 80)
    assert span["cost_usd"] == Pricer().price(provider="openai", model="gpt-4o-mini", input_tokens=1200,
                                              output_tokens=80).cost_usd  # fmt: skip
