"""Tiny randomly initialised models of the real architectures, written in the real store layout.

They make tests and a first start independent of downloads. Their output is not a
separation of anything: fetch or import real weights for that.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
import yaml
from demucs.htdemucs import HTDemucs
from torch import nn

SOURCES = ("drums", "bass", "other", "vocals")
# The released signatures, so that the released bag files name these layers.
HTDEMUCS_SIG = "955717e8"
HTDEMUCS_FT_SIGS = ("f7e0c4bc", "d12395a8", "92cfc3b6", "04573f0d")
# The released htdemucs hyper-parameters, shrunk in width; depth stays 4 so the
# transformer's sequence stays short.
TINY_KWARGS: dict[str, Any] = {
    "sources": list(SOURCES), "channels": 8, "depth": 4, "dconv_comp": 4,
    "t_layers": 1, "t_heads": 4, "nfft": 4096, "segment": Fraction(39, 5),
}


def tiny_htdemucs(seed: int, **overrides: Any) -> nn.Module:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zero-sized convolutions of the tiny width warn
        model = HTDemucs(**{**TINY_KWARGS, **overrides})
    return model.eval()


def save_package(model: nn.Module, store: Path, sig: str) -> Path:
    """Write `<sig>-<sha256 prefix>.th` as Demucs's `save_with_checksum` does."""
    args, kwargs = model._init_args_kwargs
    state = {k: v.detach().to("cpu", torch.half) for k, v in model.state_dict().items()}
    package = {"klass": model.__class__, "args": args, "kwargs": kwargs, "state": state}
    buffer = io.BytesIO()
    torch.save(package, buffer)
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()[:8]
    path = store / f"{sig}-{digest}.th"
    path.write_bytes(buffer.getvalue())
    return path


def write_bag(store: Path, name: str, sigs: tuple[str, ...],
              weights: list[list[float]] | None = None, segment: float | None = None) -> Path:
    bag: dict[str, Any] = {"models": list(sigs)}
    if weights is not None:
        bag["weights"] = weights
    if segment is not None:
        bag["segment"] = segment
    path = store / f"{name}.yaml"
    path.write_text(yaml.safe_dump(bag))
    return path


def write_demo_store(store: Path, seed: int = 0) -> list[Path]:
    """`htdemucs` (one model) and `htdemucs_ft` (four specialists, identity weights)."""
    store.mkdir(parents=True, exist_ok=True)
    written = [save_package(tiny_htdemucs(seed), store, HTDEMUCS_SIG),
               write_bag(store, "htdemucs", (HTDEMUCS_SIG,))]
    for index, sig in enumerate(HTDEMUCS_FT_SIGS):
        written.append(save_package(tiny_htdemucs(seed + 1 + index), store, sig))
    identity = [[1.0 if i == j else 0.0 for j in range(len(SOURCES))] for i in range(len(SOURCES))]
    written.append(write_bag(store, "htdemucs_ft", HTDEMUCS_FT_SIGS, identity))
    return written


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Write a store of tiny random models (not for real separation).")
    parser.add_argument("store", type=Path, help="model store directory to create or fill")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for path in write_demo_store(args.store, args.seed):
        print(path)


if __name__ == "__main__":
    main()
