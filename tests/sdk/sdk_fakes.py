"""Loopback fakes for the SDK tests: an OpenAI/Anthropic-compatible LLM server and an OTLP/HTTP sink."""

from __future__ import annotations

import gzip
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

REPLY = "Your order ships tomorrow; questions to support@shop.example or +1 415 555 0132."


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


@contextmanager
def serve(handler: type[BaseHTTPRequestHandler], **state: Any) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), handler)
    for key, value in state.items():
        setattr(server, key, value)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class _Quiet(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _body(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        if self.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        return body

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _sse(self, events: list[bytes]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("content-length", str(sum(len(event) for event in events)))
        self.end_headers()
        for event in events:
            self.wfile.write(event)


class FakeLLM(_Quiet):
    """``POST /v1/chat/completions`` (OpenAI) and ``POST /v1/messages`` (Anthropic), streaming or not."""

    server: Any

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        request = json.loads(self._body() or b"{}")
        self.server.requests.append((self.path, request))
        if self.path.endswith("/chat/completions"):
            self._openai(request)
        elif self.path.endswith("/messages"):
            self._anthropic(request)
        else:
            self._send(404, b'{"error": "not found"}', "application/json")

    def _openai(self, request: dict[str, Any]) -> None:
        model = request.get("model", "gpt-4o-mini")
        usage = {
            "prompt_tokens": 120,
            "completion_tokens": 30,
            "total_tokens": 150,
            "prompt_tokens_details": {"cached_tokens": 20},
            "completion_tokens_details": {"reasoning_tokens": 5},
        }
        if not request.get("stream"):
            body = {
                "id": f"chatcmpl-fake{len(self.server.requests)}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY}, "finish_reason": "stop"}],
                "usage": usage,
            }
            self._send(200, json.dumps(body).encode(), "application/json")
            return
        chunks = []
        base = {
            "id": f"chatcmpl-stream{len(self.server.requests)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        for index, word in enumerate(REPLY.split(" ")):
            text = word if index == 0 else " " + word
            chunks.append({**base, "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]})
        chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        if (request.get("stream_options") or {}).get("include_usage"):
            chunks.append({**base, "choices": [], "usage": usage})
        events = [f"data: {json.dumps(chunk)}\n\n".encode() for chunk in chunks] + [b"data: [DONE]\n\n"]
        self._sse(events)

    def _anthropic(self, request: dict[str, Any]) -> None:
        model = request.get("model", "claude-sonnet-4-20250514")
        usage = {
            "input_tokens": 100,
            "output_tokens": 40,
            "cache_read_input_tokens": 50,
            "cache_creation_input_tokens": 10,
        }
        if not request.get("stream"):
            body = {
                "id": f"msg_fake{len(self.server.requests)}",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [{"type": "text", "text": REPLY}],
                "stop_reason": "end_turn",
                "stop_sequence": None,
                "usage": usage,
            }
            self._send(200, json.dumps(body).encode(), "application/json")
            return
        message = {
            "id": f"msg_stream{len(self.server.requests)}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        stream = [
            ("message_start", {"type": "message_start", "message": message}),
            (
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
        ]
        for index, word in enumerate(REPLY.split(" ")):
            text = word if index == 0 else " " + word
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}
            stream.append(("content_block_delta", delta))
        stream += [
            ("content_block_stop", {"type": "content_block_stop", "index": 0}),
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                    "usage": {"output_tokens": 40},
                },
            ),
            ("message_stop", {"type": "message_stop"}),
        ]
        self._sse([f"event: {name}\ndata: {json.dumps(data)}\n\n".encode() for name, data in stream])


class OtlpSink(_Quiet):
    """``POST /v1/traces``: counts spans; ``server.mode`` is ``ok``, ``busy`` (503 + Retry-After) or ``hang``."""

    server: Any

    def do_POST(self) -> None:  # noqa: N802
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
            ExportTraceServiceResponse,
        )

        body = self._body()
        server = self.server
        with server.lock:
            server.requests += 1
            server.headers.append(dict(self.headers))
            attempt = server.requests
        if server.mode == "hang":
            server.release.wait(30)
            return
        if server.mode == "busy" or (server.mode == "busy_once" and attempt == 1):
            self._send(503, b"", "application/x-protobuf", {"retry-after": "0"})
            return
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        spans = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
        with server.lock:
            server.spans.extend(spans)
            server.resources.extend(rs.resource for rs in request.resource_spans)
        self._send(200, ExportTraceServiceResponse().SerializeToString(), "application/x-protobuf")


@contextmanager
def fake_llm() -> Iterator[Any]:
    with serve(FakeLLM, requests=[]) as server:
        yield server


@contextmanager
def otlp_sink(mode: str = "ok") -> Iterator[Any]:
    release = threading.Event()
    with serve(
        OtlpSink, mode=mode, requests=0, spans=[], resources=[], headers=[], lock=threading.Lock(), release=release
    ) as server:
        try:
            yield server
        finally:
            release.set()


def url(server: Any) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"


def wait_for(predicate: Any, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
