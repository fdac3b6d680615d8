"""Decoder throughput: ``python -m protocol.bench [--mib N] [--repeat R]``.

Feeds a realistic stream of ``msg`` frames (payloads of about 100 bytes, what a
busy room sends) through one :class:`~protocol.framing.Decoder`, once in 64 KiB
chunks (a server reading a full socket buffer) and once one byte at a time (the
worst chunking a peer can force on us), and prints MB/s and messages/s, best
and median of a few repeats. The 1-byte run uses a smaller stream so it stays
short; both figures are per byte, so they compare directly.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

from protocol.framing import Decoder, encode
from protocol.limits import DEFAULT_MAX_FRAME
from protocol.messages import msg

_TEXT = "the quick brown fox jumps over a lazy dog while chat servers relay every word"
_WORDS = _TEXT.split(" ")


def make_stream(total_bytes: int) -> tuple[bytes, int]:
    """Concatenated ``msg`` frames of about ``total_bytes``; returns (stream, count)."""
    frames: list[bytes] = []
    size = 0
    seq = 1
    ts = 1_764_000_000_000
    while size < total_bytes:
        words = [_WORDS[(seq * 7 + i) % len(_WORDS)] for i in range(3 + seq % 5)]
        frame = encode(msg(seq, ts + seq, f"user{seq % 97}", " ".join(words), f"c{seq:08d}"))
        frames.append(frame)
        size += len(frame)
        seq += 1
    return b"".join(frames), len(frames)


def run_once(stream: bytes, chunk: int) -> tuple[float, int]:
    """Seconds to decode ``stream`` fed in ``chunk``-byte pieces, and messages out."""
    decoder = Decoder(DEFAULT_MAX_FRAME)
    feed = decoder.feed
    pieces = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    count = 0
    start = time.perf_counter()
    for piece in pieces:
        count += len(feed(piece))
    elapsed = time.perf_counter() - start
    if decoder.pending:
        raise AssertionError("stream left an incomplete frame")
    return elapsed, count


def measure(label: str, stream: bytes, expected: int, chunk: int, repeat: int) -> float:
    """Print the figures for one chunk size; return the best MB/s."""
    times = []
    for _ in range(repeat):
        elapsed, count = run_once(stream, chunk)
        if count != expected:
            raise AssertionError(f"decoded {count} messages, expected {expected}")
        times.append(elapsed)
    megabytes = len(stream) / 1e6
    best, median = min(times), statistics.median(times)
    print(
        f"{label:>15}: best {megabytes / best:8.1f} MB/s {expected / best:10.0f} msg/s"
        f" | median {megabytes / median:8.1f} MB/s {expected / median:10.0f} msg/s"
        f"  ({len(stream)} bytes, {expected} frames, {repeat} runs)"
    )
    return megabytes / best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=float, default=8.0, help="stream size for 64 KiB chunks")
    parser.add_argument("--byte-mib", type=float, default=1.0, help="stream size for 1-byte chunks")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"python {platform.python_version()} ({platform.python_implementation()}),"
        f" {os.cpu_count()} CPUs, load average {load}"
    )
    big, big_count = make_stream(int(args.mib * 1024 * 1024))
    small, small_count = make_stream(int(args.byte_mib * 1024 * 1024))
    payload = (len(big) - 4 * big_count) / big_count
    print(f"msg frames, mean payload {payload:.0f} bytes")
    chunked = measure("64 KiB chunks", big, big_count, 64 * 1024, args.repeat)
    dribbled = measure("1-byte chunks", small, small_count, 1, max(1, args.repeat // 2 + 1))
    print(f"1-byte chunks run at {dribbled / chunked:.2f} x the 64 KiB speed (best vs best)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
