"""Where an OpenAPI document comes from: a file, or a URL (the backend's own description).

A URL is fetched while the configuration is compiled (at load and on every reload). Each good
copy is written to the data dir; when the URL cannot be fetched (the backend is down or answers
garbage), the last good copy is used instead, so a restart while the backend is away keeps the
validation the gateway had.
"""

from __future__ import annotations

import hashlib
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from bastion.state.files import atomic_write, ensure_dir

__all__ = ["SpecUnavailable", "load_document", "parse_document"]

log = logging.getLogger("bastion.openapi")

_MAX_DOCUMENT = 16 * 1024 * 1024


class SpecUnavailable(Exception):
    """No usable copy of the document: neither the source nor a saved copy."""


def parse_document(data: bytes, where: str) -> dict[str, Any]:
    """JSON or YAML text → the document; ValueError when it is not an OpenAPI 3.x mapping."""
    try:
        text = data.decode("utf-8")
        doc = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (UnicodeDecodeError, ValueError, yaml.YAMLError) as exc:
        raise ValueError(f"{where} is neither JSON nor YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{where} is not an OpenAPI document (not a mapping)")
    version = str(doc.get("openapi", ""))
    if not version.startswith(("3.0", "3.1")):
        raise ValueError(f"{where} is not an OpenAPI 3.0 or 3.1 document (openapi: {version!r})")
    if not isinstance(doc.get("paths", {}), dict):
        raise ValueError(f"{where}: paths is not a mapping")
    return doc


def shown(url: str) -> str:
    """The URL for logs and errors: without user info or query, which may hold a token."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def _fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(
        url, headers={"Accept": "application/json, application/yaml;q=0.9"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read(_MAX_DOCUMENT + 1)
    if len(data) > _MAX_DOCUMENT:
        raise ValueError("the document is larger than 16 MiB")
    return data


def saved_copy_path(data_dir: Path, url: str) -> Path:
    name = hashlib.sha256(url.encode()).hexdigest()[:24]
    return data_dir / "openapi" / f"{name}.json"


def load_document(
    source: str, data_dir: Path, timeout: float, *, keep_copy: bool = True
) -> dict[str, Any]:
    """The document at `source` (an absolute file path or an http(s) URL).

    Raises ValueError for a file that is not a valid document, SpecUnavailable for a URL
    that gives no valid document when no earlier copy was saved. Without ``keep_copy``
    (a check) the saved copy is neither used nor written: the URL must answer now."""
    if not source.startswith(("http://", "https://")):
        try:
            return parse_document(Path(source).read_bytes(), source)
        except OSError as exc:
            raise ValueError(f"cannot read {source}: {exc.strerror}") from None
    saved = saved_copy_path(data_dir, source)
    where = shown(source)
    try:
        doc = parse_document(_fetch(source, timeout), where)
    except (OSError, ValueError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        if isinstance(exc, urllib.error.HTTPError):
            reason = f"it answered {exc.code} {exc.reason}"
        if not keep_copy:
            raise SpecUnavailable(f"cannot fetch the OpenAPI document {where}: {reason}") from None
        if not saved.is_file():
            raise SpecUnavailable(
                f"cannot fetch the OpenAPI document {where} ({reason}) and no earlier copy is saved"
            ) from None
        log.warning(
            "cannot fetch the OpenAPI document %s (%s): using the copy saved in %s",
            where,
            reason,
            saved,
        )
        return parse_document(saved.read_bytes(), str(saved))
    if not keep_copy:
        return doc
    try:
        ensure_dir(saved.parent)
        atomic_write(saved, json.dumps(doc).encode(), 0o600)
    except OSError as exc:
        log.warning("cannot save a copy of the OpenAPI document %s: %s", where, exc)
    return doc
