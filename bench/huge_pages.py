"""What opting out of transparent huge pages costs a separation: ours with and without them, in one run.

The gateway's heap choice (`sami_gateway/runtime/heap.py`) keeps freed memory for reuse and opts the
process out of transparent huge pages, whose collapses by khugepaged stalled the event loop. This
times the released-size HTDemucs (random weights, `bench/separation.py`'s store and input) through our
`Separator` after that choice, once as made and once with huge pages allowed again, each run in a
process of its own, the two interleaved. The machine's THP mode is recorded: with `never`, both are
the same; with `madvise`, NumPy's and PyTorch's requests decide.

    python3 bench/huge_pages.py [--seconds 30] [--repeats 3] [--precision fast] [--out bench/results/huge-pages.json]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.separation import environment, music, run_ours, versions, write_store  # noqa: E402

PR_SET_THP_DISABLE = 41
VARIANTS = ("without huge pages", "with huge pages")


def child(variant: str, store: Path, mix_path: Path, precision: str, out: Path) -> None:
    from sami_gateway.runtime import heap

    heap.retain_freed_memory()  # the service's choice, huge pages off; `run_ours` makes it again (cached)
    if variant == VARIANTS[1]:
        ctypes.CDLL("libc.so.6").prctl(PR_SET_THP_DISABLE, 0, 0, 0, 0)
    mix = np.load(mix_path)
    _, seconds, faults = run_ours(store, mix, precision)
    out.write_text(json.dumps({"seconds": seconds, "minor_faults": faults, "thp_enabled": thp_enabled()}))


def thp_enabled() -> str:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("THP_enabled:"):
            return line.split()[1]
    return "unknown"


def thp_mode() -> str:
    try:
        return Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text().strip()
    except OSError:
        return "unknown"


def report(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="huge-pages-") as tmp:
        work = Path(tmp)
        (work / "store").mkdir()
        write_store(work / "store")
        mix_path = work / "mix.npy"
        np.save(mix_path, music(args.seconds))
        runs: dict[str, list[dict[str, float]]] = {variant: [] for variant in VARIANTS}
        for repeat in range(args.repeats):
            order = VARIANTS if repeat % 2 == 0 else VARIANTS[::-1]
            for variant in order:
                out = work / f"{repeat}-{VARIANTS.index(variant)}.json"
                subprocess.run([sys.executable, __file__, "--child", variant, "--store", str(work / "store"),
                                "--mix", str(mix_path), "--precision", args.precision, "--result", str(out)],
                               check=True)
                runs[variant].append(json.loads(out.read_text()))
                print(variant, runs[variant][-1], flush=True)
    medians = {variant: statistics.median(r["seconds"] for r in measured) for variant, measured in runs.items()}
    result = {
        "benchmark": "huge_pages", "command": " ".join(["python3", "bench/huge_pages.py", *sys.argv[1:]]),
        "input_seconds": args.seconds, "precision": args.precision, "repeats": args.repeats,
        "model": "htdemucs, released hyper-parameters, random weights", "thp_mode": thp_mode(),
        "median_seconds": {variant: round(value, 3) for variant, value in medians.items()},
        "without_over_with": round(medians[VARIANTS[0]] / medians[VARIANTS[1]], 3),
        "runs": runs, **environment(versions()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("thp_mode", "median_seconds", "without_over_with")}, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--precision", default="fast", choices=("exact", "fast"))
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/huge-pages.json")
    parser.add_argument("--child", choices=VARIANTS)
    parser.add_argument("--store", type=Path)
    parser.add_argument("--mix", type=Path)
    parser.add_argument("--result", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.store, args.mix, args.precision, args.result)
    else:
        report(args)


if __name__ == "__main__":
    main()
