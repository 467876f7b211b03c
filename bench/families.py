"""The model families (BS-RoFormer, Mel-Band RoFormer, MDX23C) against MSST's own inference, in one run.

Each family's network has the hyper-parameters of a released checkpoint's config (the viperx
BS-RoFormer, Kim's Mel-Band RoFormer, MSST's vocal MDX23C) and random weights (the checkpoints are
not downloaded here; speed and numerical agreement do not depend on training). Each configuration
runs in its own process, so peak RSS is its own:

- reference: the `msst` package, `demix` of its own model class, fp32 (the test environment's
  `requirements-reference.txt`);
- ours in each precision (`exact`, `fast`), through `Separator` on a store the checkpoint was
  imported into.

    python3 bench/families.py [--families mel_band_roformer ...] [--seconds 12] [--repeats 1]
                              [--size released|tiny] [--out bench/results/families-cpu.json]

`--size tiny` runs the test suite's tiny configs: a check of the script, not a measurement.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import yaml
from separation import environment, minor_faults, music, row_of, run_ours, snr_db  # bench/ is this script's folder

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RATE = 44100
CONFIGS = ("reference", "exact", "fast")
_COMMON = {"stereo": True, "num_stems": 1, "time_transformer_depth": 1, "freq_transformer_depth": 1,
           "dim_head": 64, "heads": 8, "attn_dropout": 0.0, "ff_dropout": 0.0, "flash_attn": True,
           "dim_freqs_in": 1025, "stft_n_fft": 2048, "stft_hop_length": 441, "stft_win_length": 2048,
           "stft_normalized": False, "mask_estimator_depth": 2}
_VOCALS = {"instruments": ["vocals", "other"], "target_instrument": "vocals"}
_ROFORMER_RUN = {"audio": {"chunk_size": 352800, "num_channels": 2, "sample_rate": RATE},
                 "training": _VOCALS, "inference": {"batch_size": 1, "num_overlap": 4}}
RELEASED = {
    "bs_roformer": {**_ROFORMER_RUN, "model": {
        **_COMMON, "dim": 512, "depth": 12, "linear_transformer_depth": 0,
        "freqs_per_bands": (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)}},
    "mel_band_roformer": {**_ROFORMER_RUN, "model": {
        **_COMMON, "dim": 384, "depth": 6, "num_bands": 60, "sample_rate": RATE}},
    "mdx23c": {"audio": {"chunk_size": 261120, "dim_f": 4096, "hop_length": 1024, "n_fft": 8192,
                         "num_channels": 2, "sample_rate": RATE},
               "model": {"act": "gelu", "bottleneck_factor": 4, "growth": 128, "norm": "InstanceNorm",
                         "num_blocks_per_scale": 2, "num_channels": 128, "num_scales": 5, "num_subbands": 4,
                         "scale": [2, 2]},
               "training": {"instruments": ["vocals", "other"]}, "inference": {"batch_size": 1, "num_overlap": 4}},
}


class _Dumper(yaml.SafeDumper):
    """Tuples as MSST's configs write them (`!!python/tuple`)."""


_Dumper.add_representer(tuple, lambda dumper, data: dumper.represent_sequence("tag:yaml.org,2002:python/tuple", data))


def config_text(family: str, size: str) -> str:
    if size == "tiny":
        sys.path.insert(0, str(ROOT / "tests/namespaces/music_source_separate/families"))
        from tiny import CONFIGS as TINY  # type: ignore[import-not-found]

        return str(TINY[family])
    return str(yaml.dump(RELEASED[family], Dumper=_Dumper, sort_keys=False))


def prepare(family: str, size: str, work: Path) -> Path:
    """A random checkpoint of the config, imported into a store of its own."""
    import torch

    from namespaces.music_source_separate.families.build import build
    from namespaces.music_source_separate.families.config import read_config
    from namespaces.music_source_separate.models.catalogue import Catalogue
    from namespaces.music_source_separate.models.repository import ModelRepository

    text = config_text(family, size)
    (work / f"{family}.yaml").write_text(text)
    torch.manual_seed(0)
    torch.save(build(read_config(text.encode())).state_dict(), work / f"{family}.ckpt")
    store = work / f"store-{family}"
    ModelRepository(store, catalogue=Catalogue.packaged()).import_family(
        family, work / f"{family}.ckpt", work / f"{family}.yaml")
    return store


