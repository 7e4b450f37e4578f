"""The config's hash check accepts exactly the argon2 hashes the policy can verify."""

from __future__ import annotations

import bcrypt
import pytest
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError
from argon2.profiles import RFC_9106_LOW_MEMORY

from bastion.config.passwords import _argon2_parses, check_hash

_GOOD = PasswordHasher().hash("pw")
_SMALL = PasswordHasher.from_parameters(RFC_9106_LOW_MEMORY).hash("pw")
_SAMPLES = [
    _GOOD,
    _SMALL,
    _GOOD.replace("$argon2id$", "$argon2i$"),
    _GOOD.replace("$argon2id$", "$argon2d$"),
    _GOOD.replace("$v=19", ""),  # v1.2: no version field
    _GOOD.replace("$argon2id$", "$argon2x$"),
    _GOOD.replace("m=", "mem="),
    _GOOD.replace(",p=4", ""),
    _GOOD.replace(",p=4", ",p=4,x=1"),
    _GOOD.replace("t=3", "t=three"),
    _GOOD.replace("t=3", "t=3=3"),
    _GOOD.replace("t=3", "t= 3"),
    _GOOD.replace("t=3", "t=+3"),
    _GOOD.replace("m=", "m=1,m="),
    _GOOD + "$extra",
    "x" + _GOOD,
    "$argon2id$",
    "$argon2id$v=19$m=65536,t=3,p=4$$",
    "$argon2",
]


@pytest.mark.parametrize("value", _SAMPLES, ids=[f"sample{i}" for i in range(len(_SAMPLES))])
def test_argon2_parse_agrees_with_argon2_cffi(value: str) -> None:
    try:
        PasswordHasher().check_needs_rehash(value)
        reads = True
    except (InvalidHashError, ValueError):
        reads = False
    assert _argon2_parses(value) is reads


def test_messages() -> None:
    assert check_hash(_GOOD) is None
    assert check_hash(bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()) is None
    assert check_hash("$2b$04$short") == "not a valid bcrypt hash (the value is hidden)"
    assert check_hash("$argon2id$broken") == "not a valid argon2 hash (the value is hidden)"
    assert check_hash("hunter2") == (
        "expected a bcrypt ($2b$...) or argon2 ($argon2id$...) hash, not a plain password"
    )
