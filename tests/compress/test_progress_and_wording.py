"""The progress bar (terminal and log forms) and the size wording shared by every report."""

import io

import pytest

from compress.progress import ProgressBar
from compress.size import compare_bytes, format_bytes


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_off_a_terminal_the_bar_prints_a_line_per_tenth_and_the_last():
    stream = io.StringIO()
    with ProgressBar(40, "work", stream=stream) as bar:
        for i in range(40):
            bar.step(f"item{i}")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 11 and lines[-1].startswith("work [" + "#" * 24 + "] 40/40")
    assert lines[-1].endswith("item39")


def test_on_a_terminal_the_bar_redraws_one_line():
    stream = Terminal()
    with ProgressBar(3, "work", stream=stream) as bar:
        for _ in range(3):
            bar.step()
    text = stream.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1


def test_a_disabled_or_empty_bar_is_silent_and_bad_totals_raise():
    stream = io.StringIO()
    ProgressBar(5, "work", enabled=False, stream=stream).step()
    ProgressBar(0, "work", stream=stream).close()
    assert stream.getvalue() == ""
    for total in (-1, 2.5, True):
        with pytest.raises(ValueError, match="total must be an int"):
            ProgressBar(total, "work")


def test_byte_counts_and_ratios_in_words():
    assert [format_bytes(n) for n in (0, 999, 1900, 4_562_752, 123_456_789, 2_500_000_000)] == [
        "0 B", "999 B", "1.9 kB", "4.56 MB", "123 MB", "2.5 GB",
    ]  # fmt: skip
    assert compare_bytes(100, 7, "dense") == "14.3x smaller than dense"
    assert compare_bytes(7, 10, "dense bfloat16") == "1.4x larger than dense bfloat16"
    assert compare_bytes(5, 5) == "the same size as before"
    with pytest.raises(ValueError, match="byte count"):
        format_bytes(-1)
