"""API keys: per project, with a role (ingest, read, admin); stored hashed, compared in constant time.

The project of every span comes from the key that sent it, and every read is scoped to the
project of the key that asked: there is no other way in.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from agentwatch.collector.migrations import KEYS_TABLE
from agentwatch.collector.store import Store

log = logging.getLogger(__name__)

PROJECT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class Role(StrEnum):
    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


GRANTS = {Role.INGEST: {Role.INGEST}, Role.READ: {Role.READ}, Role.ADMIN: {Role.INGEST, Role.READ, Role.ADMIN}}


class KeySpecError(ValueError):
    """A bad key specification (bootstrap variable, CLI arguments)."""


@dataclass(frozen=True)
class Principal:
    project: str
    role: Role
    key_prefix: str
    key_hash: str

    def may(self, need: Role) -> bool:
        return need in GRANTS[self.role]


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(role: Role) -> str:
    return f"aw_{role.value}_{secrets.token_urlsafe(24)}"


def parse_bootstrap(spec: str) -> list[tuple[str, str, Role]]:
    """``AGENTWATCH_API_KEYS``: ``key:project:role`` comma-separated."""
    out = []
    for i, item in enumerate(x.strip() for x in spec.split(",")):
        if not item:
            continue
        parts = item.rsplit(":", 2)
        if len(parts) != 3:
            raise KeySpecError(
                f"AGENTWATCH_API_KEYS entry {i + 1}: expected key:project:role, got {len(parts)} part(s)"
            )
        key, project, role = parts
        if len(key) < 8:
            raise KeySpecError(f"AGENTWATCH_API_KEYS entry {i + 1}: the key must be at least 8 characters")
        if not PROJECT_RE.match(project):
            raise KeySpecError(f"AGENTWATCH_API_KEYS entry {i + 1}: bad project name {project!r}")
        try:
            out.append((key, project, Role(role)))
        except ValueError:
            raise KeySpecError(
                f"AGENTWATCH_API_KEYS entry {i + 1}: role must be one of ingest, read, admin, got {role!r}"
            ) from None
    return out


class Keys:
    """The key table, cached in memory (reloaded every ``refresh`` seconds for multi-collector setups)."""

    def __init__(self, store: Store, *, refresh: float = 10.0) -> None:
        self.store = store
        self.refresh = refresh
        self._lock = threading.Lock()
        self._by_hash: dict[str, Principal] = {}
        self._loaded = 0.0

    def load(self) -> None:
        rows = self.store.query(
            f"SELECT KeyHash, KeyPrefix, ProjectId, Role, Revoked FROM {KEYS_TABLE} FINAL WHERE Revoked = 0"
        )
        by_hash = {
            r["KeyHash"]: Principal(r["ProjectId"], Role(r["Role"]), r["KeyPrefix"], r["KeyHash"])
            for r in rows
            if r["Role"] in Role.__members__.values()
        }
        with self._lock:
            self._by_hash = by_hash
            self._loaded = time.monotonic()

    def count(self) -> int:
        return len(self._by_hash)

    def authenticate(self, authorization: str | None) -> Principal | None:
        """``Authorization: Bearer <key>`` -> who it is, or None."""
        if not authorization:
            return None
        scheme, _, key = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            return None
        if time.monotonic() - self._loaded > self.refresh:
            try:
                self.load()
            except Exception:  # noqa: BLE001 - a store hiccup must not lock everyone out: keep the cache
                log.warning("could not reload API keys; using the cached ones", exc_info=True)
        h = hash_key(key.strip())
        found = self._by_hash.get(h)
        if found is None or not hmac.compare_digest(found.key_hash, h):
            return None
        return found

    def add(self, key: str, project: str, role: Role, name: str = "") -> Principal:
        if not PROJECT_RE.match(project):
            raise KeySpecError(f"bad project name {project!r}: letters, digits, '_', '.', '-' (64 at most)")
        p = Principal(project, role, key[:12], hash_key(key))
        self.store.command(
            f"INSERT INTO {KEYS_TABLE} (KeyHash, KeyPrefix, ProjectId, Role, Name, Revoked, Version) VALUES "
            "({h:String}, {p:String}, {proj:String}, {r:String}, {n:String}, 0, {v:UInt64})",
            {"h": p.key_hash, "p": p.key_prefix, "proj": project, "r": role.value, "n": name, "v": time.time_ns()},
        )
        with self._lock:
            self._by_hash[p.key_hash] = p
        return p

    def create(self, project: str, role: Role, name: str = "") -> str:
        key = new_key(role)
        self.add(key, project, role, name)
        return key

    def revoke(self, prefix: str, *, project: str | None = None) -> int:
        """Revoke every key whose prefix (or whole key) matches, only in ``project`` when given (prefixes are
        12 characters and can be shared across projects); returns how many."""
        rows = self.store.query(
            f"SELECT KeyHash, KeyPrefix, ProjectId, Role, Name FROM {KEYS_TABLE} FINAL WHERE Revoked = 0"
        )
        target = prefix.strip()
        hits = [
            r for r in rows
            if target and (project is None or r["ProjectId"] == project)
            and (r["KeyPrefix"] == target[:12] or r["KeyHash"] == hash_key(target))
        ]  # fmt: skip
        for r in hits:
            self.store.command(
                f"INSERT INTO {KEYS_TABLE} (KeyHash, KeyPrefix, ProjectId, Role, Name, Revoked, Version) VALUES "
                "({h:String}, {p:String}, {proj:String}, {r:String}, {n:String}, 1, {v:UInt64})",
                {"h": r["KeyHash"], "p": r["KeyPrefix"], "proj": r["ProjectId"], "r": r["Role"], "n": r["Name"],
                 "v": time.time_ns()},
            )  # fmt: skip
            with self._lock:
                self._by_hash.pop(r["KeyHash"], None)
        return len(hits)

    def list(self) -> list[dict]:
        return self.store.query(
            f"SELECT KeyPrefix AS prefix, ProjectId AS project, Role AS role, Name AS name, "
            f"toString(CreatedAt) AS created, Revoked AS revoked FROM {KEYS_TABLE} FINAL ORDER BY CreatedAt"
        )

    def bootstrap(self, spec: str | None, *, data_dir: Path) -> Path | None:
        """Add the ``AGENTWATCH_API_KEYS`` keys; with none configured and an empty key table, provision
        project ``default`` with an admin, an ingest and a read key, written to ``data_dir/keys.json``
        (mode 0600). Returns that file's path when it provisioned."""
        self.load()
        if spec:
            for key, project, role in parse_bootstrap(spec):
                if hash_key(key) not in self._by_hash:
                    self.add(key, project, role, name="AGENTWATCH_API_KEYS")
            return None
        if self.count():
            return None
        keys = {role.value: self.create("default", role, name="first start") for role in Role}
        path = Path(data_dir) / "keys.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"project": "default", **keys}, f, indent=2)
        os.chmod(path, 0o600)
        return path
