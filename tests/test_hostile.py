"""The hostile-input suite: crafted bad requests against a live `sami-gateway serve`.

Each case asserts its exact answer (HTTP status and SAMI status_code, in the JSON
envelope) within DEADLINE_SECONDS, then that a valid request still succeeds. While the
suite runs, a sampler watches the gateway's resident memory. The last test checks the
stated bound: neither the peak during the suite nor the resident memory after it rose
more than RSS_GROWTH_LIMIT above the peak of valid requests alone.
"""

from __future__ import annotations

import base64
import io
import json
import threading
import time
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import jwt
import numpy as np
import orjson
import pytest
import requests
import soundfile as sf

from namespaces.music_source_separate.audio import framing
from sami_gateway.auth.authenticator import TokenService
from tests.conftest import APPKEY, LIMITED_APPKEY, SECRET, Gateway, encode_input, issue_token, tone, wav_bytes

DEADLINE_SECONDS = 30.0  # every answer, refusal or not, comes within this
RSS_GROWTH_LIMIT = 128 * 2**20  # the stated bound, over the peak of valid requests alone
TEN_HOURS = 10 * 3600

Send = Callable[[Gateway, str], requests.Response]


# --- crafted audio ----------------------------------------------------------------------------

@cache
def sample(fmt: str) -> bytes:
    return encode_input(fmt, 2.0)


