"""ModelRepository, Demucs's model API on a store: catalogue, store files, fetching and importing, composed."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .catalogue import LAYER_FILE, Catalogue, describe, quantized_name
from .defaults import DEFAULT_MODEL_DIR, OFFICIAL_MODEL_URL
from .download import DEFAULT_TIMEOUT_SECONDS
from .fetch import FetchEvents, ModelFetcher, ProgressCallback
from .files import LayerFiles, StoreFiles
from .importing import import_files
from .index import ModelEntry, ModelIndex
from .layout import Ensemble, ModelStoreError, load_ensemble, load_package


class ModelRepository:
    """Demucs models in a store directory: list, fetch (verified), import, load and remove them."""

    def __init__(self, root: Path | str = DEFAULT_MODEL_DIR, base_url: str = OFFICIAL_MODEL_URL, *,
                 catalogue: Catalogue | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        self.root = Path(root).expanduser()
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.catalogue = Catalogue.packaged() if catalogue is None else catalogue
        self.files = StoreFiles(self.root)
        self.index = ModelIndex(self.catalogue, self.files)
        self.fetcher = ModelFetcher(self.files, self.catalogue, self.base_url, timeout)

    def get_cache_dir(self) -> Path:
        return self.root.resolve()

    def list_models(self) -> dict[str, dict[str, Any]]:
        """Every model of the catalogue and of the store, with its layers and whether it is cached."""
        layers = self.files.layers()
        return {entry.name: {
            "description": describe(entry.name, len(entry.signatures), entry.local),
            "layers": [self._layer_info(sig, layers) for sig in entry.signatures],
            "quantized": quantized_name(entry.name),
            "cached": self._cached(entry, layers),
            "local": entry.local,
            "segment": entry.spec.segment,
        } for entry in self.index.entries()}

    def get_model(self, name: str, only_load: str | None = None,
                  progress_callback: ProgressCallback | None = None) -> Ensemble:
        """Fetch what the store lacks, then load `name` (only the `only_load` specialist if given)."""
        entry = self.index.resolve(name)
        quantized = set(entry.signatures) & self.catalogue.quantized_signatures()
        if (quantized_name(name) or quantized) and not _has_diffq():
            raise _diffq_error(name)  # before downloading anything
        events = FetchEvents(progress_callback, name, len(entry.signatures))
        # A model complete in the store is loaded as it is (each layer checked against the checksum
        # in its own name), so a store of other versions of the layers works offline.
        if self._cached(entry, self.files.layers()):
            paths = self.fetcher.verify(entry, events)
        else:
            paths = self.fetcher.fetch(entry, events)
        if not _has_diffq():
            _refuse_quantized_states(name, paths[:-1])
        ensemble = load_ensemble(self.root, name, only_load)
        events.emit("download_complete")
        return ensemble

    def fetch(self, name: str, progress_callback: ProgressCallback | None = None) -> list[Path]:
        """Download the missing or corrupt layers of `name` and write its bag file; all paths."""
        entry = self.index.resolve(name)
        events = FetchEvents(progress_callback, name, len(entry.signatures))
        paths = self.fetcher.fetch(entry, events)
        events.emit("download_complete")
        return paths

    def get_cache_info(self) -> dict[str, dict[str, Any]]:
        """The models whose layers are all in the store, with their files and sizes."""
        files = self.files.layers()
        info: dict[str, dict[str, Any]] = {}
        for entry in self.index.entries():
            if not self._cached(entry, files):
                continue
            layers = {path.stem.rsplit("-", 1)[-1]: {"path": path, "size_bytes": path.stat().st_size}
                      for sig in entry.signatures for path in files[sig]}
            info[entry.name] = {"layers": layers,
                                "size_bytes": sum(layer["size_bytes"] for layer in layers.values())}
        return info

    def remove_model(self, name: str) -> bool:
        """Delete `name`'s bag file and the layers no other cached model uses; False if none was there."""
        entry = self.index.resolve(name)
        files = self.files.layers()
        shared = {sig for other in self.index.entries() if other.name != name and self._cached(other, files)
                  for sig in other.signatures}
        removed = False
        for sig in entry.signatures:
            for path in files.get(sig, []) if sig not in shared else []:
                path.unlink()
                removed = True
        bag = self.files.bag_path(name)
        if bag.is_file():
            bag.unlink()
            removed = True
        return removed

    def import_files(self, paths: Iterable[Path | str]) -> list[Path]:
        """Copy checkpoints named `<sig>-<sha256 prefix>.th` (verified) and bag `.yaml` files into the store."""
        return import_files(self.files, paths)

    def _cached(self, entry: ModelEntry, layers: LayerFiles) -> bool:
        return self.files.holds(entry.name, entry.signatures, layers)

    def _layer_info(self, sig: str, files: LayerFiles) -> dict[str, Any]:
        layer = self.catalogue.layers.get(sig)
        if layer is not None:
            return {"signature": sig, "file": layer.file, "checksum": layer.checksum,
                    "url": self.base_url + layer.path}
        present = files.get(sig, [])
        match = LAYER_FILE.fullmatch(present[0].name) if len(present) == 1 else None
        return {"signature": sig, "file": match.string if match else None,
                "checksum": match["checksum"] if match else None, "url": None}


def _has_diffq() -> bool:
    try:
        import diffq  # noqa: F401
    except ImportError:
        return False
    return True


def _diffq_error(name: str) -> ModelStoreError:
    return ModelStoreError(f"{name} is a quantized model: it needs the diffq package: pip install diffq")


def _refuse_quantized_states(name: str, paths: list[Path]) -> None:
    """Demucs exits the process on a quantized state without diffq: refuse it before."""
    for path in paths:
        try:
            try:
                state = load_package(path, mmap=True)["state"]
            except RuntimeError:  # the legacy format cannot be memory-mapped
                state = load_package(path)["state"]
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] == "diffq":
                raise _diffq_error(name) from exc
            raise
        if state.get("__quantized"):
            raise _diffq_error(name)
