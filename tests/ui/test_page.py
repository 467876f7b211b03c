"""The page at /ui in Debian's headless Chromium against a live gateway: a token, a 20 s song through
`htdemucs` into two stems, live progress, players, waveforms and a download; a file that is not
audio; a long job cancelled; GetToken from the page. Nothing is requested from another origin."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import soundfile as sf

from ..conftest import ACCESS_KEY, APPKEY, SECRET_KEY
from ..jobs.live import LiveGateway, song, start_gateway, stop_gateway
from .browser import CHROMEDRIVER, CHROMIUM, NARROWEST, Browser, screenshot_folder, start_browser

SONG_SECONDS = 20
SONG_RATE = 44100
LONG_SECONDS = 480  # mono 8 kHz: 7.7 MB, and long enough to cancel while it runs
TOO_LONG_SECONDS = 700  # past the live gateway's SAMI_MAX_AUDIO_SECONDS (660), within its 16 MiB
TOO_BIG_BYTES = 17 * 1024 * 1024 + 1


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


@pytest.fixture
def files(tmp_path: Path) -> Path:
    return tmp_path


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
    browser.open()
    if not browser.visible("separate"):
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
    return str(browser.wait(lambda: browser.script(
        "const row = document.querySelector('#jobs li'); return row && row.dataset.job;"), "the job in the list"))


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
    browser.shoot("2-progress")
    browser.wait(lambda: browser.text("job-status") == "Done.", "the job to succeed", 120)
    assert browser.text("job-percent") == "100 %" and browser.text("upload-percent") == "100 %"
    seen = browser.script("return window.seenProgress")
    assert seen[-1] == 100 and seen == sorted(seen), seen  # live, and it only grows

    tracks = browser.wait(lambda: browser.script(
        "const drawn = document.querySelectorAll('#results canvas[data-drawn=\"true\"]');"
        "return drawn.length === 3"
        "  && Array.from(document.querySelectorAll('#results article'), a => a.dataset.track);"),
        "three waveforms drawn")
    assert tracks == ["mix", "vocals", "no_vocals"]
    inked = browser.script(
        "return Array.from(document.querySelectorAll('#results canvas'), c => {"
        "  const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;"
        "  let n = 0; for (let i = 3; i < data.length; i += 4) if (data[i] > 0) n++;"
        "  return n / (c.width * c.height); });")
    assert all(0.02 < share < 1 for share in inked), inked  # a shape, neither blank nor a solid block
    durations = browser.wait(lambda: browser.script(
        "const players = Array.from(document.querySelectorAll('#results audio'));"
        "return players.length === 3 && players.every(p => p.readyState >= 1) && players.map(p => p.duration);"),
        "three players with their audio")
    assert all(abs(duration - SONG_SECONDS) < 0.05 for duration in durations), durations
    browser.shoot("3-results")

    job_id = shown_job_id(browser)
    job = requests.get(f"{site.url}/api/v1/jobs/{job_id}", headers=site.headers(), timeout=10).json()
    assert job["status"] == "succeeded" and job["model"] == "htdemucs" and job["stems"] == ["vocals", "no_vocals"]

    link = browser.driver.find_element("css selector", 'article[data-track="vocals"] a[download]')
    assert link.get_attribute("download") == "vocals.wav"
    link.click()
    target = browser.downloads / "vocals.wav"
    browser.wait(lambda: target.is_file() and not list(browser.downloads.glob("*.crdownload")), "the download")
    samples, rate = sf.read(target, always_2d=True)
    assert rate == SONG_RATE and samples.shape == (SONG_SECONDS * SONG_RATE, 2)

    assert browser.foreign_requests() == []
    assert browser.console_errors() == []


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
    assert browser.foreign_requests() == []


def test_a_song_too_long_or_too_big_is_explained(browser: Browser, site: LiveGateway, files: Path) -> None:
    signed_in(browser, site)
    too_long = files / "eleven-minutes.wav"
    too_long.write_bytes(song(TOO_LONG_SECONDS, seed=5))  # the live gateway takes up to 660 s
    submit(browser, too_long, "htdemucs", ["vocals"])
    browser.wait(lambda: browser.visible("error"), "the error")
    assert browser.text("error-text") == "The song is longer than this gateway accepts."
    assert "40000013" in browser.text("error-detail")

    too_big = files / "big.wav"
    with open(too_big, "wb") as handle:
        handle.truncate(TOO_BIG_BYTES)  # never read: the page compares its size with the upload's max_bytes
    submit(browser, too_big, "htdemucs", ["vocals"])
    browser.wait(lambda: "larger" in browser.text("error-text"), "the size refusal")
    assert browser.text("error-text") == "The file is larger than this gateway accepts (17 MB)."
    assert browser.foreign_requests() == []


def test_answers_of_the_gateway_become_sentences(browser: Browser, site: LiveGateway) -> None:
    """api.js's `explain`, in the page: a quota with its wait, the overloaded gateway, an unknown code."""
    browser.open()
    said = browser.run_async(
        "const api = await import('./ui/api.js');"
        "const say = (http, code, wait) => api.explain(new api.ApiError(http,"
        "  {error: {status_code: code, status_text: 'X', message: 'm'}}, wait));"
        "return [say(429, 42900001, 12), say(429, 42900001, null), say(503, 50300001, 1),"
        "        say(400, 40000999, null), say(401, 0, null), api.explain(new api.Unreachable('x'))];")
    texts = [item["text"] for item in said]
    assert texts == ["You have reached your quota. Try again in 12 seconds.",
                     "You have reached your quota. Try again in a moment.",
                     "The gateway is busy. Try again in 1 second.",
                     "The gateway refused the request.",
                     "The token was refused: it is wrong or has expired. Paste a new one.",
                     "The gateway cannot be reached. Check that it is running and your network, then try again."]
    assert said[0]["detail"] == "42900001 X: m"


