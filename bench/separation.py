"""Our engine against demucs.apply.apply_model, same weights and input, in one run.

The model is a randomly initialised HTDemucs with the released `htdemucs`
hyper-parameters (42 M parameters; weights cannot be downloaded here, and speed
and numerical agreement do not depend on training), saved in a temporary store.
Each configuration runs in its own process so peak RSS is its own:

- reference: `apply_model(shifts=1, split=True, overlap=0.25)` in fp32, the
  Demucs command line's defaults, with the command line's normalisation;
- reference shifts=0: the output every SNR is measured against;
- ours in each precision (`exact`, `fast`), shifts=0, through `Separator`.

    python3 bench/separation.py [--seconds 60] [--repeats 3] [--out bench/results/separation-cpu.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RATE = 44100
# The released htdemucs (signature 955717e8): the HTDemucs defaults plus these.
RELEASED = {"channels": 48, "depth": 4, "bottom_channels": 512, "t_layers": 5, "dconv_mode": 3,
            "segment": Fraction(39, 5)}
CONFIGS = ("reference", "reference_shifts0", "exact", "fast")


def music(seconds: float, seed: int = 0) -> np.ndarray:
    """A stereo test signal with tones, a beat and noise: (2, frames) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    phases = rng.random(5)
    melody = sum(0.1 * np.sin(2 * np.pi * f * t + p) for f, p in zip((110, 220, 330, 523, 784), phases, strict=True))
    beat = 0.3 * np.exp(-30 * (t % 0.5)) * np.sin(2 * np.pi * 60 * t)
    mix = np.stack([melody + beat, 0.8 * melody + beat]) + 0.02 * rng.standard_normal((2, t.size))
    return mix.astype(np.float32)


def write_store(store: Path) -> None:
    import torch
    from demucs.htdemucs import HTDemucs

    from namespaces.music_source_separate.demo_store import HTDEMUCS_SIG, SOURCES, save_package, write_bag

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HTDemucs(sources=list(SOURCES), **RELEASED)
    save_package(model, store, HTDEMUCS_SIG)
    write_bag(store, "htdemucs", (HTDEMUCS_SIG,))


def run_reference(store: Path, mix: np.ndarray, shifts: int) -> tuple[np.ndarray, float, int]:
    import torch
    from demucs.apply import apply_model
    from demucs.pretrained import get_model

    model = get_model("htdemucs", repo=store)
    wav = torch.from_numpy(mix)

    def separate(audio: torch.Tensor) -> torch.Tensor:
        ref = audio.mean(0)  # as demucs.separate does around apply_model
        normalised = (audio - ref.mean()) / ref.std()
        with torch.no_grad():
            out = apply_model(model, normalised[None], shifts=shifts, split=True, overlap=0.25)[0]
        return out * ref.std() + ref.mean()

    separate(wav[:, :RATE])  # warm-up, as for ours
    started, faults = time.perf_counter(), minor_faults()
    out = separate(wav)
    return out.numpy(), time.perf_counter() - started, minor_faults() - faults


def run_ours(store: Path, mix: np.ndarray, precision: str, model: str = "htdemucs") -> tuple[np.ndarray, float, int]:
    """`model` from `store` through our Separator, timed after a one-second warm-up."""
    import torch

    from namespaces.music_source_separate import ModelRepository, Separator
    from sami_gateway.runtime import heap

    heap.retain_freed_memory()  # as `sami-gateway separate` and the service do
    separator = Separator(model, "cpu", repository=ModelRepository(store, "http://127.0.0.1:9/"),
                          precision=precision)
    separator.separate((torch.from_numpy(mix[:, :RATE]), RATE), shifts=0)  # warm-up
    started, faults = time.perf_counter(), minor_faults()
    result = separator.separate((torch.from_numpy(mix), RATE), shifts=0)
    out = torch.stack([result[name] for name in separator.sources])
    return out.numpy(), time.perf_counter() - started, minor_faults() - faults


