"""ModelRepository: the catalogue, verified fetching from a local server, events, import, removal."""

from __future__ import annotations

import hashlib
import io
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import torch

from namespaces.music_source_separate.demo_store import HTDEMUCS_FT_SIGS, HTDEMUCS_SIG, save_package, tiny_htdemucs
from namespaces.music_source_separate.repository import Catalogue, ModelRepository
from namespaces.music_source_separate.store import ModelStoreError, load_ensemble

CORRUPT_SIG, GONE_SIG, CUT_SIG, STALL_SIG, QUANTIZED_SIG = "badc0ffe", "dead0000", "c0000c07", "5a11ed00", "9a000000"
EVENT_KEYS = {
    "download_start": {"model_name", "total_layers"},
    "layer_start": {"model_name", "layer_index", "total_layers", "layer_size_bytes"},
    "layer_progress": {"model_name", "layer_index", "total_layers", "progress_percent",
                       "downloaded_bytes", "total_bytes"},
    "layer_complete": {"model_name", "layer_index", "total_layers", "cached"},
    "download_complete": {"model_name", "total_layers"},
}


# -- a remote store in the layout of Demucs's `remote/` folder, served on loopback --------------


@dataclass
class Remote:
    """The test catalogue and what the server answers (by URL path)."""

    catalogue: Catalogue
    files: dict[str, bytes]
    truncated: set[str] = field(default_factory=set)
    stalled: set[str] = field(default_factory=set)

    def layer_file(self, sig: str) -> str:
        return self.catalogue.layers[sig].file

    def layer_bytes(self, sig: str) -> bytes:
        return self.files[self.catalogue.layers[sig].path]


def build_remote(model_store: Path, directory: Path) -> Remote:
    """The tiny models of `model_store` as `htdemucs` and `htdemucs_ft`, and bags that fail."""
    directory.mkdir(parents=True, exist_ok=True)
    lines, files = ["# tiny test models", "root: hybrid_transformer/"], {}
    for path in sorted(model_store.glob("*.th")):
        lines.append(path.name)
        files[f"hybrid_transformer/{path.name}"] = path.read_bytes()
    shutil.copy(model_store / "htdemucs_ft.yaml", directory)
    good = next(model_store.glob(f"{HTDEMUCS_SIG}-*.th")).read_bytes()
    checksum = hashlib.sha256(good).hexdigest()[:8]
    lines.append("root: odd/")
    bags = {"htdemucs": HTDEMUCS_SIG, "corrupt": CORRUPT_SIG, "gone": GONE_SIG, "cut": CUT_SIG,
            "stall": STALL_SIG, "tiny_q": QUANTIZED_SIG}
    for name, sig in bags.items():
        (directory / f"{name}.yaml").write_text(f"models: ['{sig}']\n")
        if sig == HTDEMUCS_SIG:
            continue
        filename = f"{sig}-{checksum}.th"
        lines.append(filename)
        if sig != GONE_SIG:
            files[f"odd/{filename}"] = good + (b"tampered" if sig == CORRUPT_SIG else b"")
    (directory / "files.txt").write_text("\n".join(lines) + "\n")
    return Remote(Catalogue.from_dir(directory), files, truncated={f"odd/{CUT_SIG}-{checksum}.th"},
                  stalled={f"odd/{STALL_SIG}-{checksum}.th"})


class _Handler(BaseHTTPRequestHandler):
    server: ModelServer

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        remote = self.server.remote
        path = self.path.lstrip("/")
        self.server.requests.append(path)
        data = remote.files.get(path)
        if data is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if path in remote.stalled:
            self.server.release.wait(10)
        elif path in remote.truncated:
            self.wfile.write(data[: len(data) // 2])  # then the connection closes
        else:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ModelServer(ThreadingHTTPServer):
    def __init__(self, remote: Remote) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.remote = remote
        self.requests: list[str] = []
        self.release = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_port}/"


@contextmanager
def serve(remote: Remote) -> Iterator[ModelServer]:
    server = ModelServer(remote)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
        thread.join()


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, event: str, data: dict[str, Any]) -> None:
        self.events.append((event, dict(data)))

    def names(self) -> list[str]:
        return [event for event, _ in self.events]


# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def remote(model_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Remote:
    return build_remote(model_store, tmp_path_factory.mktemp("remote"))


@pytest.fixture
def server(remote: Remote) -> Iterator[ModelServer]:
    with serve(remote) as running:
        yield running


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def repo(store: Path, server: ModelServer, remote: Remote) -> ModelRepository:
    return ModelRepository(store, server.url, catalogue=remote.catalogue, timeout=5)


def store_files(store: Path) -> list[str]:
    """Everything in the store, hidden temporary files included."""
    return sorted(path.name for path in store.iterdir()) if store.exists() else []


# -- catalogue and configuration -------------------------------------------------------------


def test_packaged_catalogue_knows_every_pretrained_model(tmp_path: Path) -> None:
    models = ModelRepository(tmp_path, "https://example.invalid/demucs/").list_models()
    for name in ("htdemucs", "htdemucs_ft", "htdemucs_6s", "hdemucs_mmi", "mdx", "mdx_extra",
                 "mdx_q", "mdx_extra_q", "repro_mdx_a"):
        assert name in models and models[name]["description"] and not models[name]["cached"]
    assert models["htdemucs"]["layers"] == [{
        "signature": "955717e8", "file": "955717e8-8726e21a.th", "checksum": "8726e21a",
        "url": "https://example.invalid/demucs/hybrid_transformer/955717e8-8726e21a.th"}]
    assert len(models["htdemucs_ft"]["layers"]) == 4
    assert models["mdx_extra_q"]["quantized"] and not models["mdx_extra"]["quantized"]
    assert models["mdx"]["layers"][0]["url"].endswith("/mdx_final/0d19c1c6-0f06f20e.th")