def truncated(fmt: str) -> bytes:
    data = sample(fmt)
    return data[: len(data) * 3 // 5]


def zeroed_middle(fmt: str) -> bytes:
    data = bytearray(sample(fmt))
    start, size = len(data) // 3, len(data) // 10
    data[start:start + size] = bytes(size)
    return bytes(data)


def flipped(fmt: str) -> bytes:
    data = bytearray(sample(fmt))
    for position in range(len(data) // 3, 2 * len(data) // 3, len(data) // 50):
        data[position] ^= 0x5A
    return bytes(data)


def float_wav(value: float) -> bytes:
    samples = tone(0.5)
    samples[100, 0] = value
    return soundfile_bytes(samples, 44100, "FLOAT")


def soundfile_bytes(samples: np.ndarray, rate: int, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


def wav_header(channels: int, rate: int, data: bytes, declared: int | None = None, tag: int = 1) -> bytes:
    """A RIFF WAVE of 16-bit samples written by hand, so its header can say anything."""
    block = 2 * channels
    fmt = (tag.to_bytes(2, "little") + channels.to_bytes(2, "little") + rate.to_bytes(4, "little")
           + (rate * block).to_bytes(4, "little") + block.to_bytes(2, "little") + (16).to_bytes(2, "little"))
    size = len(data) if declared is None else declared
    chunks = b"fmt " + len(fmt).to_bytes(4, "little") + fmt + b"data" + size.to_bytes(4, "little") + data
    return b"RIFF" + (4 + len(chunks)).to_bytes(4, "little") + b"WAVE" + chunks


def flac_claiming(seconds: int) -> bytes:
    """A real FLAC whose STREAMINFO total-samples field says `seconds` at its rate."""
    data = bytearray(sample("flac"))
    field = int.from_bytes(data[18:26], "big")  # rate, channels, bits, then 36 bits of total samples
    data[18:26] = ((field & ~((1 << 36) - 1)) | seconds * 44100).to_bytes(8, "big")
    return bytes(data)


def mp3_claiming(seconds: int) -> bytes:
    """A real MP3 whose Xing/Info header declares `seconds` worth of frames."""
    data = bytearray(sample("mp3"))
    tag = max(data.find(b"Xing"), data.find(b"Info"))
    assert tag > 0 and data[tag + 7] & 1, "the encoder writes a frame count"
    data[tag + 8:tag + 12] = (seconds * 44100 // 1152).to_bytes(4, "big")
    return bytes(data)


def mp3_cut_at_a_frame() -> bytes:
    """An MP3 cut cleanly between two frames: only its Xing frame count shows the loss."""
    data = sample("mp3")
    position = framing.skip_id3(data)
    for _ in range(20):
        position += framing.mp3_frame_length(data, position) or 0
    return data[:position]


# --- request builders -------------------------------------------------------------------------

def as_body(gateway: Gateway, data: bytes | str | None = None, **payload: object) -> dict[str, object]:
    body = gateway.auth(payload=json.dumps(payload))
    if data is not None:
        body["data"] = data if isinstance(data, str) else base64.b64encode(data).decode()
    return body


def audio(make: Callable[[], bytes], **payload: object) -> Send:
    return lambda g, o: g.invoke(as_body(g, make(), **payload), timeout=DEADLINE_SECONDS)


def fields(**values: object) -> Send:
    return lambda g, o: g.invoke(g.auth(**values), timeout=DEADLINE_SECONDS)


def extra(**values: object) -> Send:
    return audio(lambda: wav_bytes(0.2), extra=values)


def url(make: Callable[[str], str]) -> Send:
    return lambda g, o: g.invoke(as_body(g, url=make(o)), timeout=DEADLINE_SECONDS)


def raw(body: bytes) -> Send:
    return lambda g, o: g.invoke(raw=body, timeout=DEADLINE_SECONDS)


def query(values: dict[str, object], build: Callable[[Gateway], dict[str, object]] = Gateway.auth) -> Send:
    return lambda g, o: g.invoke(build(g), params=values, timeout=DEADLINE_SECONDS)  # type: ignore[arg-type]


def expired_token(appkey: str) -> str:
    return TokenService(SECRET).issue(appkey, 10, now=time.time() - 99)


def unsigned_token(appkey: str) -> str:
    now = int(time.time())
    return jwt.encode({"appkey": appkey, "iat": now, "exp": now + 600}, key="", algorithm="none")


CASES: dict[str, tuple[Send, int, int]] = {
    # The envelope: framing, JSON, base64.
    "body not json": (raw(b"{oops"), 400, 40000000),
    "body a json array": (raw(b"[]"), 400, 40000000),
    "body not utf-8": (raw(b'{"appkey": "\xff\xfe"}'), 400, 40000000),
    "body nested 100k deep": (raw(b"[" * 100_000 + b"]" * 100_000), 400, 40000000),
    "body all spaces past the cap": (raw(b" " * (12 * 1024 * 1024)), 400, 40000016),
    "empty object": (raw(b"{}"), 401, 40200001),
    "version unsupported": (fields(version="v3", data="QUJD"), 400, 40000000),
    "url-safe base64": (lambda g, o: g.invoke(as_body(g, "QUI-")), 400, 40000010),
    "unpadded base64": (lambda g, o: g.invoke(as_body(g, "QUI")), 400, 40000010),
    "base64 padding bits set": (lambda g, o: g.invoke(as_body(g, "QUJ=")), 400, 40000010),
    "base64 with newlines": (lambda g, o: g.invoke(as_body(g, "QUJD\nREVG")), 400, 40000010),
    "data a number": (fields(data=12345), 400, 40000010),
    "no data no url": (lambda g, o: g.invoke(as_body(g)), 400, 40000023),
    "data too large": (lambda g, o: g.invoke(as_body(g, b"\0" * (8 * 1024 * 1024 + 1))), 400, 40000016),
    # Query string and body together.
    "appkey conflict": (query({"appkey": "someone-else"}), 400, 40000000),
    "namespace conflict": (query({"namespace": "Other"}), 400, 40000000),
    "version conflict": (query({"version": "v3"}, lambda g: {**g.auth(version="v4"), "data": "QUJD"}),
                         400, 40000000),
    "repeated appkey": (query({"appkey": ["a", "b"]}), 400, 40000000),
    "bad token in query": (query({"appkey": APPKEY, "token": "x", "namespace": "MusicSourceSeparate"},
                                 lambda g: {"data": "QUJD"}), 401, 40200002),
    # Who is asking.
    "unknown appkey": (fields(appkey="nobody", data="QUJD"), 401, 40200001),
    "appkey a number": (fields(appkey=7, data="QUJD"), 400, 40000000),
    "appkey of a megabyte": (fields(appkey="k" * 2**20, data="QUJD"), 401, 40200001),
    "no token": (fields(token="", data="QUJD"), 401, 40200002),
    "bad token": (fields(token="not.a.jwt"), 401, 40200002),
    "expired token": (lambda g, o: g.invoke(g.auth(token=expired_token(g.appkey))), 401, 40200002),
    "token of another secret": (lambda g, o: g.invoke(g.auth(token=issue_token(g.appkey, secret="x" * 40))),
                                401, 40200002),
    "unsigned token (alg none)": (lambda g, o: g.invoke(g.auth(token=unsigned_token(g.appkey))), 401, 40200002),
    "token of another appkey": (lambda g, o: g.invoke(g.auth(token=issue_token(LIMITED_APPKEY))), 401, 40200002),
    "unknown namespace": (fields(namespace="Nope", data="QUJD"), 400, 40200014),
    "no namespace": (fields(namespace="", data="QUJD"), 400, 40200014),
    "namespace not allowed": (lambda g, o: g.invoke({**g.auth(appkey=LIMITED_APPKEY,
                                                              token=issue_token(LIMITED_APPKEY)), "data": "QUJD"}),
                              400, 40200014),
    # The payload.
    "payload not json": (fields(data=base64.b64encode(wav_bytes(0.2)).decode(), payload="{model:"), 400, 40000020),
    "payload an object": (fields(data=base64.b64encode(wav_bytes(0.2)).decode(), payload={"model": "x"}),
                          400, 40000020),
    "unknown model": (audio(lambda: wav_bytes(0.2), model="5track"), 400, 40000022),
    "model a list": (audio(lambda: wav_bytes(0.2), model=["2track_vocal"]), 400, 40000022),
    "extra a string": (audio(lambda: wav_bytes(0.2), extra="44100"), 400, 40000022),
    "unknown extra key": (extra(output_channels=2), 400, 40000022),
    "rate too low": (extra(output_sample_rate=7999), 400, 40000022),
    "rate too high": (extra(output_sample_rate=96000), 400, 40000022),
    "rate a string": (extra(output_sample_rate="44100"), 400, 40000022),
    "rate a fraction": (extra(output_sample_rate=44100.5), 400, 40000022),
    "rate true": (extra(output_sample_rate=True), 400, 40000022),
    "mp3 at an odd rate": (extra(output_format="mp3", output_sample_rate=44000), 400, 40000022),
    "flac output": (extra(output_format="flac"), 400, 40000022),
    "zero channels out": (extra(output_channel=0), 400, 40000022),
    "three channels out": (extra(output_channel=3), 400, 40000022),
    "pcm without rate": (audio(lambda: b"\0\1" * 1000, audio_info={"format": "pcm"}), 400, 40000022),
    "pcm at 384 kHz": (audio(lambda: b"\0\1" * 1000, audio_info={"format": "pcm", "sample_rate": 384000,
                                                                  "channel": 1}), 400, 40000022),
    "pcm of 3 channels": (audio(lambda: b"\0\1" * 1200, audio_info={"format": "pcm", "sample_rate": 16000,
                                                                     "channel": 3}), 400, 40000022),
    "pcm odd byte count": (audio(lambda: b"\0\1" * 1000 + b"\0", audio_info={"format": "pcm", "sample_rate": 16000,
                                                                              "channel": 1}), 400, 40000012),
    # Audio that is not what it seems.
    "not audio": (audio(lambda: b"hello, not audio at all" * 10), 400, 40000012),
    "png image": (audio(lambda: b"\x89PNG\r\n\x1a\n" + bytes(2000)), 400, 40000012),
    "id3 tag and nothing": (audio(lambda: b"ID3\x04\0\0\0\0\0\x10" + bytes(16)), 400, 40000012),
    "riff header and noise": (audio(lambda: b"RIFF\xff\xff\xff\x7fWAVE" + bytes(range(256)) * 8), 400, 40000012),
    "ftyp box only": (audio(lambda: b"\0\0\0\x18ftypM4A \0\0\0\0M4A mp42"), 400, 40000012),
    "mp4 of 500k empty boxes": (audio(lambda: b"\0\0\0\x18ftypM4A \0\0\0\0M4A mp42" + b"\0\0\0\x08free" * 2**19),
                                     400, 40000012),
    "ogg chained": (audio(lambda: sample("ogg") * 2), 400, 40000012),
    "wav with NaN": (audio(lambda: float_wav(float("nan"))), 400, 40000012),
    "wav with Inf": (audio(lambda: float_wav(float("inf"))), 400, 40000012),
    "wav of zero samples": (audio(lambda: soundfile_bytes(np.zeros((0, 2), np.float32), 44100)), 400, 40000012),
    "wav of one sample": (audio(lambda: soundfile_bytes(np.zeros((1, 2), np.float32), 44100)), 400, 40000012),
    "wav of 8 channels": (audio(lambda: wav_bytes(0.3, channels=8)), 400, 40000012),
    "wav header of 200 channels": (audio(lambda: wav_header(200, 44100, bytes(400 * 100))), 400, 40000012),
    "wav at 384 kHz": (audio(lambda: wav_bytes(0.3, rate=384000, channels=1)), 400, 40000012),
    "wav at 4 kHz": (audio(lambda: wav_bytes(0.3, rate=4000, channels=1)), 400, 40000012),
    "wav of unknown encoding": (audio(lambda: wav_header(2, 44100, bytes(4000), tag=0x1234)), 400, 40000012),
    "wav claiming 10 hours": (audio(lambda: wav_header(1, 8000, bytes(4000), declared=TEN_HOURS * 16000)),
                              400, 40000012),
    "flac claiming 10 hours": (audio(lambda: flac_claiming(TEN_HOURS)), 400, 40000013),
    "mp3 claiming 10 hours": (audio(lambda: mp3_claiming(TEN_HOURS)), 400, 40000012),  # its frames say 2 s
    "over the duration limit": (audio(lambda: wav_bytes(61, rate=8000, channels=1)), 400, 40000013),
    "mp3 cut between frames": (audio(mp3_cut_at_a_frame), 400, 40000012),
    "ogg with flipped bytes": (audio(lambda: flipped("ogg")), 400, 40000012),
    "flac with flipped bytes": (audio(lambda: flipped("flac")), 400, 40000012),
    **{f"{fmt} truncated": (audio(lambda fmt=fmt: truncated(fmt)), 400, 40000012)  # type: ignore[misc]
       for fmt in ("wav", "flac", "ogg", "mp3", "aac", "m4a")},
    **{f"{fmt} zeroed in the middle": (audio(lambda fmt=fmt: zeroed_middle(fmt)), 400, 40000012)  # type: ignore[misc]
       for fmt in ("flac", "ogg", "mp3", "aac", "m4a")},
    # payload.url tricks (the origin is reached as `localhost`, which the test gateway allows).
    "url a number": (lambda g, o: g.invoke(as_body(g, url=80)), 400, 40000022),
    "url loopback ip": (url(lambda o: o.replace("localhost", "127.0.0.1") + "/song.wav"), 400, 40000024),
    "url loopback shorthand 127.1": (url(lambda o: o.replace("localhost", "127.1") + "/song.wav"), 400, 40000024),
    "url loopback as a decimal": (url(lambda o: o.replace("localhost", "2130706433") + "/song.wav"),
                                  400, 40000024),
    "url loopback ipv6": (url(lambda o: o.replace("localhost", "[::1]") + "/song.wav"), 400, 40000024),
    "url ipv4-mapped ipv6": (url(lambda o: o.replace("localhost", "[::ffff:127.0.0.1]") + "/song.wav"),
                             400, 40000024),
    "url userinfo trick": (url(lambda o: o.replace("localhost", "localhost@127.0.0.1") + "/song.wav"),
                           400, 40000024),
    "url unspecified 0.0.0.0": (url(lambda o: "http://0.0.0.0/"), 400, 40000024),
    "url private 10/8": (url(lambda o: "http://10.0.0.1/song.wav"), 400, 40000024),
    "url private 192.168/16": (url(lambda o: "http://192.168.1.1/song.wav"), 400, 40000024),
    "url cgnat": (url(lambda o: "http://100.64.0.1/song.wav"), 400, 40000024),
    "url metadata": (url(lambda o: "http://169.254.169.254/latest/meta-data"), 400, 40000024),
    "url metadata ipv6": (url(lambda o: "http://[fd00:ec2::254]/latest/meta-data"), 400, 40000024),
    "url multicast": (url(lambda o: "http://224.0.0.1/"), 400, 40000024),
    "url ftp": (url(lambda o: "ftp://localhost/song.wav"), 400, 40000024),
    "url file": (url(lambda o: "file:///etc/passwd"), 400, 40000024),
    "url no host": (url(lambda o: "http:///song.wav"), 400, 40000024),
    "url redirect to loopback": (url(lambda o: o + "/to-loopback"), 400, 40000024),
    "url redirect to metadata": (url(lambda o: o + "/to-metadata"), 400, 40000024),
    "url redirect loop": (url(lambda o: o + "/loop"), 400, 40000024),
    "url 404": (url(lambda o: o + "/missing.wav"), 400, 40000024),
    "url empty body": (url(lambda o: o + "/empty.wav"), 400, 40000011),
    "url too large": (url(lambda o: o + "/big.wav"), 400, 40000016),
    "url too large, no length": (url(lambda o: o + "/big-unannounced"), 400, 40000016),
}


# --- memory watch -----------------------------------------------------------------------------

def resident_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line")


class MemoryWatch:
    """Samples a process's resident memory every few milliseconds in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak = resident_bytes(pid)
        self.baseline = self.peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, resident_bytes(self.pid))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


@pytest.fixture(scope="module")
def memory(gateway: Gateway) -> Iterator[MemoryWatch]:
    """The watch, its baseline the peak of a few valid requests (models loaded, buffers warm)."""
    watch = MemoryWatch(gateway.process.pid)
    for _ in range(3):
        separate(gateway)
    watch.baseline = watch.peak
    yield watch
    watch.stop()


def separate(gateway: Gateway) -> None:
    """A valid request succeeds: the service still serves."""
    response = gateway.invoke(as_body(gateway, wav_bytes(0.3)), timeout=DEADLINE_SECONDS)
    assert (response.status_code, response.json()["status_code"]) == (200, 20000000), response.text


# --- the suite --------------------------------------------------------------------------------

def test_suite_has_at_least_sixty_cases() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize("case", CASES)
def test_hostile_request(gateway: Gateway, origin: str, memory: MemoryWatch, case: str) -> None:
    send, http, code = CASES[case]
    started = time.monotonic()
    response = send(gateway, origin)
    assert time.monotonic() - started < DEADLINE_SECONDS
    assert_refused(response, http, code)
    assert gateway.process.poll() is None, "the gateway exited"
    separate(gateway)


@pytest.mark.parametrize(("method", "path", "http", "code"), [
    ("GET", "/api/v2/invoke", 404, 40400001), ("GET", "/api/v1/invoke", 405, 40500001),
    ("PUT", "/api/v1/invoke", 405, 40500001), ("GET", "/../../etc/passwd", 404, 40400001),
])
def test_unknown_path_and_method(gateway: Gateway, memory: MemoryWatch, method: str, path: str,
                                 http: int, code: int) -> None:
    response = requests.request(method, gateway.url + path, timeout=DEADLINE_SECONDS)
    assert_refused(response, http, code)
    separate(gateway)


def test_memory_stayed_within_the_bound(gateway: Gateway, memory: MemoryWatch) -> None:
    """Runs last in this module: the peak over every case above, against the stated limit."""
    separate(gateway)
    after = resident_bytes(memory.pid)
    print(f"gateway RSS: valid requests peak {memory.baseline / 2**20:.0f} MiB, suite peak "
          f"{memory.peak / 2**20:.0f} MiB, after the suite {after / 2**20:.0f} MiB")
    assert memory.peak - memory.baseline <= RSS_GROWTH_LIMIT, "a hostile request cost more memory than allowed"
    assert after - memory.baseline <= RSS_GROWTH_LIMIT, "memory was not given back after the suite"


def assert_refused(response: requests.Response, http: int, code: int) -> None:
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:200]
    reply = orjson.loads(response.content)
    assert (response.status_code, reply["status_code"]) == (http, code), reply
    assert reply["task_id"] and isinstance(reply["status_text"], str) and "data" not in reply
    assert len(reply["status_text"]) < 300 and "Traceback" not in reply["status_text"]