def minor_faults() -> int:
    """Pages this process has faulted in so far (memory the allocator mapped afresh)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def child(config: str, store: Path, mix_path: Path, out_path: Path) -> None:
    """One measurement in this process: write the output and the timing."""
    warnings.simplefilter("ignore")
    mix = np.load(mix_path)
    if config.startswith("reference"):
        out, seconds, faults = run_reference(store, mix, shifts=0 if config.endswith("shifts0") else 1)
    else:
        out, seconds, faults = run_ours(store, mix, config)
    np.save(out_path.with_suffix(".npy"), out)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out_path.write_text(json.dumps({"seconds": seconds, "peak_rss_bytes": peak, "minor_faults": faults}))


def measure(config: str, store: Path, mix_path: Path, work: Path, run: int) -> dict[str, float]:
    out = work / f"{config}-{run}.json"
    subprocess.run([sys.executable, __file__, "--child", config, "--store", str(store),
                    "--mix", str(mix_path), "--result", str(out)], check=True)
    return json.loads(out.read_text())


def snr_db(reference: np.ndarray, estimate: np.ndarray) -> float:
    noise = np.sum((reference.astype(np.float64) - estimate) ** 2)
    return float(10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / max(noise, 1e-30)))


def row_of(measured: list[dict[str, Any]], audio_seconds: float, reference_seconds: float,
           snr: float) -> dict[str, Any]:
    """One configuration's row from its runs: median time, speed against the reference's median
    time, the highest peak RSS, and the SNR of its output against the reference's."""
    seconds = statistics.median(r["seconds"] for r in measured)
    return {"median_seconds": round(seconds, 3),
            "audio_seconds_per_second": round(audio_seconds / seconds, 3),
            "speed_vs_reference": round(reference_seconds / seconds, 3),
            "peak_rss_mib": round(max(r["peak_rss_bytes"] for r in measured) / 2**20, 1),
            "snr_db_vs_reference_fp32": round(snr, 1),
            "runs": len(measured)}


def versions() -> dict[str, str]:
    import importlib.metadata as metadata

    return {name: metadata.version(name) for name in ("torch", "demucs", "numpy", "sami-gateway")} | {
        "python": platform.python_version()}


def environment(versions: dict[str, str]) -> dict[str, Any]:
    """Where and with what a result was measured: the machine, `versions` and the date."""
    return {"machine": {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(),
                        "platform": platform.platform()},
            "versions": versions, "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}


VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")


def cpu_flags() -> list[str]:
    """The CPU's vector extensions that decide what `fast` can use (bf16 or not)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                present = set(line.split(":", 1)[1].split())
                return [flag for flag in VECTOR_FLAGS if flag in present]
    except OSError:
        pass
    return []


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def report(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store = work / "store"
        store.mkdir()
        write_store(store)
        mix = music(args.seconds)
        np.save(work / "mix.npy", mix)
        runs: dict[str, list[dict[str, float]]] = {}
        for run in range(args.repeats):  # interleaved, so drift hits every configuration alike
            for config in CONFIGS:
                if config == "reference_shifts0" and run:
                    continue
                runs.setdefault(config, []).append(measure(config, store, work / "mix.npy", work, run))
        truth = np.load(work / "reference_shifts0-0.npy")
        rows = {}
        base = statistics.median(r["seconds"] for r in runs["reference"])
        for config, measured in runs.items():
            rows[config] = row_of(measured, args.seconds, base, snr_db(truth, np.load(work / f"{config}-0.npy")))
            rows[config]["median_minor_page_faults"] = int(statistics.median(r["minor_faults"] for r in measured))
    print(f"{'configuration':<20}{'audio s/s':>10}{'speed':>8}{'peak RSS MiB':>14}{'SNR dB':>9}{'page faults':>13}")
    for config, row in rows.items():
        print(f"{config:<20}{row['audio_seconds_per_second']:>10}{row['speed_vs_reference']:>8}"
              f"{row['peak_rss_mib']:>14}{row['snr_db_vs_reference_fp32']:>9}{row['median_minor_page_faults']:>13}")
    result = {
        "benchmark": "separation", "input_seconds": args.seconds, "repeats": args.repeats,
        "model": {"architecture": "HTDemucs", "weights": "random, seed 0",
                  "hyper_parameters": {k: str(v) for k, v in RELEASED.items()}},
        "reference": "demucs.apply.apply_model shifts=1 split=True overlap=0.25 fp32",
        "rows": rows,
        **environment(versions()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/separation-cpu.json")
    parser.add_argument("--child", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--store", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--mix", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.store, args.mix, args.result)
    else:
        report(args)


if __name__ == "__main__":
    main()
