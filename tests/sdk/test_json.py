"""The JSON the SDK puts on spans: the reused encoder writes what ``json.dumps`` would, circular values included."""

from __future__ import annotations

import dataclasses
import json
import threading
from typing import Any

import pytest

from agentwatch import _json


@dataclasses.dataclass
class _Point:
    x: int
    y: float


VALUES: list[Any] = [
    {"order_id": "48213", "include_events": True, "step": 1},
    [{"role": "user", "parts": [{"type": "text", "content": 'héllo "quoted"\n\u2028 \U0001f600'}]}],
    {"z": [1.5, -0.0, 1e300, float("inf"), float("nan")], "a": None, "m": {"b": 2, "a": [3, {"c": ()}]}},
    {"when": {3, 1, 2}, "blob": b"\x00\x01", "point": _Point(1, 2.5), "span": range(3), "obj": object()},
    "a plain string",
    12345678901234567890,
    [],
    {},
]


def _reference(value: Any, *, sort_keys: bool) -> str:
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, default=_json._default)


@pytest.mark.parametrize("value", VALUES)
def test_same_json_as_the_standard_encoder(value: Any) -> None:
    assert _json.to_json(value, 1_000_000) == _reference(value, sort_keys=False)
    assert _json.canonical_json(value) == _reference(value, sort_keys=True)


def test_circular_and_unsortable_values_fall_back_to_their_repr() -> None:
    circular: list[Any] = [1]
    circular.append(circular)
    nested: dict[str, Any] = {"a": {}}
    nested["a"]["self"] = nested
    for value in (circular, nested):
        assert _json.to_json(value, 1000) == json.dumps(repr(value), ensure_ascii=False)
        assert _json.canonical_json(value) == json.dumps(repr(value), ensure_ascii=False)
    mixed_keys = {1: "a", "b": 2}
    assert _json.canonical_json(mixed_keys) == json.dumps(repr(mixed_keys))
    assert json.loads(_json.to_json(mixed_keys, 1000)) == {"1": "a", "b": 2}


def test_threads_encoding_the_same_objects_at_once() -> None:
    # The encoder is shared and keeps no state: threads that encode the same history at once must not see each
    # other's containers (a shared circular-reference check would call that a circular reference).
    history = [{"role": "user", "content": "x" * 200, "extra": {"n": i}} for i in range(50)]
    expected = _reference(history, sort_keys=False)
    results: list[str] = []
    barrier = threading.Barrier(4)

    def work() -> None:
        barrier.wait(timeout=5)
        results.extend(_json.to_json(history, 1_000_000) for _ in range(300))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 1200 and set(results) == {expected}
