from __future__ import annotations

import base64
import json
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import anthropic
import openai
import pytest

from agentwatch.collector.fakellm import FakeLLMServer, FakeUsage, predict_usage

KEY = "fake-key-not-real"
HELLO = [{"role": "user", "content": "Hello"}]  # 10 + "user" 1 + "Hello" 2 = 13 input tokens
REPLY = "Fake reply to: Hello"  # 20 characters = 5 output tokens
OAI_TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"input": {"type": "string"}}},
        },
    }
]
ANT_TOOLS = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"input": {"type": "string"}}}}]
CLAUDE = "claude-haiku-4-5"


@pytest.fixture(scope="module")
def srv() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as server:
        yield server


@pytest.fixture
def oai(srv: FakeLLMServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=srv.openai_base_url, api_key=KEY, max_retries=0) as client:
        yield client


@pytest.fixture
def ant(srv: FakeLLMServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=srv.url, api_key=KEY, max_retries=0) as client:
        yield client


# --- OpenAI -----------------------------------------------------------------------------------------


def test_openai_chat_usage_is_deterministic(oai: openai.OpenAI, srv: FakeLLMServer) -> None:
    r = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
    assert r.choices[0].message.content == REPLY
    assert r.choices[0].finish_reason == "stop"
    assert r.model == "gpt-4o-mini"
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (13, 5, 18)
    assert r.usage.prompt_tokens_details.cached_tokens == 0
    assert r.usage.completion_tokens_details.reasoning_tokens == 0
    last = srv.requests[-1]
    assert last.path == "/v1/chat/completions" and last.body["messages"] == HELLO
    assert predict_usage(last.path, last.body, last.headers) == FakeUsage(13, 5)


def test_openai_cached_reasoning_and_token_bomb_headers(oai: openai.OpenAI) -> None:
    headers = {"x-fake-cached-tokens": "8", "x-fake-reasoning-tokens": "100"}
    r = oai.chat.completions.create(model="o3", messages=HELLO, extra_headers=headers)
    assert r.usage.prompt_tokens == 13 and r.usage.prompt_tokens_details.cached_tokens == 8
    assert r.usage.completion_tokens == 105 and r.usage.completion_tokens_details.reasoning_tokens == 100
    bomb = {"x-fake-input-tokens": "5000000", "x-fake-output-tokens": "7", "x-fake-cached-tokens": "9999999"}
    r = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_headers=bomb)
    assert (r.usage.prompt_tokens, r.usage.completion_tokens) == (5_000_000, 7)
    assert r.usage.prompt_tokens_details.cached_tokens == 5_000_000  # clamped to the input


def test_openai_stream_with_usage_chunk(oai: openai.OpenAI) -> None:
    chunks = list(
        oai.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.prompt_tokens == 13
    assert chunks[-1].usage.completion_tokens == 5
    assert all(c.usage is None for c in chunks[:-1])
    plain = list(oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO, stream=True))
    assert all(c.usage is None and c.choices for c in plain)


def test_openai_tool_call_then_answer(oai: openai.OpenAI) -> None:
    messages: list = [{"role": "user", "content": "Weather in Paris?"}]
    r = oai.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=OAI_TOOLS)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"input": "Weather in Paris?"}
    assert r.usage.completion_tokens == len("get_weather" + call.function.arguments) // 4 + 1
    messages += [
        r.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "rainy"},
    ]
    r2 = oai.chat.completions.create(model="gpt-4o-mini", messages=messages, tools=OAI_TOOLS)
    assert r2.choices[0].finish_reason == "stop" and r2.choices[0].message.tool_calls is None
    assert r2.choices[0].message.content == "Fake reply to: Weather in Paris?"
    none = oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO, tools=OAI_TOOLS, tool_choice="none")
    assert none.choices[0].message.content == REPLY


def test_openai_streamed_tool_call(oai: openai.OpenAI) -> None:
    stream = oai.chat.completions.create(
        model="gpt-4o-mini", messages=HELLO, tools=OAI_TOOLS, stream=True, stream_options={"include_usage": True}
    )
    args, names, finish = "", [], None
    for chunk in stream:
        for choice in chunk.choices:
            finish = choice.finish_reason or finish
            for tc in choice.delta.tool_calls or []:
                args += tc.function.arguments or ""
                names += [tc.function.name] if tc.function.name else []
    assert names == ["get_weather"] and json.loads(args) == {"input": "Hello"} and finish == "tool_calls"


