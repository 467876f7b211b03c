"""Fetching into the store from a loopback server: verified downloads, cached layers, progress events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from namespaces.music_source_separate.demo_store import HTDEMUCS_SIG, save_package, tiny_htdemucs
from namespaces.music_source_separate.models.layout import ModelStoreError
from namespaces.music_source_separate.models.repository import ModelRepository

from .model_server import ModelServer, Recorder, Remote, store_files

EVENT_KEYS = {
    "download_start": {"model_name", "total_layers"},
    "layer_start": {"model_name", "layer_index", "total_layers", "layer_size_bytes"},
    "layer_progress": {"model_name", "layer_index", "total_layers", "progress_percent",
                       "downloaded_bytes", "total_bytes"},
    "layer_complete": {"model_name", "layer_index", "total_layers", "cached"},
    "download_complete": {"model_name", "total_layers"},
}


def test_fetch_events_in_order_with_their_keys(repo: ModelRepository, store: Path, remote: Remote) -> None:
    recorder = Recorder()
    paths = repo.fetch("htdemucs", progress_callback=recorder)
    size = len(remote.layer_bytes(HTDEMUCS_SIG))
    assert [p.name for p in paths] == [remote.layer_file(HTDEMUCS_SIG), "htdemucs.yaml"]
    names = recorder.names()
    assert names[:2] == ["download_start", "layer_start"]
    assert names[-2:] == ["layer_complete", "download_complete"]
    assert set(names[2:-2]) == {"layer_progress"} and len(names[2:-2]) >= 2
    for event, data in recorder.events:
        assert set(data) == EVENT_KEYS[event], event
        assert data["model_name"] == "htdemucs" and data["total_layers"] == 1
    assert recorder.events[1][1] == {"model_name": "htdemucs", "layer_index": 1, "total_layers": 1,
                                     "layer_size_bytes": size}
    progress = [data for event, data in recorder.events if event == "layer_progress"]
    assert [p["downloaded_bytes"] for p in progress] == sorted(p["downloaded_bytes"] for p in progress)
    assert progress[-1]["downloaded_bytes"] == progress[-1]["total_bytes"] == size
    assert progress[-1]["progress_percent"] == 100.0
    assert recorder.events[-2][1]["cached"] is False
    assert store_files(store) == [remote.layer_file(HTDEMUCS_SIG), "htdemucs.yaml"]


def test_second_fetch_is_cached_without_a_request(repo: ModelRepository, server: ModelServer) -> None:
    repo.fetch("htdemucs_ft")
    requests = len(server.requests)
    assert requests == 4
    recorder = Recorder()
    repo.fetch("htdemucs_ft", progress_callback=recorder)
    assert len(server.requests) == requests
    completes = [data for event, data in recorder.events if event == "layer_complete"]
    assert [(c["layer_index"], c["cached"]) for c in completes] == [(1, True), (2, True), (3, True), (4, True)]
    verifying = [data for event, data in recorder.events if event == "layer_progress"]
    assert all(v["phase"] == "verifying" and v["progress_percent"] == 100.0 for v in verifying)
    assert recorder.names() == ["download_start", *["layer_start", "layer_progress", "layer_complete"] * 4,
                                "download_complete"]


def test_corrupt_cached_layer_is_downloaded_again(repo: ModelRepository, store: Path, remote: Remote,
                                                  server: ModelServer) -> None:
    path = repo.fetch("htdemucs")[0]
    path.write_bytes(path.read_bytes()[:-10])
    recorder = Recorder()
    repo.fetch("htdemucs", progress_callback=recorder)
    assert len(server.requests) == 2
    assert path.read_bytes() == remote.layer_bytes(HTDEMUCS_SIG)
    assert [d["cached"] for e, d in recorder.events if e == "layer_complete"] == [False]


def test_fetch_replaces_another_version_of_a_layer(repo: ModelRepository, store: Path, remote: Remote) -> None:
    store.mkdir()
    other = save_package(tiny_htdemucs(99), store, HTDEMUCS_SIG)
    repo.fetch("htdemucs")
    assert not other.exists()
    assert store_files(store) == [remote.layer_file(HTDEMUCS_SIG), "htdemucs.yaml"]


@pytest.mark.parametrize(("name", "message"), [
    ("corrupt", "checksum mismatch"),
    ("cut", "interrupted"),
    ("gone", "HTTP 404"),
    ("stall", "timed out"),
])
def test_failed_download_keeps_nothing(store: Path, server: ModelServer, remote: Remote,
                                       name: str, message: str) -> None:
    repo = ModelRepository(store, server.url, catalogue=remote.catalogue, timeout=0.5)
    recorder = Recorder()
    with pytest.raises(ModelStoreError, match=message) as info:
        repo.fetch(name, progress_callback=recorder)
    assert server.url in str(info.value) or name == "corrupt"
    assert store_files(store) == []  # no layer, no temporary file, no bag file
    assert "download_complete" not in recorder.names()


def test_callback_exception_aborts_the_download(repo: ModelRepository, store: Path) -> None:
    class Stop(Exception):
        pass

    def stop(event: str, data: dict[str, Any]) -> None:
        if event == "layer_progress":
            raise Stop

    with pytest.raises(Stop):
        repo.fetch("htdemucs", progress_callback=stop)
    assert store_files(store) == []
