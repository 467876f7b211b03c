"""Family models in the model store: imported from a checkpoint and its MSST config, described
without loading, loaded after their checksum matched.

They live in the store's `families/` folder, apart from Demucs's layout: `<name>.yaml` (the family,
the licence, the checkpoint's file name, the config as given and its sha256) and the checkpoint
as given, `<name>-<sha256 prefix>.ckpt`. An import checks everything (the config field by field,
the checkpoint loaded into the config's network) before it writes anything.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..engine.ensemble import Ensemble, Member
from ..families.build import CheckpointError, build, load_model, load_weights, read_state
from ..families.config import ConfigError, ModelConfig, read_config
from .catalogue import MODEL_NAME
from .download import save_verified
from .layout import ModelStoreError, file_checksum, load_ensemble

FOLDER = "families"
CHECKSUM_LENGTH = 16  # hex digits of the checkpoint's sha256 in its file name
CHECKPOINT_FILE = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)-(?P<checksum>[0-9a-f]{16})\.ckpt")
LICENCE = re.compile(r"[^\x00-\x1f\x7f]{1,200}")  # one printable line
DEFAULT_LICENCE = "unknown"


@dataclass(frozen=True)
class FamilyEntry:
    """An imported model as its descriptor tells it."""

    name: str
    checkpoint: str  # file name inside `families/`
    config_sha256: str
    licence: str
    config: ModelConfig

    @property
    def identity(self) -> str:
        """What changes when the weights or the config change: the model's identity in caches."""
        return f"{FOLDER}/{self.checkpoint}+config-{self.config_sha256[:CHECKSUM_LENGTH]}"

    def description(self) -> str:
        """A line for listings and the page's model picker."""
        config = self.config
        return (f"{config.family.value} imported from a checkpoint: {config.sample_rate} Hz, chunks of "
                f"{config.inference.chunk_size} samples, overlap {config.inference.num_overlap} "
                f"(licence: {self.licence})")

    def summary(self) -> dict[str, Any]:
        """What a user needs to choose the model: family, sources, rate, chunk, overlap, licence."""
        config = self.config
        return {"family": config.family.value, "sources": list(config.sources), "sample_rate": config.sample_rate,
                "chunk_size": config.inference.chunk_size, "num_overlap": config.inference.num_overlap,
                "licence": self.licence}


