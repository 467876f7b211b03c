"""ModelRepository: the store's catalogue, fetching, importing and removing models (Demucs's API)."""

from __future__ import annotations

import importlib.util
import io
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from sami_gateway.config import load_config

from .download import DEFAULT_TIMEOUT_SECONDS, download_file, save_verified
from .store import (
    BagSpec,
    Ensemble,
    ModelStoreError,
    file_checksum,
    load_ensemble,
    load_package,
    read_bag,
    verified_file,
)

log = logging.getLogger(__name__)

ProgressCallback = Callable[[str, dict[str, Any]], object]
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a model name becomes a file name in the store
_LAYER_FILE = re.compile(r"(?P<sig>[A-Za-z0-9][A-Za-z0-9_.-]*)-(?P<checksum>[0-9a-f]{8,64})\.th")
DESCRIPTIONS = MappingProxyType({
    "htdemucs": "Hybrid Transformer Demucs (v4), the default 4-stem model",
    "htdemucs_ft": "htdemucs fine-tuned per stem: 4 specialists, best quality, 4x the time",
    "htdemucs_6s": "htdemucs with 6 stems (adds guitar and piano)",
    "hdemucs_mmi": "Hybrid Demucs (v3) retrained on MusDB and 800 extra songs",
    "mdx": "Demucs v3 bag of the MDX 2021 challenge, trained on MusDB HQ only",
    "mdx_extra": "Demucs v3 bag of the MDX 2021 challenge, trained with extra data",
    "mdx_q": "quantized mdx: smaller download, needs diffq",
    "mdx_extra_q": "quantized mdx_extra: smaller download, needs diffq",
})


@dataclass(frozen=True)
class Layer:
    """One downloadable checkpoint of the catalogue."""

    signature: str
    file: str  # <sig>-<sha256 prefix>.th
    checksum: str
    path: str  # under the base URL: <root><file>


@dataclass(frozen=True)
class Catalogue:
    """What can be fetched: layers from `files.txt`, bags from `<name>.yaml` (Demucs's `remote/`)."""

    directory: Path
    layers: Mapping[str, Layer]
    bags: Mapping[str, BagSpec]

    @classmethod
    def from_dir(cls, directory: Path | str) -> Catalogue:
        """Read a folder laid out as the `demucs` package's `remote/` folder."""
        directory = Path(directory)
        try:
            layers = _parse_files(directory / "files.txt")
            bags = {path.stem: read_bag(directory, path.stem) for path in sorted(directory.glob("*.yaml"))}
        except (OSError, KeyError, TypeError, yaml.YAMLError) as exc:
            raise ModelStoreError(f"cannot read the model catalogue in {directory}: {exc!r}") from exc
        return cls(directory, MappingProxyType(layers), MappingProxyType(bags))

    @classmethod
    def packaged(cls) -> Catalogue:
        """The catalogue the installed `demucs` package ships."""
        spec = importlib.util.find_spec("demucs")
        if spec is None or not spec.submodule_search_locations:
            raise ModelStoreError("the demucs package is not installed: it ships the model catalogue")
        return cls.from_dir(Path(list(spec.submodule_search_locations)[0]) / "remote")

    def quantized_signatures(self) -> frozenset[str]:
        return frozenset(sig for name, bag in self.bags.items() if _quantized_name(name) for sig in bag.signatures)


def _parse_files(path: Path) -> dict[str, Layer]:
    """`root: <dir>/` lines, then `<sig>-<checksum>.th` lines found under that root."""
    root = ""
    layers: dict[str, Layer] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("root:"):
            root = line.split(":", 1)[1].strip()
            continue
        match = _LAYER_FILE.fullmatch(line)
        if match is None:
            raise ModelStoreError(f"{path}: {line!r} is not <sig>-<sha256 prefix>.th")
        layers[match["sig"]] = Layer(match["sig"], line, match["checksum"], root + line)
    return layers


def _quantized_name(name: str) -> bool:
    return name.endswith("_q")


def _has_diffq() -> bool:
    try:
        import diffq  # noqa: F401
    except ImportError:
        return False
    return True


