"""Credentials out of messages: every URL a log line or an error shows goes through :func:`redact` first.

Redis, PostgreSQL and camera URLs carry passwords (``scheme://user:password@host``, or ``?password=`` in the
query); messages show them as ``scheme://user:***@host``.
"""

from __future__ import annotations

import re

# Query parameters that hold secrets in the URLs this project takes (redis-py, libpq, cameras).
_SECRET_QUERY = re.compile(
    r"([?&;](?:password|passwd|pass|pwd|sslpassword|secret|token|access_token|api_key|apikey|auth)=)[^&;#\s'\"]*",
    re.IGNORECASE,
)
_URL = re.compile(r"\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s'\"<>]+")


def redact(url: str) -> str:
    """The URL with its password, and password-like query values, replaced by ``***``; the user is kept.

    The user part ends at the *last* '@': a password holding an unescaped '@' or '/' is still hidden whole (at
    worst a path holding '@' is hidden too, which only costs detail in a message)."""
    scheme, sep, rest = url.partition("://")
    if sep:
        credentials, at, host = rest.rpartition("@")
        user, colon, _ = credentials.partition(":")
        if at and colon:
            rest = f"{user}:***@{host}"
    return _SECRET_QUERY.sub(r"\1***", scheme + sep + rest)


def redact_text(text: str) -> str:
    """Free text (a driver's error message, a config value) with every URL in it redacted."""
    return _URL.sub(lambda m: redact(m.group(0)), text)
