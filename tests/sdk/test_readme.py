"""The SDK README's examples run as written: the seeds' hello world and quick start, the webhook receivers."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest
from sami_client import sign_webhook

from .fake_gateway import TOKEN, FakeGateway

README = Path(__file__).resolve().parents[2] / "sdk" / "python" / "README.md"
WEBHOOK_SECRET = "readme-webhook-secret-0123"
FOUR_STEMS: dict[str, bytes | None] = {name: name.encode() * 100 for name in ("vocals", "drums", "bass", "other")}


def example(name: str) -> str:
    """The Python block that follows `<!-- example: NAME -->` in the README."""
    found = re.search(rf"<!-- example: {re.escape(name)} -->\s*```python\n(.*?)```", README.read_text(), re.S)
    assert found, f"no example {name} in {README}"
    return found.group(1)


def run_example(name: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"readme_{name.replace('-', '_')}"}
    exec(compile(example(name), f"README:{name}", "exec"), namespace)  # noqa: S102 - our own documentation
    return namespace


@pytest.fixture
def user(monkeypatch: pytest.MonkeyPatch, fake: FakeGateway, tmp_path: Path) -> Path:
    """A user's shell: SAMI_URL and SAMI_TOKEN exported, in a folder of their own."""
    monkeypatch.setenv("SAMI_URL", fake.url)
    monkeypatch.setenv("SAMI_TOKEN", TOKEN)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_hello_world(fake: FakeGateway, user: Path) -> None:
    fake.polls_until_done["job-1"] = 2
    fake.results_when_done["job-1"] = FOUR_STEMS
    run_example("hello")
    assert json.loads(fake.requests_to("POST", "/api/v1/jobs")[0].body)["model"] == "htdemucs_ft"
    for stem, content in FOUR_STEMS.items():
        assert (user / f"{stem}.wav").read_bytes() == content
    assert set(json.loads((user / "results.json").read_text())["results"]) == set(FOUR_STEMS)


def test_quick_start(fake: FakeGateway, user: Path) -> None:
    (user / "song.mp3").write_bytes(b"ID3" + b"\0" * 5000)
    fake.polls_until_done["job-1"] = 1
    fake.results_when_done["job-1"] = {"vocals": b"v" * 10, "no_vocals": b"n" * 10}
    run_example("quickstart")
    assert fake.uploads["upl-1"] == (user / "song.mp3").read_bytes()
    assert (user / "stems" / "vocals.wav").read_bytes() == b"v" * 10
    assert "job-1" not in fake.jobs  # deleted at the end


async def test_the_aiohttp_webhook_receiver(monkeypatch: pytest.MonkeyPatch, aiohttp_client: Any) -> None:
    monkeypatch.setenv("SAMI_WEBHOOK_SECRET", WEBHOOK_SECRET)
    receiver = run_example("aiohttp-webhook")
    client = await aiohttp_client(receiver["app"])
    body = json.dumps({"id": "evt-1", "type": "job.succeeded", "created_at": "2026-11-29T12:00:00Z",
                       "data": {"job": {"id": "job-1", "status": "succeeded", "progress": 100,
                                        "result": {"vocals": {"url": "http://x/v", "format": "wav"},
                                                   "drums": {"copied_to": "custom storage"}}}}}).encode()
    signed = {"Sami-Signature": sign_webhook(body, WEBHOOK_SECRET), "Content-Type": "application/json"}
    answer = await client.post("/webhooks/sami", data=body, headers=signed)
    assert answer.status == 200 and await answer.json() == {"ok": True}
    assert receiver["seen"] == {"evt-1"}
    again = await client.post("/webhooks/sami", data=body, headers=signed)
    assert (await again.json())["duplicate"] is True
    forged = await client.post("/webhooks/sami", data=body.replace(b"succeeded", b"failed"), headers=signed)
    assert forged.status == 400
    stale = {"Sami-Signature": sign_webhook(body, WEBHOOK_SECRET, int(time.time()) - 3600)}
    assert (await client.post("/webhooks/sami", data=body, headers=stale)).status == 400
    assert (await client.post("/webhooks/sami", data=body)).status == 400


def test_the_fastapi_webhook_receiver_is_valid_python() -> None:
    compile(example("fastapi-webhook"), "README:fastapi-webhook", "exec")