def test_defaults_come_from_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("SAMI_CONFIG", raising=False)
    monkeypatch.setenv("SAMI_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("SAMI_MODEL_URL", "http://mirror.invalid/demucs")
    repo = ModelRepository()
    assert repo.get_cache_dir() == tmp_path.resolve()
    assert repo.base_url == "http://mirror.invalid/demucs/"


def test_unknown_or_invalid_name(repo: ModelRepository) -> None:
    with pytest.raises(ModelStoreError, match="unknown model 'nope'.*htdemucs_ft"):
        repo.fetch("nope")
    with pytest.raises(ModelStoreError, match="invalid model name"):
        repo.get_model("../htdemucs")


def test_list_models_cached_and_local(repo: ModelRepository, store: Path, remote: Remote,
                                      server: ModelServer) -> None:
    before = repo.list_models()
    assert not before["htdemucs"]["cached"]
    assert before["htdemucs"]["layers"][0]["url"] == (
        f"{server.url}hybrid_transformer/{remote.layer_file(HTDEMUCS_SIG)}")
    repo.fetch("htdemucs")
    (store / "mine.yaml").write_text(f"models: ['{HTDEMUCS_SIG}']\n")
    after = repo.list_models()
    assert after["htdemucs"]["cached"] and not after["htdemucs_ft"]["cached"]
    assert after["mine"]["cached"] and after["mine"]["local"]


# -- fetching --------------------------------------------------------------------------------


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


# -- loading ---------------------------------------------------------------------------------


def test_get_model_returns_the_ensemble(repo: ModelRepository) -> None:
    recorder = Recorder()
    ensemble = repo.get_model("htdemucs", progress_callback=recorder)
    assert ensemble.sources == ("drums", "bass", "other", "vocals") and len(ensemble.members) == 1
    assert recorder.names()[0] == "download_start" and recorder.names()[-1] == "download_complete"


def test_get_model_only_load(repo: ModelRepository) -> None:
    vocals = repo.get_model("htdemucs_ft", only_load="vocals")
    assert vocals.name == "htdemucs_ft:vocals"
    assert [m.weights for m in vocals.members] == [(0.0, 0.0, 0.0, 1.0)]


def test_quantized_name_without_diffq_fails_before_downloading(
        repo: ModelRepository, server: ModelServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffq", None)
    with pytest.raises(ModelStoreError, match="needs the diffq package: pip install diffq"):
        repo.get_model("tiny_q")
    assert server.requests == []


def test_quantized_state_without_diffq_is_refused(repo: ModelRepository, store: Path, model_store: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "diffq", None)
    package = torch.load(next(model_store.glob(f"{HTDEMUCS_SIG}-*.th")), weights_only=False)
    package["state"] = {"__quantized": True, "quantized": []}
    buffer = io.BytesIO()
    torch.save(package, buffer)
    store.mkdir()
    (store / f"5a000000-{hashlib.sha256(buffer.getvalue()).hexdigest()[:8]}.th").write_bytes(buffer.getvalue())
    (store / "custom.yaml").write_text("models: ['5a000000']\n")
    with pytest.raises(ModelStoreError, match="custom is a quantized model.*pip install diffq"):
        repo.get_model("custom")


def test_missing_model_message_says_how_to_fetch_or_import(tmp_path: Path) -> None:
    with pytest.raises(ModelStoreError) as info:
        load_ensemble(tmp_path, "htdemucs_ft", "vocals")
    message = str(info.value)
    assert "'htdemucs_ft'" in message and str(tmp_path) in message
    assert "sami-gateway models fetch htdemucs_ft" in message and "sami-gateway models import FILE..." in message


# -- the store: info, removal, import ----------------------------------------------------------


def test_cache_info_sizes(repo: ModelRepository, store: Path, remote: Remote) -> None:
    assert repo.get_cache_info() == {}
    repo.fetch("htdemucs")
    repo.fetch("htdemucs_ft")
    info = repo.get_cache_info()
    assert set(info) == {"htdemucs", "htdemucs_ft"}
    layer = remote.catalogue.layers[HTDEMUCS_SIG]
    size = len(remote.layer_bytes(HTDEMUCS_SIG))
    assert info["htdemucs"] == {"layers": {layer.checksum: {"path": store.resolve() / layer.file,
                                                            "size_bytes": size}},
                                "size_bytes": size}
    assert len(info["htdemucs_ft"]["layers"]) == 4
    assert info["htdemucs_ft"]["size_bytes"] == sum(len(remote.layer_bytes(s)) for s in HTDEMUCS_FT_SIGS)


def test_remove_model_keeps_layers_other_models_use(repo: ModelRepository, store: Path, remote: Remote) -> None:
    repo.fetch("htdemucs")
    (store / "mine.yaml").write_text(f"models: ['{HTDEMUCS_SIG}']\n")
    assert repo.remove_model("htdemucs") is True
    assert store_files(store) == [remote.layer_file(HTDEMUCS_SIG), "mine.yaml"]
    assert repo.remove_model("mine") is True
    assert store_files(store) == []
    assert repo.remove_model("htdemucs") is False
    with pytest.raises(ModelStoreError, match="unknown model"):
        repo.remove_model("mine")


def test_import_files(repo: ModelRepository, store: Path, model_store: Path) -> None:
    layer = next(model_store.glob(f"{HTDEMUCS_SIG}-*.th"))
    imported = repo.import_files([layer, model_store / "htdemucs.yaml"])
    assert [p.name for p in imported] == [layer.name, "htdemucs.yaml"]
    assert (store / layer.name).read_bytes() == layer.read_bytes()
    assert repo.get_model("htdemucs").sources == ("drums", "bass", "other", "vocals")


def test_import_refuses_wrong_or_missing_checksum(repo: ModelRepository, store: Path, model_store: Path,
                                                  tmp_path: Path) -> None:
    good = next(model_store.glob(f"{HTDEMUCS_SIG}-*.th"))
    wrong = tmp_path / f"{HTDEMUCS_SIG}-00000000.th"
    bare = tmp_path / f"{HTDEMUCS_SIG}.th"
    bad_bag = tmp_path / "broken.yaml"
    for path in (wrong, bare):
        shutil.copy(good, path)
    bad_bag.write_text("weights: []\n")
    for path, message in ((wrong, "checksum mismatch"), (bare, "<sig>-<sha256 prefix>.th"),
                          (bad_bag, "not a bag file")):
        with pytest.raises(ModelStoreError, match=message):
            repo.import_files([good, path])  # all or nothing: the good one is not copied either
        assert store_files(store) == []
