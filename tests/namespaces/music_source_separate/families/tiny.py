"""Tiny configs of the three families in MSST's YAML, and random checkpoints of them in MSST's format."""

from __future__ import annotations

from pathlib import Path

import torch

from namespaces.music_source_separate.families.build import build
from namespaces.music_source_separate.families.config import read_config

BS_ROFORMER = """\
audio:
  chunk_size: 1280
  num_channels: 2
  sample_rate: 44100
model:
  dim: 16
  depth: 2
  stereo: true
  num_stems: 1
  time_transformer_depth: 1
  freq_transformer_depth: 1
  linear_transformer_depth: 1
  freqs_per_bands: !!python/tuple [2, 2, 2, 2, 2, 2, 2, 2, 4, 4, 4, 4, 8, 8, 17]
  dim_head: 8
  heads: 2
  attn_dropout: 0.1
  ff_dropout: 0.1
  flash_attn: true
  dim_freqs_in: 65
  stft_n_fft: 128
  stft_hop_length: 32
  stft_win_length: 128
  stft_normalized: false
  mask_estimator_depth: 2
  mlp_expansion_factor: 1
  skip_connection: true
  multi_stft_resolution_loss_weight: 1.0
  multi_stft_resolutions_window_sizes: !!python/tuple [256, 128]
  multi_stft_hop_size: 32
  multi_stft_normalized: false
training:
  instruments: [vocals, other]
  target_instrument: vocals
inference:
  batch_size: 2
  num_overlap: 4
"""

MEL_BAND_ROFORMER = """\
audio:
  chunk_size: 1280
  num_channels: 2
  sample_rate: 44100
model:
  dim: 16
  depth: 1
  stereo: true
  num_stems: 2
  time_transformer_depth: 1
  freq_transformer_depth: 1
  num_bands: 8
  dim_head: 8
  heads: 2
  attn_dropout: 0
  ff_dropout: 0
  flash_attn: true
  dim_freqs_in: 65
  sample_rate: 44100
  stft_n_fft: 128
  stft_hop_length: 32
  stft_win_length: 128
  stft_normalized: false
  mask_estimator_depth: 1
  mlp_expansion_factor: 1
training:
  instruments: [vocals, other]
  target_instrument: vocals
inference:
  batch_size: 1
  num_overlap: 2
"""

MDX23C = """\
audio:
  chunk_size: 1984
  dim_f: 64
  hop_length: 64
  n_fft: 256
  num_channels: 2
  sample_rate: 44100
model:
  act: gelu
  bottleneck_factor: 2
  growth: 4
  norm: InstanceNorm
  num_blocks_per_scale: 1
  num_channels: 8
  num_scales: 2
  num_subbands: 2
  scale: [2, 2]
training:
  instruments: [vocals, instrumental]
inference:
  batch_size: 1
  num_overlap: 4
"""

SCNET = """\
audio:
  chunk_size: 1024
  num_channels: 2
  sample_rate: 44100
model:
  sources: [drums, bass, other, vocals]
  audio_channels: 2
  dims: [4, 8, 12]
  nfft: 128
  hop_size: 32
  win_size: 128
  normalized: true
  band_SR: [0.175, 0.392, 0.433]
  band_stride: [1, 4, 16]
  band_kernel: [3, 4, 16]
  conv_depths: [2, 1, 1]
  compress: 2
  conv_kernel: 3
  num_dplayer: 2
  expand: 1
training:
  instruments: [drums, bass, other, vocals]
  target_instrument: null
inference:
  batch_size: 2
  num_overlap: 2
"""

CONFIGS = {"bs_roformer": BS_ROFORMER, "mel_band_roformer": MEL_BAND_ROFORMER, "mdx23c": MDX23C, "scnet": SCNET}


def random_state(text: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict of the config's network, every weight random (norm gains too, so that a
    misplaced name shows); the rotary frequencies are kept as trained."""
    torch.manual_seed(seed)
    model = build(read_config(text.encode()))
    state = model.state_dict()
    for key, value in state.items():
        if value.is_floating_point() and not key.endswith("rotary_embed.freqs"):
            value.add_(torch.randn_like(value) * 0.2)
    return state


def write_checkpoint(path: Path, text: str, seed: int = 0) -> Path:
    torch.save(random_state(text, seed), path)
    return path
