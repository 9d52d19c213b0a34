"""A fake LLM API on 127.0.0.1 for tests and the demo: the real ``openai`` and ``anthropic`` clients work against it.

Endpoints:
    POST /v1/chat/completions   OpenAI chat; ``stream: true`` gives SSE chunks, and with
                                ``stream_options: {include_usage: true}`` a final chunk with usage.
    POST /v1/embeddings         OpenAI embeddings (``float`` or ``base64``, 8 dimensions or ``dimensions``).
    POST /v1/responses          OpenAI Responses, non-streaming.
    POST /v1/messages           Anthropic Messages, non-streaming and SSE streaming.
Any API key is accepted; a request without one gets 401.

Deterministic usage (``predict_usage`` computes it for a request):
    input tokens  = 10 + sum(ceil(len(s) / 4)) over every string value, found recursively, in the
                    request's ``messages``, ``system``, ``input`` and ``instructions``.
                    e.g. ``[{"role": "user", "content": "Hello"}]`` -> 10 + 1 ("user") + 2 ("Hello") = 13.
    reply         = "Fake reply to: " + the last user text (first 60 characters);
                    output tokens = ceil(len(reply) / 4).
    tool call     = when the request offers tools (and ``tool_choice`` is not ``none``) and the last
                    message is not a tool result, the reply is a call of the first tool with arguments
                    ``{"input": <last user text, first 60 characters>}``; output tokens =
                    ceil(len(name + arguments) / 4).
    embeddings    have input tokens only.
Input tokens are the total (OTel convention). OpenAI reports ``prompt_tokens`` = total with
``prompt_tokens_details.cached_tokens`` inside it; Anthropic reports ``input_tokens`` = total minus
``cache_read_input_tokens`` minus ``cache_creation_input_tokens`` (as Anthropic's API does).

Per-request control with headers (``extra_headers=`` or a client's ``default_headers=``):
    x-fake-status: 429           answer with this error status (provider-shaped error body)
    x-fake-latency-ms: 250       wait before answering
    x-fake-input-tokens: N       total input tokens (a token bomb: 5000000)
    x-fake-output-tokens: N      visible output tokens
    x-fake-cached-tokens: N      cache-read tokens (part of the input, clamped to it)
    x-fake-cache-write-tokens: N cache-creation tokens (Anthropic only; part of the input)
    x-fake-reasoning-tokens: N   reasoning tokens, added to the output (OpenAI ``reasoning_tokens``)
The same keys without the ``x-fake-`` prefix can be given to ``FakeLLMServer(defaults={...})``.

Usage::

    with FakeLLMServer() as srv:
        client = openai.OpenAI(base_url=srv.openai_base_url, api_key="fake-key")
        anthropic.Anthropic(base_url=srv.url, api_key="fake-key")

    python -m agentwatch.collector.fakellm --port 8900
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import logging
import math
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["FakeLLMServer", "FakeUsage", "RecordedRequest", "main", "predict_usage"]

logger = logging.getLogger(__name__)

CONTROL_KEYS = (
    "status",
    "latency-ms",
    "input-tokens",
    "output-tokens",
    "cached-tokens",
    "cache-write-tokens",
    "reasoning-tokens",
)
_TEXT_FIELDS = ("messages", "system", "input", "instructions")
_REPLY_PREFIX = "Fake reply to: "
_MAX_BODY = 32 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class FakeUsage:
    """What the server will report, in OTel terms (input includes cache; output includes reasoning)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def _tokens(text: str) -> int:
    return math.ceil(len(text) / 4)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)


def _last_user_text(body: Mapping[str, Any]) -> str:
    messages = body.get("messages")
    if messages is None:
        messages = body.get("input")
    if isinstance(messages, str):
        return messages
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, dict) and message.get("role") == "user":
                texts = list(_strings(message.get("content")))
                if texts:
                    return texts[-1]
    return ""


def _is_tool_result(body: Mapping[str, Any]) -> bool:
    messages = body.get("messages") or body.get("input")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return False
    last = messages[-1]
    if last.get("role") == "tool" or last.get("type") == "function_call_output":
        return True
    content = last.get("content")
    return isinstance(content, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in content)


