"""`models()` of both clients against the fake gateway: the listing as values, refusals and retries."""

from __future__ import annotations

import pytest
from sami_client import AsyncSamiClient, JobModel, ModelList, SamiClient, Unauthorized

from .fake_gateway import FOUR, MODELS, Answer, FakeGateway, error_answer


def check_listing(listing: ModelList) -> None:
    assert listing.default_model == "htdemucs" and listing.names == ("htdemucs", "2track_acc")
    htdemucs = listing.get("htdemucs")
    assert isinstance(htdemucs, JobModel) and htdemucs.kind == "demucs"
    assert htdemucs.sources == htdemucs.default_stems == tuple(FOUR) and "no_vocals" in htdemucs.stems
    sami = listing.get("2track_acc")
    assert sami is not None and sami.stems == ("vocals", "no_vocals") and sami.default_stems == ("no_vocals",)
    assert listing.get("htdemucs_6s") is None
    assert listing.output["formats"] == ["wav", "flac", "mp3", "aac"] and listing.raw == MODELS


def test_models_lists_what_a_job_may_name(fake: FakeGateway, client: SamiClient) -> None:
    check_listing(client.models())
    seen = fake.requests_to("GET", "/api/v1/models")
    assert len(seen) == 1 and seen[0].headers["Authorization"] == "Bearer fake-token" and not seen[0].body


async def test_the_async_client_lists_the_same(fake: FakeGateway, aclient: AsyncSamiClient) -> None:
    check_listing(await aclient.models())


def test_a_503_is_retried_and_a_401_raised(fake: FakeGateway, client: SamiClient) -> None:
    fake.script[("GET", "/api/v1/models")].append(
        error_answer(503, 50300001, "ServerOverloaded", "busy", **{"Retry-After": "0"}))
    assert client.models().default_model == "htdemucs"
    assert len(fake.requests_to("GET", "/api/v1/models")) == 2
    fake.script[("GET", "/api/v1/models")].append(error_answer(401, 40200002, "DeniedAccess", "bad token"))
    with pytest.raises(Unauthorized):
        client.models()


def test_a_listing_without_a_runnable_default(fake: FakeGateway, client: SamiClient) -> None:
    fake.script[("GET", "/api/v1/models")].append(Answer(200, {**MODELS, "default_model": None, "models": []}))
    listing = client.models()
    assert listing.default_model is None and listing.models == () and listing.names == ()
