"""The application's OpenAPI document for ``bastion init``: read from a file or fetched from a
URL (with a short timeout: init is interactive), parsed, and checked with the same code the
gateway's ``validation.openapi`` policy uses, so that a document init accepts is one the
gateway will load.

Also the one other fetch init makes: an OpenID Connect discovery document, to find the
issuer and JWKS URL of an ``openIdConnect`` security scheme.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bastion.openapi.operations import OperationTable
from bastion.openapi.schemas import SchemaSet
from bastion.openapi.source import parse_document, shown

__all__ = [
    "Document",
    "InitError",
    "discover_oidc",
    "find_document",
    "is_url",
    "load_document",
    "probe",
]

FETCH_TIMEOUT = 3.0
"""Seconds allowed for one fetch: an app on loopback answers in milliseconds, and a question
asked at a terminal should not hang on an address that drops packets."""
_MAX_DOCUMENT = 16 * 1024 * 1024


class InitError(Exception):
    """A problem the user can fix (an unreachable URL, a document that is not OpenAPI 3);
    the message says what and how, and is printed without a traceback."""


@dataclass(frozen=True)
class Document:
    doc: dict[str, Any]
    where: str
    """Where it came from, for messages (a URL without user info or query)."""
    text: str
    """The document as it is saved next to the config (JSON)."""

    @property
    def title(self) -> str:
        info = self.doc.get("info")
        if not isinstance(info, dict):
            return ""
        title, version = str(info.get("title") or ""), str(info.get("version") or "")
        return f"{title} {version}".strip()


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def _fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(
        url, headers={"Accept": "application/json, application/yaml;q=0.9"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data: bytes = response.read(_MAX_DOCUMENT + 1)
    except urllib.error.HTTPError as exc:
        raise InitError(f"{shown(url)} answered {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(reason, OSError) and reason.strerror:
            reason = reason.strerror.lower()
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            reason = f"no answer within {timeout:g} s"
        raise InitError(f"cannot fetch {shown(url)}: {reason}") from None
    if len(data) > _MAX_DOCUMENT:
        raise InitError(f"{shown(url)} is larger than 16 MiB")
    return data


def _swagger_version(data: bytes) -> str | None:
    """The ``swagger`` field of a Swagger 2.0 document, which bastion does not read."""
    try:
        text = data.decode("utf-8")
        doc = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError):
        return None
    if isinstance(doc, dict) and "swagger" in doc and "openapi" not in doc:
        return str(doc["swagger"])
    return None


def parse(data: bytes, where: str) -> Document:
    """The document in `data`; InitError when it is not an OpenAPI 3.0/3.1 document the
    gateway's validation can compile."""
    swagger = _swagger_version(data)
    if swagger is not None:
        raise InitError(
            f"{where} is a Swagger {swagger} document; bastion reads OpenAPI 3.0 and 3.1 only. "
            "Convert it first (for example with swagger2openapi, or the converter at "
            "https://converter.swagger.io) and give the converted file to --openapi."
        )
    try:
        doc = parse_document(data, where)
        # what the gateway does with it at load: a $ref to nothing or an invalid schema
        # surfaces here rather than at the first `bastion check`
        OperationTable(doc, SchemaSet(doc))
    except ValueError as exc:
        message = str(exc).strip().splitlines()[0]  # jsonschema-rs adds a verbose tail
        raise InitError(message if message.startswith(where) else f"{where}: {message}") from None
    return Document(doc, where, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


def load_document(source: str, timeout: float = FETCH_TIMEOUT) -> Document:
    """The document at `source`: an http(s) URL or a file (JSON or YAML)."""
    if is_url(source):
        return parse(_fetch(source, timeout), shown(source))
    path = Path(source).expanduser()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InitError(f"cannot read {source}: {exc.strerror or exc}") from None
    return parse(data, source)


def probe(upstream: str, timeout: float = FETCH_TIMEOUT) -> tuple[Document | None, str]:
    """Look for FastAPI's ``/openapi.json`` on the upstream: (the document, where) when it
    is there and valid, else (None, why not)."""
    url = upstream.rstrip("/") + "/openapi.json"
    try:
        return load_document(url, timeout), url
    except InitError as exc:
        return None, str(exc)


def discover_oidc(url: str, timeout: float = FETCH_TIMEOUT) -> tuple[str, str] | None:
    """(issuer, jwks_uri) from an OpenID Connect discovery document, None when it cannot
    be had (the caller writes a stub then)."""
    try:
        data = json.loads(_fetch(url, timeout))
    except (InitError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    issuer, jwks = data.get("issuer"), data.get("jwks_uri")
    if isinstance(issuer, str) and isinstance(jwks, str) and is_url(jwks):
        return issuer, jwks
    return None


def find_document(source: str | None, upstream: str, look: bool) -> tuple[Document | None, str]:
    """The document to derive the config from, and a line saying where it came from.

    `source` given: it must load (InitError otherwise). Else, when `look` and the upstream
    is http(s), the app's own ``/openapi.json`` is tried; its absence is not an error (the
    config is then a plain proxy) but is said, with how to give one."""
    if source:
        document = load_document(source)
        return document, f"read the OpenAPI document {document.where}"
    if not look or not is_url(upstream):
        return None, ""
    found, where = probe(upstream)
    if found is not None:
        return found, f"found the app's OpenAPI document at {where}"
    return None, (
        f"no OpenAPI document found ({where}): writing a plain proxy config; "
        "give --openapi URL|FILE to derive routes and policies"
    )
