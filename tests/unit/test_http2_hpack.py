"""The gateway's HPACK encoder and memoizing decoder against the `hpack` library."""

from __future__ import annotations

from hpack import Decoder, Encoder

from bastion.http2.decoder import MemoDecoder
from bastion.http2.encoder import StaticEncoder


def test_static_encoder_round_trips_through_a_standard_decoder() -> None:
    fields = [
        (b":status", b"200"),  # a full static entry: one byte
        (b"content-type", b"application/problem+json"),  # static name, literal value
        (b"x-custom", b"v" * 300),  # new name, value length past the one-byte prefix
        (b"set-cookie", b"id=1"),
        (b"x-empty", b""),
    ]
    encoder = StaticEncoder()
    decoder = Decoder()
    block = encoder.encode(fields)
    assert block[:1] == b"\x88"
    assert decoder.decode(block, raw=True) == fields
    # the dynamic table stays empty: the same fields encode to the same bytes
    assert encoder.encode(fields) == block
    assert len(decoder.header_table.dynamic_entries) == 0


def test_static_encoder_signals_a_changed_table_size() -> None:
    encoder = StaticEncoder()
    decoder = Decoder()
    encoder.header_table_size = 0
    encoder.header_table_size = 256
    block = encoder.encode([(b":status", b"404")])
    assert decoder.decode(block, raw=True) == [(b":status", b"404")]
    assert decoder.header_table_size == 256
    # said once: the next block starts with the field again
    assert encoder.encode([(b":status", b"404")]) == b"\x8d"


def test_memo_decoder_follows_dynamic_table_changes() -> None:
    client = Encoder()
    decoder = MemoDecoder(65536)
    first = [(b":method", b"GET"), (b":path", b"/a"), (b"x-token", b"one")]
    assert decoder.decode(client.encode(first), raw=True) == first
    again = client.encode(first)  # now all references: remembered
    assert decoder.decode(again, raw=True) == first
    assert decoder.decode(again, raw=True) == first
    # a block inserting new entries shifts the dynamic indexes ...
    second = [(b":method", b"GET"), (b":path", b"/b"), (b"x-token", b"two")]
    assert decoder.decode(client.encode(second), raw=True) == second
    # ... so the same bytes as before now name other entries
    assert decoder.decode(again, raw=True) != first
    assert decoder.decode(client.encode(first), raw=True) == first


def test_memo_decoder_hands_out_independent_lists() -> None:
    client = Encoder()
    decoder = MemoDecoder(65536)
    fields = [(b":method", b"GET"), (b"accept", b"*/*")]
    decoder.decode(client.encode(fields), raw=True)
    block = client.encode(fields)
    got = decoder.decode(block, raw=True)
    got.append((b"x", b"y"))
    assert decoder.decode(block, raw=True) == fields
