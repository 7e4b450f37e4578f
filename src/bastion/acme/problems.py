"""What can go wrong talking to a CA: ``AcmeError`` (network, TLS, unexpected answers)
and ``AcmeProblem``, an RFC 7807 problem document from the CA, typed by its ``type`` with a
``hint`` saying what the operator should do (never parsed out of exception text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ERR", "AcmeError", "AcmeProblem", "invalid_problem"]

ERR = "urn:ietf:params:acme:error:"

# What the operator should do, by problem type (the part after ``ERR``).
_HINTS = {
    "connection": "the CA could not connect to this server for the challenge: port 80 of every "
    "name must reach bastion's http listener (http-01), or port 443 its https listener "
    "(tls-alpn-01), from the internet (firewall, NAT, DNS)",
    "dns": "the CA could not resolve the name: check the name's A/AAAA records",
    "unauthorized": "the CA fetched a wrong answer for the challenge: check that the name's "
    "DNS points at this machine and that nothing in front of bastion answers "
    "/.well-known/acme-challenge/",
    "incorrectResponse": "the challenge answer did not match: is another server answering "
    "port 80 for this name?",
    "rateLimited": "the CA's rate limit was reached: wait (see Retry-After) and use the "
    "staging directory while testing",
    "rejectedIdentifier": "the CA will not issue for this name (reserved or forbidden name)",
    "caa": "a CAA DNS record forbids this CA from issuing for the name",
    "accountDoesNotExist": "the stored account is unknown to the CA: remove the account files "
    "in the data dir to create a new one",
    "externalAccountRequired": "this CA needs External Account Binding: set acme.eab "
    "{key_id, hmac_key} with the credentials from the CA's dashboard",
    "unauthorizedEab": "the CA rejected the External Account Binding: check acme.eab key_id "
    "and hmac_key (they are single-use at some CAs; create new ones)",
    "badCSR": "the CA rejected the certificate request: check acme.key_type",
    "badPublicKey": "the CA does not accept this key: try another acme.key_type",
    "alreadyRevoked": "the certificate was already revoked",
    "badNonce": "the CA kept rejecting nonces; it will be retried",
    "serverInternal": "the CA had an internal error; it will be retried",
    "malformed": "the CA rejected a request as malformed; please report it with this log line",
    "tls": "the CA could not connect over TLS for the challenge",
    "timeout": "the challenge was not validated in time: check that the CA can reach port 80",
    "dnsHook": "the DNS-01 hook failed: run it by hand with the same arguments and fix it "
    "(see the DNS-01 hook section of docs/https.md)",
    "noChallenge": "the CA offers none of the challenge types allowed for this name: check "
    "acme.challenges (wildcard names need dns-01 and acme.dns_hook)",
}


class AcmeError(Exception):
    """Talking to the CA failed (network, TLS, unexpected answer)."""

    retry_after: float | None = None

    @property
    def hint(self) -> str:
        return "check the acme.directory URL, the network and acme.trusted_roots"


@dataclass
class AcmeProblem(AcmeError):
    """An RFC 7807 problem document from the CA."""

    type: str
    detail: str
    status: int = 0
    subproblems: list[dict[str, Any]] = field(default_factory=list)
    retry_after: float | None = None

    def __str__(self) -> str:
        text = f"{self.type}: {self.detail}"
        for sub in self.subproblems:
            ident = sub.get("identifier", {}).get("value", "?")
            text += f"; {ident}: {sub.get('type', '?')}: {sub.get('detail', '')}"
        return text

    @property
    def short_type(self) -> str:
        return self.type.removeprefix(ERR)

    @property
    def hint(self) -> str:
        return _HINTS.get(self.short_type, "see the CA's detail above")


def invalid_problem(data: dict[str, Any], what: str) -> AcmeProblem:
    """The most useful problem inside an invalid authorization or order."""
    error = data.get("error")
    for challenge in data.get("challenges", []):
        if challenge.get("status") == "invalid" and challenge.get("error"):
            error = challenge["error"]
            break
    if isinstance(error, dict):
        return AcmeProblem(
            type=str(error.get("type", ERR + "unauthorized")),
            detail=f"{what} is invalid: {error.get('detail', '')}",
            status=int(error.get("status", 0) or 0),
            subproblems=list(error.get("subproblems") or []),
        )
    return AcmeProblem(ERR + "unauthorized", f"{what} is invalid")
