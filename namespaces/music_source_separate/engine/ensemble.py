"""A loaded model as inference runs it: its networks, each with its per-source weights."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Member:
    """One network of an ensemble with its per-source weights."""

    model: nn.Module
    weights: tuple[float, ...]


@dataclass(frozen=True)
class Ensemble:
    """A loaded Demucs model or bag (possibly reduced to one specialist)."""

    name: str
    members: tuple[Member, ...]
    sources: tuple[str, ...]
    samplerate: int
    audio_channels: int
