"""Peak memory of a song separated into two stem files: streamed (`separate_to_files`) against the
whole-song path (decode, `engine.separate`, `stems.render`), with the tiny demo model.

Each run is a process of its own: it loads the model, writes a `--minutes` 16-bit WAV to a temporary
folder block by block, then separates it into `vocals` and `no_vocals` WAV files; the peak RSS
above what the process held before the separation is reported, with the wall time (on a shared
machine the times are only indicative; the model calls dominate both paths).

    python3 bench/stream_memory.py [--minutes 10 30] [--paths stream whole] [--whole-up-to 10]
        [--out bench/results/stream-memory.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.separation import RATE, cpu_name, versions  # noqa: E402

BLOCK = 1 << 16


def write_song(path: Path, minutes: float) -> None:
    frames = int(minutes * 60 * RATE)
    with sf.SoundFile(path, "w", RATE, 2, "PCM_16") as handle:
        for start in range(0, frames, BLOCK):
            count = min(BLOCK, frames - start)
            t = (start + np.arange(count)) / RATE
            tones = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)])
            noise = np.random.default_rng(start).standard_normal((2, count)) * 0.05
            handle.write((tones + noise).T.astype(np.float32))


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(path_kind: str, minutes: float) -> dict[str, Any]:
    """One separation in this process (the child's side)."""
    import torch

    from namespaces.music_source_separate.audio.convert import resample, to_stereo
    from namespaces.music_source_separate.audio.decode import decode
    from namespaces.music_source_separate.audio.sniff import AudioHint
    from namespaces.music_source_separate.demo_store import write_demo_store
    from namespaces.music_source_separate.engine.inference import separate
    from namespaces.music_source_separate.models.layout import load_ensemble
    from namespaces.music_source_separate.requests.stems import demucs_stem, render
    from namespaces.music_source_separate.streaming import FileBlocks
    from namespaces.music_source_separate.streaming.files import FileJob, Output, StemTarget, separate_to_files

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_demo_store(work / "store")
        ensemble = load_ensemble(work / "store", "htdemucs")
        song = work / "song.wav"
        write_song(song, minutes)
        before, started = peak_mib(), time.perf_counter()
        stems = ("vocals", "no_vocals")
        if path_kind == "stream":
            targets = [StemTarget(stem, work / f"{stem}.wav") for stem in stems]
            separate_to_files(FileJob(ensemble, FileBlocks(song), targets, Output("wav", RATE, 2), spool_dir=work))
        else:
            decoded = decode(song.read_bytes(), AudioHint(), 24 * 3600.0, 2)
            mix = resample(to_stereo(decoded.samples), decoded.sample_rate, RATE)
            frames = decoded.samples.shape[-1]
            del decoded
            out = separate(ensemble, torch.from_numpy(np.ascontiguousarray(mix))).numpy()
            sources = {name: out[index] for index, name in enumerate(ensemble.sources)}
            del out
            for stem in stems:
                data = render(demucs_stem(stem, sources, mix), RATE, frames, RATE, 2, "wav")
                (work / f"{stem}.wav").write_bytes(data)
        return {"path": path_kind, "minutes": minutes, "peak_above_loaded_mib": round(peak_mib() - before),
                "seconds": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 30.0])
    parser.add_argument("--paths", nargs="+", choices=("stream", "whole"), default=["stream", "whole"])
    parser.add_argument("--whole-up-to", type=float, default=10.0,
                        help="minutes past which the whole-song path is not run (it holds gigabytes)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/stream-memory.json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_one(args.child[0], float(args.child[1]))))
        return
    rows = []
    for minutes in args.minutes:
        for kind in args.paths:
            if kind == "whole" and minutes > args.whole_up_to:
                continue
            done = subprocess.run([sys.executable, __file__, "--child", kind, str(minutes)], check=True,
                                  capture_output=True, text=True, cwd=ROOT)
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            row = rows[-1]
            print(f"{row['path']:7}{row['minutes']:6.0f} min  peak +{row['peak_above_loaded_mib']:6d} MiB"
                  f"  {row['seconds']:8.1f} s", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "cpu": cpu_name(),
        "versions": versions(), "model": "tiny htdemucs (demo store), exact", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
