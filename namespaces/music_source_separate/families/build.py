"""A family's network from a checked config, and an MSST checkpoint's weights loaded into it."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .base import FamilyModel
from .bs_roformer import BSRoformer
from .config import ConfigError, Family, ModelConfig
from .mdx23c import MDX23C
from .mel_band_roformer import MelBandRoformer
from .scnet import SCNet

BUILDERS = {Family.BS_ROFORMER: BSRoformer, Family.MEL_BAND_ROFORMER: MelBandRoformer, Family.MDX23C: MDX23C,
            Family.SCNET: SCNet}
WRAPPERS = ("state", "state_dict", "model_state_dict")  # checkpoint dicts MSST unwraps, in its order
LISTED_KEYS = 3  # how many missing or unexpected parameter names an error shows


class CheckpointError(ValueError):
    """The checkpoint is no state dict of the config's network; the message names the parameter."""


def build(config: ModelConfig) -> FamilyModel:
    """The untrained network the config describes (ConfigError naming a bad field)."""
    try:
        return BUILDERS[config.family](config)
    except (TypeError, ValueError, KeyError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"the model section does not describe a {config.family.value}: {exc}") from exc


def read_state(path: Path) -> dict[str, Tensor]:
    """The state dict in a checkpoint file (tensors only: nothing is unpickled but tensors and containers)."""
    try:
        loaded: Any = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # the legacy (non-zip) format cannot be memory-mapped
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means: not a checkpoint we load
            raise CheckpointError(f"{path.name} is not a PyTorch checkpoint of tensors: {exc}") from exc
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint of tensors: {exc}") from exc
    for key in WRAPPERS:
        if isinstance(loaded, Mapping) and key in loaded:
            loaded = loaded[key]
    if not isinstance(loaded, Mapping) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise CheckpointError(f"{path.name} holds no state dict (a mapping of parameter names to tensors)")
    return dict(loaded)


def load_weights(model: FamilyModel, state: Mapping[str, Tensor]) -> None:
    """The weights into `model`, strictly: every parameter present with its shape, nothing else."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:LISTED_KEYS])}{' ...' if len(missing) > LISTED_KEYS else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:LISTED_KEYS])}"
                         f"{' ...' if len(unexpected) > LISTED_KEYS else ''}")
        raise CheckpointError(f"the checkpoint does not match the config's {model.config.family.value}: "
                              + "; ".join(parts))
    for key, tensor in own.items():
        if state[key].shape != tensor.shape:
            raise CheckpointError(f"parameter {key} has shape {tuple(state[key].shape)} in the checkpoint "
                                  f"but {tuple(tensor.shape)} in the config's network")
    model.load_state_dict(state, strict=True)


def load_model(config: ModelConfig, checkpoint: Path) -> FamilyModel:
    """The network of `config` with the checkpoint's weights, in eval mode."""
    model = build(config)
    load_weights(model, read_state(checkpoint))
    return model.eval()
