"""On-disk cache of model calls, keyed by what determines the answer: model, endpoint, messages or
prompt, and settings. Never the API key; errors are never stored, so a failed call is retried."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from auditor.io import write_atomic


def cache_root() -> Path:
    if os.environ.get("TRAIT_AUDIT_CACHE"):
        return Path(os.environ["TRAIT_AUDIT_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trait-audit"


class CallCache:
    """One JSON file per call under <cache>/calls/<kind>/<2 hex>/<sha256>.json."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = (root or cache_root()) / "calls"
        self.enabled = enabled
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(kind: str, **parts) -> str:
        canonical = json.dumps({"kind": kind, **parts}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / key[:2] / f"{key}.json"

    def get(self, kind: str, key: str):
        if not self.enabled:
            return None
        path = self._path(kind, key)
        if not path.is_file():
            self.misses += 1
            return None
        self.hits += 1
        return json.loads(path.read_text(encoding="utf-8"))["value"]

    def put(self, kind: str, key: str, value) -> None:
        from auditor.redact import redact_obj

        if self.enabled:  # a key the endpoint echoed back is masked before it reaches the disk
            write_atomic(self._path(kind, key), json.dumps({"value": redact_obj(value)}, ensure_ascii=False, allow_nan=False))