class FamilyStore:
    """The `families/` folder of a model store."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folder = root / FOLDER
        self._entries: dict[tuple[str, int], FamilyEntry] = {}
        self._lock = threading.Lock()

    def names(self) -> list[str]:
        """The imported models, by name."""
        try:
            files = sorted(os.listdir(self.folder))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return [file[:-5] for file in files if file.endswith(".yaml") and MODEL_NAME.fullmatch(file[:-5])]

    def has(self, name: str) -> bool:
        return bool(MODEL_NAME.fullmatch(name)) and (self.folder / f"{name}.yaml").is_file()

    def entry(self, name: str) -> FamilyEntry:
        """The descriptor of `name`, read once per version of the file."""
        path = self.folder / f"{name}.yaml"
        try:
            stamp = (name, path.stat().st_mtime_ns)
        except OSError as exc:
            raise ModelStoreError(f"model {name!r} is not in the model store") from exc
        with self._lock:
            known = self._entries.get(stamp)
        if known is None:
            known = _read_entry(path, name)
            with self._lock:
                self._entries[stamp] = known
        return known

    def load(self, name: str, only_load: str | None = None) -> Ensemble:
        """The model with its weights, after the checkpoint's checksum matched its name."""
        entry = self.entry(name)
        if only_load is not None and only_load not in entry.config.sources:
            raise ModelStoreError(f"{name} has no stem {only_load!r} (it has {list(entry.config.sources)})")
        path = self.folder / entry.checkpoint
        match = CHECKPOINT_FILE.fullmatch(entry.checkpoint)
        if match is None or not path.is_file():
            raise ModelStoreError(f"the checkpoint of {name} ({entry.checkpoint}) is not in {self.folder}")
        if file_checksum(path, CHECKSUM_LENGTH) != match["checksum"]:
            raise ModelStoreError(f"checksum mismatch for {path}: it is not loaded")
        try:
            model = load_model(entry.config, path)
        except (ConfigError, CheckpointError) as exc:
            raise ModelStoreError(f"{name}: {exc}") from exc
        sources = entry.config.sources
        label = f"{name}:{only_load}" if only_load else name
        return Ensemble(label, (Member(model, (1.0,) * len(sources)),), sources, entry.config.sample_rate,
                        model.audio_channels)

    def import_model(self, name: str, checkpoint: Path, config: Path, licence: str = DEFAULT_LICENCE,
                     model_type: str | None = None) -> FamilyEntry:
        """Check the config and the checkpoint against each other, then store both; a model of the
        same name is replaced. Nothing is written unless every check passed."""
        if not MODEL_NAME.fullmatch(name):
            raise ModelStoreError(f"invalid model name {name!r}")
        if not LICENCE.fullmatch(licence):
            raise ModelStoreError("--licence must be one printable line of at most 200 characters")
        text = _read(config, "config")
        try:
            parsed = read_config(text, model_type)
            load_weights(build(parsed), read_state(_existing(checkpoint)))
        except (ConfigError, CheckpointError) as exc:
            raise ModelStoreError(f"cannot import {name}: {exc}") from exc
        checksum = file_checksum(checkpoint, 64)
        target = f"{name}-{checksum[:CHECKSUM_LENGTH]}.ckpt"
        entry = FamilyEntry(name, target, hashlib.sha256(text).hexdigest(), licence, parsed)
        self.folder.mkdir(parents=True, exist_ok=True)
        replaced = [file for file in os.listdir(self.folder)
                    if file != target and (m := CHECKPOINT_FILE.fullmatch(file)) and m["name"] == name]
        with open(checkpoint, "rb") as source:
            save_verified(source, self.folder, target, checksum, total=checkpoint.stat().st_size,
                          origin=str(checkpoint))
        _write_atomically(self.folder / f"{name}.yaml", yaml.safe_dump({
            "family": parsed.family.value, "licence": licence, "checkpoint": target,
            "config_sha256": entry.config_sha256, "config": text.decode()}, sort_keys=False).encode())
        for file in replaced:
            (self.folder / file).unlink(missing_ok=True)
        return entry

    def remove(self, name: str) -> bool:
        """Delete the model's descriptor and checkpoints; False if it was not there."""
        removed = False
        for file in os.listdir(self.folder) if self.folder.is_dir() else []:
            match = CHECKPOINT_FILE.fullmatch(file)
            if file == f"{name}.yaml" or (match is not None and match["name"] == name):
                (self.folder / file).unlink()
                removed = True
        return removed


def load_stored(root: Path, name: str, only_load: str | None = None) -> Ensemble:
    """A model of the store by name: a Demucs model (bag file or layer), else an imported one."""
    demucs = (root / f"{name}.yaml").is_file() or any(root.glob(f"{glob_escape(name)}-*.th"))
    families = FamilyStore(root)
    if not demucs and families.has(name):
        return families.load(name, only_load)
    return load_ensemble(root, name, only_load)


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise CheckpointError(f"{path} is not a file")
    return path


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelStoreError(f"cannot read the {what} {path}: {exc}") from exc


def _read_entry(path: Path, name: str) -> FamilyEntry:
    try:
        raw = yaml.safe_load(path.read_bytes())
        text = raw["config"].encode()
        if hashlib.sha256(text).hexdigest() != raw["config_sha256"]:
            raise ModelStoreError(f"{path}: the config does not match its checksum")
        return FamilyEntry(name, str(raw["checkpoint"]), raw["config_sha256"], str(raw["licence"]),
                           read_config(text, raw["family"]))
    except (OSError, KeyError, TypeError, AttributeError, yaml.YAMLError, ConfigError) as exc:
        raise ModelStoreError(f"{path} is not a family model's descriptor: {exc!r}") from exc


def _write_atomically(path: Path, data: bytes) -> None:
    fd, part = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.part-")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(part, path)
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
