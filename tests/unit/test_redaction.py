"""Secrets are redacted where they stand as values, never as substrings of other words; key
parameters are masked in logged targets whatever their case or place."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import ConfigError, load_config
from bastion.config.show import MIN_ANYWHERE, REDACTED, redact
from bastion.observe.accesslog import redact_query


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        # a short secret: only a whole token
        ("expected bytes, got 'y'", "y", f"expected bytes, got '{REDACTED}'"),
        ("user:y@host yes y_y", "y", f"user:{REDACTED}@host yes y_y"),
        ("port 80 of 8080", "80", f"port {REDACTED} of 8080"),
        ("a.b and .", ".", f"a.b and {REDACTED}"),
        ("1", "1", REDACTED),
        # a long one: wherever it occurs, also glued to other text
        ("http://abcdefgh@x and xabcdefghx", "abcdefgh", f"http://{REDACTED}@x and x{REDACTED}x"),
    ],
)
def test_redact_values_not_substrings(text: str, secret: str, expected: str) -> None:
    assert redact(text, [secret]) == expected


def test_longest_secret_first_and_the_threshold() -> None:
    long = "abc-" + "d" * (MIN_ANYWHERE - 4)
    assert redact(f"{long} and abc", ["abc", long]) == f"{REDACTED} and {REDACTED}"
    short = "k" * (MIN_ANYWHERE - 1)
    assert redact(f"x{short}x {short}", [short]) == f"x{short}x {REDACTED}"


def test_a_one_letter_secret_leaves_a_config_error_readable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONE_LETTER", "e")
    path = tmp_path / "bastion.yaml"
    path.write_text('listen: {http: "${ONE_LETTER}"}\nsites: []\n', encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = info.value.issues[0].message
    assert message.startswith(f"missing port in '{REDACTED}'; expected host:port, [ipv6]:port")


@pytest.mark.parametrize(
    ("target", "masked"),
    [
        (b"/a?API_KEY=k1", b"/a?API_KEY=REDACTED"),
        (b"/a;api_key=k1", b"/a;api_key=REDACTED"),
        (b"/a;API-KEY=k1;v=2?b=1", b"/a;API-KEY=REDACTED;v=2?b=1"),
        (b"/a?b=1;Api_Key=k1&c=2", b"/a?b=1;Api_Key=REDACTED&c=2"),
        (b"/a?x-api-key=k1&X_API_KEY=k2", b"/a?x-api-key=REDACTED&X_API_KEY=REDACTED"),
        (b"/a?%41pi_key=k1", b"/a?%41pi_key=REDACTED"),
        (b"/a?api_key_x=k1&xapi_key=k2", b"/a?api_key_x=k1&xapi_key=k2"),
        (b"/a?b=api_key&api_key", b"/a?b=api_key&api_key"),
        (b"/api_key=k1", b"/api_key=k1"),  # not a parameter: no ? or ; before it
    ],
)
def test_key_parameters_masked_case_insensitively_and_in_path_parameters(
    target: bytes, masked: bytes
) -> None:
    # the names as the worker collects them: the query name and the header name
    names = frozenset(("api_key", "x_api_key"))
    assert redact_query(target, names) == masked
