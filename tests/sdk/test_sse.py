"""The SDK's Server-Sent Events reader: lines end at CR, LF or CRLF only, however the text is cut."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st
from sami_client._sse import EventDecoder, LineReader

STREAM = ("event: status\r\ndata: {\"name\":\"a\u2028b\u2029c\x85d\"}\r\n\r\n"
          ": keep-alive \x0b\x0c\x1c\n\nevent: progress\rdata: {\"progress\":50}\r\r")


def lines_of(pieces: list[str]) -> list[str]:
    reader = LineReader()
    return [line for piece in pieces for line in reader.feed(piece)]


def test_only_cr_lf_and_crlf_end_a_line() -> None:
    assert lines_of([STREAM]) == ["event: status", "data: {\"name\":\"a\u2028b\u2029c\x85d\"}", "",
                                  ": keep-alive \x0b\x0c\x1c", "", "event: progress", "data: {\"progress\":50}", ""]


@given(st.lists(st.integers(0, len(STREAM)), max_size=12))
def test_the_lines_do_not_depend_on_where_the_text_is_cut(cuts: list[int]) -> None:
    bounds = [0, *sorted(cuts), len(STREAM)]
    assert lines_of([STREAM[a:b] for a, b in itertools.pairwise(bounds)]) == lines_of([STREAM])


def test_events_keep_unicode_line_separators_in_their_data() -> None:
    decoder = EventDecoder()
    events = [event for piece in (STREAM[:20], STREAM[20:]) for event in decoder.feed_text(piece)]
    assert [event.event for event in events] == ["status", "progress"]
    assert events[0].data == {"name": "a\u2028b\u2029c\x85d"} and events[1].progress == 50
