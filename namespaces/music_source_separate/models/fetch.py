"""Fetching a model into the store: its layers downloaded or checked, its bag file last, and the progress events."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .catalogue import Catalogue
from .download import DEFAULT_TIMEOUT_SECONDS, download_file, save_verified
from .files import StoreFiles
from .index import ModelEntry
from .layout import file_checksum, verified_file

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, dict[str, Any]], object]


@dataclass(frozen=True)
class FetchEvents:
    """The progress events of seeds/000 for one model."""

    callback: ProgressCallback | None
    model_name: str
    total_layers: int

    def emit(self, event: str, index: int | None = None, **data: Any) -> None:
        if self.callback is None:
            return
        head: dict[str, Any] = {"model_name": self.model_name}
        if index is not None:
            head["layer_index"] = index
        head["total_layers"] = self.total_layers
        self.callback(event, {**head, **data})

    def layer_progress(self, index: int, done: int, total: int, **extra: Any) -> None:
        percent = round(100.0 * done / total, 1) if total else 0.0
        self.emit("layer_progress", index, progress_percent=percent, downloaded_bytes=done,
                  total_bytes=total, **extra)

    def cached(self, index: int, size: int) -> None:
        self.emit("layer_start", index, layer_size_bytes=size)
        self.layer_progress(index, size, size, phase="verifying")
        self.emit("layer_complete", index, cached=True)

    def download(self, index: int) -> Callable[[int, int], None]:
        """The download's progress hook: its first call (headers arrived) starts the layer."""
        started = False

        def on_progress(done: int, total: int) -> None:
            nonlocal started
            if not started:
                started = True
                self.emit("layer_start", index, layer_size_bytes=total)
            else:
                self.layer_progress(index, done, total)
        return on_progress


class ModelFetcher:
    """Brings a model's files into the store from `base_url`, each verified against its checksum."""

    def __init__(self, files: StoreFiles, catalogue: Catalogue, base_url: str,
                 timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.files = files
        self.catalogue = catalogue
        self.base_url = base_url
        self.timeout = timeout

    def fetch(self, entry: ModelEntry, events: FetchEvents) -> list[Path]:
        """The layers (verified, downloaded if needed), then the bag file, which comes last."""
        self.files.root.mkdir(parents=True, exist_ok=True)
        events.emit("download_start")
        paths = [self._fetch_layer(entry.name, index, sig, events)
                 for index, sig in enumerate(entry.signatures, 1)]
        paths.append(self._write_bag(entry))
        return paths

    def verify(self, entry: ModelEntry, events: FetchEvents) -> list[Path]:
        """The layers already in the store, each checked against the checksum in its name, and the bag file."""
        events.emit("download_start")
        paths = []
        for index, sig in enumerate(entry.signatures, 1):
            paths.append(verified_file(self.files.root, sig, entry.name))
            events.cached(index, paths[-1].stat().st_size)
        return [*paths, self.files.bag_path(entry.name)]

    def _fetch_layer(self, name: str, index: int, sig: str, events: FetchEvents) -> Path:
        root = self.files.root
        layer = self.catalogue.layers.get(sig)
        if layer is None:  # a layer of the store's own: it can only be verified
            path = verified_file(root, sig, name)
            events.cached(index, path.stat().st_size)
            return path
        target = root / layer.file
        if target.is_file():
            if file_checksum(target, len(layer.checksum)) == layer.checksum:
                self.files.replace_others(sig, target)
                events.cached(index, target.stat().st_size)
                return target
            log.warning("%s does not match its checksum: downloading it again", target)
            target.unlink()
        path = download_file(self.base_url + layer.path, root, layer.file, layer.checksum,
                             events.download(index), self.timeout)
        self.files.replace_others(sig, path)
        events.emit("layer_complete", index, cached=False)
        return path

    def _write_bag(self, entry: ModelEntry) -> Path:
        data = entry.bag_data()
        if data is None:
            return self.files.bag_path(entry.name)
        return save_verified(io.BytesIO(data), self.files.root, f"{entry.name}.yaml", "")
