"""HTTP Basic authentication (RFC 7617) against bcrypt (``bcrypt``) or argon2 (``argon2-cffi``)
password hashes.

Both hashes are slow on purpose (tens to hundreds of milliseconds), so a check runs in a worker
thread, never on the event loop, and a verified name and password are remembered for
``cache`` seconds under a keyed hash (never the password itself): a client sending the same
credentials on every request pays the slow hash once. Unknown user names are checked against
a dummy hash too, so that the answer time does not tell which names exist.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import secrets
import time
from typing import TYPE_CHECKING

import bcrypt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from bastion.config.passwords import read_users_file
from bastion.policies.auth_any import offered_scheme
from bastion.policies.authcommon import Identity, authorization
from bastion.policies.base import Denied

if TYPE_CHECKING:
    from bastion.config.policy_auth import BasicAuth
    from bastion.http.request import Request
    from bastion.observe.events import EventCounters

__all__ = ["BasicPolicy", "verify_password"]

_ARGON2 = PasswordHasher()
_CACHE_MAX = 4096
_MAX_FIELD = 4096


def verify_password(hashed: str, password: bytes) -> bool:
    if hashed.startswith("$argon2"):
        try:
            return _ARGON2.verify(hashed, password)
        except (VerificationError, InvalidHashError):
            return False
    try:
        return bcrypt.checkpw(password[:72], hashed.encode("ascii"))
    except ValueError:
        return False


class BasicPolicy:
    kind = "auth"  # the config key it comes from: what metrics and logs call it
    auth_scheme = "basic"  # the method, as the auth failure metric labels it
    # counted for the metrics on refusal (set by the builder; `policies/chain.py`)
    events: EventCounters | None = None
    is_async = True

    def __init__(self, conf: BasicAuth, identity: Identity) -> None:
        users = {name: value.get_secret_value() for name, value in conf.users.items()}
        if conf.users_file is not None:
            users.update(read_users_file(conf.users_file))
        self.users = users
        self.identity = identity
        self.upstream_drops = identity.drops  # a client-sent consumer header
        self.challenge = (
            f'WWW-Authenticate: Basic realm="{conf.realm}", charset="UTF-8"\r\n'.encode()
        )
        self.ttl = conf.cache
        self._pepper = secrets.token_bytes(32)
        self._cache: dict[bytes, tuple[float, str]] = {}
        # a hash of the same cost as the users' (the first one's kind) for unknown names
        sample = next(iter(users.values()), "$2b$10$")  # an empty users_file refuses all
        if sample.startswith("$argon2"):
            self._dummy = _ARGON2.hash(secrets.token_hex(8))
        else:
            rounds = int(sample.split("$")[2])
            self._dummy = bcrypt.hashpw(b"x", bcrypt.gensalt(rounds)).decode()

    needs = "a user name and password (Basic)"

    def offered(self, req: Request) -> int:
        return offered_scheme(req, b"basic")

    def _deny(self, detail: str, reason: str = "") -> Denied:
        return Denied(401, detail, self.challenge, reason)

    def _credentials(self, req: Request) -> tuple[str, bytes] | Denied:
        fields = authorization(req)
        if not fields:
            return self._deny("This route needs a user name and password.", "missing")
        if len(fields) > 1:
            # which one a backend would read is anybody's guess: refused, never "first wins"
            return Denied(400, "Several Authorization fields were sent.")
        scheme, _, rest = fields[0].strip().partition(b" ")
        if scheme.lower() != b"basic":
            return self._deny("This route needs a user name and password (Basic).", "missing")
        rest = rest.strip()
        if len(rest) > _MAX_FIELD:
            return self._deny("The Authorization field is too long.")
        try:
            decoded = base64.b64decode(rest, validate=True)
        except (binascii.Error, ValueError):
            return self._deny("The Authorization field is malformed (not base64).")
        name, sep, password = decoded.partition(b":")
        if not sep:
            return self._deny("The Authorization field is malformed (no ':').")
        try:
            return name.decode("utf-8"), password
        except UnicodeDecodeError:
            return self._deny("The Authorization field is malformed (not UTF-8).")

    async def on_request(self, req: Request) -> Denied | None:
        creds = self._credentials(req)
        if isinstance(creds, Denied):
            return creds
        name, password = creds
        tag = hmac.new(self._pepper, name.encode() + b"\x00" + password, hashlib.sha256).digest()
        now = time.monotonic()
        hit = self._cache.get(tag)
        if hit is not None and hit[0] > now and self.users.get(name) == hit[1]:
            self.identity.accept(req, name)
            return None
        hashed = self.users.get(name)
        loop = asyncio.get_running_loop()
        ok = await loop.run_in_executor(None, verify_password, hashed or self._dummy, password)
        if not ok or hashed is None:
            return self._deny("The user name or password is wrong.")
        if self.ttl > 0:
            if len(self._cache) >= _CACHE_MAX:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= _CACHE_MAX:
                    self._cache.clear()
            self._cache[tag] = (now + self.ttl, hashed)
        self.identity.accept(req, name)
        return None
