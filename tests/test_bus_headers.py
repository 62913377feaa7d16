"""The bus's one-pass header parser gives what nats-py's own parser gives."""

from __future__ import annotations

import asyncio

from hypothesis import given, settings, strategies as st

from bus.client import FastHeadersClient
from events import EpochCompleted, decode_json, encode, headers_for
from events.codec import decode

names = st.text(st.characters(min_codepoint=9, max_codepoint=126, exclude_characters=":\r\n\x0b\x0c"), min_size=1, max_size=12)
values = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\r\n"), max_size=20)


def block(pairs: list[tuple[str, str]], status: str = "") -> bytes:
    lines = "".join(f"{name}: {value}\r\n" for name, value in pairs)
    return f"NATS/1.0{status}\r\n{lines}\r\n".encode()


def parse(raw: bytes, fast: bool):
    client = FastHeadersClient()
    method = client._process_headers if fast else super(FastHeadersClient, client)._process_headers
    return asyncio.run(method(raw))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(names, values), max_size=5), st.sampled_from(["", " 100 Idle Heartbeat", " 503"]))
def test_the_fast_parser_agrees_with_nats_py(pairs, status):
    raw = block(pairs, status)
    assert parse(raw, fast=True) == parse(raw, fast=False)


def test_the_headers_the_bus_writes_parse_in_one_pass():
    event = EpochCompleted(job_id="j", epoch=1, loss=0.5)
    raw = block(list(headers_for(event, 7).items()))
    assert parse(raw, fast=True) == {**headers_for(event, 7)}


def test_decode_json_keeps_the_stored_bytes():
    data = encode(EpochCompleted(job_id="j", epoch=1, loss=0.5))
    event, text = decode_json(data)
    assert event == decode(data) and text == data.decode()
