"""``state.encryption_key``: the accepted forms, a clear error at its line that never shows
the value, and sealed private keys that open only with the same key under the same name."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from bastion.config import ConfigError, load_config
from bastion.config.state_models import encryption_key_bytes
from bastion.state.sealing import Sealer, SealError

KEY = bytes(range(32))
PEM = b"-----BEGIN PRIVATE KEY-----\nMIGHAgEA\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize(
    "text",
    [
        KEY.hex(),
        KEY.hex().upper(),
        base64.b64encode(KEY).decode(),
        base64.urlsafe_b64encode(KEY).decode(),
    ],
)
def test_a_key_in_hex_or_base64(text: str) -> None:
    assert encryption_key_bytes(text) == KEY


def test_a_bad_key_is_reported_at_its_line_without_its_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SEAL_KEY", "c2hvcnQtc2VjcmV0LXZhbHVl")  # 18 bytes: too short
    path = tmp_path / "bastion.yaml"
    path.write_text(
        "listen: {http: 127.0.0.1:8080}\n"
        "state:\n"
        "  redis: redis://127.0.0.1:6379/0\n"
        "  encryption_key: ${SEAL_KEY}\n"
        "sites: [{hosts: ['*'], routes: [{path: /, respond: {status: 200}}]}]\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "bastion.yaml:4: state.encryption_key: expected a 32-byte key" in message
    assert "openssl rand -base64 32" in message
    assert "c2hvcnQtc2VjcmV0LXZhbHVl" not in message


def test_sealed_keys_open_with_the_same_key_under_the_same_name() -> None:
    sealer = Sealer(KEY)
    sealed = sealer.seal(PEM, "p:{cert:a}:pair#key")
    assert PEM not in sealed and b"PRIVATE KEY" not in sealed
    assert sealer.open(sealed, "p:{cert:a}:pair#key") == PEM
    # a plain value (stored before a key was set) still opens
    assert sealer.open(PEM, "p:{cert:a}:pair#key") == PEM
    with pytest.raises(SealError, match=r"does not decrypt with state\.encryption_key"):
        Sealer(bytes(32)).open(sealed, "p:{cert:a}:pair#key")
    with pytest.raises(SealError, match="does not decrypt"):  # copied under another name
        sealer.open(sealed, "p:{cert:b}:pair#key")
    with pytest.raises(SealError, match=r"state\.encryption_key is not set") as info:
        Sealer(None).open(sealed, "p:{cert:a}:pair#key")
    assert "the key the other instances use" in info.value.hint
