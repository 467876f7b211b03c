"""What models can be fetched: the demucs package's `remote/` listing of layers and bags, and their descriptions."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import yaml

from ..defaults import OFFICIAL_MODEL_URL as OFFICIAL_MODEL_URL  # the root of the catalogue's paths
from .layout import BagSpec, ModelStoreError, read_bag

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a model name becomes a file name in the store
LAYER_FILE = re.compile(r"(?P<sig>[A-Za-z0-9][A-Za-z0-9_.-]*)-(?P<checksum>[0-9a-f]{8,64})\.th")
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

    def bag_file(self, name: str) -> Path:
        """Where the catalogue keeps the bag file of `name` (one of `bags`)."""
        return self.directory / f"{name}.yaml"

    def quantized_signatures(self) -> frozenset[str]:
        """The layers of the quantized bags: loading them needs diffq."""
        return frozenset(sig for name, bag in self.bags.items() if quantized_name(name) for sig in bag.signatures)


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
        match = LAYER_FILE.fullmatch(line)
        if match is None:
            raise ModelStoreError(f"{path}: {line!r} is not <sig>-<sha256 prefix>.th")
        layers[match["sig"]] = Layer(match["sig"], line, match["checksum"], root + line)
    return layers


def quantized_name(name: str) -> bool:
    """Demucs names its quantized bags `<name>_q`."""
    return name.endswith("_q")


def describe(name: str, layer_count: int, local: bool) -> str:
    """A line about the model `name` for listings."""
    if name in DESCRIPTIONS:
        return DESCRIPTIONS[name]
    if name.startswith("repro_"):
        return f"reproduction of a Demucs paper experiment ({layer_count} layers)"
    return f"{'model of this store' if local else 'Demucs model'} ({layer_count} layers)"
