"""Loading models from a store in Demucs's own layout (`<sig>[-<sha256 prefix>].th`, `<name>.yaml`)."""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from demucs.states import load_model
from torch import nn

from ..engine.ensemble import Ensemble, Member

HASH_BLOCK_BYTES = 1 << 20


class ModelStoreError(RuntimeError):
    """A model is missing from the store or its files are not usable."""


@dataclass(frozen=True)
class BagSpec:
    """The content of a `<name>.yaml` bag file (or a single signature)."""

    signatures: tuple[str, ...]
    weights: tuple[tuple[float, ...], ...] | None
    segment: float | None


def missing_message(name: str, store: Path) -> str:
    return (f"model {name!r} is not in the model store {store}. Online, run "
            f"`sami-gateway models fetch {name}`; offline, copy its files (the Demucs layout: "
            f"<sig>-<sha256 prefix>.th and {name}.yaml) from a machine that has them and run "
            f"`sami-gateway models import FILE...` (both use SAMI_MODEL_DIR, or pass --model-dir {store})")


def file_checksum(path: Path, length: int) -> str:
    sha = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            sha.update(block)
    return sha.hexdigest()[:length]


def _model_file(store: Path, sig: str, name: str) -> Path:
    candidates = [p for p in store.glob(f"{sig}*.th")
                  if p.stem == sig or p.stem.rsplit("-", 1)[0] == sig]
    if not candidates:
        raise ModelStoreError(missing_message(name, store) + f" (missing layer {sig})")
    if len(candidates) > 1:
        raise ModelStoreError(f"several files for layer {sig} in {store}: keep one")
    return candidates[0]


def verified_file(store: Path, sig: str, name: str) -> Path:
    """The layer's file inside the store, after its checksum (the name's suffix) matched."""
    path = _model_file(store, sig, name)
    if path.resolve().parent != store.resolve():
        raise ModelStoreError(f"{path} is outside the model store {store}")
    if "-" not in path.stem:
        raise ModelStoreError(f"{path} has no checksum in its name (<sig>-<sha256 prefix>.th): "
                              "it is not loaded, since loading unpickles code")
    expected = path.stem.rsplit("-", 1)[1]
    actual = file_checksum(path, len(expected))
    if actual != expected:
        raise ModelStoreError(f"checksum mismatch for {path}: expected {expected}, got {actual}")
    return path


def read_bag(store: Path, name: str) -> BagSpec:
    """The bag `name` of the store (a bare layer without a bag file); ValueError for a file that is no bag."""
    bag_file = store / f"{name}.yaml"
    if not bag_file.is_file():
        return BagSpec((name,), None, None)
    bag = yaml.safe_load(bag_file.read_text())
    if not isinstance(bag, dict) or not isinstance(bag.get("models"), list):  # empty, a scalar, a list...
        raise ValueError(f"{bag_file.name} is not a bag file: no `models` list")
    weights = bag.get("weights")
    return BagSpec(tuple(bag["models"]),
                   None if weights is None else tuple(tuple(map(float, w)) for w in weights),
                   bag.get("segment"))


def load_package(path: Path, mmap: bool = False) -> dict[str, Any]:
    # The package pickles the model class: only files that passed verified_file come here.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=False, mmap=mmap)


def _specialist(store: Path, spec: BagSpec, name: str, stem: str) -> int:
    """Index of the bag member that alone produces `stem` (read without loading weights)."""
    # Members of a bag share their sources: any layer present on disk tells them.
    present = next((sig for sig in spec.signatures if list(store.glob(f"{sig}*.th"))),
                   spec.signatures[0])
    package = load_package(verified_file(store, present, name), mmap=True)
    sources = list(package["kwargs"]["sources"])
    if stem not in sources:
        raise ModelStoreError(f"{name} has no stem {stem!r} (it has {sources})")
    column = sources.index(stem)
    weights = spec.weights or tuple((1.0,) * len(sources) for _ in spec.signatures)
    for index, row in enumerate(weights):
        if row[column] > 0 and sum(1 for w in row if w > 0) == 1:
            return index
    raise ModelStoreError(f"{name} has no specialist for {stem!r}")


def _apply_segment(model: nn.Module, segment: float | None) -> None:
    # As demucs.apply.BagOfModels: HTDemucs may only shorten its training segment.
    if segment is None:
        return
    if type(model).__name__ != "HTDemucs" or segment <= model.segment:
        model.segment = segment


def load_ensemble(store: Path, name: str, only_load: str | None = None) -> Ensemble:
    """Load `name` (bag or signature) from the store, optionally only one stem's specialist."""
    if not store.is_dir():
        raise ModelStoreError(missing_message(name, store))
    spec = read_bag(store, name)
    indices = list(range(len(spec.signatures)))
    if only_load is not None and len(spec.signatures) > 1:
        indices = [_specialist(store, spec, name, only_load)]
    members = []
    for index in indices:
        model = load_model(load_package(verified_file(store, spec.signatures[index], name)))
        model.eval()
        _apply_segment(model, spec.segment)
        weights = spec.weights[index] if spec.weights else (1.0,) * len(model.sources)
        members.append(Member(model, tuple(weights)))
    first = members[0].model
    label = f"{name}:{only_load}" if only_load else name
    return Ensemble(label, tuple(members), tuple(first.sources), first.samplerate, first.audio_channels)
