"""ModelRepository, Demucs's model API on a store: catalogue, store files, fetching and importing, composed."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..defaults import DEFAULT_MODEL_DIR, OFFICIAL_MODEL_URL
from ..engine.ensemble import Ensemble
from .catalogue import LAYER_FILE, Catalogue, describe, quantized_name
from .download import DEFAULT_TIMEOUT_SECONDS
from .families import DEFAULT_LICENCE, FamilyEntry, FamilyStore
from .fetch import FetchEvents, ModelFetcher, ProgressCallback
from .files import LayerFiles, StoreFiles
from .importing import import_files
from .index import ModelEntry, ModelIndex
from .layout import ModelStoreError, load_ensemble, load_package


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
        self.families = FamilyStore(self.root)  # imported models of other families (families/)

    def get_cache_dir(self) -> Path:
        return self.root.resolve()

    def list_models(self) -> dict[str, dict[str, Any]]:
        """Every model of the catalogue and of the store, with its layers and whether it is cached."""
        layers = self.files.layers()
        listed = {entry.name: {
            "description": describe(entry.name, len(entry.signatures), entry.local),
            "layers": [self._layer_info(sig, layers) for sig in entry.signatures],
            "quantized": quantized_name(entry.name),
            "cached": self._cached(entry, layers),
            "local": entry.local,
            "segment": entry.spec.segment,
        } for entry in self.index.entries()}
        for name in self.families.names():
            if name not in listed:
                listed[name] = self._family_info(name)
        return listed

    def get_model(self, name: str, only_load: str | None = None,
                  progress_callback: ProgressCallback | None = None) -> Ensemble:
        """Fetch what the store lacks, then load `name` (only the `only_load` specialist if given)."""
        if self._is_family(name):
            return self.families.load(name, only_load)
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
        for name in self.families.names():
            if name not in info:
                try:
                    path = self.families.folder / self.families.entry(name).checkpoint
                    info[name] = {"layers": {path.stem.rsplit("-", 1)[-1]: {"path": path,
                                                                            "size_bytes": path.stat().st_size}},
                                  "size_bytes": path.stat().st_size}
                except (ModelStoreError, OSError):
                    continue  # its checkpoint is missing: not complete
        return info

    def remove_model(self, name: str) -> bool:
        """Delete `name`'s bag file and the layers no other cached model uses; False if none was there."""
        if self._is_family(name):
            return self.families.remove(name)
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

    def import_family(self, name: str, checkpoint: Path | str, config: Path | str, licence: str = DEFAULT_LICENCE,
                      model_type: str | None = None) -> FamilyEntry:
        """Import an MSST checkpoint and its YAML config as the model `name` (BS-RoFormer, Mel-Band
        RoFormer or MDX23C): checked against each other first, the store left as it was on any error."""
        if name in self.catalogue.bags or name in self.catalogue.layers or self.files.has_bag(name) \
                or name in self.files.layers():
            raise ModelStoreError(f"cannot import {name}: a Demucs model has that name")
        return self.families.import_model(name, Path(checkpoint), Path(config), licence, model_type)

    def _is_family(self, name: str) -> bool:
        """An imported model of another family (a Demucs model of the same name comes first)."""
        return self.families.has(name) and name not in self.catalogue.bags and not self.files.has_bag(name)

    def _family_info(self, name: str) -> dict[str, Any]:
        try:
            entry = self.families.entry(name)
        except ModelStoreError as exc:
            return {"description": f"unreadable imported model: {exc}", "layers": [], "quantized": False,
                    "cached": False, "local": True, "segment": None}
        summary = entry.summary()
        present = (self.families.folder / entry.checkpoint).is_file()
        return {"description": entry.description(),
                "layers": [{"signature": name, "file": entry.checkpoint, "checksum": None, "url": None}],
                "quantized": False, "cached": present, "local": True, "segment": None, **summary}

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
