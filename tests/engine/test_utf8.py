"""Streamed text keeps UTF-8 whole: pieces split inside a character are held back; invalid bytes become
U+FFFD exactly as Python's errors="replace" does."""

from __future__ import annotations

import pytest

import omni_engine as oe

Acc = oe.internals.Utf8Accumulator


@pytest.mark.parametrize("text", ["你好，世界", "emoji 🎙️ and ü", "ASCII only"])
def test_split_at_every_byte(text: str) -> None:
    data = text.encode()
    acc = Acc()
    outputs = [acc.push(data[i : i + 1]) for i in range(len(data))]
    assert "".join(outputs) + acc.flush() == text
    for out in outputs:
        out.encode("utf-8")  # every piece is complete text on its own


@pytest.mark.parametrize(
    "data",
    [b"\xe4\xbdA", b"\xe0\x80z", b"\xff\xfeok", b"\xed\xa0\x80x", b"a\xc3", b"\xf0\x9f\x8e", b"\x80\x80\x80"],
)
def test_invalid_bytes_match_python_replace(data: bytes) -> None:
    acc = Acc()
    assert acc.push(data) + acc.flush() == data.decode("utf-8", errors="replace")
