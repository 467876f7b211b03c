"""The SDK against a real `sami-gateway serve`: GetToken, then invoke with that token."""

from __future__ import annotations

import io

import pytest
import soundfile as sf
from sami_client import AsyncSamiClient, BadRequest, SamiClient, Unauthorized

from tests.conftest import ACCESS_KEY, SECRET_KEY, Gateway, wav_bytes


def test_get_token_then_invoke(gateway: Gateway) -> None:
    with SamiClient(gateway.url) as client:
        token = client.get_token(ACCESS_KEY, SECRET_KEY, gateway.appkey, expiration=600)
        assert client.token == token
        result = client.invoke(gateway.appkey, data=wav_bytes(0.5), payload={"model": "2track_vocal"})
    audio, rate = sf.read(io.BytesIO(result.data), always_2d=True)
    assert rate == 44100 and audio.shape == (22050, 1)  # SAMI's default output: 44.1 kHz mono WAV
    assert result.payload["model"] == "2track_vocal" and result.task_id and result.namespace == "MusicSourceSeparate"


async def test_the_async_client_and_the_gateways_refusals(gateway: Gateway) -> None:
    async with AsyncSamiClient(gateway.url) as client:
        with pytest.raises(Unauthorized) as denied:
            await client.get_token(ACCESS_KEY, "not-the-secret-key-000", gateway.appkey)
        assert denied.value.status_text == "SignatureDoesNotMatch"
        with pytest.raises(Unauthorized) as bad_token:
            await client.invoke(gateway.appkey, data=wav_bytes(0.2), token="not-a-token")
        assert bad_token.value.status_code == 40200002 and bad_token.value.request_id
        await client.get_token(ACCESS_KEY, SECRET_KEY, gateway.appkey)
        with pytest.raises(BadRequest) as illegal:
            await client.invoke(gateway.appkey, data=b"definitely not audio")
        assert illegal.value.status_code == 40000012
        result = await client.invoke(gateway.appkey, data=wav_bytes(0.3),
                                     payload={"model": "2track_acc", "extra": {"output_channel": 2}})
        assert sf.read(io.BytesIO(result.data), always_2d=True)[0].shape == (13230, 2)