def test_a_long_job_is_cancelled_from_the_page(browser: Browser, site: LiveGateway, files: Path) -> None:
    signed_in(browser, site)
    long_song = files / "long.wav"
    long_song.write_bytes(song(LONG_SECONDS, seed=11))
    submit(browser, long_song, "htdemucs", ["vocals", "drums"])
    browser.wait(lambda: browser.text("job-status") == "Separating…", "the job to start", 60)
    job_id = shown_job_id(browser)
    browser.by_id("cancel").click()
    started = time.monotonic()
    browser.wait(lambda: browser.text("job-status") == "Cancelled.", "the job to be cancelled", 20)
    assert time.monotonic() - started < 10
    assert not browser.visible("cancel")
    job = requests.get(f"{site.url}/api/v1/jobs/{job_id}", headers=site.headers(), timeout=10).json()
    assert job["status"] == "cancelled" and job["progress"] < 100
    browser.shoot("5-cancelled")

    # Past jobs: newest first; the cancelled one can be deleted from the list (a second click confirms).
    browser.by_id("refresh").click()
    browser.wait(lambda: browser.script("return document.querySelector('#jobs li .badge').textContent") == "cancelled",
                 "the cancelled job in the list")
    armed = browser.script(  # both clicks at once: the list may be drawn anew between two selenium calls
        f"const button = document.querySelector('#jobs li[data-job=\"{job_id}\"] button.danger');"
        "button.click(); const armed = button.textContent; button.click(); return armed;")
    assert armed == "Delete for good?"
    browser.wait(lambda: not browser.script(f"return document.querySelector('#jobs li[data-job=\"{job_id}\"]')"),
                 "the row to go")
    gone = requests.get(f"{site.url}/api/v1/jobs/{job_id}", headers=site.headers(), timeout=10)
    assert gone.status_code == 404
    assert browser.foreign_requests() == []


def test_a_past_job_reopens_with_its_stems(browser: Browser, site: LiveGateway) -> None:
    signed_in(browser, site)
    succeeded = browser.wait(lambda: browser.script(
        "const row = Array.from(document.querySelectorAll('#jobs li')).find("
        "  r => r.querySelector('.badge').textContent === 'succeeded'); return row && row.dataset.job;"),
        "a succeeded job in the list")
    browser.driver.find_element("css selector", f'#jobs li[data-job="{succeeded}"] button.quiet').click()
    browser.wait(lambda: browser.script(
        "return document.querySelectorAll('#results canvas[data-drawn=\"true\"]').length === 2"),
        "both stems drawn again")
    assert browser.text("job-status") == "Done."
    assert browser.foreign_requests() == []


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
    browser.by_id("access-key").send_keys(ACCESS_KEY)
    browser.by_id("secret-key").send_keys("not-the-secret")
    browser.by_id("appkey").send_keys(APPKEY)
    browser.by_id("get-token").click()
    browser.wait(lambda: browser.visible("error"), "the refusal")
    assert browser.text("error-text").startswith("The access key was refused")
    assert "SignatureDoesNotMatch" in browser.text("error-detail")

    browser.by_id("secret-key").clear()
    browser.by_id("secret-key").send_keys(SECRET_KEY)
    browser.by_id("get-token").click()
    browser.wait(lambda: browser.visible("separate"), "the form after GetToken")
    assert browser.by_id("secret-key").get_attribute("value") == ""
    assert browser.foreign_requests() == []


def test_every_control_is_labelled_and_the_page_fits_320_px(browser: Browser, site: LiveGateway) -> None:
    signed_in(browser, site)
    unlabelled = browser.script(
        "return Array.from(document.querySelectorAll('input, select, button, audio, canvas')).filter(e =>"
        "  !(e.labels && e.labels.length) && !e.getAttribute('aria-label') && !e.textContent.trim())"
        ".map(e => e.outerHTML);")
    assert unlabelled == []
    browser.width(NARROWEST, 640)
    try:
        assert browser.overflow() <= 0
    finally:
        browser.width(1280, 900)
    # The keyboard reaches the token, the form and the file picker.
    reached = browser.script(
        "return Array.from(document.querySelectorAll('a[href], button, input, select, summary'))"
        ".filter(e => !e.closest('[hidden]') && e.tabIndex >= 0).map(e => e.id).filter(Boolean);")
    assert {"file", "model", "format", "submit", "forget"} <= set(reached)
    assert browser.console_errors() == []
