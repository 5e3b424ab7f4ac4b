"""Keys never leave the process: not in reports, terminal output, logs, caches or error messages.

Secrets are known by value: keys given on the command line (`--judge-api-key`, `--api-key`), keys in
the environment (`OPENAI_API_KEY`, `TRAIT_AUDIT_JUDGE_API_KEY` and any variable named like a key or
token), and the user:password and query values of endpoint URLs. `redact` replaces every occurrence,
wherever it came from: a judge that echoes its Authorization header, a server error that quotes the
request, a URL in the command line. Credentials inside URLs are also masked by shape, so one that was
never registered (a --base-url typed into an error message) is still hidden.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MASK = "***"
MIN_LENGTH = 6  # shorter values would mask ordinary words
_ENV_NAME = re.compile(r"(?i)(?:API_?KEY|TOKEN|SECRET|PASSWORD|PASSWD)$")
# scheme://user:password@host  and  ?key=value / &token=value in URLs
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s'\"]+@")
_URL_SECRET_QUERY = re.compile(r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|secret|password|sig|signature)=)[^&#\s'\"]+")

_LOCK = threading.Lock()
_SECRETS: set[str] = set()


def add_secret(value: str | None) -> None:
    if value and len(value) >= MIN_LENGTH:
        with _LOCK:
            _SECRETS.add(value)


def add_url(url: str | None) -> None:
    """The password, user name and query values of an endpoint URL are secrets."""
    if not url:
        return
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    add_secret(parts.password)
    add_secret(parts.username)
    for _, value in parse_qsl(parts.query):
        add_secret(value)


def add_environment() -> None:
    for name, value in os.environ.items():
        if _ENV_NAME.search(name):
            add_secret(value)
        if name.endswith("_BASE_URL"):
            add_url(value)


def secrets() -> list[str]:
    with _LOCK:
        return sorted(_SECRETS, key=len, reverse=True)  # longest first: a key that contains another is masked whole


def redact(text: str) -> str:
    for secret in secrets():
        if secret in text:
            text = text.replace(secret, MASK)
    text = _URL_USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)
    return _URL_SECRET_QUERY.sub(lambda m: m.group(1) + MASK, text)


def redact_obj(value: Any) -> Any:
    """A copy of a JSON-like value with every string (and dict key) redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact(k) if isinstance(k, str) else k: redact_obj(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_obj(v) for v in value]
    return value
