"""The files of a model store directory: its layers by signature, its bag files, and replacing a layer's versions."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import yaml

from .catalogue import MODEL_NAME
from .layout import BagSpec, ModelStoreError, read_bag

log = logging.getLogger(__name__)

LayerFiles = Mapping[str, list[Path]]  # signature -> the store's files of that layer


class StoreFiles:
    """What a store directory in Demucs's layout (`<sig>-<sha256 prefix>.th`, `<name>.yaml`) holds."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def layers(self) -> dict[str, list[Path]]:
        """The store's layer files by signature (as `store.load_ensemble` finds them)."""
        root = self.root.resolve()
        files: dict[str, list[Path]] = {}
        for path in sorted(root.glob("*.th")) if root.is_dir() else []:
            files.setdefault(path.stem.rsplit("-", 1)[0], []).append(path)
        return files

    def bag_path(self, name: str) -> Path:
        return self.root / f"{name}.yaml"

    def has_bag(self, name: str) -> bool:
        return self.bag_path(name).is_file()

    def bag_names(self) -> list[str]:
        """The names of the store's bag files that are valid model names."""
        if not self.root.is_dir():
            return []
        return [path.stem for path in sorted(self.root.glob("*.yaml")) if MODEL_NAME.fullmatch(path.stem)]

    def read_bag(self, name: str) -> BagSpec:
        """The store's own bag file of `name`."""
        try:
            return read_bag(self.root, name)
        except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
            raise ModelStoreError(f"{self.bag_path(name)} is not a bag file: {exc!r}") from exc

    def holds(self, name: str, signatures: Iterable[str], layers: LayerFiles) -> bool:
        """Loadable from the store: the bag file of `name` and a file of every layer are there."""
        return self.has_bag(name) and all(sig in layers for sig in signatures)

    def replace_others(self, sig: str, keep: Path) -> None:
        """Other versions of a layer would make it ambiguous to load: `keep` replaces them."""
        for path in self.layers().get(sig, []):
            if path.name != keep.name:
                log.info("removing %s, replaced by %s", path, keep.name)
                path.unlink()
