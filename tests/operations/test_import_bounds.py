"""`ogv team import` reads a line 64 KiB at most: a 200 MB line costs what a small file
does (worker/operations/importer.py `bounded_lines`)."""

from __future__ import annotations

import io
import tracemalloc

from worker.operations.importer import LINE_MAX, TOO_LONG, bounded_lines


class EndlessLine(io.RawIOBase):
    """`size` bytes of one line, then a short one, made as they are read (never held)."""

    def __init__(self, size: int) -> None:
        self.left = size
        self.tail = b'\n{"short": 1}\n'

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        if self.left > 0:
            n = min(len(buffer), self.left)
            buffer[:n] = b"x" * n
            self.left -= n
            return n
        n = min(len(buffer), len(self.tail))
        buffer[:n], self.tail = self.tail[:n], self.tail[n:]
        return n


def peak_bytes(handle: io.RawIOBase) -> tuple[list[object], int]:
    tracemalloc.start()
    try:
        lines = list(bounded_lines(io.BufferedReader(handle)))
        return lines, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_200_mb_line_costs_no_more_than_a_small_file() -> None:
    big_lines, big_peak = peak_bytes(EndlessLine(200 * 1024 * 1024))
    small_lines, small_peak = peak_bytes(EndlessLine(10))

    assert big_lines == [TOO_LONG, b'{"short": 1}']
    assert small_lines == [b"x" * 10, b'{"short": 1}']
    assert big_peak < small_peak + 4 * LINE_MAX


def test_lines_are_cut_exactly_at_the_limit() -> None:
    data = b"a" * 10 + b"\n" + b"b" * 11 + b"\n\n" + b"c" * 10
    lines = list(bounded_lines(io.BytesIO(data), limit=10))
    assert lines == [b"a" * 10, TOO_LONG, b"", b"c" * 10]
