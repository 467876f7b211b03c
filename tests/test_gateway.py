"""End to end: `sami-gateway serve` on loopback, driven like real SAMI clients."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import orjson
import pytest
import requests
import soundfile as sf

from sami_gateway.auth import TokenService
from tests.conftest import APPKEY, LIMITED_APPKEY, ROOT, SECRET, Gateway, issue_token, tone, wav_bytes

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


@pytest.fixture(scope="module")
def go_client(tmp_path_factory: pytest.TempPathFactory) -> Path:
    go = shutil.which("go")
    assert go, "golang-go is required: bash scripts/install.sh --test installs it"
    out = tmp_path_factory.mktemp("go") / "invoke"
    cache = tmp_path_factory.mktemp("gocache")
    env = {**os.environ, "GOCACHE": str(cache), "GOPATH": str(cache / "path"), "GOFLAGS": "-mod=mod",
           "GOPROXY": "off", "CGO_ENABLED": "0"}
    subprocess.run([go, "build", "-o", str(out), "."], cwd=ROOT / "examples/go", env=env,
                   check=True, timeout=300)
    return out


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


OUTPUT_CASES = [(fmt, rate, channels) for fmt in ("wav", "mp3", "aac")
                for rate, channels in ((8000, 1), (11025, 2), (16000, 1), (22050, 2),
                                       (24000, 1), (32000, 2), (44100, 2), (48000, 1))]
CODEC_FRAME = {"mp3": 1152, "aac": 1024}


@pytest.mark.parametrize(("fmt", "rate", "channels"), OUTPUT_CASES)
def test_output_formats(gateway: Gateway, fmt: str, rate: int, channels: int) -> None:
    seconds = 1.0
    reply = separate(gateway, wav_bytes(seconds), model="2track_acc",
                     extra={"output_format": fmt, "output_sample_rate": rate, "output_channel": channels})
    got_rate, got_channels, frames = decoded_av(audio_of(reply))
    assert (got_rate, got_channels) == (rate, channels)
    expected = int(seconds * rate)
    if fmt == "wav":
        assert frames == expected
    else:  # lossy: within one codec frame (ADTS also carries the AAC priming frame)
        slack = CODEC_FRAME[fmt] * (2 if fmt == "aac" else 1)
        assert expected <= frames <= expected + slack, (frames, expected)


def encode_input(fmt: str, seconds: float = 1.0, rate: int = 44100, channels: int = 2) -> bytes:
    samples = tone(seconds, rate, channels)
    if fmt in ("wav", "flac", "ogg"):
        buffer = io.BytesIO()
        sf.write(buffer, samples, rate, format=fmt.upper())
        return buffer.getvalue()
    if fmt == "pcm":
        return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    container_format, codec = {"mp3": ("mp3", "libmp3lame"), "aac": ("adts", "aac"),
                               "m4a": ("ipod", "aac")}[fmt]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=rate, layout="stereo" if channels == 2 else "mono")
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.T), format="fltp",
                                           layout="stereo" if channels == 2 else "mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()


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


def test_wav_with_six_channels_is_downmixed(gateway: Gateway) -> None:
    reply = separate(gateway, wav_bytes(0.5, channels=6), extra={"output_channel": 2})
    output, _ = sf.read(io.BytesIO(audio_of(reply)), always_2d=True)
    assert json.loads(reply["payload"])["input"]["channel"] == 6
    assert output.shape == (22050, 2) and np.abs(output).max() > 0


@pytest.fixture(scope="module")
def origin() -> Iterator[str]:
    """A plain HTTP server on loopback serving a WAV and an empty file."""
    files = {"/song.wav": wav_bytes(1.0), "/empty.wav": b"", "/big.wav": b"\0" * (9 * 1024 * 1024)}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/to-loopback":  # a public-looking name redirecting inside
                self.send_response(302)
                self.send_header("Location", f"http://127.0.0.1:{self.server.server_address[1]}/song.wav")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = files.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://localhost:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_payload_url(gateway: Gateway, origin: str) -> None:
    reply = ok(gateway.invoke(gateway.auth(payload=json.dumps({"url": origin + "/song.wav"}))))
    assert json.loads(reply["payload"])["duration"] == pytest.approx(1.0)


def as_body(gateway: Gateway, data: bytes | str | None = None, **payload: object) -> dict[str, object]:
    body = gateway.auth(payload=json.dumps(payload))
    if data is not None:
        body["data"] = data if isinstance(data, str) else base64.b64encode(data).decode()
    return body


def expired_token(appkey: str) -> str:
    return TokenService(SECRET).issue(appkey, 10, now=time.time() - 99)


REJECTIONS = {
    "unknown appkey": (lambda g, o: g.auth(appkey="nobody", data="QUJD"), 401, 40200001),
    "expired token": (lambda g, o: g.auth(token=expired_token(g.appkey)), 401, 40200002),
    "other secret": (lambda g, o: g.auth(token=issue_token(g.appkey, secret="x" * 40)), 401, 40200002),
    "bad token": (lambda g, o: g.auth(token="not.a.jwt"), 401, 40200002),
    "unknown namespace": (lambda g, o: g.auth(namespace="Nope", data="QUJD"), 400, 40200014),
    "namespace not allowed": (lambda g, o: {**g.auth(appkey=LIMITED_APPKEY,
                                                      token=issue_token(LIMITED_APPKEY)), "data": "QUJD"},
                              400, 40200014),
    "url-safe base64": (lambda g, o: as_body(g, "QUI-"), 400, 40000010),
    "unpadded base64": (lambda g, o: as_body(g, "QUI"), 400, 40000010),
    "no data no url": (lambda g, o: as_body(g), 400, 40000023),
    "not audio": (lambda g, o: as_body(g, b"hello, not audio at all" * 10), 400, 40000012),
    "payload not json": (lambda g, o: {**as_body(g, wav_bytes(0.2)), "payload": "{model:"}, 400, 40000020),
    "payload object": (lambda g, o: {**as_body(g, wav_bytes(0.2)), "payload": {"model": "x"}}, 400, 40000020),
    "unknown model": (lambda g, o: as_body(g, wav_bytes(0.2), model="5track"), 400, 40000022),
    "rate too low": (lambda g, o: as_body(g, wav_bytes(0.2), extra={"output_sample_rate": 7999}),
                     400, 40000022),
    "rate too high": (lambda g, o: as_body(g, wav_bytes(0.2), extra={"output_sample_rate": 96000}),
                      400, 40000022),
    "mp3 odd rate": (lambda g, o: as_body(g, wav_bytes(0.2), extra={"output_format": "mp3",
                                                                    "output_sample_rate": 44000}),
                     400, 40000022),
    "three channels": (lambda g, o: as_body(g, wav_bytes(0.2), extra={"output_channel": 3}), 400, 40000022),
    "rate as string": (lambda g, o: as_body(g, wav_bytes(0.2), extra={"output_sample_rate": "44100"}),
                       400, 40000022),
    "flac output": (lambda g, o: as_body(g, wav_bytes(0.2), extra={"output_format": "flac"}), 400, 40000022),
    "pcm without rate": (lambda g, o: as_body(g, b"\0\1" * 1000, audio_info={"format": "pcm"}),
                         400, 40000022),
    "too long": (lambda g, o: as_body(g, wav_bytes(61, rate=8000, channels=1)), 400, 40000013),
    "too large": (lambda g, o: as_body(g, b"\0" * (8 * 1024 * 1024 + 1)), 400, 40000016),
    "url loopback ip": (lambda g, o: as_body(g, url=o.replace("localhost", "127.0.0.1") + "/song.wav"),
                        400, 40000024),
    "url metadata": (lambda g, o: as_body(g, url="http://169.254.169.254/latest/meta-data"), 400, 40000024),
    "url ftp": (lambda g, o: as_body(g, url="ftp://localhost/song.wav"), 400, 40000024),
    "url 404": (lambda g, o: as_body(g, url=o + "/missing.wav"), 400, 40000024),
    "url empty": (lambda g, o: as_body(g, url=o + "/empty.wav"), 400, 40000011),
    "version unsupported": (lambda g, o: {**g.auth(version="v3"), "data": "QUJD"}, 400, 40000000),
    "no token": (lambda g, o: {**g.auth(), "token": "", "data": "QUJD"}, 401, 40200002),
    "no namespace": (lambda g, o: {**g.auth(), "namespace": "", "data": "QUJD"}, 400, 40200014),
    "url redirect inside": (lambda g, o: as_body(g, url=o + "/to-loopback"), 400, 40000024),
    "url too large": (lambda g, o: as_body(g, url=o + "/big.wav"), 400, 40000016),
    "unknown extra": (lambda g, o: as_body(g, wav_bytes(0.2), extra={"output_channels": 2}), 400, 40000022),
}
QUERY_CASES = {  # body fields, query fields
    "appkey conflict": (lambda g: g.auth(), {"appkey": "someone-else"}, 400, 40000000),
    "namespace conflict": (lambda g: g.auth(), {"namespace": "Other"}, 400, 40000000),
    "version conflict": (lambda g: {**g.auth(version="v4"), "data": "QUJD"}, {"version": "v3"}, 400, 40000000),
    "repeated appkey": (lambda g: g.auth(), {"appkey": ["a", "b"]}, 400, 40000000),
    "bad token in query": (lambda g: {"data": "QUJD"}, {"appkey": APPKEY, "token": "x",
                                                        "namespace": "MusicSourceSeparate"}, 401, 40200002),
}


@pytest.mark.parametrize("case", REJECTIONS)
def test_rejections(gateway: Gateway, origin: str, case: str) -> None:
    build, http, code = REJECTIONS[case]
    assert_refused(gateway, gateway.invoke(build(gateway, origin)), http, code)


@pytest.mark.parametrize("case", QUERY_CASES)
def test_query_rejections(gateway: Gateway, case: str) -> None:
    build, query, http, code = QUERY_CASES[case]
    assert_refused(gateway, gateway.invoke(build(gateway), params=query), http, code)


def test_unknown_path_and_method(gateway: Gateway) -> None:
    assert_refused(gateway, requests.get(gateway.url + "/api/v2/invoke", timeout=10), 404, 40400001)
    assert_refused(gateway, requests.get(gateway.url + "/api/v1/invoke", timeout=10), 405, 40500001)


def assert_refused(gateway: Gateway, response: requests.Response, http: int, code: int) -> None:
    assert response.headers["Content-Type"].startswith("application/json")
    reply = response.json()
    assert (response.status_code, reply["status_code"]) == (http, code), reply
    assert reply["task_id"] and isinstance(reply["status_text"], str) and "data" not in reply
    separate(gateway, wav_bytes(0.3))  # the service still answers


def test_malformed_and_oversized_bodies_get_the_envelope(gateway: Gateway) -> None:
    for raw, http, code in ((b"{oops", 400, 40000000), (b"[]", 400, 40000000),
                            (b" " * (12 * 1024 * 1024), 400, 40000016)):
        response = gateway.invoke(raw=raw)
        assert response.headers["Content-Type"].startswith("application/json")
        assert (response.status_code, response.json()["status_code"]) == (http, code)
    response = gateway.invoke(raw=b"{}", params=None)
    assert response.json()["status_code"] == 40200001
    assert orjson.loads(gateway.invoke(raw=b"{}").content)["task_id"]
    separate(gateway, wav_bytes(0.3))


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
