"""`sami-gateway jobs ...` against the fake gateway: JSON out, progress on stderr, results downloaded."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import pytest
from sami_client import Job

from sami_gateway.cli.jobs import ProgressBar, track_name
from sami_gateway.cli.main import main

from .fake_gateway import MODELS, TOKEN, Answer, FakeGateway

STEMS: dict[str, bytes | None] = {"vocals": b"v" * 1000, "no_vocals": b"n" * 700}


@pytest.fixture(autouse=True)
def environ(monkeypatch: pytest.MonkeyPatch, fake: FakeGateway) -> None:
    """The gateway and token from SAMI_URL / SAMI_TOKEN, as a user would set them."""
    for name in list(os.environ):
        if name.startswith("SAMI_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SAMI_URL", fake.url)
    monkeypatch.setenv("SAMI_TOKEN", TOKEN)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["jobs", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_submit_prints_the_job(fake: FakeGateway, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    song = tmp_path / "My Song.mp3"
    song.write_bytes(b"ID3" * 1000)
    code, out, _ = run(capsys, "submit", str(song), "-m", "htdemucs_ft", "--stems", "vocals,no_vocals",
                       "--format", "flac")
    assert code == 0 and json.loads(out)["id"] == "job-1"
    body = json.loads(fake.requests_to("POST", "/api/v1/jobs")[0].body)
    assert body == {"input": {"upload_id": "upl-1"}, "model": "htdemucs_ft", "stems": ["vocals", "no_vocals"],
                    "output": {"format": "flac"}, "name": "My Song.mp3"}
    code, out, _ = run(capsys, "submit", "https://example.com/a.wav", "https://example.com/b.wav")
    assert code == 0 and [job["id"] for job in json.loads(out)] == ["job-2", "job-3"]


def test_submit_wait_downloads_each_track(fake: FakeGateway, capsys: pytest.CaptureFixture[str],
                                          tmp_path: Path) -> None:
    for job_id in ("job-1", "job-2"):
        fake.polls_until_done[job_id] = 2
        fake.results_when_done[job_id] = STEMS
    out_dir = tmp_path / "separated"
    code, out, err = run(capsys, "submit", "https://example.com/one.mp3", "https://example.com/two.mp3",
                         "--wait", "-o", str(out_dir))
    assert code == 0
    assert out.splitlines() == [f"job-1\tsucceeded\t{out_dir / 'one'}", f"job-2\tsucceeded\t{out_dir / 'two'}"]
    assert (out_dir / "one" / "vocals.wav").read_bytes() == STEMS["vocals"]
    assert json.loads((out_dir / "two" / "results.json").read_text())["id"] == "job-2"
    assert "one [" in err and "100% succeeded" in err  # the progress bar, on stderr


def test_a_failed_job_exits_1(fake: FakeGateway, capsys: pytest.CaptureFixture[str]) -> None:
    fake.script[("GET", "/api/v1/jobs/job-1")].append(
        Answer(200, {
            "id": "job-1", "status": "failed", "progress": 10.0,
            "error": {"status_code": 40000012, "status_text": "IllegalData", "message": "not audio"}}))
    code, out, _ = run(capsys, "submit", "https://example.com/x.mp3", "--wait")
    assert code == 1 and out.strip() == "job-1\tfailed\tIllegalData: not audio"


def test_list_get_cancel_delete_download(fake: FakeGateway, capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    fake.add_job("job-1", stems=STEMS)
    fake.add_job("job-2", "queued")
    code, out, _ = run(capsys, "list", "--status", "queued")
    assert code == 0 and [job["id"] for job in json.loads(out)["jobs"]] == ["job-2"]
    code, out, _ = run(capsys, "list", "--all", "--limit", "1")
    assert [job["id"] for job in json.loads(out)["jobs"]] == ["job-2", "job-1"]
    code, out, _ = run(capsys, "get", "job-1")
    assert code == 0 and json.loads(out)["status"] == "succeeded"
    code, out, _ = run(capsys, "cancel", "job-2", "--url", fake.url)
    assert code == 0 and json.loads(out)["status"] == "cancelled"
    code, out, _ = run(capsys, "download", "job-1", "-o", str(tmp_path / "r"))
    assert code == 0 and (tmp_path / "r" / "no_vocals.wav").read_bytes() == STEMS["no_vocals"]
    assert out.splitlines()[-1] == str(tmp_path / "r" / "results.json")
    code, _, err = run(capsys, "delete", "job-2")
    assert code == 0 and "deleted job-2" in err and "job-2" not in fake.jobs


def test_refusals_exit_1_with_the_gateways_message(fake: FakeGateway, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "get", "nope")
    assert code == 1 and not out and "404 NotFound (40400002)" in err
    code, _, err = run(capsys, "--token", "wrong", "get", "nope")
    assert code == 1 and "DeniedAccess" in err


def test_progress_bar_on_a_terminal_redraws_one_line() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    bar = ProgressBar("song", screen)
    for progress in (0.0, 42.0, 100.0):
        bar.update(Job("j", "processing" if progress < 100 else "succeeded", progress))
    bar.close()
    text = screen.getvalue()
    assert text.count("\r") == 3 and text.endswith("\n") and text.count("\n") == 1
    assert "song [############" in text and " 42% processing" in text and "100% succeeded" in text


def test_track_names() -> None:
    assert track_name("dir/My Song.mp3") == "My Song"
    assert track_name("https://example.com/a/b.wav?x=1") == "b"
    assert track_name("https://example.com/") == "track"


def test_models_prints_the_listing(fake: FakeGateway, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "models")
    assert code == 0 and json.loads(out) == MODELS
    assert len(fake.requests_to("GET", "/api/v1/models")) == 1
