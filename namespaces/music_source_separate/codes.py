"""Library errors to SAMI status codes: the one place the namespace turns an AudioError into an answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sami_gateway.errors import Code, GatewayError, error

from .audio.errors import AudioError, AudioErrorKind

CODES: dict[AudioErrorKind, Code] = {
    AudioErrorKind.EMPTY: Code.EMPTY_DATA,
    AudioErrorKind.INVALID: Code.ILLEGAL_DATA,
    AudioErrorKind.TOO_LONG: Code.EXCEEDED_DURATION,
    AudioErrorKind.BAD_HINT: Code.ILLEGAL_PAYLOAD,  # the hint comes from payload.audio_info
}


def gateway_error(exc: AudioError) -> GatewayError:
    """The answer for a refused input: the kind's status code, the library's message as the detail."""
    return error(CODES[exc.kind], str(exc))


@contextmanager
def translated() -> Iterator[None]:
    """Re-raise an AudioError from the block as its GatewayError."""
    try:
        yield
    except AudioError as exc:
        raise gateway_error(exc) from exc
