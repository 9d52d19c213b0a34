"""The SDK end to end: an agent instrumented with `agentwatch.init()` (in its own process, as a user runs it),
the real openai client on the fake LLM, into the real collector; what the collector stores and computes."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from harness import KEYS
from otlp_payloads import unique

from agentwatch.collector.fakellm import FakeLLMServer
from agentwatch.collector.pricing import Pricer

AGENT = textwrap.dedent(
    """
    import json, sys
    import openai
    import agentwatch

    endpoint, key, llm_url, service = sys.argv[1:5]
    agentwatch.init(service_name=service, endpoint=endpoint, api_key=key)
    client = openai.OpenAI(base_url=llm_url + "/v1", api_key="fake-key", max_retries=0)

    @agentwatch.tool
    def lookup_order(order_id: str) -> dict:
        return {"order_id": order_id, "status": "shipped"}

    out = {}
    with agentwatch.task("refund_flow", user_id="u-7", conversation_id="conv-1"):
        r = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "refund A-1"}])
        out["usage"] = [r.usage.prompt_tokens, r.usage.completion_tokens]
        agentwatch.decision("route", "refund", options=["refund", "escalate"], confidence=0.9, reasoning="clear ask")
        lookup_order("A-1")
        with agentwatch.llm("my-inhouse-model", provider="acme") as call:
            call.record(input_tokens=40, output_tokens=4)
        agentwatch.escalate("needs approval", summary="refund over limit", actions_taken=["looked up the order"])
    try:
        with agentwatch.task("looping"):
            for _ in range(5):
                lookup_order("same")
    except agentwatch.LoopDetected:
        out["loop_stopped"] = True
    agentwatch.shutdown()
    out["delivery"] = agentwatch.delivery_stats()
    print(json.dumps(out, default=str))
    """
)


@pytest.fixture(scope="module")
def fake_llm():
    with FakeLLMServer() as srv:
        yield srv


def test_sdk_agent_end_to_end(collector, fake_llm, tmp_path):
    service = unique("svc-sdk")
    script = tmp_path / "agent.py"
    script.write_text(AGENT)
    env_clean = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    p = subprocess.run([sys.executable, str(script), collector.url, KEYS["ingest"], fake_llm.url, service],
                       capture_output=True, text=True, timeout=120, env=env_clean)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["loop_stopped"] is True

    tasks = collector.wait_for(
        lambda: (lambda t: t if len(t) == 2 else None)(collector.api("/api/v1/tasks", service=service)["items"]),
        what="two tasks from the SDK",
    )
    by_name = {t["name"]: t for t in tasks}
    refund, looping = by_name["refund_flow"], by_name["looping"]
    assert refund["outcome"] == "escalated" and refund["user_id"] == "u-7" and refund["conversation_id"] == "conv-1"
    assert refund["llm_calls"] == 2 and refund["tool_calls"] == 1 and refund["unpriced_llm_calls"] == 1
    inp, outp = out["usage"]
    expected = Pricer().price(provider="openai", model="gpt-4o-mini", input_tokens=inp, output_tokens=outp)
    assert refund["cost_usd"] == pytest.approx(expected.cost_usd, rel=1e-9)
    assert refund["input_tokens"] == inp + 40
    assert looping["outcome"] == "loop_stopped" and looping["loop"] is True

    trace = collector.trace(refund["trace_id"], spans=5)
    kinds = sorted(s["kind"] for s in trace["spans"])
    assert kinds == ["decision", "llm", "llm", "task", "tool"]
    decision = next(s for s in trace["spans"] if s["kind"] == "decision")
    assert decision["attributes"]["agentwatch.decision.choice"] == "refund"
    assert decision["attributes"]["agentwatch.decision.confidence"] == "0.9"
    tool = next(s for s in trace["spans"] if s["kind"] == "tool")
    assert tool["tool_name"] == "lookup_order" and tool["tool_args_hash"]
    root = next(s for s in trace["spans"] if s["kind"] == "task")
    assert root["attributes"]["agentwatch.escalation.reason"] == "needs approval"
    unpriced = next(s for s in trace["spans"] if s["model"] == "my-inhouse-model")
    assert unpriced["cost_usd"] is None and unpriced["price_source"] == "unpriced"
