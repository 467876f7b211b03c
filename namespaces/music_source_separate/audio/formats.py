"""The formats the audio library writes: one list, importable without loading any codec (the
command line reads it to build its parser)."""

from __future__ import annotations

FORMATS = ("wav", "flac", "mp3", "aac", "m4a")
BIT_RATES = {1: 128_000, 2: 192_000}  # of mp3, aac and m4a, by channel count
