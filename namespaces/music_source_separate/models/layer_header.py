"""A checkpoint's constructor arguments (its sources), read from its pickle without importing or running anything.

`torch.load` unpickles the model's class and every tensor: too slow for a request and a way to run code.
Here every class the pickle names becomes an inert stand-in and every tensor's storage nothing, so
reading a layer costs its small `data.pkl` record (kilobytes), not its weights.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path
from typing import Any, BinaryIO

LEGACY_RECORDS = 3  # torch's legacy format: magic number, protocol version, system info, then the object
MAX_RECORD_BYTES = 64 << 20  # a `data.pkl` holds names and shapes, never weights


class HeaderError(ValueError):
    """The file is not a checkpoint whose arguments can be read."""


class _Inert:
    """What every class or function the pickle names becomes: accepts any construction and state."""

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __call__(self, *args: Any, **kwargs: Any) -> _Inert:
        return _Inert()

    def __setstate__(self, state: Any) -> None:
        pass

    def __setitem__(self, key: Any, value: Any) -> None:
        pass

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass


class _InertUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return _Inert

    def persistent_load(self, pid: Any) -> Any:
        return None  # a tensor's storage: not read


def _record(handle: BinaryIO, skip: int) -> Any:
    unpickler = _InertUnpickler(handle)
    for _ in range(skip):
        unpickler.load()
    return unpickler.load()


def read_package(path: Path) -> dict[str, Any]:
    """The checkpoint's top-level record (`klass`, `args`, `kwargs`, `state`), classes and tensors inert."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [info for info in archive.infolist() if info.filename.endswith("/data.pkl")]
                if len(names) != 1 or names[0].file_size > MAX_RECORD_BYTES:
                    raise HeaderError(f"{path.name} has no single data.pkl record")
                with archive.open(names[0]) as handle:
                    package = _record(handle, 0)  # type: ignore[arg-type]
        else:
            with open(path, "rb") as handle:
                package = _record(handle, LEGACY_RECORDS)
    except (OSError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError, TypeError,
            AttributeError, IndexError, KeyError) as exc:
        raise HeaderError(f"{path.name} cannot be read as a checkpoint: {exc}") from exc
    if not isinstance(package, dict):
        raise HeaderError(f"{path.name} is not a Demucs checkpoint")
    return package


def read_sources(path: Path) -> tuple[str, ...]:
    """The sources a Demucs checkpoint separates, from its constructor's keyword arguments."""
    kwargs = read_package(path).get("kwargs")
    sources = kwargs.get("sources") if isinstance(kwargs, dict) else None
    if not isinstance(sources, list | tuple) or not sources or not all(isinstance(s, str) for s in sources):
        raise HeaderError(f"{path.name} names no sources in its arguments")
    return tuple(sources)
