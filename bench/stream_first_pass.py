"""The cost of the statistics pass of a streamed separation: decoding twice or spooling once.

A streamed separation needs the mix's mean and standard deviation before its first segment. For a
`--seconds` song written as 16-bit WAV and FLAC at 48 kHz (so that it is resampled to the model's
44.1 kHz on the way), this times, best of `--repeats`:

- one pass: decode, map to stereo, resample, take the statistics (what decoding twice adds);
- the spool: the same pass writing the mix at the model's rate to a temporary file, and reading
  it back (what the second pass costs instead of decoding again);
- the engine's whole-song load for comparison: decode at once, `to_stereo`, `resample`.

    python3 bench/stream_first_pass.py [--seconds 600] [--repeats 3] [--out bench/results/stream-first-pass.json]
"""

from __future__ import annotations

import argparse
import datetime
import io
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.separation import RATE, cpu_name, music, versions  # noqa: E402
from namespaces.music_source_separate.audio.convert import resample, to_stereo  # noqa: E402
from namespaces.music_source_separate.audio.decode import decode  # noqa: E402
from namespaces.music_source_separate.audio.sniff import AudioHint  # noqa: E402
from namespaces.music_source_separate.streaming import (  # noqa: E402
    FileBlocks,
    MappedBlocks,
    ResampledBlocks,
    Spool,
    measure,
)

INPUT_RATE = 48000


def best(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def drain(blocks: Any) -> int:
    return sum(block.shape[-1] for block in blocks)


def measure_format(data: bytes, repeats: int, spool_dir: Path) -> dict[str, float]:
    def mix() -> ResampledBlocks:
        return ResampledBlocks(MappedBlocks(FileBlocks(data), 2), RATE)

    def whole() -> None:
        decoded = decode(data, AudioHint(), 24 * 3600.0, 8)
        resample(to_stereo(decoded.samples), decoded.sample_rate, RATE)

    with Spool(mix(), spool_dir) as spool:
        read_back = best(repeats, lambda: drain(spool.blocks()))
    return {
        "decode_pass_seconds": best(repeats, lambda: measure(mix().blocks())),
        "spool_write_seconds": best(repeats, lambda: Spool(mix(), spool_dir).close()),
        "spool_read_seconds": read_back,
        "whole_load_seconds": best(repeats, whole),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/stream-first-pass.json")
    args = parser.parse_args()
    song = resample(music(args.seconds), RATE, INPUT_RATE)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as spool_dir:
        for fmt in ("WAV", "FLAC"):
            buffer = io.BytesIO()
            sf.write(buffer, np.ascontiguousarray(song.T), INPUT_RATE, format=fmt, subtype="PCM_16")
            results[fmt.lower()] = measure_format(buffer.getvalue(), args.repeats, Path(spool_dir))
    print(f"{args.seconds:.0f} s at {INPUT_RATE} Hz -> {RATE} Hz, best of {args.repeats} (seconds)")
    print(f"{'format':8}{'decode pass':>14}{'spool write':>14}{'spool read':>13}{'whole load':>13}")
    for fmt, row in results.items():
        print(f"{fmt:8}{row['decode_pass_seconds']:14.2f}{row['spool_write_seconds']:14.2f}"
              f"{row['spool_read_seconds']:13.2f}{row['whole_load_seconds']:13.2f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "cpu": cpu_name(),
        "versions": versions(), "seconds": args.seconds, "input_rate": INPUT_RATE, "model_rate": RATE,
        "repeats": args.repeats, "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
