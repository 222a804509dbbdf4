from __future__ import annotations

import pytest

from failsoft.durations import format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("90s", 90), ("30m", 1800), ("6h", 21600), ("30d", 2592000), ("1w", 604800),
     ("6 hours", 21600), ("30days", 2592000), ("1.5h", 5400), ("2 weeks", 1209600)],
)  # fmt: skip
def test_one_grammar_for_every_span(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["abc", "6 parsecs", "", "-5", "h"])
def test_a_bad_span_says_what_is_accepted(bad: str) -> None:
    with pytest.raises(ValueError, match="90s, 30m, 6h, 30d, 1w"):
        parse_duration(bad)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.25, "250ms"), (2.5, "2.5s"), (45, "45s"), (125, "2m 5s"), (7500, "2h 5m"), (2592000, "30d"),
     (700000, "8d 2h"), (3600, "1h")],
)  # fmt: skip
def test_spans_are_written_back_readably(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
