"""What the model store holds, described without loading a model: bag files, layer files, sources.

A description costs a listing of the store directory and, once per layer file, the few kilobytes
of its header (`layer_header`), so a request may ask for one; several descriptions may share one
`listing()`. Models fetched or imported while the gateway runs are seen at once; a layer replaced
by another version is read again.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from .catalogue import LAYER_FILE, MODEL_NAME, Catalogue, quantized_name
from .families import FamilyEntry, FamilyStore
from .layer_header import HeaderError, read_sources
from .layout import BagSpec, ModelStoreError, read_bag


class ModelNotInStore(ModelStoreError):
    """The model's bag file or one of its layers is not in the store."""

    def __init__(self, name: str, catalogued: bool) -> None:
        self.name = name
        self.catalogued = catalogued  # the official catalogue has it: `models fetch` can add it
        super().__init__(f"model {name!r} is not in the model store")


@dataclass(frozen=True)
class ModelInfo:
    """A model of the store as files tell it: its layers (those present), sources and specialists."""

    name: str
    signatures: tuple[str, ...]
    files: Mapping[str, str]  # signature -> `<sig>-<sha256 prefix>.th` of the layers present
    sources: tuple[str, ...]
    specialists: Mapping[str, str]  # source -> the signature of the bag member alone weighted for it
    catalogued: bool  # the official catalogue has it
    family: FamilyEntry | None = None  # an imported model of another family (families/)

    @property
    def is_bag(self) -> bool:
        return len(set(self.signatures)) > 1

    def layer_files(self, only_load: str | None = None) -> tuple[str, ...]:
        """The files a load reads (only the specialist's for `only_load` of a bag): the weights'
        identity; ModelNotInStore if one is missing."""
        sigs = self.signatures
        if only_load is not None and self.is_bag and only_load in self.specialists:
            sigs = (self.specialists[only_load],)
        if any(sig not in self.files for sig in sigs):
            raise ModelNotInStore(self.name, self.catalogued)
        return tuple(dict.fromkeys(self.files[sig] for sig in sigs))


@dataclass(frozen=True)
class Listing:
    """One listing of the store directory: layer files by signature, the bag files' names."""

    layers: dict[str, list[str]]
    bags: frozenset[str]
    families: frozenset[str] = frozenset()  # the imported models of other families


def _specialists(spec: BagSpec, sources: tuple[str, ...]) -> dict[str, str]:
    if len(set(spec.signatures)) < 2 or spec.weights is None:
        return {}
    found = {}
    for sig, row in zip(spec.signatures, spec.weights, strict=False):
        positive = [index for index, weight in enumerate(row) if weight > 0]
        if len(positive) == 1 and positive[0] < len(sources):
            found.setdefault(sources[positive[0]], sig)
    return found


