"""The page at /ui in Debian's headless Chromium against a live gateway: a token, a 20 s song through
`htdemucs` into two stems, live progress, players, waveforms and a download; a file that is not
audio; a long job cancelled, and Cancel before the job exists; past jobs reopened (one answer
overtaking another, links expired) and deleted while playing; a saved token through a passing
failure; GetToken from the page; the event stream reader and the job follower in the page. Nothing
is requested from another origin, and the console shows no uncaught error after any test."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
import soundfile as sf

from sami_gateway.auth.authenticator import TokenService

from ..conftest import ACCESS_KEY, APPKEY, SECRET, SECRET_KEY
from ..jobs.live import LiveGateway, song, start_gateway, stop_gateway
from .browser import CHROMEDRIVER, CHROMIUM, NARROWEST, Browser, screenshot_folder, start_browser

SONG_SECONDS = 20
SONG_RATE = 44100
LONG_SECONDS = 480  # mono 8 kHz: 7.7 MB, and long enough to cancel while it runs
STREAMED_SECONDS = 680  # past the live gateway's SAMI_MAX_AUDIO_SECONDS (660): a wav job streams
TOO_LONG_SECONDS = 700  # past the live gateway's SAMI_MAX_JOB_SECONDS (690) for a wav, within its 16 MiB
TOO_BIG_BYTES = 17 * 1024 * 1024 + 1
LONG_NAME = "an-unusually-long-song-name-that-has-no-space-to-break-at-" * 3 + "take-2.flac"
CANCEL_SECONDS = 15  # from the click to "Cancelled." on a loaded two-core machine
TOKEN_REFUSED = "The token was refused: it is wrong or has expired. Paste a new one."


def envelope(code: int, text: str, message: str = "m") -> dict[str, Any]:
    return {"error": {"status_code": code, "status_text": text, "message": message}}


@pytest.fixture(scope="module")
def site(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    gateway = start_gateway(model_store, tmp_path_factory.mktemp("ui-gateway"))
    yield gateway
    stop_gateway(gateway)


@pytest.fixture(scope="module")
def browser(site: LiveGateway, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    # scripts/install.sh --test installs Debian's chromium and chromium-driver: their absence is a failure.
    assert CHROMIUM and CHROMEDRIVER, "needs chromium and chromium-driver (bash scripts/install.sh --test)"
    shots = screenshot_folder(tmp_path_factory.mktemp("ui-screenshots"))
    opened = start_browser(site.url, tmp_path_factory.mktemp("ui-downloads"), shots)
    try:
        yield opened
    finally:
        opened.driver.quit()


@pytest.fixture(autouse=True)
def quiet_console(browser: Browser) -> Iterator[None]:
    """Every test ends with no uncaught error and no policy refusal in the console."""
    browser.console_errors()  # what came before is another test's
    yield
    assert browser.console_errors() == []


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="module")
def past_jobs(site: LiveGateway) -> dict[str, str]:
    """Two jobs that succeeded, made through the HTTP API: `short` (vocals) and `long` (a long name;
    drums and bass), by their ids."""
    made = {}
    for key, name, stems, seed in (("short", "short.wav", ["vocals"], 21), ("long", LONG_NAME, ["drums", "bass"], 22)):
        body = {"input": {"data": base64.b64encode(song(4, seed=seed)).decode()}, "model": "htdemucs",
                "stems": stems, "name": name}
        response = requests.post(f"{site.url}/api/v1/jobs", json=body, headers=site.headers(), timeout=30)
        assert response.status_code == 201, response.text
        made[key] = response.json()["id"]
    for job_id in made.values():
        assert site.finished(job_id)["status"] == "succeeded"
    return made


def stereo_song(path: Path, seconds: float) -> Path:
    """A 16-bit stereo WAV at 44.1 kHz with a beat, a bass line and a tune, so that waveforms have a shape."""
    rng = np.random.default_rng(3)
    t = np.arange(int(seconds * SONG_RATE)) / SONG_RATE
    beat = t % 0.5  # 120 beats a minute
    kick = 0.55 * np.exp(-beat * 16) * np.sin(2 * np.pi * 55 * beat)
    off = (t + 0.25) % 0.5
    hats = 0.06 * np.exp(-off * 50) * rng.standard_normal(t.size)
    notes = np.array([220.0, 247.0, 262.0, 294.0, 330.0, 294.0, 262.0, 196.0])[(t / 0.5).astype(int) % 8]
    phrase = 0.35 + 0.3 * np.sin(2 * np.pi * t / 8) ** 2  # swells every 8 s
    tune = phrase * np.exp(-beat * 3) * np.sin(2 * np.pi * np.cumsum(notes) / SONG_RATE)
    bass = 0.2 * np.sin(2 * np.pi * np.cumsum(notes / 4) / SONG_RATE)
    mix = np.stack([kick + hats + 0.8 * tune + bass, kick + 1.2 * hats + tune + bass], axis=1)
    sf.write(path, (0.9 * mix / np.abs(mix).max()).astype(np.float32), SONG_RATE, subtype="PCM_16")
    return path


def signed_in(browser: Browser, site: LiveGateway) -> None:
    """The page open with the token of APPKEY pasted (or still in this tab's session storage)."""
    browser.open()  # ready once a saved token has signed in, or failed to
    if not browser.visible("separate"):
        browser.by_id("token").clear()
        browser.by_id("token").send_keys(site.token())
        browser.by_id("use-token").click()
    browser.wait(lambda: browser.visible("separate"), "the form after the token")


def submit(browser: Browser, path: Path, model: str, stems: list[str]) -> None:
    from selenium.webdriver.support.ui import Select

    browser.by_id("file").send_keys(str(path))
    Select(browser.by_id("model")).select_by_value(model)
    for box in browser.driver.find_elements("css selector", '#stem-list input[name="stem"]'):
        if box.is_selected() != (box.get_attribute("value") in stems):
            box.click()
    browser.by_id("submit").click()


def watch_progress(browser: Browser) -> None:
    """Record every value the separation meter shows from now on (in `window.seenProgress`)."""
    browser.script("window.seenProgress = [];"
                   "const meter = document.getElementById('job-progress');"
                   "new MutationObserver(() => window.seenProgress.push(Number(meter.value)))"
                   ".observe(document.getElementById('job-percent'),"
                   "         {childList: true, characterData: true, subtree: true});")


def shown_job_id(browser: Browser) -> str:
    """The id of the job the job section shows (`data-job` on #job)."""
    return str(browser.wait(lambda: browser.script("return document.getElementById('job').dataset.job"),
                            "a job shown"))


def row(browser: Browser, job_id: str, button: str) -> Any:
    """The Open (`quiet`) or Delete (`danger`) button of a job's row in Past jobs, once it is there."""
    selector = f'#jobs li[data-job="{job_id}"] button.{button}'
    browser.wait(lambda: browser.driver.find_elements("css selector", selector), f"job {job_id} in the list")
    return browser.driver.find_element("css selector", selector)


def delete_from_the_list(browser: Browser, job_id: str) -> None:
    """Delete a job with two clicks, the second one after the page's guard against double clicks."""
    button = row(browser, job_id, "danger")
    button.click()
    assert button.text == "Delete for good?"
    assert button.get_attribute("aria-label").startswith("Delete for good? ")  # the spoken name starts as shown
    time.sleep(0.5)
    button.click()
    browser.wait(lambda: not browser.script(f"return document.querySelector('#jobs li[data-job=\"{job_id}\"]')"),
                 "the row to go")


def tracks_drawn(browser: Browser, waveforms: int) -> list[str]:
    """The tracks of the results (by `data-track`) once `waveforms` of them are drawn."""
    return list(browser.wait(lambda: browser.script(
        "const drawn = document.querySelectorAll('#results canvas[data-drawn=\"true\"]');"
        "return drawn.length === arguments[0]"
        "  && Array.from(document.querySelectorAll('#results article'), a => a.dataset.track);", waveforms),
        f"{waveforms} waveforms drawn"))


def jobs_of(site: LiveGateway) -> list[dict[str, Any]]:
    response = requests.get(f"{site.url}/api/v1/jobs?limit=100", headers=site.headers(), timeout=10)
    assert response.status_code == 200
    jobs: list[dict[str, Any]] = response.json()["jobs"]
    return jobs


def test_a_song_is_separated_heard_and_downloaded(browser: Browser, site: LiveGateway, files: Path) -> None:
    browser.open()
    assert not browser.visible("separate")  # nothing but the token until one is given
    browser.shoot("1-token")
    browser.by_id("token").send_keys(site.token())
    browser.by_id("use-token").click()
    browser.wait(lambda: browser.visible("separate"), "the form after the token")
    assert browser.script("return sessionStorage.length") == 1
    assert browser.script("return localStorage.length") == 0
    models = browser.script("return Array.from(document.querySelectorAll('#model option'), o => o.value)")
    assert "htdemucs" in models and "htdemucs_ft" in models

    path = stereo_song(files / "song-20s.wav", SONG_SECONDS)
    watch_progress(browser)
    submit(browser, path, "htdemucs", ["vocals", "no_vocals"])
    browser.wait(lambda: browser.text("job-status") in ("Waiting for a free model…", "Separating…", "Done."),
                 "the job to be accepted")
    assert browser.script("return document.activeElement.id") == "job-title"  # not lost with Separate disabled
    browser.shoot("2-progress")
    browser.wait(lambda: browser.text("job-status") == "Done.", "the job to succeed", 120)
    assert browser.text("job-percent") == "100 %" and browser.text("upload-percent") == "100 %"
    seen = browser.script("return window.seenProgress")
    assert seen[-1] == 100 and seen == sorted(seen), seen  # live, and it only grows

    assert tracks_drawn(browser, 3) == ["mix", "vocals", "no_vocals"]
    inked = browser.script(
        "return Array.from(document.querySelectorAll('#results canvas'), c => {"
        "  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "  let n = 0; for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;"
        "  return n / (c.width * c.height); });")
    assert all(0.02 < share < 1 for share in inked), inked  # a shape, neither blank nor a solid block
    decoded = browser.script("return Array.from(document.querySelectorAll('#results canvas'),"
                             "  c => [c.dataset.rate, c.dataset.duration]);")
    assert decoded == [["8000", f"{SONG_SECONDS}.000"]] * 3  # drawn from 8 kHz, and still the whole song
    durations = browser.wait(lambda: browser.script(
        "const players = Array.from(document.querySelectorAll('#results audio'));"
        "return players.length === 3 && players.every(p => p.readyState >= 1) && players.map(p => p.duration);"),
        "three players with their audio")
    assert all(abs(duration - SONG_SECONDS) < 0.05 for duration in durations), durations
    browser.shoot("3-results")

    job_id = shown_job_id(browser)
    job = requests.get(f"{site.url}/api/v1/jobs/{job_id}", headers=site.headers(), timeout=10).json()
    assert job["status"] == "succeeded" and job["model"] == "htdemucs" and job["stems"] == ["vocals", "no_vocals"]

    # The download is the file the player plays (its blob: URL, not a second fetch), named for the song.
    link = browser.driver.find_element("css selector", 'article[data-track="vocals"] a[download]')
    assert link.get_attribute("download") == "song-20s - vocals.wav"
    assert link.get_attribute("href") == browser.script(
        "return document.querySelector('article[data-track=\"vocals\"] audio').src")
    link.click()
    target = browser.downloads / "song-20s - vocals.wav"
    browser.wait(lambda: target.is_file() and not list(browser.downloads.glob("*.crdownload")), "the download")
    samples, rate = sf.read(target, always_2d=True)
    assert rate == SONG_RATE and samples.shape == (SONG_SECONDS * SONG_RATE, 2)
    assert browser.foreign_requests() == []


def test_a_file_that_is_not_audio_gets_a_readable_error(browser: Browser, site: LiveGateway, files: Path) -> None:
    signed_in(browser, site)
    bad = files / "notes.wav"
    bad.write_bytes(b"These are my notes about the song, not the song itself.\n" * 50)
    submit(browser, bad, "htdemucs", ["vocals"])
    browser.wait(lambda: browser.visible("error"), "the error")
    assert browser.text("error-text") == ("This file could not be read as audio. "
                                          "Choose a WAV, FLAC, MP3, OGG or AAC file.")
    assert "40000012" in browser.text("error-detail")
    assert browser.text("job-status") == "Failed."
    assert browser.script("return document.activeElement.id") == "error"  # announced and focused
    browser.shoot("4-error")

    # The same failure while the person has gone on to Past jobs: announced, the focus left there.
    submit(browser, bad, "htdemucs", ["vocals"])
    browser.script("document.getElementById('refresh').focus()")
    browser.wait(lambda: browser.text("job-status") == "Failed.", "the job to fail")
    assert browser.visible("error") and browser.script("return document.activeElement.id") == "refresh"
    assert browser.foreign_requests() == []


def test_a_song_too_long_or_too_big_is_explained(browser: Browser, site: LiveGateway, files: Path) -> None:
    signed_in(browser, site)
    too_long = files / "eleven-minutes.wav"
    too_long.write_bytes(song(TOO_LONG_SECONDS, seed=5))  # the live gateway takes a wav job of up to 690 s
    submit(browser, too_long, "htdemucs", ["vocals"])
    browser.wait(lambda: browser.visible("error"), "the error")
    assert browser.text("error-text") == "The song is longer than this gateway accepts."
    assert "40000013" in browser.text("error-detail")

    too_big = files / "big.wav"
    with open(too_big, "wb") as handle:
        handle.truncate(TOO_BIG_BYTES)  # never read: the page compares its size with the upload's max_bytes
    submit(browser, too_big, "htdemucs", ["vocals"])
    browser.wait(lambda: "larger" in browser.text("error-text"), "the size refusal")
    assert browser.text("error-text") == "The file is larger than this gateway accepts (16.8 MB)."  # 16 MiB

    # A gateway whose SAMI_PUBLIC_URL is another address than the page's: the page says where to go.
    elsewhere = "http://gateway.example.com:8080"
    browser.bend_fetch({"url": "api/v1/uploads", "method": "POST", "status": 201, "body": {
        "upload_id": "up_x", "upload_url": f"{elsewhere}/api/v1/uploads/up_x?sig=1", "max_bytes": 1 << 24}})
    browser.by_id("submit").click()
    browser.wait(lambda: "hands out links" in browser.text("error-text"), "the other address")
    assert browser.text("error-text") == f"This gateway hands out links for {elsewhere}: open {elsewhere}/ui"
    assert browser.foreign_requests() == []


def test_answers_of_the_gateway_become_sentences(browser: Browser, site: LiveGateway) -> None:
    """api.js's `explain`, in the page: a quota with its wait, the overloaded gateway, an unknown code,
    a gateway without jobs; where links point; an upload cancelled before it starts sends nothing."""
    browser.open()
    said = browser.run_async(
        "const api = await import('./ui/api.js');"
        "const say = (http, code, wait, message = 'm') => api.explain(new api.ApiError(http,"
        "  {error: {status_code: code, status_text: 'X', message}}, wait));"
        "return [say(429, 42900001, 12), say(429, 42900001, null), say(503, 50300001, 1),"
        "        say(400, 40000999, null), say(401, 0, null), api.explain(new api.Unreachable('x')),"
        "        say(400, 40200014, null, 'no namespace of this gateway runs jobs'),"
        "        say(400, 40200014, null, 'namespace unknown or not allowed for the appkey')];")
    texts = [item["text"] for item in said]
    assert texts == ["You have reached your quota. Try again in 12 seconds.",
                     "You have reached your quota. Try again in a moment.",
                     "The gateway is busy. Try again in 1 second.",
                     "The gateway refused the request.",
                     TOKEN_REFUSED,
                     "The gateway cannot be reached. Check that it is running and your network, then try again.",
                     "This gateway does not run separation jobs.",
                     "This token's appkey may not run music separation."]
    assert said[0]["detail"] == "42900001 X: m"

    where = browser.run_async(
        "const api = await import('./ui/api.js');"
        "const stopped = new AbortController(); stopped.abort();"
        "const put = await api.putFile('api/v1/uploads/never-sent', new Blob(['x']), () => {}, stopped.signal)"
        "  .then(() => 'sent', (err) => err.name);"
        "return [api.elsewhere(location.origin + '/api/v1/uploads/u?s=1'),"
        "        api.elsewhere('https://gateway.example.com/sami/api/v1/uploads/u?s=1'),"
        "        api.megabytes(16777216), put];")
    assert where == [None, "https://gateway.example.com/sami", "16.8 MB", "AbortError"]
    assert not [url for url in browser.collect_requests() if "never-sent" in url]


def test_the_event_stream_is_read_from_any_pieces(browser: Browser, site: LiveGateway) -> None:
    """api.js reads SSE cut anywhere (a CRLF, a UTF-8 character split between reads), with CRLF, LF or
    CR line endings, skips an event whose data is not JSON, and reports every read (keep-alives too)."""
    browser.open()
    read = browser.run_async(
        "const api = await import('./ui/api.js');"
        "const text = 'event: status\\r\\ndata: {\"status\":\"queued\"}\\r\\n\\r\\n: keep-alive\\r\\n\\r\\n'"
        "  + 'event: progress\\rdata: {\"progress\":2.5}\\r\\rdata: not json\\n\\n'"
        "  + 'event: status\\ndata: {\"name\":\"Café ☕\"}\\n\\n: keep-alive\\r';"
        "const bytes = new TextEncoder().encode(text);"
        "const stream = (step) => new ReadableStream({start(c) {"
        "  for (let i = 0; i < bytes.length; i += step) c.enqueue(bytes.slice(i, i + step)); c.close(); }});"
        "const runs = [];"
        "for (const step of [1, 2, 3, 5, bytes.length]) {"
        "  let reads = 0; const events = [];"
        "  for await (const e of api.readEvents(stream(step), () => reads++)) events.push(e);"
        "  runs.push({events, reads: reads === Math.ceil(bytes.length / step)});"
        "}"
        "const through = new api.Api('t');"  # Api.events hands the answer's body to the same reader
        "through.request = async () => new Response(stream(4));"
        "const events = [];"
        "for await (const e of through.events('j', undefined)) events.push(e);"
        "runs.push({events, reads: true});"
        "return runs;")
    expected = [{"event": "status", "data": {"status": "queued"}}, {"event": "progress", "data": {"progress": 2.5}},
                {"event": "status", "data": {"name": "Café ☕"}}]
    assert read == [{"events": expected, "reads": True}] * 6


def test_following_a_job_outlives_blips_and_silent_streams(browser: Browser, site: LiveGateway) -> None:
    """follow.js against a stand-in API: a stream cut, a 503, a stream gone silent (no keep-alive), a
    stream that ends early, then the end; what cannot be retried (404) is thrown; Cancel stops it."""
    browser.open()
    followed = browser.run_async(
        "const {followJob, backoff} = await import('./ui/follow.js');"
        "const {ApiError} = await import('./ui/api.js');"
        "const calls = [], retries = [], seen = [];"
        "const hang = (signal) => new Promise((_, reject) => signal.addEventListener('abort',"
        "  () => reject(new DOMException('stopped', 'AbortError'))));"
        "const status = (status, progress) => ({event: 'status', data: {id: 'j', status, progress}});"
        "const api = {n: 0,"
        "  async *events(id, signal, onBytes) {"
        "    const n = this.n++; calls.push('events');"
        "    if (n === 0) { yield status('processing', 1); throw new TypeError('network error'); }"
        "    if (n === 1) throw new ApiError(503, {}, 0.012);"
        "    if (n === 2) { onBytes(); yield status('processing', 5); await hang(signal); }"
        "    if (n === 3) { yield status('processing', 6); return; }"
        "    yield status('processing', 7); yield {event: 'progress', data: {progress: 50}};"
        "    yield status('succeeded', 100);"
        "  },"
        "  async job(id) { calls.push('job'); return {id, status: 'processing', progress: 6}; }};"
        "const started = performance.now();"
        "const ended = await followJob(api, {id: 'j', status: 'queued', progress: 0}, new AbortController().signal,"
        "  {stallMs: 150, delay: (n) => 5 * n, onJob: (job) => seen.push(job.progress),"
        "   onRetry: (failures, wait) => retries.push([failures, wait])});"
        "const gone = {async *events() { throw new ApiError(404, {}, null); }};"
        "const thrown = await followJob(gone, {id: 'j', status: 'queued'}, new AbortController().signal)"
        "  .then(() => 'returned', (err) => err.http);"
        "const refused = (token) => Object.assign(new ApiError(401, {}, null), {token});"
        "const renewed = {token: 'new', n: 0, async *events() {"
        "  if (this.n++ === 0) throw refused('old'); yield status('succeeded', 100); }};"
        "const again = await followJob(renewed, {id: 'j', status: 'queued'}, new AbortController().signal,"
        "  {delay: () => 1}).then((job) => job.status, (err) => err.http);"
        "const own = {token: 'new', async *events() { throw refused('new'); }};"
        "const ownThrown = await followJob(own, {id: 'j', status: 'queued'}, new AbortController().signal)"
        "  .then(() => 'returned', (err) => err.http);"
        "const stop = new AbortController(); setTimeout(() => stop.abort(), 50);"
        "const silent = {async *events(id, signal) { await hang(signal); }};"
        "const stopped = await followJob(silent, {id: 'j', status: 'queued'}, stop.signal);"
        "return {ended, calls, retries, seen, thrown, again, ownThrown, stopped,"
        "        stalled: performance.now() - started >= 150,"
        "        delays: [1, 2, 3, 5, 6, 9].map(backoff)};")
    assert followed["ended"] == {"id": "j", "status": "succeeded", "progress": 100}
    assert followed["calls"] == ["events", "events", "events", "events", "job", "events"]
    # The 503 asked for 12 ms (Retry-After), more than the backoff's 10; the early end: a calm wait.
    assert followed["retries"] == [[1, 5], [2, 12], [3, 15]]
    assert followed["seen"] == [1, 5, 6, 6, 7, 50, 100] and followed["stalled"]
    assert followed["thrown"] == 404 and followed["stopped"] is None
    assert followed["again"] == "succeeded" and followed["ownThrown"] == 401
    assert followed["delays"] == [1000, 2000, 4000, 16000, 30000, 30000]


def test_a_long_job_is_cancelled_from_the_page(browser: Browser, site: LiveGateway, files: Path) -> None:
    signed_in(browser, site)
    long_song = files / "long.wav"
    long_song.write_bytes(song(LONG_SECONDS, seed=11))
    submit(browser, long_song, "htdemucs", ["vocals", "drums"])
    browser.wait(lambda: browser.text("job-status") == "Separating…", "the job to start", 60)
    job_id = shown_job_id(browser)
    browser.by_id("cancel").click()
    started = time.monotonic()
    browser.wait(lambda: browser.text("job-status") == "Cancelled.", "the job to be cancelled", 30)
    assert time.monotonic() - started < CANCEL_SECONDS
    assert not browser.visible("cancel")
    assert browser.script("return document.activeElement.id") == "job-title"  # not lost with Cancel hidden
    job = requests.get(f"{site.url}/api/v1/jobs/{job_id}", headers=site.headers(), timeout=10).json()
    assert job["status"] == "cancelled" and job["progress"] < 100
    browser.shoot("5-cancelled")

    # Past jobs: newest first; the cancelled one can be deleted from the list (a second click confirms),
    # and the focus goes on to the next row.
    browser.by_id("refresh").click()
    browser.wait(lambda: browser.script("return document.querySelector('#jobs li .badge').textContent") == "cancelled",
                 "the cancelled job in the list")
    delete_from_the_list(browser, job_id)
    focused = browser.script("return document.activeElement.getAttribute('aria-label') || document.activeElement.id")
    assert focused.startswith("Open ") or focused == "history-title"
    gone = requests.get(f"{site.url}/api/v1/jobs/{job_id}", headers=site.headers(), timeout=10)
    assert gone.status_code == 404
    assert browser.foreign_requests() == []


def test_a_stem_plays_while_its_song_is_separated(browser: Browser, site: LiveGateway, files: Path) -> None:
    """A job that streams shows a player per stem while it is processing; played, it sounds the stem
    as it comes from the gateway, seconds into the song before the separation is done."""
    signed_in(browser, site)
    streamed = files / "streamed.wav"
    streamed.write_bytes(song(STREAMED_SECONDS, seed=12))
    submit(browser, streamed, "htdemucs", ["vocals"])
    browser.wait(lambda: browser.script("return !!document.querySelector('#results [data-live] audio')"),
                 "a player while the job is processing", 90)
    job_id = shown_job_id(browser)
    heard = browser.run_async(
        "const player = document.querySelector('#results [data-live] audio');"
        "await player.play();"
        "const until = Date.now() + 45000;"
        "while (player.currentTime < 3 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));"
        "return player.currentTime;")
    job = requests.get(f"{site.url}/api/v1/jobs/{job_id}", headers=site.headers(), timeout=10).json()
    assert heard >= 3 and job["status"] == "processing" and job["progress"] < 100, (heard, job["status"])
    assert browser.script("return document.querySelector('#results [data-live] audio').error") is None
    browser.shoot("5b-playing-while-separated")
    browser.by_id("cancel").click()
    browser.wait(lambda: browser.text("job-status") == "Cancelled.", "the job to be cancelled", 30)
    assert browser.foreign_requests() == []


def test_cancel_before_the_job_exists_stops_it(browser: Browser, site: LiveGateway, files: Path) -> None:
    """Cancel while the upload ticket is asked for uploads nothing; Cancel while the job is submitted
    cancels the job once it exists. The file is dropped where the file input cannot take it."""
    signed_in(browser, site)
    dropped = files / "dropped.wav"
    dropped.write_bytes(song(LONG_SECONDS, seed=13))
    browser.by_id("file").send_keys(str(dropped))
    kept = browser.script(  # an older Safari: no DataTransfer constructor, so the page keeps the file
        "const input = document.getElementById('file'), transfer = new DataTransfer();"
        "transfer.items.add(input.files[0]); input.value = '';"
        "window.DataTransfer = function () { throw new TypeError('Illegal constructor'); };"
        "const drop = () => new DragEvent('drop', {dataTransfer: transfer, bubbles: true, cancelable: true});"
        "const beside = drop(); document.querySelector('footer').dispatchEvent(beside);"
        "document.getElementById('drop').dispatchEvent(drop());"
        "return [beside.defaultPrevented, input.files.length, input.required,"
        "        document.getElementById('file-hint').textContent];")
    assert kept[:3] == [True, 0, False] and kept[3].startswith("dropped.wav (")  # and beside it: not opened
    before = {job["id"] for job in jobs_of(site)}
    uploads = len([url for url in browser.collect_requests() if "/api/v1/uploads/" in url])

    browser.bend_fetch({"url": "api/v1/uploads", "method": "POST", "delay": 800})
    browser.by_id("submit").click()
    browser.wait(lambda: browser.text("job-status") == "Uploading…", "the upload to begin")
    browser.by_id("cancel").click()
    assert browser.text("job-status") == "Upload cancelled." and not browser.visible("cancel")
    assert browser.by_id("submit").is_enabled()
    time.sleep(1)  # the ticket's answer has come: nothing more happens
    assert browser.text("job-status") == "Upload cancelled." and browser.text("upload-percent") == "0 %"
    assert len([url for url in browser.collect_requests() if "/api/v1/uploads/" in url]) == uploads

    browser.bend_fetch({"url": "api/v1/jobs", "method": "POST", "delay": 1000})
    browser.by_id("submit").click()
    browser.wait(lambda: browser.text("job-status") == "Submitting…", "the upload to end", 30)
    browser.by_id("cancel").click()
    assert browser.text("job-status") == "Upload cancelled." and browser.by_id("submit").is_enabled()
    made = browser.wait(lambda: [job for job in jobs_of(site) if job["id"] not in before], "the job submitted")
    assert [job["name"] for job in made] == ["dropped.wav"]
    assert site.finished(made[0]["id"], 30)["status"] == "cancelled"
    assert browser.text("job-status") == "Upload cancelled."  # the flow cancelled wrote nothing more
    assert browser.foreign_requests() == []


def test_a_past_job_reopens_with_its_stems(browser: Browser, site: LiveGateway, past_jobs: dict[str, str]) -> None:
    signed_in(browser, site)
    short, long = past_jobs["short"], past_jobs["long"]
    # One job opened, then another before the first one's answer came: only the second is shown.
    browser.bend_fetch({"url": f"api/v1/jobs/{long}", "method": "GET", "delay": 600})
    row(browser, long, "quiet").click()
    row(browser, short, "quiet").click()
    assert tracks_drawn(browser, 1) == ["mix", "vocals"]  # the original: not submitted from this tab
    time.sleep(0.8)
    assert shown_job_id(browser) == short and browser.text("job-status") == "Done."
    assert tracks_drawn(browser, 1) == ["mix", "vocals"] and browser.text("job-name") == "short.wav"

    # A result link that has expired (403): the job is read again for new links, once.
    browser.bend_fetch({"url": "/results/", "status": 403, "body": envelope(40300001, "Forbidden")})
    row(browser, short, "quiet").click()
    tracks_drawn(browser, 1)
    assert browser.script("return window.bentHits") == 1 and not browser.visible("error")
    browser.bend_fetch({"url": "/results/", "status": 403, "times": -1, "body": envelope(40300001, "Forbidden")})
    row(browser, short, "quiet").click()
    browser.wait(lambda: browser.visible("error"), "the expired links")
    assert browser.text("error-text") == "The links to the results have expired: open the job again from Past jobs."
    browser.bend_fetch()

    # The job shown, playing, deleted: the section goes, the player stops.
    row(browser, short, "quiet").click()
    tracks_drawn(browser, 1)
    assert browser.run_async("window.player = document.querySelector('#results audio');"
                             "await window.player.play(); return !window.player.paused;")
    delete_from_the_list(browser, short)
    assert not browser.visible("job")
    assert browser.script("return window.player.paused && !document.querySelector('#results > *')")
    assert site.job(short).status_code == 404
    assert browser.foreign_requests() == []


def test_an_expired_token_keeps_the_results_shown(browser: Browser, site: LiveGateway,
                                                  past_jobs: dict[str, str]) -> None:
    signed_in(browser, site)
    row(browser, past_jobs["long"], "quiet").click()
    assert tracks_drawn(browser, 2) == ["mix", "drums", "bass"]
    browser.bend_fetch({"url": "api/v1/jobs?", "status": 401, "body": envelope(40200002, "InvalidToken")})
    browser.by_id("refresh").click()
    browser.wait(lambda: browser.visible("token-form"), "the token form")
    assert browser.text("error-text") == TOKEN_REFUSED
    assert not browser.visible("separate") and not browser.visible("history")
    assert browser.script("return sessionStorage.length") == 0
    assert browser.visible("job") and browser.script("return document.querySelectorAll('#results audio').length") == 2


def test_an_answer_for_a_replaced_token_leaves_the_new_one_signed_in(browser: Browser, site: LiveGateway,
                                                                      past_jobs: dict[str, str]) -> None:
    """A call made with the old token and refused (401) once a new token has been pasted speaks of the
    old one: the new token stays, and what the person does next goes out with it."""
    signed_in(browser, site)
    old = browser.script("return sessionStorage.getItem('sami-gateway.token')")
    new = TokenService(SECRET).issue(APPKEY, 1800)
    assert new != old
    long = past_jobs["long"]
    browser.bend_fetch({"url": f"api/v1/jobs/{long}", "method": "GET", "delay": 1500, "status": 401,
                        "body": envelope(40200002, "InvalidToken")})
    row(browser, long, "quiet").click()  # asked with the old token, answered 1.5 s later
    browser.script("const form = document.getElementById('token-form'); form.hidden = false;"
                   "document.getElementById('token').value = arguments[0]; form.requestSubmit();", new)
    browser.wait(lambda: browser.script("return window.bentHits") == 1 and browser.visible("error"), "the refusal")
    assert browser.visible("separate") and browser.visible("history") and not browser.visible("token-form")
    assert browser.script("return sessionStorage.getItem('sami-gateway.token')") == new
    row(browser, long, "quiet").click()
    assert tracks_drawn(browser, 2) == ["mix", "drums", "bass"] and not browser.visible("error")
    assert browser.script("return sessionStorage.getItem('sami-gateway.token')") == new


def test_older_jobs_to_the_last_keep_the_focus(browser: Browser, site: LiveGateway,
                                              past_jobs: dict[str, str]) -> None:
    """"Show older jobs" goes when the last page has come: the focus moves to the last job, not away."""
    from selenium.webdriver.common.keys import Keys

    signed_in(browser, site)
    first = jobs_of(site)[:1]
    browser.bend_fetch({"url": "api/v1/jobs?limit", "status": 200, "body": {"jobs": first, "next_cursor": "c"}},
                       {"url": "cursor=c", "status": 200, "body": {"jobs": [], "next_cursor": None}})
    browser.by_id("refresh").click()
    browser.wait(lambda: browser.visible("more"), "Show older jobs")
    browser.by_id("more").send_keys(Keys.ENTER)
    browser.wait(lambda: not browser.visible("more"), "the last page")
    assert browser.script("return document.activeElement.getAttribute('aria-label')") == \
        f"Open {first[0]['name'] or first[0]['id']}"
    browser.bend_fetch()


def test_a_saved_token_outlives_a_passing_failure(browser: Browser, site: LiveGateway) -> None:
    """The page is ready once the saved token has signed in or failed; only a 401 drops the token; a
    model list that cannot be read leaves the page signed in, saying why nothing can be separated."""
    signed_in(browser, site)
    undo = browser.bend_fetch_on_load({"url": "api/v1/jobs?limit", "status": 503,
                                       "body": envelope(50300001, "ServiceUnavailable", "busy")})
    try:
        browser.open()
    finally:
        undo()
    assert browser.text("error-text") == "The gateway is busy. Try again in a moment."
    assert not browser.visible("separate") and browser.script("return sessionStorage.length") == 1
    browser.by_id("use-token").click()  # the saved token is in the field
    browser.wait(lambda: browser.visible("separate"), "signed in again")

    browser.script("sessionStorage.setItem('sami-gateway.token', 'not.a.token')")
    browser.open()
    assert browser.text("error-text") == TOKEN_REFUSED and browser.script("return sessionStorage.length") == 0

    browser.bend_fetch({"url": "api/v1/models", "status": 500, "body": envelope(50000001, "InternalError")})
    browser.by_id("token").send_keys(site.token())
    browser.by_id("use-token").click()
    browser.wait(lambda: browser.visible("separate"), "signed in without models")
    assert browser.visible("history") and not browser.by_id("submit").is_enabled()
    assert browser.text("model-about").startswith("The models could not be listed")
    assert browser.text("error-text").startswith("The gateway failed while doing this.")


def test_a_token_from_an_access_key(browser: Browser, site: LiveGateway) -> None:
    browser.open()
    browser.script("sessionStorage.clear()")
    browser.open()
    # The page's SHA-256 and V4 signature give the protocol's test vector.
    signed = browser.run_async(
        "const sign = await import('./ui/sign.js');"
        "return sign.signGetToken('AKLTexampleAccessKeyId', 'exampleSecretAccessKey==', 'open.volcengineapi.com',"
        "  '{\"token_version\":\"volc-auth-v1\",\"appkey\":\"demo_appkey\",\"expiration\":3600}',"
        "  new Date('2024-01-02T03:04:05Z'));")
    assert signed["X-Content-Sha256"] == "b525aac00d6b472a2e0766357ed2240717145b148ecefd340d268092bae8ad8d"
    assert signed["Authorization"].endswith(
        "Signature=3afd24de67c0f1770e4e4e9d8b8d5729cd2843406cd379aa5d9811b74cc2ea71")

    browser.by_id("gettoken").click()
    assert not browser.visible("insecure")  # 127.0.0.1 is a secure context: no warning about plain HTTP
    browser.by_id("access-key").send_keys(ACCESS_KEY)
    browser.by_id("secret-key").send_keys("not-the-secret")
    browser.by_id("appkey").send_keys(APPKEY)
    refusals = []
    for rule in ({"fail": True}, {"status": 400, "body": {"ResponseMetadata": {"Error": {
            "Code": "InvalidTimestamp", "Message": "signed 20 minutes away"}}}}, {}):
        browser.bend_fetch(*([{"url": "Action=GetToken", **rule}] if rule else []))
        browser.script("document.getElementById('error').hidden = true")
        browser.by_id("get-token").click()
        browser.wait(lambda: browser.visible("error"), "the refusal")
        refusals.append(browser.text("error-text"))
    assert refusals[0].startswith("The gateway cannot be reached.")
    assert refusals[1].startswith("This computer's clock is more than 15 minutes off")
    assert refusals[2].startswith("The access key was refused")
    assert "SignatureDoesNotMatch" in browser.text("error-detail")

    # A token given, but the gateway busy when the page signs in with it: not called a refused key.
    browser.bend_fetch({"url": "api/v1/jobs?limit", "status": 503, "body": envelope(50300001, "ServiceUnavailable")})
    browser.by_id("secret-key").clear()
    browser.by_id("secret-key").send_keys(SECRET_KEY)
    browser.by_id("get-token").click()
    browser.wait(lambda: "busy" in browser.text("error-text"), "the busy gateway")
    assert browser.by_id("secret-key").get_attribute("value") == "" and not browser.visible("separate")
    browser.bend_fetch()
    browser.by_id("secret-key").send_keys(SECRET_KEY)
    browser.by_id("get-token").click()
    browser.wait(lambda: browser.visible("separate"), "the form after GetToken")
    assert browser.by_id("secret-key").get_attribute("value") == ""
    assert browser.foreign_requests() == []


def test_every_control_is_labelled_and_the_page_fits_320_px(browser: Browser, site: LiveGateway,
                                                            past_jobs: dict[str, str]) -> None:
    """With results shown (players, waveforms, download links, a long name) as well as the forms."""
    signed_in(browser, site)
    row(browser, past_jobs["long"], "quiet").click()
    tracks_drawn(browser, 2)
    unlabelled = browser.script(
        "return Array.from(document.querySelectorAll('input, select, button, audio, canvas, a')).filter(e =>"
        "  !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())"
        ".map(e => e.outerHTML);")
    assert unlabelled == []
    # Announced: the status line and errors, not each percent of a meter.
    live = browser.script("return Array.from(document.querySelectorAll("
                          "'output, [aria-live], [role=status], [role=alert]'), e => e.id).sort()")
    assert live == ["error", "job-status"]
    browser.width(NARROWEST, 640)
    try:
        assert browser.overflow() <= 0
    finally:
        browser.width(1280, 900)
    # The keyboard reaches the token, the form, the file picker and the results.
    reached = browser.script(
        "return Array.from(document.querySelectorAll('a[href], button, input, select, summary, audio'))"
        ".filter(e => !e.closest('[hidden]') && e.tabIndex >= 0).map(e => e.id || e.tagName).filter(Boolean);")
    assert {"file", "model", "format", "submit", "forget", "A", "AUDIO"} <= set(reached)
