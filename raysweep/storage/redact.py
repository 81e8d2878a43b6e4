"""Credentials out of every printed location: one redaction for URIs and the text around them.

A storage URI may carry credentials in two places, both of which pyarrow accepts:

- the user-info, ``s3://KEY:SECRET@bucket/runs`` (also ``gs://``, ``hdfs://``, ...);
- query parameters, ``s3://bucket/runs?secret_key=...&session_token=...``, or a presigned
  URL's ``X-Amz-Signature=...``.

:func:`redact` replaces the user-info by ``***`` and the value of every query parameter whose
name looks like a credential (it holds ``secret``, ``key``, ``token``, ``password``, ``passwd``,
``pwd``, ``credential``, ``signature``, ``sig``, ``auth`` or ``session``) by ``***``, wherever
such a URI appears in a text: a URI as written (``scheme://``) or as :class:`pathlib.Path`
collapses it (``scheme:/``). Every secret it has seen is remembered for the process, so a
message that repeats the secret elsewhere (a library's error text quoting a host or an option)
has it replaced too. Redacting twice gives the same text; a text without credentials is
returned as it is. ``raysweep`` passes everything it prints through it
(:func:`raysweep.cli.main`), and every message that names a storage location is built from
redacted text in the first place.
"""

from __future__ import annotations

import re
import threading
from urllib.parse import unquote

__all__ = ["MASK", "redact", "strip_credentials"]

MASK = "***"

#: Parts of a query parameter's name that make its value a credential.
_SECRET_NAME = r"(?:secret|key|token|password|passwd|pwd|credential|signature|sig|auth|session)"
#: ``scheme:/`` or ``scheme://`` followed by user-info (``file:`` URIs have none).
_USERINFO = re.compile(r"(?<![\w+.-])(?!file:)([A-Za-z][A-Za-z0-9+.-]+:/{1,3})([^\s/?#@'\"<>]+)@")
#: ``?name=value`` / ``&name=value`` with a credential-like name.
_QUERY = re.compile(r"([?&;][^=&\s'\"<>#?]*" + _SECRET_NAME + r"[^=&\s'\"<>#?]*=)([^&\s'\"<>#]*)",
                    re.IGNORECASE)

_seen: set[str] = set()
_lock = threading.Lock()


def _remember(secret: str) -> None:
    for form in {secret, unquote(secret)}:
        if len(form) >= 4 and form != MASK:
            with _lock:
                _seen.add(form)


def redact(text: str) -> str:
    """``text`` with the credentials of every URI in it replaced by ``***`` (see the module
    docstring), and every secret seen before in this process too."""
    if not text:
        return text

    def userinfo(match: re.Match[str]) -> str:
        if match.group(2) != MASK:
            for part in match.group(2).split(":"):
                _remember(part)
        return f"{match.group(1)}{MASK}@"

    def query(match: re.Match[str]) -> str:
        if match.group(2) and match.group(2) != MASK:
            _remember(match.group(2))
        return f"{match.group(1)}{MASK}"

    text = _QUERY.sub(query, _USERINFO.sub(userinfo, text))
    with _lock:
        seen = sorted(_seen, key=len, reverse=True)
    for secret in seen:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def strip_credentials(uri: str) -> str:
    """``uri`` without its user-info and without its credential-like query parameters (what a
    recorded spec keeps: the store's own configuration, never a secret)."""
    redact(uri)  # remember its secrets
    text = _USERINFO.sub(lambda m: m.group(1), uri)
    base, question, query_string = text.partition("?")
    if not question:
        return text
    kept = [part for part in query_string.split("&")
            if part and not _QUERY.fullmatch("&" + part.split("=", 1)[0] + "=")]
    return base + ("?" + "&".join(kept) if kept else "")