def test_openai_embeddings_float_and_base64(oai: openai.OpenAI, srv: FakeLLMServer) -> None:
    r = oai.embeddings.create(model="text-embedding-3-small", input=["a", "bb"])  # the client asks for base64
    assert srv.requests[-1].body["encoding_format"] == "base64"
    assert [len(d.embedding) for d in r.data] == [8, 8] and r.usage.prompt_tokens == 12
    floats = oai.embeddings.create(model="text-embedding-3-small", input="a", encoding_format="float", dimensions=4)
    assert len(floats.data[0].embedding) == 4
    assert floats.data[0].embedding == pytest.approx(r.data[0].embedding[:4])
    assert r.data[0].embedding != r.data[1].embedding


def test_openai_responses(oai: openai.OpenAI) -> None:
    r = oai.responses.create(model="gpt-4o-mini", input="Hello there", extra_headers={"x-fake-cached-tokens": "3"})
    assert r.output_text == "Fake reply to: Hello there"
    assert (r.usage.input_tokens, r.usage.output_tokens) == (13, 7)
    assert r.usage.input_tokens_details.cached_tokens == 3
    tools = [{"type": "function", "name": "lookup", "parameters": {"type": "object", "properties": {}}}]
    call = oai.responses.create(model="gpt-4o-mini", input="Hi", tools=tools)
    assert call.output[0].type == "function_call" and call.output[0].name == "lookup"


@pytest.mark.parametrize(("status", "error"), [(429, openai.RateLimitError), (500, openai.InternalServerError)])
def test_openai_forced_errors(oai: openai.OpenAI, status: int, error: type[Exception]) -> None:
    with pytest.raises(error) as e:
        oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_headers={"x-fake-status": str(status)})
    assert e.value.status_code == status  # type: ignore[attr-defined]


def test_latency_header(oai: openai.OpenAI) -> None:
    start = time.monotonic()
    oai.chat.completions.create(model="gpt-4o-mini", messages=HELLO, extra_headers={"x-fake-latency-ms": "200"})
    assert time.monotonic() - start >= 0.2


async def test_openai_async_stream(srv: FakeLLMServer) -> None:
    async with openai.AsyncOpenAI(base_url=srv.openai_base_url, api_key=KEY, max_retries=0) as client:
        r = await client.chat.completions.create(model="gpt-4o-mini", messages=HELLO)
        assert r.usage.prompt_tokens == 13
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=HELLO, stream=True, stream_options={"include_usage": True}
        )
        chunks = [c async for c in stream]
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
        assert chunks[-1].usage.completion_tokens == 5


# --- Anthropic --------------------------------------------------------------------------------------


def test_anthropic_usage_excludes_cache_from_input_tokens(ant: anthropic.Anthropic) -> None:
    headers = {"x-fake-cached-tokens": "5", "x-fake-cache-write-tokens": "3"}
    m = ant.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO, extra_headers=headers)
    assert m.content[0].text == REPLY and m.stop_reason == "end_turn" and m.model == CLAUDE
    assert (m.usage.input_tokens, m.usage.cache_read_input_tokens, m.usage.cache_creation_input_tokens) == (5, 5, 3)
    assert m.usage.output_tokens == 5


def test_anthropic_system_counts_as_input(ant: anthropic.Anthropic) -> None:
    m = ant.messages.create(model=CLAUDE, max_tokens=64, system="Be brief.", messages=HELLO)
    assert m.usage.input_tokens == 13 + 3


