"""Model names resolved to their bags: the catalogue's, then the store's own bag files."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

from .catalogue import MODEL_NAME, Catalogue
from .files import StoreFiles
from .layout import BagSpec, ModelStoreError


@dataclass(frozen=True)
class ModelEntry:
    """A name resolved to its bag, and where its bag file comes from."""

    name: str
    spec: BagSpec
    bag_source: Path | None  # the catalogue's bag file; None: the store's own or a one-line bag
    local: bool  # known only from the store

    @property
    def signatures(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.spec.signatures))  # a bag may name a layer twice

    def bag_data(self) -> bytes | None:
        """The bag file to write into the store; None: the store's own file is the bag."""
        if self.local:
            return None
        if self.bag_source is not None:
            return self.bag_source.read_bytes()
        return str(yaml.safe_dump({"models": [self.name]})).encode()


class ModelIndex:
    """Every model a store can hold: the catalogue's bags, the store's own, and single catalogue layers."""

    def __init__(self, catalogue: Catalogue, files: StoreFiles) -> None:
        self.catalogue = catalogue
        self.files = files

    def resolve(self, name: str) -> ModelEntry:
        """The model `name`: a catalogue bag, a bag file of the store, or a layer signature of the catalogue."""
        if not MODEL_NAME.fullmatch(name):
            raise ModelStoreError(f"invalid model name {name!r}")
        if name in self.catalogue.bags:
            return self._catalogued(name)
        if self.files.has_bag(name):
            return self._stored(name)
        if name in self.catalogue.layers:
            return ModelEntry(name, BagSpec((name,), None, None), None, False)
        known = ", ".join(entry.name for entry in self.entries())
        raise ModelStoreError(f"unknown model {name!r}; known models: {known} "
                              "(or a layer signature of the catalogue)")

    def entries(self) -> Iterator[ModelEntry]:
        """The catalogue's bags, then the store's own bag files."""
        for name in self.catalogue.bags:
            yield self._catalogued(name)
        for name in self.files.bag_names():
            if name not in self.catalogue.bags:
                yield self._stored(name)

    def _catalogued(self, name: str) -> ModelEntry:
        return ModelEntry(name, self.catalogue.bags[name], self.catalogue.bag_file(name), False)

    def _stored(self, name: str) -> ModelEntry:
        return ModelEntry(name, self.files.read_bag(name), None, name not in self.catalogue.layers)
