"""Status lines and reason phrases, built once at import.

Formatting a status line per response is measurable on the hot path, so every
common line is precomputed (the same idea as uvicorn's STATUS_LINE table).
"""

from http import HTTPStatus

REASONS: dict[int, str] = {s.value: s.phrase for s in HTTPStatus}
REASONS.setdefault(499, "Client Closed Request")
# RFC 9110 renamed these; the stdlib keeps the RFC 7231 names.
REASONS.update(
    {
        413: "Content Too Large",
        414: "URI Too Long",
        416: "Range Not Satisfiable",
        422: "Unprocessable Content",
    }
)

STATUS_LINES: dict[int, bytes] = {
    code: b"HTTP/1.1 %d %s\r\n" % (code, reason.encode("latin-1"))
    for code, reason in REASONS.items()
}


def status_line(code: int, reason: bytes = b"") -> bytes:
    line = STATUS_LINES.get(code)
    if line is not None:
        return line
    return b"HTTP/1.1 %d %s\r\n" % (code, reason or b"Unknown")


def fixed_head(
    status: int, date_header: bytes, body: bytes, content_type: bytes, headers: bytes
) -> bytes:
    """Status line and fields of a complete answer whose body is known (errors,
    redirects, fixed responses), shared by the HTTP/1.1 and HTTP/2 sides."""
    return b"".join(
        (
            STATUS_LINES.get(status) or status_line(status),
            date_header,
            b"Content-Type: " + content_type + b"\r\n" if body or content_type else b"",
            b"Content-Length: %d\r\n" % len(body)
            if status >= 200 and status not in (204, 304)
            else b"",
            headers,
        )
    )
