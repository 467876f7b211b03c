"""A remote model store in the layout of Demucs's `remote/` folder, served on loopback, for the store's tests."""

from __future__ import annotations

import hashlib
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from namespaces.music_source_separate.demo_store import HTDEMUCS_SIG
from namespaces.music_source_separate.models.catalogue import Catalogue

CORRUPT_SIG, GONE_SIG, CUT_SIG, STALL_SIG, QUANTIZED_SIG = "badc0ffe", "dead0000", "c0000c07", "5a11ed00", "9a000000"


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


def store_files(store: Path) -> list[str]:
    """Everything in the store, hidden temporary files included."""
    return sorted(path.name for path in store.iterdir()) if store.exists() else []
