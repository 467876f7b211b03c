"""The MusicSourceSeparate namespace: vocals and accompaniment with Demucs."""

from .plugin import MusicSourceSeparate, create_namespace

__all__ = ["MusicSourceSeparate", "create_namespace"]
