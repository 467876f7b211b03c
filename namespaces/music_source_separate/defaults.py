"""The separation library's defaults, for callers that pass none (the service passes its configured ones)."""

from __future__ import annotations

from pathlib import Path

OFFICIAL_MODEL_URL = "https://dl.fbaipublicfiles.com/demucs/"  # Demucs's own root of the catalogue's paths
DEFAULT_MODEL_DIR = Path("~/.cache/sami-gateway/models")  # the model store, in Demucs's layout
DEFAULT_KERNEL_DIR = Path("~/.cache/sami-gateway/native")  # where the native attention kernel is built
