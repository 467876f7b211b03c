"""What computing an invoke's sources span by span costs against the whole-song computation, in-process.

Both run the same model calls on one thread of the scheduler's kind (`drive` / `run_steps`) over a
`--seconds` stereo mix at 44.1 kHz and keep the sources at the stem cache's precision:

- whole: `Separator.plan` over the whole mix (one float32 array per source), then `astype`;
- span by span: `Pipeline._regions`, what invoke runs, each final region written into the kept arrays.

Each repeat runs both, each first in every other repeat, after one short warm-up of each; the table
quotes medians and their ratio, and checks the two give the same sources to the bit.

    python3 bench/invoke_span.py [--seconds 540] [--repeat 5] [--precision fast] [--model tiny|released]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.separation import RATE, RELEASED, cpu_flags, cpu_name, music, versions  # noqa: E402
from namespaces.music_source_separate import demo_store  # noqa: E402
from namespaces.music_source_separate.engine.inference import drive  # noqa: E402
from namespaces.music_source_separate.pipeline import separation  # noqa: E402
from namespaces.music_source_separate.separator import Separator  # noqa: E402
from namespaces.music_source_separate.streaming.separation import run_steps  # noqa: E402

Sources = dict[str, np.ndarray]


def separator_for(model: str, precision: str) -> Separator:
    network = demo_store.tiny_htdemucs(0) if model == "tiny" else demo_store.tiny_htdemucs(0, **RELEASED)
    return Separator(network, device="cpu", precision=precision)


def whole(separator: Separator, mix: np.ndarray, dtype: type[np.floating[Any]]) -> Sources:
    """The whole-song path: one float32 array per source, then the kept copies."""
    stems = drive(separator.plan(torch.from_numpy(mix), shifts=separation.SHIFTS)).numpy()
    return {name: stems[row].astype(dtype) for row, name in enumerate(separator.model.sources)}


def span_by_span(separator: Separator, mix: np.ndarray, dtype: type[np.floating[Any]]) -> Sources:
    """Invoke's path: `Pipeline._regions` writing each final region into the kept arrays."""
    work = separation.Work(use=None)  # type: ignore[arg-type]  # no cache here
    work.mix, work.rate = mix, RATE
    work.layout = tuple((name, row) for row, name in enumerate(separator.model.sources))
    run_steps(separation.Pipeline._regions(SimpleNamespace(_dtype=dtype), separator, work))  # type: ignore[arg-type]
    return work.sources


def timed(run: Callable[..., Sources], *args: Any) -> tuple[float, Sources]:
    started = time.perf_counter()
    out = run(*args)
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=540.0)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--precision", choices=("fast", "exact"), default="fast")
    parser.add_argument("--model", choices=("tiny", "released"), default="tiny")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/invoke-span.json")
    args = parser.parse_args()
    separator = separator_for(args.model, args.precision)
    dtype = separation.CACHE_DTYPES[args.precision]
    paths = {"whole": whole, "span_by_span": span_by_span}
    short = music(10.0)
    for path in paths.values():  # warm-up: first calls allocate and pick kernels
        path(separator, short, dtype)
    mix = music(args.seconds)
    times: dict[str, list[float]] = {name: [] for name in paths}
    identical = True
    for repeat in range(args.repeat):
        order = list(paths) if repeat % 2 == 0 else list(reversed(paths))
        outputs = {}
        for name in order:
            seconds, outputs[name] = timed(paths[name], separator, mix, dtype)
            times[name].append(round(seconds, 3))
            print(f"[{repeat + 1}/{args.repeat}] {name}: {seconds:.2f} s", file=sys.stderr, flush=True)
        identical = identical and all(np.array_equal(outputs["whole"][stem], outputs["span_by_span"][stem])
                                      for stem in outputs["whole"])
        del outputs
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians["span_by_span"] / medians["whole"]
    print(f"{args.seconds:.0f} s, {args.model} model, {args.precision}: whole {medians['whole']:.2f} s, "
          f"span by span {medians['span_by_span']:.2f} s (median of {args.repeat}), ratio {ratio:.3f}, "
          f"same sources to the bit: {identical}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(sys.argv[1:]), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "threads": torch.get_num_threads(),
        "versions": versions(),
        "seconds": args.seconds, "model": args.model, "precision": args.precision, "repeat": args.repeat,
        "seconds_each": times, "median_s": medians, "ratio": round(ratio, 3), "identical": identical}, indent=2) + "\n")


if __name__ == "__main__":
    main()
