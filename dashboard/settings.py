"""Where the dashboard reads from, and with which key: from the environment, read on every script run.

``agentwatch dashboard --api URL`` passes its flags to the Streamlit process through the same variables.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ENDPOINT_ENV = "AGENTWATCH_ENDPOINT"
"""Base URL of the collector's read API (the SDK's variable too). Default ``http://127.0.0.1:4318``."""
API_KEY_ENV = "AGENTWATCH_API_KEY"
"""A key with the read role (an admin key works too)."""
KEYS_FILE_ENV = "AGENTWATCH_KEYS_FILE"
"""Path of a ``keys.json`` the collector wrote on first start; its ``read`` key is used."""
DATA_DIR_ENV = "AGENTWATCH_DATA_DIR"
"""The collector's data directory: ``<dir>/keys.json`` is tried when no key is given otherwise."""

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
DEFAULT_DATA_DIR = ".agentwatch"


@dataclass(frozen=True)
class Settings:
    api: str
    key: str | None
    key_source: str
    problem: str | None = None  # a keys file that could not be read: shown as a banner

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        api = (env.get(ENDPOINT_ENV) or DEFAULT_ENDPOINT).strip().rstrip("/")
        if "://" not in api:
            api = "http://" + api
        key = (env.get(API_KEY_ENV) or "").strip()
        if key:
            return cls(api, key, API_KEY_ENV)
        keys_file = env.get(KEYS_FILE_ENV)
        if keys_file:
            return _from_keys_file(api, Path(keys_file), required=True)
        return _from_keys_file(api, Path(env.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR) / "keys.json", required=False)


def _from_keys_file(api: str, path: Path, *, required: bool) -> Settings:
    if not path.exists() and not required:
        return Settings(api, None, "none")
    try:
        data = json.loads(path.read_text())
        key = data.get("read") or data.get("admin") if isinstance(data, dict) else None
    except (OSError, ValueError) as e:
        return Settings(api, None, str(path), f"cannot read the keys file {path}: {e}")
    if not isinstance(key, str) or not key:
        return Settings(api, None, str(path), f"the keys file {path} has no 'read' key")
    return Settings(api, key, str(path))
