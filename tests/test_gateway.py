"""End to end: `sami-gateway serve` on loopback, driven like real SAMI clients."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from tests.conftest import ROOT, Gateway, encode_input, tone, wav_bytes

MODELS = ("2track_vocal", "2track_acc", "bs_4track_vocal", "bs_4track_acc")
CLIP_SECONDS = 1.5


def ok(response) -> dict:  # type: ignore[no-untyped-def]
    reply = response.json()
    assert (response.status_code, reply["status_code"], reply["status_text"]) == (200, 20000000, "OK"), reply
    return reply


def audio_of(reply: dict) -> bytes:  # type: ignore[type-arg]
    return base64.b64decode(reply["data"], validate=True)


def separate(gateway: Gateway, data: bytes, **payload: object) -> dict:  # type: ignore[type-arg]
    body = gateway.auth(data=base64.b64encode(data).decode(), payload=json.dumps(payload))
    return ok(gateway.invoke(body))


def decoded_av(data: bytes) -> tuple[int, int, int]:
    """(rate, channels, frames) of an encoded file, as a decoder sees it."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        frames = sum(frame.samples for frame in container.decode(stream))
        return stream.rate, stream.channels, frames


@pytest.mark.parametrize("model", MODELS)
def test_python_sample_client(gateway: Gateway, tmp_path: Path, model: str) -> None:
    """The official Python sample, host/appkey/token changed: a 44.1 kHz mono WAV as long as the input."""
    source = tmp_path / "song.wav"
    source.write_bytes(wav_bytes(CLIP_SECONDS))
    env = {**os.environ, "SAMI_URL": gateway.url, "SAMI_APPKEY": gateway.appkey, "SAMI_TOKEN": gateway.token}
    run = subprocess.run([sys.executable, str(ROOT / "examples/python/invoke.py"), str(source), model],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "status_code=20000000" in run.stdout
    audio, rate = sf.read(tmp_path / "output.wav", always_2d=True)
    assert rate == 44100 and audio.shape == (int(CLIP_SECONDS * 44100), 1)
    assert sf.info(str(tmp_path / "output.wav")).subtype == "PCM_16"


@pytest.mark.parametrize("model", MODELS)
def test_go_sample_client(gateway: Gateway, go_client: Path, tmp_path: Path, model: str) -> None:
    """The official Go sample (query-string credentials, `Data []byte`) gets the WAV."""
    source = tmp_path / "song.wav"
    source.write_bytes(wav_bytes(CLIP_SECONDS, rate=48000, channels=1))
    env = {**os.environ, "SAMI_URL": gateway.url, "SAMI_APPKEY": gateway.appkey, "SAMI_TOKEN": gateway.token}
    run = subprocess.run([str(go_client), str(source), model], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    audio, rate = sf.read(tmp_path / "output.wav", always_2d=True)
    assert rate == 44100 and audio.shape == (int(CLIP_SECONDS * 44100), 1)
    assert json.loads((tmp_path / "output.json").read_text())["model"] == model


@pytest.mark.parametrize("fmt", ["mp3", "aac", "m4a"])
def test_sample_clients_asking_for_a_codec(gateway: Gateway, go_build: Callable[[Path], Path], tmp_path: Path,
                                           fmt: str) -> None:
    """Both samples with their payload line edited to ask for mp3, aac or m4a, as a user would:
    the reply decodes at the input's rate and length (ADTS: with its priming frame)."""
    python_sample = (ROOT / "examples/python/invoke.py").read_text()
    edited = python_sample.replace('json.dumps({"model": model})',
                                   f'json.dumps({{"model": model, "extra": {{"output_format": "{fmt}"}}}})')
    go_folder = tmp_path / "go"
    shutil.copytree(ROOT / "examples/go", go_folder)
    go_source = (go_folder / "main.go").read_text()
    (go_folder / "main.go").write_text(go_source.replace(
        '{\\"model\\":\\"%v\\"}', f'{{\\"model\\":\\"%v\\",\\"extra\\":{{\\"output_format\\":\\"{fmt}\\"}}}}'))
    assert edited != python_sample and (go_folder / "main.go").read_text() != go_source
    (tmp_path / "invoke.py").write_text(edited)
    source = tmp_path / "song.wav"
    source.write_bytes(wav_bytes(CLIP_SECONDS))
    env = {**os.environ, "SAMI_URL": gateway.url, "SAMI_APPKEY": gateway.appkey, "SAMI_TOKEN": gateway.token}
    for command in ([sys.executable, str(tmp_path / "invoke.py"), str(source), "2track_acc"],
                    [str(go_build(go_folder)), str(source), "2track_acc"]):
        (tmp_path / "output.wav").unlink(missing_ok=True)
        run = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stdout + run.stderr
        rate, channels, frames = decoded_av((tmp_path / "output.wav").read_bytes())  # the samples' file name
        expected = int(CLIP_SECONDS * 44100)
        assert (rate, channels) == (44100, 1)
        if fmt == "aac":
            assert expected + 1024 <= frames < expected + 2048, frames
        else:
            assert frames == expected, (command[0], frames)


def test_vocals_plus_accompaniment_rebuild_the_input(gateway: Gateway) -> None:
    mix = tone(CLIP_SECONDS)
    data = wav_bytes(CLIP_SECONDS)
    parts = [sf.read(io.BytesIO(audio_of(separate(gateway, data, model=m, extra={"output_channel": 2}))),
                     always_2d=True)[0] for m in ("2track_vocal", "2track_acc")]
    original = sf.read(io.BytesIO(data), always_2d=True)[0]
    assert np.abs(parts[0] + parts[1] - original).max() < 5e-4  # two 16-bit roundings
    assert np.abs(mix).max() > 0.1


def test_result_payload_describes_the_output(gateway: Gateway) -> None:
    reply = separate(gateway, wav_bytes(1.0, rate=22050, channels=1), model="bs_4track_acc",
                     extra={"output_sample_rate": 16000, "output_channel": 2})
    payload = json.loads(reply["payload"])
    assert payload["model"] == "bs_4track_acc" and payload["backend_model"] == "htdemucs"
    assert (payload["sample_rate"], payload["channel"], payload["format"]) == (16000, 2, "wav")
    assert payload["duration"] == pytest.approx(1.0)
    assert payload["input"] == {"format": "wav", "sample_rate": 22050, "channel": 1, "duration": 1.0}
    assert payload["processing_time"] > 0
    two_track = json.loads(separate(gateway, wav_bytes(0.5), model="2track_acc")["payload"])
    assert two_track["backend_model"] == "htdemucs_ft:vocals"


OUTPUT_CASES = [(fmt, rate, channels) for fmt in ("wav", "mp3", "aac", "m4a")
                for rate, channels in ((8000, 1), (11025, 2), (16000, 1), (22050, 2),
                                       (24000, 1), (32000, 2), (44100, 2), (48000, 1))]


@pytest.mark.parametrize(("fmt", "rate", "channels"), OUTPUT_CASES)
def test_output_formats(gateway: Gateway, fmt: str, rate: int, channels: int) -> None:
    seconds = 1.0
    reply = separate(gateway, wav_bytes(seconds), model="2track_acc",
                     extra={"output_format": fmt, "output_sample_rate": rate, "output_channel": channels})
    got_rate, got_channels, frames = decoded_av(audio_of(reply))
    assert (got_rate, got_channels) == (rate, channels)
    expected = int(seconds * rate)
    if fmt == "aac":  # ADTS has no place for the priming frame and the padding: decoders return them
        assert expected + 1024 <= frames < expected + 2048, (frames, expected)
    else:  # wav; mp3 (LAME's delay and padding) and m4a (an edit list) say their exact length
        assert frames == expected


@pytest.mark.parametrize(("fmt", "rate", "channels"), [
    ("wav", 44100, 2), ("wav", 8000, 1), ("flac", 48000, 2), ("ogg", 44100, 1),
    ("mp3", 44100, 2), ("mp3", 22050, 1), ("aac", 44100, 2), ("m4a", 48000, 2), ("pcm", 16000, 1),
    ("pcm", 44100, 2),
])
def test_input_formats(gateway: Gateway, fmt: str, rate: int, channels: int) -> None:
    payload: dict[str, object] = {"model": "2track_vocal"}
    if fmt == "pcm":
        payload["audio_info"] = {"format": "pcm", "sample_rate": rate, "channel": channels}
    reply = separate(gateway, encode_input(fmt, 1.0, rate, channels), **payload)
    result = json.loads(reply["payload"])
    assert result["input"]["sample_rate"] == rate and result["input"]["channel"] == channels
    assert result["input"]["format"] == {"m4a": "mp4"}.get(fmt, fmt)
    output, out_rate = sf.read(io.BytesIO(audio_of(reply)), always_2d=True)
    assert out_rate == 44100 and output.shape[1] == 1
    # The output lasts exactly as long as what the decoder gave for the input.
    assert output.shape[0] == round(result["input"]["duration"] * rate * 44100 / rate)
    if fmt in ("wav", "flac", "ogg", "pcm"):
        assert output.shape[0] == 44100


def test_payload_url(gateway: Gateway, origin: str) -> None:
    reply = ok(gateway.invoke(gateway.auth(payload=json.dumps({"url": origin + "/song.wav"}))))
    assert json.loads(reply["payload"])["duration"] == pytest.approx(1.0)


def test_official_volcengine_signer_gets_a_token_that_invokes(gateway: Gateway) -> None:
    """GetToken as SAMI clients call it (volcengine's signed Service.json), then invoke with that token."""
    from tests.conftest import ACCESS_KEY, SECRET_KEY
    from tests.test_gettoken import sdk_get_token

    host = gateway.url.removeprefix("http://")
    reply = sdk_get_token(host, {"token_version": "volc-auth-v1", "appkey": gateway.appkey, "expiration": 600},
                          ACCESS_KEY, SECRET_KEY)
    assert reply["status_code"] == 20000000 and reply["expires_at"] > time.time() + 500
    body = {**gateway.auth(token=reply["token"]), "data": base64.b64encode(wav_bytes(0.3)).decode()}
    ok(gateway.invoke(body))
    with pytest.raises(Exception, match="AccessDenied"):  # the SDK raises with the error envelope
        sdk_get_token(host, {"appkey": "someone-else"}, ACCESS_KEY, SECRET_KEY)
