"""The decoder benchmark runs and prints its figures (no speed is asserted)."""

from __future__ import annotations

import pytest

from protocol import Decoder, bench


def test_bench_prints_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--mib", "0.02", "--byte-mib", "0.005", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert "64 KiB chunks" in out
    assert "1-byte chunks" in out
    assert "MB/s" in out


def test_bench_stream_is_whole_msg_frames() -> None:
    stream, count = bench.make_stream(10_000)
    messages = Decoder(65536).feed(stream)
    assert len(messages) == count
    assert all(m["type"] == "msg" for m in messages)
    assert [m["seq"] for m in messages] == list(range(1, count + 1))
