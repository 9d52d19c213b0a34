"""``agentwatch demo``: a fleet of realistic agents, instrumented with the agentwatch SDK and the real openai and
anthropic clients, talking to a built-in fake LLM server (no API key needed).

- support-bot (openai gpt-4o-mini): routes tickets with a decision, looks orders up (the order service fails
  sometimes), escalates to a human now and then, and sometimes retries a failing lookup with the same
  arguments until the loop breaker stops it.
- research-agent (anthropic claude): searches and reads pages under a budget; now and then a page is a token
  bomb and the budget stops the run; sometimes it loops on the same search (no breaker: the collector sees it).
- billing-agent (openai gpt-4o): invoices and charges through a flaky, sometimes slow payment gateway behind a
  circuit breaker; after ``--drift-after`` tasks it switches to a cheaper model and takes more steps (a drift).

Each agent runs in its own process (its own ``service.name``). ``--rate`` tasks per second in all, ``--tasks N``
for a bounded run; a progress line every 10 seconds.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import time
from typing import Any

AGENTS = ("support-bot", "research-agent", "billing-agent")
QUESTIONS = [
    "Where is my order {oid}?",
    "I was charged twice for order {oid}, please refund.",
    "Can I change the delivery address of {oid}?",
    "My package {oid} arrived damaged.",
]
LOOKUP_TOOL = {
    "type": "function",
    "function": {
        "name": "lookup_order",
        "description": "Look an order up by id",
        "parameters": {"type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]},
    },
}
C_TASKS, C_ERRORS, C_STOPPED, C_ESCALATED = range(4)


class ServiceDown(RuntimeError):
    """A dependency of a tool failed (demo)."""


# --- the agents -------------------------------------------------------------------------------------
def support_bot(rng: random.Random, n: int, clients: dict[str, Any], drift: bool) -> str:
    import agentwatch

    oa = clients["openai"]
    oid = f"A-{rng.randint(1000, 9999)}"
    question = rng.choice(QUESTIONS).format(oid=oid)
    looping = n % 17 == 3  # the order service is down for this one and the agent keeps retrying

    @agentwatch.tool("lookup_order")
    def lookup_order(order_id: str) -> dict:
        if looping or rng.random() < 0.08:
            raise ServiceDown("order service timed out")
        return {"order_id": order_id, "status": rng.choice(["shipped", "processing", "delivered"])}

    with agentwatch.task("answer_ticket", user_id=f"u-{rng.randint(1, 40)}", conversation_id=f"c-{n}",
                         loop=agentwatch.LoopGuard(threshold=3)):  # fmt: skip
        messages = [{"role": "system", "content": "You are a support agent."}, {"role": "user", "content": question}]
        oa.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=[LOOKUP_TOOL])
        route = "refund" if "refund" in question else ("escalate" if "damaged" in question else "lookup")
        confidence = round(rng.uniform(0.55, 0.98), 2)
        agentwatch.decision("route_ticket", route, options=["lookup", "refund", "escalate"], confidence=confidence,
                            reasoning=f"keywords in: {question[:40]}")  # fmt: skip
        for _ in range(6 if looping else 2):
            try:
                lookup_order(oid)
                break
            except ServiceDown:
                continue
        if route == "escalate" and rng.random() < 0.5:
            agentwatch.escalate("damaged goods need a human", summary=question,
                                actions_taken=["looked the order up", "checked the refund policy"])  # fmt: skip
            return "escalated"
        oa.chat.completions.create(model="gpt-4o-mini", messages=[*messages, {"role": "assistant", "content": "ok"}])
    return "ok"


def research_agent(rng: random.Random, n: int, clients: dict[str, Any], drift: bool) -> str:
    import agentwatch

    an = clients["anthropic"]
    topic = rng.choice(["vector databases", "agent evaluation", "LLM caching", "prompt injection"])
    bomb = n % 13 == 5
    looping = n % 11 == 7

    @agentwatch.tool("web_search")
    def web_search(query: str) -> list[str]:
        if looping:
            return []  # nothing found: the agent searches the same thing again
        return [f"https://example.org/{topic.replace(' ', '-')}/{i}" for i in range(3)]

    @agentwatch.tool("fetch_page")
    def fetch_page(url: str) -> str:
        return f"<article about {topic}>" * 20

    with agentwatch.task("research", session_id=f"s-{n // 5}", budget=agentwatch.Budget(usd=0.05, llm_calls=8),
                         loop=False):  # fmt: skip
        for _ in range(5 if looping else 1):
            found = web_search(topic)
            if found:
                break
        for url in found[:2]:
            page = fetch_page(url)
            headers = {"x-fake-input-tokens": "60000"} if bomb else {"x-fake-cached-tokens": "200"}
            an.messages.create(model="claude-3-5-haiku-20241022", max_tokens=300, extra_headers=headers,
                               messages=[{"role": "user", "content": f"Summarise: {page[:400]}"}])  # fmt: skip
        an.messages.create(model="claude-3-5-haiku-20241022", max_tokens=300,
                           messages=[{"role": "user", "content": f"Write a brief on {topic}"}])  # fmt: skip
    return "ok"


def billing_agent(rng: random.Random, n: int, clients: dict[str, Any], drift: bool) -> str:
    import agentwatch

    oa = clients["openai"]
    model = "gpt-4o-mini" if drift else "gpt-4o"
    slow = rng.random() < 0.05

    @agentwatch.tool("get_invoice", circuit=agentwatch.CircuitBreaker(failures=3, cooldown_s=20))
    def get_invoice(customer: str) -> dict:
        return {"customer": customer, "amount": round(rng.uniform(10, 500), 2)}

    @agentwatch.tool("charge_card", circuit=agentwatch.CircuitBreaker(failures=3, cooldown_s=20))
    def charge_card(customer: str, amount: float) -> str:
        if rng.random() < 0.12:
            raise ServiceDown("payment gateway 502")
        return "charged"

    customer = f"cus_{rng.randint(100, 999)}"
    with agentwatch.task("monthly_billing", user_id=customer):
        headers = {"x-fake-latency-ms": "1800"} if slow else {}
        steps = 3 if drift else 1
        for _ in range(steps):
            ask = [{"role": "user", "content": f"Prepare the invoice of {customer}"}]
            oa.chat.completions.create(model=model, extra_headers=headers, messages=ask)
        invoice = get_invoice(customer)
        charge_card(customer, invoice["amount"])
    return "ok"


RUNNERS = {"support-bot": support_bot, "research-agent": research_agent, "billing-agent": billing_agent}


# --- processes ---------------------------------------------------------------------------------------
def _worker(agent: str, llm_url: str, endpoint: str, key: str, tasks: int | None, interval: float, seed: int,
            drift_after: int, counters, stop) -> None:  # fmt: skip
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us (through `stop`), so spans get flushed
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    import anthropic
    import openai

    import agentwatch

    agentwatch.init(service_name=agent, endpoint=endpoint, api_key=key)
    clients = {
        "openai": openai.OpenAI(base_url=llm_url + "/v1", api_key="demo-key-not-real", max_retries=0),
        "anthropic": anthropic.Anthropic(base_url=llm_url, api_key="demo-key-not-real", max_retries=0),
    }
    rng = random.Random(f"{seed}-{agent}")
    run = RUNNERS[agent]
    n = 0
    parent = os.getppid()
    try:
        # also stop when the demo process is gone (killed): a worker never outlives its fleet
        while not stop.is_set() and (tasks is None or n < tasks) and os.getppid() == parent:
            try:
                outcome = run(rng, n, clients, n >= drift_after)
            except (agentwatch.LoopDetected, agentwatch.BudgetExceeded, agentwatch.CircuitOpen):
                outcome = "stopped"
            except Exception:  # noqa: BLE001 - a failing task is part of the show
                outcome = "error"
            idx = {"error": C_ERRORS, "stopped": C_STOPPED, "escalated": C_ESCALATED}.get(outcome)
            with counters.get_lock():
                counters[C_TASKS] += 1
                if idx is not None:
                    counters[idx] += 1
            n += 1
            stop.wait(interval * rng.uniform(0.5, 1.5))
    finally:
        agentwatch.shutdown()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="agentwatch demo", description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", default=os.environ.get("AGENTWATCH_ENDPOINT", "http://127.0.0.1:4318"))
    p.add_argument("--api-key", default=os.environ.get("AGENTWATCH_API_KEY"), help="ingest key")
    p.add_argument("--tasks", type=int, help="tasks per agent, then stop (default: run until Ctrl-C)")
    p.add_argument("--rate", type=float, default=1.0, help="tasks per second across the fleet (default 1)")
    p.add_argument("--drift-after", type=int, default=60, help="billing-agent changes model after N tasks")
    p.add_argument("--seed", type=int, default=7)
    args = p.parse_args(argv)
    if not args.api_key:
        print("agentwatch demo: no ingest key: pass --api-key or set AGENTWATCH_API_KEY", file=sys.stderr)
        return 2
    if args.rate <= 0 or (args.tasks is not None and args.tasks < 1):
        print("agentwatch demo: --rate must be > 0 and --tasks >= 1", file=sys.stderr)
        return 2
    from agentwatch.collector.fakellm import FakeLLMServer

    ctx = mp.get_context("spawn")
    counters = ctx.Array("q", 4)
    stop = ctx.Event()

    stopping = [False]

    def on_term(signum, frame):  # noqa: ARG001 - a supervisor's SIGTERM stops the fleet like Ctrl-C
        # Ctrl-C reaches the whole process group and the supervisor's SIGTERM follows: stop on the first signal
        # only. A second KeyboardInterrupt inside ``stop.set()`` would leave the event's shared lock held, and the
        # workers blocked on it for ever.
        if not stopping[0]:
            stopping[0] = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    interval = len(AGENTS) / args.rate
    with FakeLLMServer() as llm:
        procs = [
            ctx.Process(
                target=_worker,
                name=agent,
                daemon=True,
                args=(
                    agent,
                    llm.url,
                    args.endpoint,
                    args.api_key,
                    args.tasks,
                    interval,
                    args.seed,
                    args.drift_after,
                    counters,
                    stop,
                ),
            )  # fmt: skip
            for agent in AGENTS
        ]
        for pr in procs:
            pr.start()
        print(f"agentwatch demo: {len(AGENTS)} agents -> {args.endpoint} (fake LLM at {llm.url})", flush=True)
        last = time.monotonic()
        try:
            while any(pr.is_alive() for pr in procs):
                time.sleep(0.5)
                if time.monotonic() - last >= 10:
                    last = time.monotonic()
                    print("agentwatch demo: " + _progress(counters), flush=True)
        except KeyboardInterrupt:
            pass
        finally:
            stopping[0] = True  # from here on, further signals are ignored: the fleet is stopping
            stop.set()  # workers finish their task and flush their spans
            for pr in procs:
                pr.join(15)
            for pr in procs:
                if pr.is_alive():
                    pr.terminate()
                    pr.join(5)
    print("agentwatch demo: done, " + _progress(counters), flush=True)
    print(json.dumps({"tasks": counters[C_TASKS], "errors": counters[C_ERRORS], "stopped": counters[C_STOPPED],
                      "escalated": counters[C_ESCALATED]}), flush=True)  # fmt: skip
    return 0


def _progress(c) -> str:
    return f"{c[C_TASKS]} tasks ({c[C_ERRORS]} errors, {c[C_STOPPED]} stopped by guards, {c[C_ESCALATED]} escalated)"


if __name__ == "__main__":
    sys.exit(main())
