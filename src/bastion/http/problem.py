"""RFC 9457 problem documents for errors the gateway answers itself.

Bodies never carry a backend address, a traceback or a secret: only the status,
its title and a short fixed explanation chosen by the caller.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from bastion.http.downstream import Downstream
from bastion.http.status import REASONS

if TYPE_CHECKING:
    from bastion.http.request import Request

PROBLEM_TYPE = "application/problem+json"
_PROBLEM_CONTENT_TYPE = PROBLEM_TYPE.encode()

# The explanations a client sees for each status the gateway produces itself.
DETAILS: dict[int, str] = {
    400: "The request could not be parsed.",
    404: "No route matches this request.",
    405: "The method is not allowed on this path.",
    408: "The request was not received in time.",
    413: "The request body is larger than allowed.",
    417: "Only the 100-continue expectation is supported.",
    414: "The request target is longer than allowed.",
    431: "The request header fields are larger than allowed.",
    500: "The gateway failed to handle this request.",
    501: "The request uses a transfer coding the gateway does not implement.",
    502: "The upstream server sent an invalid response or closed the connection.",
    503: "No upstream server is available.",
    504: "The upstream server did not answer in time.",
    505: "Only HTTP/1.0 and HTTP/1.1 are supported on this connection.",
}


def problem_body(status: int, detail: str | None = None, request_id: str | None = None) -> bytes:
    doc: dict[str, object] = {
        "type": "about:blank",
        "title": REASONS.get(status, "Error"),
        "status": status,
        "detail": detail if detail is not None else DETAILS.get(status, ""),
    }
    if request_id:
        doc["request_id"] = request_id
    return json.dumps(doc, separators=(",", ":")).encode()


class ProblemAnswers(Downstream):
    """`Downstream.problem` for a protocol whose `respond` sends a complete answer: the
    HTTP/1.1 connection and the HTTP/2 stream share it."""

    def problem(
        self, req: Request, status: int, detail: str | None = None, headers: bytes = b""
    ) -> None:
        body = problem_body(status, detail, req.request_id)
        self.respond(req, status, body, _PROBLEM_CONTENT_TYPE, headers)