def _diffq_error(name: str) -> ModelStoreError:
    return ModelStoreError(f"{name} is a quantized model: it needs the diffq package: pip install diffq")


@dataclass(frozen=True)
class _Model:
    """A name resolved to its bag, and where its bag file comes from."""

    name: str
    spec: BagSpec
    bag_source: Path | None  # the catalogue's bag file; None: the store's own or a one-line bag
    local: bool  # known only from the store

    @property
    def signatures(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.spec.signatures))  # a bag may name a layer twice


@dataclass(frozen=True)
class _Events:
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


def _check_bag(data: bytes, origin: str) -> None:
    try:
        bag = yaml.safe_load(data)
    except yaml.YAMLError as exc:
        raise ModelStoreError(f"{origin} is not a bag file: {exc}") from exc
    models = bag.get("models") if isinstance(bag, dict) else None
    if not isinstance(models, list) or not models or not all(isinstance(m, str) for m in models):
        raise ModelStoreError(f"{origin} is not a bag file: it needs `models: [signature, ...]`")
    weights = bag.get("weights")
    if weights is not None and (not isinstance(weights, list) or len(weights) != len(models)):
        raise ModelStoreError(f"{origin}: `weights` needs one row per model")


class ModelRepository:
    """Demucs models in a store directory: list, fetch (verified), import, load and remove them."""

    def __init__(self, root: Path | str | None = None, base_url: str | None = None, *,
                 catalogue: Catalogue | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        if root is None or base_url is None:
            config = load_config({}, need_secret=False)
            root = config.model_dir if root is None else root
            base_url = config.model_url if base_url is None else base_url
        self.root = Path(root).expanduser()
        self.base_url = base_url if base_url.endswith("/") else base_url + "/"
        self.catalogue = Catalogue.packaged() if catalogue is None else catalogue
        self.timeout = timeout

    def get_cache_dir(self) -> Path:
        return self.root.resolve()

    def list_models(self) -> dict[str, dict[str, Any]]:
        """Every model of the catalogue and of the store, with its layers and whether it is cached."""
        files = self._scan()
        return {model.name: {
            "description": self._describe(model),
            "layers": [self._layer_info(sig, files) for sig in model.signatures],
            "quantized": _quantized_name(model.name),
            "cached": self._cached(model, files),
            "local": model.local,
            "segment": model.spec.segment,
        } for model in self._models()}

    def get_model(self, name: str, only_load: str | None = None,
                  progress_callback: ProgressCallback | None = None) -> Ensemble:
        """Fetch what the store lacks, then load `name` (only the `only_load` specialist if given)."""
        model = self._model(name)
        quantized = set(model.signatures) & self.catalogue.quantized_signatures()
        if (_quantized_name(name) or quantized) and not _has_diffq():
            raise _diffq_error(name)  # before downloading anything
        events = _Events(progress_callback, name, len(model.signatures))
        # A model complete in the store is loaded as it is (each layer checked against the checksum
        # in its own name), so a store of other versions of the layers works offline.
        local = self._cached(model, self._scan())
        paths = self._verify_local(model, events) if local else self._fetch(model, events)
        if not _has_diffq():
            self._refuse_quantized_states(name, paths[:-1])
        ensemble = load_ensemble(self.root, name, only_load)
        events.emit("download_complete")
        return ensemble

    def fetch(self, name: str, progress_callback: ProgressCallback | None = None) -> list[Path]:
        """Download the missing or corrupt layers of `name` and write its bag file; all paths."""
        model = self._model(name)
        events = _Events(progress_callback, name, len(model.signatures))
        paths = self._fetch(model, events)
        events.emit("download_complete")
        return paths

    def get_cache_info(self) -> dict[str, dict[str, Any]]:
        """The models whose layers are all in the store, with their files and sizes."""
        files = self._scan()
        info: dict[str, dict[str, Any]] = {}
        for model in self._models():
            if not self._cached(model, files):
                continue
            layers = {path.stem.rsplit("-", 1)[-1]: {"path": path, "size_bytes": path.stat().st_size}
                      for sig in model.signatures for path in files[sig]}
            info[model.name] = {"layers": layers,
                                "size_bytes": sum(layer["size_bytes"] for layer in layers.values())}
        return info

    def remove_model(self, name: str) -> bool:
        """Delete `name`'s bag file and the layers no other cached model uses; False if none was there."""
        model = self._model(name)
        files = self._scan()
        shared = {sig for other in self._models() if other.name != name and self._cached(other, files)
                  for sig in other.signatures}
        removed = False
        for sig in model.signatures:
            for path in files.get(sig, []) if sig not in shared else []:
                path.unlink()
                removed = True
        bag = self.root / f"{name}.yaml"
        if bag.is_file():
            bag.unlink()
            removed = True
        return removed

    def import_files(self, paths: Iterable[Path | str]) -> list[Path]:
        """Copy checkpoints named `<sig>-<sha256 prefix>.th` (verified) and bag `.yaml` files into the store."""
        sources = [Path(path) for path in paths]
        checksums = [self._import_checksum(path) for path in sources]  # all checked before any is written
        self.root.mkdir(parents=True, exist_ok=True)
        imported = []
        for path, checksum in zip(sources, checksums, strict=True):
            try:
                with open(path, "rb") as source:
                    target = save_verified(source, self.root, path.name, checksum,
                                           total=path.stat().st_size, origin=str(path))
            except OSError as exc:
                raise ModelStoreError(f"cannot import {path}: {exc}") from exc
            if target.suffix == ".th":
                self._drop_others(target.stem.rsplit("-", 1)[0], target)
            imported.append(target)
        return imported

    # -- resolving names ------------------------------------------------------------------

    def _model(self, name: str) -> _Model:
        if not _NAME.fullmatch(name):
            raise ModelStoreError(f"invalid model name {name!r}")
        if name in self.catalogue.bags:
            return _Model(name, self.catalogue.bags[name], self.catalogue.directory / f"{name}.yaml", False)
        if (self.root / f"{name}.yaml").is_file():
            return _Model(name, self._read_local(name), None, name not in self.catalogue.layers)
        if name in self.catalogue.layers:
            return _Model(name, BagSpec((name,), None, None), None, False)
        known = ", ".join(model.name for model in self._models())
        raise ModelStoreError(f"unknown model {name!r}; known models: {known} "
                              "(or a layer signature of the catalogue)")

    def _models(self) -> Iterator[_Model]:
        """The catalogue's bags, then the store's own bag files."""
        for name, spec in self.catalogue.bags.items():
            yield _Model(name, spec, self.catalogue.directory / f"{name}.yaml", False)
        if self.root.is_dir():
            for path in sorted(self.root.glob("*.yaml")):
                if path.stem not in self.catalogue.bags and _NAME.fullmatch(path.stem):
                    yield _Model(path.stem, self._read_local(path.stem), None,
                                 path.stem not in self.catalogue.layers)

    def _read_local(self, name: str) -> BagSpec:
        try:
            return read_bag(self.root, name)
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise ModelStoreError(f"{self.root / name}.yaml is not a bag file: {exc!r}") from exc

    def _describe(self, model: _Model) -> str:
        count = len(model.signatures)
        if model.name in DESCRIPTIONS:
            return DESCRIPTIONS[model.name]
        if model.name.startswith("repro_"):
            return f"reproduction of a Demucs paper experiment ({count} layers)"
        return f"{'model of this store' if model.local else 'Demucs model'} ({count} layers)"

    def _scan(self) -> dict[str, list[Path]]:
        """The store's layer files by signature (as `load_ensemble` finds them)."""
        root = self.get_cache_dir()
        files: dict[str, list[Path]] = {}
        for path in sorted(root.glob("*.th")) if root.is_dir() else []:
            files.setdefault(path.stem.rsplit("-", 1)[0], []).append(path)
        return files

    def _cached(self, model: _Model, files: Mapping[str, list[Path]]) -> bool:
        """Loadable from the store: its bag file and all its layers are there."""
        return (self.root / f"{model.name}.yaml").is_file() and all(sig in files for sig in model.signatures)

    def _layer_info(self, sig: str, files: Mapping[str, list[Path]]) -> dict[str, Any]:
        layer = self.catalogue.layers.get(sig)
        if layer is not None:
            return {"signature": sig, "file": layer.file, "checksum": layer.checksum,
                    "url": self.base_url + layer.path}
        present = files.get(sig, [])
        match = _LAYER_FILE.fullmatch(present[0].name) if len(present) == 1 else None
        return {"signature": sig, "file": match.string if match else None,
                "checksum": match["checksum"] if match else None, "url": None}

    # -- fetching -------------------------------------------------------------------------

    def _fetch(self, model: _Model, events: _Events) -> list[Path]:
        """The layers (verified, downloaded if needed), then the bag file, which comes last."""
        self.root.mkdir(parents=True, exist_ok=True)
        events.emit("download_start")
        paths = [self._fetch_layer(model.name, index, sig, events)
                 for index, sig in enumerate(model.signatures, 1)]
        paths.append(self._write_bag(model))
        return paths

    def _verify_local(self, model: _Model, events: _Events) -> list[Path]:
        events.emit("download_start")
        paths = []
        for index, sig in enumerate(model.signatures, 1):
            paths.append(verified_file(self.root, sig, model.name))
            events.cached(index, paths[-1].stat().st_size)
        return [*paths, self.root / f"{model.name}.yaml"]

    def _fetch_layer(self, name: str, index: int, sig: str, events: _Events) -> Path:
        layer = self.catalogue.layers.get(sig)
        if layer is None:  # a layer of the store's own: it can only be verified
            path = verified_file(self.root, sig, name)
            events.cached(index, path.stat().st_size)
            return path
        target = self.root / layer.file
        if target.is_file():
            if file_checksum(target, len(layer.checksum)) == layer.checksum:
                self._drop_others(sig, target)
                events.cached(index, target.stat().st_size)
                return target
            log.warning("%s does not match its checksum: downloading it again", target)
            target.unlink()
        path = download_file(self.base_url + layer.path, self.root, layer.file, layer.checksum,
                             events.download(index), self.timeout)
        self._drop_others(sig, path)
        events.emit("layer_complete", index, cached=False)
        return path

    def _drop_others(self, sig: str, keep: Path) -> None:
        """Other versions of a layer would make it ambiguous to load: the new one replaces them."""
        for path in self._scan().get(sig, []):
            if path.name != keep.name:
                log.info("removing %s, replaced by %s", path, keep.name)
                path.unlink()

    def _write_bag(self, model: _Model) -> Path:
        if model.local:
            return self.root / f"{model.name}.yaml"
        if model.bag_source is not None:
            data = model.bag_source.read_bytes()
        else:
            data = yaml.safe_dump({"models": [model.name]}).encode()
        return save_verified(io.BytesIO(data), self.root, f"{model.name}.yaml", "")

    def _refuse_quantized_states(self, name: str, paths: list[Path]) -> None:
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

    def _import_checksum(self, path: Path) -> str:
        """The checksum a file to import must match ("" for a bag file); refuses anything else."""
        if not path.is_file():
            raise ModelStoreError(f"cannot import {path}: not a file")
        if path.suffix == ".yaml":
            if not _NAME.fullmatch(path.stem):
                raise ModelStoreError(f"cannot import {path}: invalid model name {path.stem!r}")
            _check_bag(path.read_bytes(), str(path))
            return ""
        match = _LAYER_FILE.fullmatch(path.name)
        if path.suffix != ".th" or match is None:
            raise ModelStoreError(f"refusing {path}: a layer must be named <sig>-<sha256 prefix>.th "
                                  "(its checksum is verified before it is used) and a bag <name>.yaml")
        actual = file_checksum(path, len(match["checksum"]))
        if actual != match["checksum"]:
            raise ModelStoreError(f"refusing {path}: checksum mismatch (expected {match['checksum']}, "
                                  f"got {actual})")
        return match["checksum"]
