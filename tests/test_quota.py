"""Per-appkey quotas: rate, burst and concurrency, 429 with Retry-After, other keys unaffected."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from sami_gateway.app import create_app
from sami_gateway.auth.authenticator import TokenService
from sami_gateway.auth.quota import STREAM_RETRY_AFTER_SECONDS, QuotaTracker, StreamSlots
from sami_gateway.config import load_config
from sami_gateway.config.limits import Quota
from sami_gateway.errors import Code, GatewayError
from tests.test_app import NS, SECRET, Echo


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def refused(tracker: QuotaTracker, appkey: str, quota: Quota) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        async with tracker.charge(appkey, quota):
            pass
    assert info.value.code is Code.QUOTA_EXCEEDED and info.value.status.http == 429
    return info.value


async def test_burst_then_rate_with_retry_after() -> None:
    clock = Clock()
    tracker, quota = QuotaTracker(clock), Quota(rate=0.5, burst=2, concurrent=5)
    for _ in range(2):
        async with tracker.charge("a", quota):
            pass
    assert (await refused(tracker, "a", quota)).headers["Retry-After"] == "2"  # one token takes 2 s at 0.5/s
    async with tracker.charge("b", quota):  # another appkey has its own bucket
        pass
    clock.now = 2.0
    async with tracker.charge("a", quota):
        pass


async def test_concurrency_bound_and_release() -> None:
    tracker, quota, vip = QuotaTracker(), Quota(rate=100, burst=100, concurrent=1), Quota(100, 100, 3)
    async with tracker.charge("a", quota):
        assert (await refused(tracker, "a", quota)).headers["Retry-After"] == "1"
        async with tracker.charge("vip", vip), tracker.charge("vip", vip):
            pass
    async with tracker.charge("a", quota):  # released
        pass


def test_quota_is_validated() -> None:
    with pytest.raises(ValueError):
        Quota(rate=0, burst=1, concurrent=1)
    with pytest.raises(ValueError):
        Quota(rate=1, burst=1, concurrent=1, streams=0)


def test_stream_slots_refuse_past_the_quota_and_free_when_released() -> None:
    slots, quota = StreamSlots(), Quota(rate=1, burst=1, concurrent=1, streams=2)
    with slots.hold("a", quota), slots.hold("a", quota):
        with pytest.raises(GatewayError) as info, slots.hold("a", quota):
            pass
        assert info.value.code is Code.QUOTA_EXCEEDED and info.value.status.http == 429
        assert info.value.headers == {"Retry-After": str(STREAM_RETRY_AFTER_SECONDS)}
        assert "at most 2 event streams and long polls" in info.value.detail
        with slots.hold("b", quota):  # another appkey's are its own
            assert slots.open("a") == 2 and slots.open("b") == 1
    assert slots.open("a") == 0
    with pytest.raises(RuntimeError), slots.hold("a", quota):
        raise RuntimeError  # a stream that fails gives its slot back too
    assert slots.open("a") == 0


def test_streams_per_appkey_come_from_the_settings_or_its_table(tmp_path: Path) -> None:
    config_file = tmp_path / "gateway.toml"
    config_file.write_text('[appkeys.few]\nstreams = 2\n[appkeys.other]\n')
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_CONFIG": str(config_file),
                              "SAMI_QUOTA_STREAMS": "4"})
    assert config.appkeys["few"].quota is not None and config.appkeys["few"].quota.streams == 2
    assert config.appkeys["other"].quota is None and config.default_quota.streams == 4
    assert load_config({}, {"SAMI_TOKEN_SECRET": SECRET}).default_quota.streams == 16


@pytest.fixture
async def client(aiohttp_client: Any, tmp_path: Path) -> TestClient:
    config_file = tmp_path / "gateway.toml"
    config_file.write_text('[appkeys.small]\nrate = 0.01\nburst = 2\nconcurrent = 2\n[appkeys.other]\n')
    config = load_config({}, {"SAMI_TOKEN_SECRET": SECRET, "SAMI_CONFIG": str(config_file)})
    return await aiohttp_client(create_app(config, {NS: Echo()}))  # type: ignore[dict-item]


def body(appkey: str) -> dict[str, str]:
    return {"appkey": appkey, "token": TokenService(SECRET).issue(appkey, 60), "namespace": NS,
            "data": base64.b64encode(b"x").decode()}


async def test_exceeding_a_quota_gives_429_while_other_appkeys_work(client: TestClient) -> None:
    for _ in range(2):
        assert (await client.post("/api/v1/invoke", json=body("small"))).status == 200
    response = await client.post("/api/v1/invoke", json=body("small"))
    reply = await response.json()
    assert (response.status, reply["status_code"]) == (429, 42900001)
    assert int(response.headers["Retry-After"]) >= 1
    for _ in range(3):
        assert (await client.post("/api/v1/invoke", json=body("other"))).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert 'sami_gateway_rejections_total{reason="quota"} 1.0' in metrics
