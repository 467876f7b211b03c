"""Importing model files into the store: `<sig>-<sha256 prefix>.th` layers (verified) and `<name>.yaml` bags."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import yaml

from .catalogue import LAYER_FILE, MODEL_NAME
from .download import save_verified
from .files import StoreFiles
from .layout import ModelStoreError, file_checksum


def import_files(files: StoreFiles, paths: Iterable[Path | str]) -> list[Path]:
    """Copy the files into the store, all checked before any is written; a layer replaces its other versions."""
    sources = [Path(path) for path in paths]
    checksums = [import_checksum(path) for path in sources]
    files.root.mkdir(parents=True, exist_ok=True)
    imported = []
    for path, checksum in zip(sources, checksums, strict=True):
        try:
            with open(path, "rb") as source:
                target = save_verified(source, files.root, path.name, checksum,
                                       total=path.stat().st_size, origin=str(path))
        except OSError as exc:
            raise ModelStoreError(f"cannot import {path}: {exc}") from exc
        if target.suffix == ".th":
            files.replace_others(target.stem.rsplit("-", 1)[0], target)
        imported.append(target)
    return imported


def import_checksum(path: Path) -> str:
    """The checksum a file to import must match ("" for a bag file); refuses anything else."""
    if not path.is_file():
        raise ModelStoreError(f"cannot import {path}: not a file")
    if path.suffix == ".yaml":
        if not MODEL_NAME.fullmatch(path.stem):
            raise ModelStoreError(f"cannot import {path}: invalid model name {path.stem!r}")
        check_bag(path.read_bytes(), str(path))
        return ""
    match = LAYER_FILE.fullmatch(path.name)
    if path.suffix != ".th" or match is None:
        raise ModelStoreError(f"refusing {path}: a layer must be named <sig>-<sha256 prefix>.th "
                              "(its checksum is verified before it is used) and a bag <name>.yaml")
    actual = file_checksum(path, len(match["checksum"]))
    if actual != match["checksum"]:
        raise ModelStoreError(f"refusing {path}: checksum mismatch (expected {match['checksum']}, "
                              f"got {actual})")
    return match["checksum"]


def check_bag(data: bytes, origin: str) -> None:
    """Refuse `data` unless it is a bag file: `models: [signature, ...]`, weights with a row per model."""
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
