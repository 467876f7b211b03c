"""Library errors to SAMI status codes: the one place the namespace turns an AudioError or a store's
refusal into an answer."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sami_gateway.errors import Code, GatewayError, error

from .audio.errors import AudioError, AudioErrorKind

if TYPE_CHECKING:  # the store's modules import torch; this module stays light (the fuzz tests import it)
    from .models.layout import ModelStoreError
    from .models.listing import ModelNotInStore

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


def missing_model_message(exc: ModelNotInStore) -> str:
    """What a client is told of a model the store lacks: the command an operator adds it with."""
    if exc.catalogued:
        return (f"model {exc.name!r} is not in this gateway's model store: an operator adds it with "
                f"`sami-gateway models fetch {exc.name}`")
    return (f"model {exc.name!r} is not in this gateway's model store nor in the official catalogue: an "
            f"operator adds its files (<sig>-<sha256 prefix>.th and {exc.name}.yaml) with "
            "`sami-gateway models import FILE...`")


def model_error(exc: ModelStoreError) -> GatewayError:
    """The answer for a model a request names that the store cannot give (40000022 IllegalPayload)."""
    from .models.listing import ModelNotInStore

    if isinstance(exc, ModelNotInStore):
        return error(Code.ILLEGAL_PAYLOAD, missing_model_message(exc))
    return error(Code.ILLEGAL_PAYLOAD, str(exc))
