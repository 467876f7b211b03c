"""The MusicSourceSeparate payload: defaults, and 40000022 for every field out of range."""

from __future__ import annotations

from typing import Any

import pytest

from namespaces.music_source_separate.audio.encode import FORMATS
from namespaces.music_source_separate.requests.params import OUTPUT_FORMATS, OutputSpec, parse_params
from namespaces.music_source_separate.requests.sami_models import Target
from sami_gateway.errors import Code, GatewayError


def test_defaults() -> None:
    params = parse_params({})
    assert params.model.name == "2track_vocal" and params.model.target is Target.VOCALS
    assert params.output == OutputSpec("wav", 44100, 1)
    assert params.hint.format is None


def test_every_field() -> None:
    params = parse_params({"model": "bs_4track_acc", "url": "http://x",
                           "audio_info": {"format": "PCM", "sample_rate": 16000, "channel": 2},
                           "extra": {"output_format": "MP3", "output_sample_rate": 22050.0, "output_channel": 2}})
    assert params.model.denoise and params.model.target is Target.ACCOMPANIMENT
    assert (params.hint.format, params.hint.sample_rate, params.hint.channels) == ("pcm", 16000, 2)
    assert params.output == OutputSpec("mp3", 22050, 2)


@pytest.mark.parametrize("rate", [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000, 8001, 47999])
def test_wav_takes_any_rate_in_range(rate: int) -> None:
    assert parse_params({"extra": {"output_sample_rate": rate}}).output.sample_rate == rate


@pytest.mark.parametrize("payload", [
    {"model": 5}, {"model": "4track"}, {"model": ["2track_vocal"]},
    {"audio_info": "wav"}, {"audio_info": {"format": "midi"}}, {"audio_info": {"format": 3}},
    {"audio_info": {"sample_rate": "44100"}}, {"audio_info": {"sample_rate": 999}},
    {"audio_info": {"sample_rate": True}}, {"audio_info": {"channel": 0}}, {"audio_info": {"channel": 33}},
    {"audio_info": {"channel": 1.5}}, {"audio_info": {"format": "pcm", "sample_rate": 16000}},
    {"audio_info": {"format": "pcm", "channel": 1}},
    {"extra": []}, {"extra": {"output_format": "flac"}}, {"extra": {"output_format": 1}},
    {"extra": {"output_sample_rate": 7999}}, {"extra": {"output_sample_rate": 48001}},
    {"extra": {"output_sample_rate": 44100.5}}, {"extra": {"output_sample_rate": None, "output_channel": 0}},
    {"extra": {"output_channel": 3}}, {"extra": {"output_channel": "2"}},
    {"extra": {"output_format": "aac", "output_sample_rate": 44000}},
    {"extra": {"output_format": "mp3", "output_sample_rate": 9000}},
    {"extra": {"output_channels": 2}}, {"extra": {"output_samplerate": 16000}},
])
def test_illegal_payloads(payload: dict[str, Any]) -> None:
    with pytest.raises(GatewayError) as info:
        parse_params(payload)
    assert info.value.code is Code.ILLEGAL_PAYLOAD


def test_sami_output_formats_are_ones_the_encoder_writes() -> None:
    assert set(OUTPUT_FORMATS) <= set(FORMATS)