class StoreModels:
    """Describes the store's models on demand; headers already read are remembered by file."""

    def __init__(self, root: Path, catalogue: Catalogue | None = None) -> None:
        self.root = root
        self._catalogue = catalogue
        self._no_catalogue = False  # the demucs package was looked for and is not installed
        self._sources: dict[tuple[str, int], tuple[str, ...]] = {}  # (file name, mtime_ns) -> sources
        self._bags: dict[tuple[str, int], BagSpec] = {}
        self._lock = threading.Lock()
        self.families = FamilyStore(root)

    def catalogue(self) -> Catalogue | None:
        """The official catalogue (the installed demucs package's), read once; None without it."""
        if self._catalogue is None and not self._no_catalogue:
            try:
                self._catalogue = Catalogue.packaged()
            except ModelStoreError:
                self._no_catalogue = True  # not looked for again per model: installing it takes a restart
        return self._catalogue

    def catalogued(self, name: str) -> bool:
        """Whether `sami-gateway models fetch NAME` knows the model."""
        catalogue = self.catalogue()
        return catalogue is not None and (name in catalogue.bags or name in catalogue.layers)

    def needs_diffq(self, name: str, layer_files: tuple[str, ...]) -> bool:
        """A quantized model, which Demucs cannot load without the diffq package."""
        catalogue = self.catalogue()
        quantized = catalogue.quantized_signatures() if catalogue is not None else frozenset()
        sigs = {file.rsplit("-", 1)[0] for file in layer_files}
        return (quantized_name(name) or bool(sigs & quantized)) and importlib.util.find_spec("diffq") is None

    def listing(self) -> Listing:
        """The store directory as it is now, for descriptions that must agree (and cost one listing)."""
        return self._list()

    def describe(self, name: str, listing: Listing | None = None) -> ModelInfo:
        """The model `name` as the store holds it (in `listing`, else as listed now); ModelNotInStore
        without its bag file or any layer (`ModelInfo.layer_files` tells whether the layers a load
        needs are all there)."""
        if not MODEL_NAME.fullmatch(name):
            raise ModelStoreError(f"invalid model name {name!r}")
        return self._describe(name, self._list() if listing is None else listing)

    def models(self, listing: Listing | None = None) -> list[ModelInfo]:
        """Every model of the store (in `listing`, else as listed now), by name: its bag files, and the
        layer files no bag file names (each loads as a model of its own). One that cannot be described
        (no layer present, an unreadable file) is left out; `layer_files` tells which can load."""
        listing = self._list() if listing is None else listing
        members: set[str] = set()
        for bag in listing.bags:
            try:
                members.update(self._read_bag(bag).signatures)
            except ModelStoreError:
                continue  # its layers show as models of their own; the bag itself is left out below
        found = []
        names = listing.bags | (listing.layers.keys() - members)
        for name in sorted(names | listing.families):
            try:
                found.append(self._describe(name, listing))
            except ModelStoreError:
                continue
        return found

    def _describe(self, name: str, listing: Listing) -> ModelInfo:
        if name in listing.bags:
            spec = self._read_bag(name)
        elif name in listing.layers:
            spec = BagSpec((name,), None, None)  # a bare layer loads as a model of its own
        elif name in listing.families:
            entry = self.families.entry(name)
            return ModelInfo(name, (name,), {name: entry.identity}, entry.config.sources, {}, False, entry)
        else:
            raise ModelNotInStore(name, self.catalogued(name))
        files = {}
        for sig in spec.signatures:
            present = listing.layers.get(sig, [])
            if len(present) > 1:
                raise ModelStoreError(f"several files for layer {sig} of {name}: keep one")
            if present:
                files[sig] = present[0]
        if not files:
            raise ModelNotInStore(name, self.catalogued(name))
        # Members of a bag share their sources: any layer present tells them.
        sources = self._read_sources(next(iter(files.values())))
        return ModelInfo(name, spec.signatures, files, sources, _specialists(spec, sources), self.catalogued(name))

    def _read_bag(self, name: str) -> BagSpec:
        path = self.root / f"{name}.yaml"
        try:
            stamp = (path.name, path.stat().st_mtime_ns)
            with self._lock:
                known = self._bags.get(stamp)
            if known is None:
                known = read_bag(self.root, name)
        except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise ModelStoreError(f"the bag file of {name} cannot be read: {exc!r}") from exc
        with self._lock:
            self._bags[stamp] = known
        return known

    def _list(self) -> Listing:
        layers: dict[str, list[str]] = {}
        bags = set()
        try:
            entries = list(os.scandir(self.root))
        except (FileNotFoundError, NotADirectoryError):
            entries = []
        for entry in entries:
            match = LAYER_FILE.fullmatch(entry.name)
            if match is not None:  # a layer without its checksum in its name is never loaded: not counted
                layers.setdefault(match["sig"], []).append(entry.name)
            elif entry.name.endswith(".yaml") and MODEL_NAME.fullmatch(entry.name[:-5]):
                bags.add(entry.name[:-5])
        return Listing(layers, frozenset(bags), frozenset(self.families.names()))

    def _read_sources(self, file: str) -> tuple[str, ...]:
        path = self.root / file
        try:
            stamp = (file, path.stat().st_mtime_ns)
        except OSError as exc:
            raise ModelStoreError(f"{file} cannot be read: {exc}") from exc
        with self._lock:
            known = self._sources.get(stamp)
        if known is not None:
            return known
        try:
            sources = read_sources(path)
        except HeaderError as exc:
            raise ModelStoreError(str(exc)) from exc
        with self._lock:
            self._sources[stamp] = sources
        return sources
