"""The gateway's HPACK encoder and memoizing decoder against the `hpack` library."""

from __future__ import annotations

from hpack import Decoder, Encoder

from bastion.http2.decoder import MemoDecoder, changes_table
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


def test_block_walker_tells_which_blocks_may_change_the_table() -> None:
    raw_path = b"\x05/api/"  # a raw 5-byte string literal
    assert not changes_table(b"\x82\x87")  # static references
    assert not changes_table(b"\x04" + raw_path)  # literal without indexing, indexed name
    assert not changes_table(b"\x14" + raw_path)  # never indexed
    assert not changes_table(b"\x00\x03x-k" + raw_path)  # without indexing, literal name
    assert not changes_table(b"\xff\x80\x01")  # a multi-byte index (static + dynamic)
    assert changes_table(b"\x44" + raw_path)  # incremental indexing
    assert changes_table(b"\x82\x3f\xe1\x1f")  # a table size update after a reference
    assert changes_table(b"\x04\x05/ap")  # cut short: the decoder refuses it
    assert changes_table(b"\x04\x7f")  # a length whose continuation is missing
    long_value = b"v" * 300
    block = Encoder().encode([(b"x-long", long_value, True)])  # never indexed, long
    assert not changes_table(block)


def test_memo_decoder_remembers_blocks_with_unindexed_literals() -> None:
    # nghttp2 never indexes :path, so a repeated request carries it as a literal each time
    client = Encoder()
    decoder = MemoDecoder(65536)
    fields = [(b":method", b"GET"), (b":path", b"/api/", True), (b"x-token", b"one")]
    plain = [(b":method", b"GET"), (b":path", b"/api/"), (b"x-token", b"one")]
    assert decoder.decode(client.encode(fields), raw=True) == plain
    again = client.encode(fields)
    assert not changes_table(again)
    assert decoder.decode(again, raw=True) == plain
    assert again in decoder.memo
    assert decoder.decode(again, raw=True) == plain
    # a block that indexes something new empties it: the old bytes may mean other fields
    assert decoder.decode(client.encode([(b"x-new", b"1")]), raw=True) == [(b"x-new", b"1")]
    assert not decoder.memo


def test_memo_decoder_says_which_blocks_passed_the_field_scans() -> None:
    client = Encoder()
    decoder = MemoDecoder(65536)
    fields = [(b":method", b"GET"), (b":path", b"/a", True)]
    decoder.decode(client.encode(fields), raw=True)
    block = client.encode(fields)
    decoder.decode(block, raw=True)
    assert not decoder.hit  # remembered, not yet marked
    decoder.mark_checked(block, decoder.generation)
    decoder.decode(block, raw=True)
    assert decoder.hit
    decoder.mark_checked(b"\x82", decoder.generation)  # not in the memo: never marked
    assert b"\x82" not in decoder.checked
    # a block that changes the table forgets both the blocks and the marks
    decoder.decode(client.encode([(b"x-new", b"1")]), raw=True)
    decoder.decode(block, raw=True)
    assert not decoder.hit and not decoder.checked


def test_a_mark_for_a_list_decoded_before_the_table_changed_is_refused() -> None:
    """The blocks of one read are decoded before any request is scanned: a block that
    changes the table in between can make the same bytes decode to other fields, and a
    mark for the first list must not cover the second."""
    client = Encoder()
    decoder = MemoDecoder(65536)
    decoder.decode(client.encode([(b":method", b"GET"), (b"x-a", b"ok")]), raw=True)
    block = client.encode([(b":method", b"GET"), (b"x-a", b"ok")])  # references only
    assert decoder.decode(block, raw=True)[1] == (b"x-a", b"ok")
    scanned_in = decoder.generation
    # another block inserts an entry: index 62 now names it
    decoder.decode(client.encode([(b"x-a", b"bad\r\nvalue")]), raw=True)
    assert decoder.decode(block, raw=True)[1] == (b"x-a", b"bad\r\nvalue")
    decoder.mark_checked(block, scanned_in)  # the first list's scan, arriving late
    decoder.decode(block, raw=True)
    assert not decoder.hit