def test_anthropic_stream(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model=CLAUDE, max_tokens=64, messages=HELLO) as stream:
        assert "".join(stream.text_stream) == REPLY
        final = stream.get_final_message()
    assert final.usage.input_tokens == 13 and final.usage.output_tokens == 5 and final.stop_reason == "end_turn"
    raw = list(ant.messages.create(model=CLAUDE, max_tokens=64, messages=HELLO, stream=True))
    assert [e.type for e in raw][:2] == ["message_start", "content_block_start"]
    assert [e.type for e in raw][-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_anthropic_tool_use_then_answer(ant: anthropic.Anthropic) -> None:
    with ant.messages.stream(model=CLAUDE, max_tokens=64, messages=HELLO, tools=ANT_TOOLS) as stream:
        final = stream.get_final_message()
    block = final.content[0]
    assert final.stop_reason == "tool_use" and block.type == "tool_use" and block.input == {"input": "Hello"}
    messages = [
        *HELLO,
        {"role": "assistant", "content": [block.model_dump(exclude_none=True)]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": block.id, "content": "rainy"}]},
    ]
    m = ant.messages.create(model=CLAUDE, max_tokens=64, messages=messages, tools=ANT_TOOLS)
    assert m.stop_reason == "end_turn" and m.content[0].type == "text"


@pytest.mark.parametrize(
    ("status", "error"), [(429, anthropic.RateLimitError), (500, anthropic.InternalServerError), (529, None)]
)
def test_anthropic_forced_errors(ant: anthropic.Anthropic, status: int, error: type[Exception] | None) -> None:
    with pytest.raises(error or anthropic.APIStatusError) as e:
        ant.messages.create(model=CLAUDE, max_tokens=8, messages=HELLO, extra_headers={"x-fake-status": str(status)})
    assert e.value.status_code == status  # type: ignore[attr-defined]


async def test_anthropic_async_stream(srv: FakeLLMServer) -> None:
    async with anthropic.AsyncAnthropic(base_url=srv.url, api_key=KEY, max_retries=0) as client:
        async with client.messages.stream(model=CLAUDE, max_tokens=64, messages=HELLO) as stream:
            text = "".join([t async for t in stream.text_stream])
            final = await stream.get_final_message()
    assert text == REPLY and final.usage.output_tokens == 5


# --- the server itself ------------------------------------------------------------------------------


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_bad_requests(srv: FakeLLMServer) -> None:
    auth = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
    status, body = post(srv.openai_base_url + "/chat/completions", json.dumps({"messages": HELLO}).encode(), {})
    assert status == 401 and "API key" in body["error"]["message"]
    assert post(srv.openai_base_url + "/chat/completions", b"{nope", auth)[0] == 400
    status, body = post(srv.url + "/v1/messages", b"[]", auth)
    assert status == 400 and body["type"] == "error"
    assert post(srv.url + "/v1/nothing", b"{}", auth)[0] == 404


def test_defaults_and_predict_usage() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "x" * 41}]}
    assert predict_usage("/v1/chat/completions", body) == FakeUsage(10 + 1 + 11, 14)
    assert predict_usage("/v1/messages", body, {"x-fake-cache-write-tokens": "4"}).cache_write_tokens == 4
    assert predict_usage("/v1/chat/completions", body, {"x-fake-cache-write-tokens": "4"}).cache_write_tokens == 0
    with FakeLLMServer(defaults={"output-tokens": "42"}) as server:
        with openai.OpenAI(base_url=server.openai_base_url, api_key=KEY, max_retries=0) as client:
            r = client.chat.completions.create(model="m", messages=HELLO)
            assert r.usage.completion_tokens == 42
            r = client.chat.completions.create(model="m", messages=HELLO, extra_headers={"x-fake-output-tokens": "1"})
            assert r.usage.completion_tokens == 1
        port = server.port
    with pytest.raises(OSError):  # stopped: nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_embedding_vector_bytes_are_float32() -> None:
    with FakeLLMServer() as server:
        body = json.dumps({"model": "e", "input": "a", "encoding_format": "base64", "dimensions": 2}).encode()
        status, out = post(server.openai_base_url + "/embeddings", body, {"Authorization": "Bearer k"})
    assert status == 200
    assert len(struct.unpack("<2f", base64.b64decode(out["data"][0]["embedding"]))) == 2


def test_runs_standalone() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "agentwatch.collector.fakellm", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1) as r:
                    assert json.loads(r.read()) == {"ok": True}
                    break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        with openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=0) as client:
            assert client.chat.completions.create(model="m", messages=HELLO).usage.prompt_tokens == 13
    finally:
        proc.terminate()
        proc.wait(timeout=10)
