"""The MusicSourceSeparate namespace and its Demucs-style Python API.

Names load on first use, so importing this package (for its settings, `SETTINGS`, which the
gateway's configuration reads) or a light module of it (its command-line registration) does
not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SETTINGS": ".settings",  # the namespace's settings section, read by the gateway's configuration
    "Separator": ".separator",
    "SeparatedSources": ".separator",
    "select_model": ".separator",
    "ModelRepository": ".models.repository",
    "MusicSourceSeparate": ".plugin",
    "create_namespace": ".plugin",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
