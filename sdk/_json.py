"""JSON for span attributes: canonical arguments and their hash, results, and messages in the semconv parts shape."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def _default(value: Any) -> Any:
    # Anything json cannot encode: keep it deterministic (no memory addresses), so the hash of equal
    # arguments is equal across calls.
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    dump = getattr(value, "model_dump", None)  # pydantic v2
    if callable(dump):
        try:
            return dump(mode="json")
        except Exception:  # noqa: BLE001 - any odd model falls through to the generic cases
            pass
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    if isinstance(value, (bytes, bytearray)):
        return f"<{len(value)} bytes>"
    if isinstance(value, (tuple, range)):
        return list(value)
    text = repr(value)
    if " at 0x" in text:
        return f"<{type(value).__qualname__}>"
    return text


def _encoder(*, sort_keys: bool) -> Callable[[Any], str]:
    """Compact JSON, ``ensure_ascii=False``. ``JSONEncoder.encode`` builds a C encoder on each call: ~1 us of a
    small call, more than the encoding. We build one per thread and keep it, with its own record of the containers
    being encoded (so a circular structure is a ValueError at once, as before, and threads never see each other's
    containers); after a failed call, whose record may keep that call's containers, the thread builds a new one.
    (Without the record, a circular structure recursed until RecursionError, at the interpreter's depth limit,
    where any finalizer the garbage collector ran failed too.)"""
    checked = json.JSONEncoder(
        sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False, default=_default, check_circular=True
    ).encode
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # no C accelerator (another Python): the stock path
        return checked

    def build() -> Callable[[Any, int], tuple[str, ...]]:
        return make({}, _default, json.encoder.encode_basestring, None, ":", ",", sort_keys, False, True)

    try:
        sample = {"b": [1.5, None, "é\n", {2}], "a": True}
        if "".join(build()(sample, 0)) != checked(sample):
            return checked
    except Exception:  # noqa: BLE001 - a C encoder of another signature: the stock path
        return checked
    join = "".join
    local = threading.local()

    def encode(value: Any) -> str:
        try:
            fast = local.fast
        except AttributeError:
            fast = local.fast = build()
        try:
            return join(fast(value, 0))
        except BaseException:
            local.fast = build()
            raise

    return encode


_canonical = _encoder(sort_keys=True)
_plain = _encoder(sort_keys=False)


def canonical_json(value: Any) -> str:
    """Arguments as canonical JSON: sorted keys, no whitespace. The same arguments give the same string."""
    try:
        return _canonical(value)
    except (TypeError, ValueError):  # non-string keys, circular structures
        return _canonical(repr(value))


def args_hash(canonical: str) -> str:
    """``agentwatch.tool.args_hash``: the first 16 hex digits of the SHA-256 of the canonical arguments."""
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def to_json(value: Any, max_chars: int) -> str:
    """A result or message list as compact JSON, without serialising more than ~``max_chars`` of a long string."""
    if isinstance(value, str):
        if len(value) > max_chars:
            value = value[:max_chars]
        return _plain(value)
    try:
        return _plain(value)
    except (TypeError, ValueError):
        return _plain(repr(value))


def _parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "content": content}]
    if isinstance(content, Mapping):
        return [dict(content)]
    parts: list[dict[str, Any]] = []
    for item in content:
        if isinstance(item, str):
            parts.append({"type": "text", "content": item})
        elif type(item) is dict or isinstance(item, Mapping):
            part = dict(item)
            if part.get("type") == "text" and "content" not in part and "text" in part:
                part["content"] = part.pop("text")
            parts.append(part)
        else:
            parts.append({"type": "text", "content": str(item)})
    return parts


def messages(items: Iterable[Any], *, output: bool = False, finish_reasons: list[str] | None = None) -> list[Any]:
    """Messages in the GenAI semconv 1.41 shape (``role`` + ``parts``; output messages with ``finish_reason``).

    Accepts that shape as is, OpenAI-style ``{"role", "content"}`` dicts, or plain strings (a user message in, an
    assistant message out).
    """
    role = "assistant" if output else "user"
    reasons = finish_reasons or []
    result: list[Any] = []
    for index, item in enumerate(items):
        if isinstance(item, str):
            message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": item}]}
        elif type(item) is dict or isinstance(item, Mapping):
            content = item["parts"] if "parts" in item else item.get("content")
            message = {
                "role": item.get("role", role),
                "parts": [{"type": "text", "content": content}] if type(content) is str else _parts(content),
            }
            if "name" in item:
                message["name"] = item["name"]
            if "finish_reason" in item:
                message["finish_reason"] = item["finish_reason"]
        else:
            message = {"role": role, "parts": _parts(str(item))}
        if output and "finish_reason" not in message:
            message["finish_reason"] = reasons[index] if index < len(reasons) else (reasons[-1] if reasons else "stop")
        result.append(message)
    return result


def error_type(error: BaseException) -> str:
    """``error.type``: the exception's qualified name, builtins unqualified (as the OTel SDK's exception event)."""
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