def run_reference(family: str, work: Path, mix: np.ndarray) -> tuple[np.ndarray, float, int]:
    import torch
    from ml_collections import ConfigDict
    from msst.utils.model_utils import demix

    config = ConfigDict(yaml.load((work / f"{family}.yaml").read_text(), Loader=yaml.FullLoader))
    if family == "mdx23c":
        from msst.models.mdx23c_tfc_tdf_v3 import TFC_TDF_net
        model = TFC_TDF_net(config)
    else:
        from msst.models.bs_roformer import BSRoformer, MelBandRoformer
        model = (BSRoformer if family == "bs_roformer" else MelBandRoformer)(**dict(config.model))
    model.load_state_dict(torch.load(work / f"{family}.ckpt", weights_only=True))
    model.eval()
    demix(config, model, mix[:, :RATE], torch.device("cpu"), family)  # warm-up, as for ours
    started, faults = time.perf_counter(), minor_faults()
    out = demix(config, model, mix, torch.device("cpu"), family)
    return np.stack(list(out.values())), time.perf_counter() - started, minor_faults() - faults


def child(args: argparse.Namespace) -> None:
    warnings.simplefilter("ignore")
    mix = np.load(args.mix)
    if args.child == "reference":
        out, seconds, faults = run_reference(args.family, args.work, mix)
    else:
        out, seconds, faults = run_ours(args.work / f"store-{args.family}", mix, args.child, args.family)
    np.save(args.result.with_suffix(".npy"), out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    args.result.write_text(json.dumps({"seconds": seconds, "peak_rss_bytes": peak, "minor_faults": faults}))


def measure(family: str, config: str, work: Path, run: int) -> dict[str, float]:
    out = work / f"{family}-{config}-{run}.json"
    subprocess.run([sys.executable, __file__, "--child", config, "--family", family, "--work", str(work),
                    "--mix", str(work / "mix.npy"), "--result", str(out)], check=True)
    return dict(json.loads(out.read_text()))


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    return {name: metadata.version(name) for name in ("torch", "msst", "numpy", "sami-gateway")} | {
        "python": platform.python_version()}


def rows_of(family: str, work: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict[str, float]]] = {}
    for run in range(args.repeats):  # interleaved, so drift hits every configuration alike
        for config in CONFIGS:
            runs.setdefault(config, []).append(measure(family, config, work, run))
    truth = np.load(work / f"{family}-reference-0.npy")
    base = statistics.median(r["seconds"] for r in runs["reference"])
    rows = {}
    for config, measured in runs.items():
        rows[config] = row_of(measured, args.seconds, base, snr_db(truth, np.load(work / f"{family}-{config}-0.npy")))
    return rows


def report(args: argparse.Namespace) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        np.save(work / "mix.npy", music(args.seconds))
        for family in args.families:
            prepare(family, args.size, work)
            results[family] = {"config": yaml.safe_load(config_text(family, args.size).replace("!!python/tuple", "")),
                               "rows": rows_of(family, work, args)}
    print(f"{'family':<19}{'configuration':<11}{'audio s/s':>10}{'speed':>8}{'peak RSS MiB':>14}{'SNR dB':>9}")
    for family, result in results.items():
        for config, row in result["rows"].items():
            print(f"{family:<19}{config:<11}{row['audio_seconds_per_second']:>10}{row['speed_vs_reference']:>8}"
                  f"{row['peak_rss_mib']:>14}{row['snr_db_vs_reference_fp32']:>9}")
    document = {
        "benchmark": "families", "input_seconds": args.seconds, "repeats": args.repeats, "size": args.size,
        "weights": "random, seed 0", "reference": "msst.utils.model_utils.demix, fp32, its own model classes",
        "families": results,
        **environment(versions()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", choices=sorted(RELEASED), default=sorted(RELEASED))
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--size", choices=("released", "tiny"), default="released")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/families-cpu.json")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mix", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
    else:
        report(args)


if __name__ == "__main__":
    main()
