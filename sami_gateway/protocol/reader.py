"""The invoke body read as it arrives: `data` base64-decoded piece by piece, the rest parsed once.

A 100 MB input is a 133 MB body. Parsing it whole with one `orjson.loads` and one base64 call
holds the event loop for hundreds of milliseconds; fed chunk by chunk, each piece costs tens of
microseconds and the body's text is never held. Only the string value of the top-level `data`
key is streamed: everything else (routing fields, the payload string) is kept, with `data`'s
value left as `""`, and parsed by orjson when the body ends, so JSON validity is judged exactly
as a whole-body parse would judge it.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import mmap
import re
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any

import orjson

from ..errors import Code, error

MIN_MAP_BYTES = 64 * 1024  # smaller data is handed on as bytes
# The JSON around `data` (routing fields, payload string), kept whole and parsed at the end: far
# above a real one, and small enough that its parse holds the event loop for milliseconds.
ENVELOPE_BYTES = 4 * 1024 * 1024
NOT_BASE64 = "data is not standard padded base64"
_STRUCTURE = re.compile(rb'["{}\[\],:]')
_STRING_END = re.compile(rb'["\\]')
# Found with bytes.translate and bytes.find, which cost a few percent of a regular expression's
# search: data's text is most of a body, and it is scanned on the event loop.
BASE64_CHARS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
CONTROL_CHARS = bytes(range(0x20))  # JSON forbids them raw in a string
_ESCAPED = {ord("/"): b"/", ord('"'): b'"', ord("\\"): b"\\", ord("b"): b"\b", ord("f"): b"\f",
            ord("n"): b"\n", ord("r"): b"\r", ord("t"): b"\t"}
_HEX = frozenset(b"0123456789abcdefABCDEF")


class _State(Enum):
    OUTSIDE = auto()  # between tokens
    STRING = auto()  # inside a string other than data's value
    DATA = auto()  # inside data's value
    FAILED = auto()  # the body is not JSON: the rest is read and ignored


class DecodedBuffer:
    """Decoded bytes in an anonymous memory map: its pages are faulted in as pieces are written
    and it grows by remapping, so no step copies or zero-fills the whole input at once (tens of
    milliseconds for 100 MB, on whichever thread holds the GIL). The map is handed on as it is:
    sliceable like bytes and readable as a file, without a copy."""

    def __init__(self, capacity: int) -> None:
        self._map = mmap.mmap(-1, max(capacity, MIN_MAP_BYTES), flags=mmap.MAP_PRIVATE)  # shared maps cannot grow
        self._size = 0

    def append(self, piece: bytes) -> None:
        end = self._size + len(piece)
        if end > len(self._map):
            self._map.resize(max(end, 2 * len(self._map)))
        self._map[self._size:end] = piece
        self._size = end

    def last(self, count: int) -> bytes:
        return self._map[self._size - count:self._size]

    def discard(self) -> None:
        self._size = 0
        self._map.resize(MIN_MAP_BYTES)

    def value(self) -> bytes | mmap.mmap:
        if self._size < MIN_MAP_BYTES:
            return self._map[:self._size]
        self._map.resize(self._size)
        return self._map


class DataDecoder:
    """Strict standard padded base64 (RFC 4648 section 4), decoded as pieces of text arrive.

    Complete quanta are decoded at once; a quantum holding `=` is kept until the text ends,
    since only the last one may be padded. Invalid text is remembered, not raised: the gateway
    answers a request's auth and payload errors before its data's."""

    def __init__(self, max_bytes: int, expected_bytes: int = 0) -> None:
        self._max_text = 4 * -(-max_bytes // 3)
        self._pending = b""
        self._tail = b""  # the text's last two characters, for the size of a padded text
        self._buffer = DecodedBuffer(min(expected_bytes, max_bytes))
        self.text_length = 0
        self.invalid: str | None = None

    @property
    def size(self) -> int:
        """Bytes the text decodes to, known without decoding it (as SAMI's size limit counts)."""
        return self.text_length // 4 * 3 - self._tail.count(b"=")

    def feed(self, text: bytes) -> bool:
        """Take the next piece of text; False if it holds a character base64 never has (the text
        is then invalid, and the caller may look for what else is wrong with it)."""
        self.text_length += len(text)
        self._tail = (self._tail + text[-2:])[-2:]
        alphabetic = not text.translate(None, BASE64_CHARS)
        if not alphabetic:  # whitespace, URL-safe characters, non-ASCII
            self.invalid = NOT_BASE64
        if self.invalid is not None or self.text_length > self._max_text:
            self._buffer.discard()  # over the limit: counted, not kept
            return alphabetic
        text = self._pending + text if self._pending else text
        padded = text.find(b"=")
        whole = len(text) - len(text) % 4 if padded < 0 else padded - padded % 4
        self._pending = text[whole:]
        if padded >= 0 and len(self._pending) > 4:  # `=` before the last quantum
            self.invalid = NOT_BASE64
        elif whole:  # whole quanta of the alphabet, no padding: a lenient decode is as strict, and faster
            self._buffer.append(binascii.a2b_base64(text[:whole] if whole < len(text) else text))
        return True

    def _decode_last(self, text: bytes) -> None:
        try:
            # strict_mode refuses misplaced padding and data after it.
            piece = binascii.a2b_base64(text, strict_mode=True)
        except binascii.Error:
            self.invalid = NOT_BASE64
            return
        self._buffer.append(piece)

    def finish(self) -> None:
        """The text has ended: its last quantum must be complete and its padding bits zero."""
        last = self._pending
        self._pending = b""
        if self.invalid is not None or self.text_length > self._max_text or not last:
            return
        if len(last) != 4:
            self.invalid = NOT_BASE64
            return
        self._decode_last(last)
        # Only the last quantum can carry non-zero padding bits ("QR==" would silently become "QQ==").
        if self.invalid is None and base64.b64encode(self._buffer.last(3 - last.count(b"="))) != last:
            self.invalid = "data has non-zero padding bits"

    def value(self) -> bytes | mmap.mmap:
        """The decoded bytes, or the refusal the text earned."""
        if self.invalid is not None or self.text_length > self._max_text:
            raise error(Code.INVALID_DATA, self.invalid or NOT_BASE64)
        return self._buffer.value()


@dataclass
class ReceivedEnvelope:
    """A whole invoke body: its JSON object (data's value as "") and data decoded on the way."""

    fields: dict[str, Any]
    data: DataDecoder | None  # None: no `data` string was streamed


class EnvelopeReader:
    """Feed the body's chunks in order, then `close()`; never holds more than the envelope
    around `data` plus the decoded bytes."""

    def __init__(self, max_data_bytes: int, expected_bytes: int = 0) -> None:
        self._max_data = max_data_bytes
        self._expected = expected_bytes * 3 // 4
        self._rest = bytearray()
        self._state = _State.OUTSIDE
        self._depth = 0
        self._expect_key = False
        self._key: bytes | None = None  # the depth-1 key being read, or the last one read
        self._reading_key = False
        self._data_value_next = False  # just after `"data":` at depth 1
        self._escape = b""  # an escape cut by a chunk boundary, backslash included
        self._utf8: codecs.IncrementalDecoder | None = None  # set once data holds a non-ASCII byte
        self.data: DataDecoder | None = None
        self.failure: str | None = None

    def feed(self, chunk: bytes) -> None:
        pos = 0
        while pos < len(chunk) and self._state is not _State.FAILED:
            if self._state is _State.DATA:
                pos = self._in_data(chunk, pos)
            elif self._state is _State.STRING:
                pos = self._in_string(chunk, pos)
            else:
                pos = self._outside(chunk, pos)
        if len(self._rest) > ENVELOPE_BYTES:
            raise error(Code.EXCEEDED_DATA_SIZE, f"the envelope around data is larger than {ENVELOPE_BYTES} bytes",
                        {"Connection": "close"})

    def _fail(self, reason: str) -> int:
        self._state, self.failure = _State.FAILED, reason
        return 1 << 62

    def _outside(self, chunk: bytes, pos: int) -> int:
        found = _STRUCTURE.search(chunk, pos)
        end = found.start() if found else len(chunk)
        if self._data_value_next and chunk[pos:end].strip():
            self._data_value_next = False  # `"data": 5` or null: the JSON parse at the end judges it
        self._rest += chunk[pos:end + 1]
        if found is None:
            return end
        self._token(chunk[end])
        return end + 1

    def _token(self, char: int) -> None:
        data_next, self._data_value_next = self._data_value_next, False
        if char == ord('"'):
            if data_next:
                self._start_data()
            else:
                self._reading_key = self._depth == 1 and self._expect_key
                self._key = b"" if self._reading_key else self._key
                self._state = _State.STRING
        elif char in b"{[":
            self._depth += 1
            self._expect_key = char == ord("{") and self._depth == 1
        elif char in b"}]":
            self._depth -= 1
        elif char == ord(",") and self._depth == 1:
            self._expect_key = True
        elif char == ord(":") and self._depth == 1:
            self._expect_key = False
            self._data_value_next = self._key == b"data"

    def _start_data(self) -> None:
        if self.data is not None:
            self._fail("data is repeated")
            return
        self.data = DataDecoder(self._max_data, self._expected)
        self._state = _State.DATA

    def _in_string(self, chunk: bytes, pos: int) -> int:
        if self._escape:  # the character after a backslash that ended the previous chunk
            self._escape = b""
            self._rest += chunk[pos:pos + 1]
            self._key = None
            return pos + 1
        found = _STRING_END.search(chunk, pos)
        end = found.start() if found else len(chunk)
        if self._reading_key and self._key is not None:
            self._key = self._key + chunk[pos:end] if len(self._key) < 8 else None
        if found is None:
            self._rest += chunk[pos:]
            return end
        if chunk[end] == ord('"'):
            self._rest += chunk[pos:end + 1]
            self._state = _State.OUTSIDE
            return end + 1
        self._key = None  # an escaped key is never the raw `data` key; the parse at the end sees it
        self._rest += chunk[pos:end + 2]
        if end + 1 >= len(chunk):
            self._escape = b"\\"
        return end + 2

    def _in_data(self, chunk: bytes, pos: int) -> int:
        assert self.data is not None
        if self._escape:
            return self._escaped(chunk, pos)
        quote = chunk.find(b'"', pos)
        end = len(chunk) if quote < 0 else quote
        backslash = chunk.find(b"\\", pos, end)
        end = end if backslash < 0 else backslash
        if end > pos:
            text = chunk[pos:end]
            if not self.data.feed(text) or self._utf8 is not None:  # not base64: is it JSON?
                if len(text.translate(None, CONTROL_CHARS)) < len(text):
                    return self._fail("a control character in a string")
                if self._utf8 is not None or not text.isascii():
                    self._check_utf8(text)
        if end == len(chunk):
            return end
        if chunk[end] == ord('"'):
            if self._utf8 is not None:
                self._check_utf8(b"", final=True)
            self.data.finish()
            self._rest += b'"'
            self._state = _State.OUTSIDE
        else:
            self._escape = b"\\"
        return end + 1

    def _escaped(self, chunk: bytes, pos: int) -> int:
        """One escape in data's value, possibly cut across chunks: `\\/` is `/` (PHP writes it)."""
        assert self.data is not None
        want = 6 if self._escape[1:2] == b"u" else 2
        take = chunk[pos:pos + want - len(self._escape)]
        self._escape += take
        if len(self._escape) < want:
            return pos + len(take)
        escape, self._escape = self._escape, b""
        if want == 2:
            char = _ESCAPED.get(escape[1])
            if char is None and escape[1] != ord("u"):
                return self._fail("an invalid escape")
            if char is None:  # `\u`: four hex digits follow
                self._escape = escape
                return pos + len(take)
        elif not _HEX.issuperset(escape[2:]):
            return self._fail("an invalid escape")
        else:
            code = int(escape[2:], 16)
            char = bytes([code]) if code < 0x80 else b"\x80"  # not ASCII: invalid base64 either way
        self.data.feed(char)
        return pos + len(take)

    def _check_utf8(self, text: bytes, final: bool = False) -> None:
        """Non-ASCII in data is invalid base64; invalid UTF-8 makes the whole body invalid JSON."""
        if self._utf8 is None:
            self._utf8 = codecs.getincrementaldecoder("utf-8")()
        try:
            self._utf8.decode(text, final)
        except UnicodeDecodeError:
            self._fail("invalid UTF-8")

    def close(self) -> ReceivedEnvelope:
        """The body has ended: its JSON object, or the envelope's refusal."""
        if self.failure is not None:
            raise error(Code.CLIENT_ERROR, "body is not valid JSON")
        fields = parse_object(bytes(self._rest), Code.CLIENT_ERROR, "body") if self._rest.strip() else {}
        if self.data is not None and fields.get("data") != "":
            raise error(Code.CLIENT_ERROR, "data is repeated")
        return ReceivedEnvelope(fields, self.data)


def parse_object(text: bytes | str, code: Code, what: str) -> dict[str, Any]:
    """A JSON object, or the refusal `code`."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise error(code, f"{what} is not valid JSON") from exc
    if not isinstance(value, dict):
        raise error(code, f"{what} is not a JSON object")
    return value


def read_envelope(body: bytes, max_data_bytes: int) -> ReceivedEnvelope:
    """A whole body at once, through the same reader."""
    reader = EnvelopeReader(max_data_bytes, len(body))
    reader.feed(body)
    return reader.close()


def decode_text(text: str, max_bytes: int) -> DataDecoder:
    """A base64 string already in hand (e.g. `data` under an escaped key), decoded the same way."""
    decoder = DataDecoder(max_bytes)
    decoder.feed(text.encode("utf-8", "surrogatepass"))
    decoder.finish()
    return decoder