def _tool_call(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """(name, JSON arguments) of the tool call the fake model makes, or None for a text reply."""
    tools = body.get("tools")
    if not isinstance(tools, list) or not tools or body.get("tool_choice") == "none" or _is_tool_result(body):
        return None
    tool = tools[0] if isinstance(tools[0], dict) else {}
    function = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    name = str(function.get("name") or "tool")
    return name, json.dumps({"input": _last_user_text(body)[:60]})


def _reply(body: Mapping[str, Any]) -> str:
    return _REPLY_PREFIX + _last_user_text(body)[:60]


def _int(value: Any, default: int = 0) -> int:
    try:
        return max(0, int(value))
    except (TypeError, ValueError):
        return default


def predict_usage(path: str, body: Mapping[str, Any], headers: Mapping[str, str] | None = None) -> FakeUsage:
    """The usage the server reports for ``body`` posted to ``path`` with these control headers."""
    controls = {k.lower().removeprefix("x-fake-"): v for k, v in (headers or {}).items()}
    n_in = 10 + sum(_tokens(s) for field in _TEXT_FIELDS for s in _strings(body.get(field)))
    n_in = _int(controls.get("input-tokens"), n_in) if "input-tokens" in controls else n_in
    if path.endswith("/embeddings"):
        return FakeUsage(input_tokens=n_in, output_tokens=0)
    call = _tool_call(body)
    n_out = _tokens(call[0] + call[1]) if call else _tokens(_reply(body))
    n_out = _int(controls.get("output-tokens"), n_out) if "output-tokens" in controls else n_out
    reasoning = _int(controls.get("reasoning-tokens"))
    cached = min(_int(controls.get("cached-tokens")), n_in)
    written = min(_int(controls.get("cache-write-tokens")), n_in - cached) if path.endswith("/messages") else 0
    return FakeUsage(n_in, n_out + reasoning, cached, written, reasoning)


# --- response bodies -------------------------------------------------------------------------------


def _openai_usage(u: FakeUsage) -> dict[str, Any]:
    return {
        "prompt_tokens": u.input_tokens,
        "completion_tokens": u.output_tokens,
        "total_tokens": u.input_tokens + u.output_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cache_read_tokens, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": u.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def _anthropic_usage(u: FakeUsage) -> dict[str, Any]:
    return {
        "input_tokens": u.input_tokens - u.cache_read_tokens - u.cache_write_tokens,
        "output_tokens": u.output_tokens,
        "cache_read_input_tokens": u.cache_read_tokens,
        "cache_creation_input_tokens": u.cache_write_tokens,
    }


def _chunks(text: str, n: int = 3) -> list[str]:
    size = max(1, math.ceil(len(text) / n))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        logger.debug("fakellm: " + format, *args)

    def setup(self) -> None:
        super().setup()
        self.server.track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.track(self.connection, add=False)

    # --- plumbing ---

    def _send_json(self, status: int, payload: Any, extra: Mapping[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _start_sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True

    def _sse(self, data: Any, event: str | None = None) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        prefix = f"event: {event}\n" if event else ""
        self.wfile.write(f"{prefix}data: {text}\n\n".encode())
        self.wfile.flush()

    def _error(self, status: int, message: str, anthropic: bool) -> None:
        retry = {"retry-after": "0"} if status in (429, 503) else {}
        if anthropic:
            kind = {
                400: "invalid_request_error",
                401: "authentication_error",
                404: "not_found_error",
                429: "rate_limit_error",
                529: "overloaded_error",
            }.get(status, "api_error")
            self._send_json(status, {"type": "error", "error": {"type": kind, "message": message}}, retry)
        else:
            kind = {
                400: "invalid_request_error",
                401: "invalid_request_error",
                404: "invalid_request_error",
                429: "rate_limit_exceeded",
            }.get(status, "server_error")
            self._send_json(status, {"error": {"message": message, "type": kind, "param": None, "code": kind}}, retry)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path.rstrip("/") in ("", "/healthz"):
            self._send_json(200, {"ok": True})
        else:
            self._error(404, f"no route {self.path}", anthropic=False)

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        path = self.path.split("?", 1)[0].rstrip("/")
        anthropic = path.endswith("/messages")
        length = _int(self.headers.get("Content-Length"))
        if length > _MAX_BODY:
            self.close_connection = True
            return self._error(413, "body too large", anthropic)
        raw = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        try:
            body = json.loads(raw or b"{}")
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
        except ValueError as e:
            return self._error(400, f"invalid JSON body: {e}", anthropic)
        self.server.record(RecordedRequest(path, headers, body))
        controls = dict(self.server.defaults)
        controls.update({k.removeprefix("x-fake-"): v for k, v in headers.items() if k.startswith("x-fake-")})
        if not (headers.get("authorization") or headers.get("x-api-key")):
            return self._error(401, "missing API key", anthropic)
        if delay := _int(controls.get("latency-ms")):
            time.sleep(delay / 1000)
        if status := _int(controls.get("status")):
            return self._error(status, f"fake error {status} (x-fake-status)", anthropic)
        route = {
            "/v1/chat/completions": self._chat,
            "/v1/embeddings": self._embeddings,
            "/v1/responses": self._responses,
            "/v1/messages": self._messages,
        }.get(path)
        if route is None:
            return self._error(404, f"no route {path}", anthropic)
        usage = predict_usage(path, body, controls)
        try:
            route(body, usage)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # --- OpenAI ---

    def _chat(self, body: dict[str, Any], usage: FakeUsage) -> None:
        model = str(body.get("model") or "fake-model")
        ident, created = f"chatcmpl-fake-{self.server.next_id():06d}", int(time.time())
        call = _tool_call(body)
        finish = "tool_calls" if call else "stop"
        call_id = f"call_fake_{self.server.next_id():06d}"
        if not body.get("stream"):
            message: dict[str, Any] = {"role": "assistant", "content": None if call else _reply(body), "refusal": None}
            if call:
                message["tool_calls"] = [
                    {"id": call_id, "type": "function", "function": {"name": call[0], "arguments": call[1]}}
                ]
            return self._send_json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
                    "usage": _openai_usage(usage),
                    "system_fingerprint": "fp_fake",
                },
            )
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            out: dict[str, Any] = {
                "id": ident,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": "fp_fake",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
            }
            if include_usage:
                out["usage"] = None
            return out

        self._start_sse()
        self._sse(chunk({"role": "assistant", "content": "" if not call else None}))
        if call:
            self._sse(
                chunk(
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": call_id,
                                "type": "function",
                                "function": {"name": call[0], "arguments": ""},
                            }
                        ]
                    }
                )
            )
            for piece in _chunks(call[1]):
                self._sse(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        else:
            for piece in _chunks(_reply(body)):
                self._sse(chunk({"content": piece}))
        self._sse(chunk({}, finish))
        if include_usage:
            self._sse(
                {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": _openai_usage(usage),
                }
            )
        self._sse("[DONE]")

    def _embeddings(self, body: dict[str, Any], usage: FakeUsage) -> None:
        inputs = body.get("input")
        items = inputs if isinstance(inputs, list) and inputs and not isinstance(inputs[0], int) else [inputs]
        dims = _int(body.get("dimensions"), 8) or 8
        data = []
        for i, item in enumerate(items):
            seed = sum(map(ord, json.dumps(item)))
            vector = [((seed * (k + 1)) % 1000) / 1000.0 for k in range(dims)]
            if body.get("encoding_format") == "base64":
                encoded: Any = base64.b64encode(struct.pack(f"<{dims}f", *vector)).decode()
            else:
                encoded = vector
            data.append({"object": "embedding", "index": i, "embedding": encoded})
        self._send_json(
            200,
            {
                "object": "list",
                "data": data,
                "model": str(body.get("model") or "fake-embedding"),
                "usage": {"prompt_tokens": usage.input_tokens, "total_tokens": usage.input_tokens},
            },
        )

    def _responses(self, body: dict[str, Any], usage: FakeUsage) -> None:
        if body.get("stream"):
            return self._error(400, "the fake server does not stream the Responses API", anthropic=False)
        call = _tool_call(body)
        n = self.server.next_id()
        if call:
            output: list[dict[str, Any]] = [
                {
                    "type": "function_call",
                    "id": f"fc_fake_{n:06d}",
                    "call_id": f"call_fake_{n:06d}",
                    "name": call[0],
                    "arguments": call[1],
                    "status": "completed",
                }
            ]
        else:
            output = [
                {
                    "type": "message",
                    "id": f"msg_fake_{n:06d}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": _reply(body), "annotations": []}],
                }
            ]
        self._send_json(
            200,
            {
                "id": f"resp_fake_{n:06d}",
                "object": "response",
                "created_at": int(time.time()),
                "status": "completed",
                "model": str(body.get("model") or "fake-model"),
                "output": output,
                "parallel_tool_calls": True,
                "tool_choice": body.get("tool_choice", "auto"),
                "tools": body.get("tools") or [],
                "error": None,
                "incomplete_details": None,
                "instructions": body.get("instructions"),
                "metadata": {},
                "temperature": 1.0,
                "top_p": 1.0,
                "usage": {
                    "input_tokens": usage.input_tokens,
                    "input_tokens_details": {"cached_tokens": usage.cache_read_tokens},
                    "output_tokens": usage.output_tokens,
                    "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
                    "total_tokens": usage.input_tokens + usage.output_tokens,
                },
            },
        )

    # --- Anthropic ---

    def _messages(self, body: dict[str, Any], usage: FakeUsage) -> None:
        model = str(body.get("model") or "fake-model")
        ident = f"msg_fake_{self.server.next_id():06d}"
        call = _tool_call(body)
        tool_id = f"toolu_fake_{self.server.next_id():06d}"
        stop = "tool_use" if call else "end_turn"
        if call:
            block: dict[str, Any] = {"type": "tool_use", "id": tool_id, "name": call[0], "input": json.loads(call[1])}
        else:
            block = {"type": "text", "text": _reply(body)}
        if not body.get("stream"):
            return self._send_json(
                200,
                {
                    "id": ident,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [block],
                    "stop_reason": stop,
                    "stop_sequence": None,
                    "usage": _anthropic_usage(usage),
                },
            )
        self._start_sse()
        start_usage = dict(_anthropic_usage(usage), output_tokens=1)
        self._sse(
            {
                "type": "message_start",
                "message": {
                    "id": ident,
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": start_usage,
                },
            },
            "message_start",
        )
        if call:
            self._sse(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "tool_use", "id": tool_id, "name": call[0], "input": {}},
                },
                "content_block_start",
            )
            for piece in _chunks(call[1]):
                self._sse(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    },
                    "content_block_delta",
                )
        else:
            self._sse(
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            )
            self._sse({"type": "ping"}, "ping")
            for piece in _chunks(block["text"]):
                self._sse(
                    {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}},
                    "content_block_delta",
                )
        self._sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
        self._sse(
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": usage.output_tokens},
            },
            "message_delta",
        )
        self._sse({"type": "message_stop"}, "message_stop")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], defaults: Mapping[str, str]) -> None:
        super().__init__(address, _Handler)
        self.defaults = {k.lower().removeprefix("x-fake-"): str(v) for k, v in defaults.items()}
        self.requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._connections: set[socket.socket] = set()

    def next_id(self) -> int:
        with self._lock:
            return next(self._ids)

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def track(self, conn: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(conn)

    def close_connections(self) -> None:
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class FakeLLMServer:
    """The fake API on a thread; ``with FakeLLMServer() as srv:`` starts it on an ephemeral port.

    Args:
        host: address to bind (loopback by default).
        port: 0 for an ephemeral port.
        defaults: control values applied when a request has no ``x-fake-*`` header for them,
            e.g. ``{"latency-ms": "20"}``.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, defaults: Mapping[str, str] | None = None) -> None:
        self._server = _Server((host, port), defaults or {})
        self._thread: threading.Thread | None = None
        self.host, self.port = self._server.server_address[:2]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:41234``; the Anthropic client's ``base_url``."""
        return f"http://{self.host}:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """``url + "/v1"``, the OpenAI client's ``base_url``."""
        return self.url + "/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far (a copy), in arrival order."""
        with self._server._lock:
            return list(self._server.requests)

    def start(self) -> FakeLLMServer:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="fakellm", daemon=True
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.close_connections()
        self._server.server_close()

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m agentwatch.collector.fakellm", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--latency-ms", type=int, default=0, help="default latency for every request")
    args = parser.parse_args(argv)
    server = FakeLLMServer(host=args.host, port=args.port, defaults={"latency-ms": str(args.latency_ms)})
    logging.basicConfig(level=logging.INFO)
    logger.info("fake LLM API on %s (OpenAI base_url %s)", server.url, server.openai_base_url)
    server.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
