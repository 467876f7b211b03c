"""The event loop's own work behind the overload scenario, in-process, for this tree and a baseline.

Under overload (`bench/loadtest.py --scenario overload`) the loop does two things: it refuses extra
invokes at the door (`web/door.py`, from their header block) and it decodes the admitted bodies as
they arrive (`EnvelopeReader.feed`, 64 KiB at a time). A refusal's latency as the client sees it is
mostly the turns of the loop spent on the bodies before the door gets to it, plus the client's and
the operating system's own time on a machine whose cores the client shares. This times both pieces
of the gateway's work directly, each tree in a process of its own (cwd and import path its tree),
trees interleaved, medians of `--rounds` rounds:

- the door's cost per refused invoke (the bound full, the access log on, written to /dev/null);
- the reader's cost per 64 KiB chunk of a 14 MB base64 body (the overload scenario's held bodies).

    python3 bench/refusal_cost.py --baseline REV [--repeat 3] [--out bench/results/refusal-cost.json]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.loop_latency import in_turn, revision, tree_env, worktree  # noqa: E402
from bench.separation import cpu_flags, cpu_name, versions  # noqa: E402

# Run inside each tree: its own modules, found where that tree keeps them.
PROBE = r'''
import base64, json, logging, os, statistics, sys, time
try:
    from sami_gateway.web.door import Door
    from sami_gateway.web.state import SCHEDULER
    from sami_gateway.protocol.reader import EnvelopeReader
except ImportError:  # the layout before one house (issue 21)
    from sami_gateway.door import Door
    from sami_gateway.state import SCHEDULER
    from sami_gateway.envelope_reader import EnvelopeReader
from sami_gateway.app import create_app
from sami_gateway.config import load_config
from tests.test_app import NS, Echo

rounds = int(sys.argv[1])
access = logging.getLogger("aiohttp.access")
access.setLevel(logging.INFO)
access.addHandler(logging.FileHandler(os.devnull))
config = load_config({}, {"SAMI_TOKEN_SECRET": "s" * 40, "SAMI_APPKEYS": "k", "SAMI_MAX_JOBS": "1"})
app = create_app(config, {NS: Echo()})
head = (f"POST /api/v1/invoke?namespace={NS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Content-Length: 2\r\n\r\n").encode()
door = Door(app)
refusal = []
with app[SCHEDULER].admission():  # the bound (one request) is full
    assert door(head, "127.0.0.1") is not None
    for _ in range(1000):
        door(head, "127.0.0.1")
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(5000):
            door(head, "127.0.0.1")
        refusal.append((time.perf_counter() - started) / 5000 * 1e6)
data = base64.b64encode(os.urandom(14_000_000))
body = b'{"appkey":"k","token":"t","namespace":"' + NS.encode() + b'","data":"' + data + b'","payload":"{}"}'
chunks = [body[i:i + 65536] for i in range(0, len(body), 65536)]
chunk = []
for _ in range(rounds):
    reader = EnvelopeReader(100 * 2**20, len(body))
    started = time.perf_counter()
    for piece in chunks:
        reader.feed(piece)
    reader.close()
    chunk.append((time.perf_counter() - started) / len(chunks) * 1e6)
print(json.dumps({"door_us_per_refusal": refusal, "reader_us_per_64kib": chunk}))
'''


def probe(tree: Path, rounds: int) -> dict[str, list[float]]:
    out = subprocess.run([sys.executable, "-c", PROBE, str(rounds)], cwd=tree, env=tree_env(tree), check=True,
                         capture_output=True, text=True, timeout=600).stdout
    return {name: [round(value, 2) for value in values] for name, values in json.loads(out.splitlines()[-1]).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", required=True, help="git revision to compare with, from a worktree")
    parser.add_argument("--repeat", type=int, default=3, help="processes per tree, interleaved")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per process")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/refusal-cost.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        trees = {"baseline": stack.enter_context(worktree(args.baseline, Path(tmp))), "current": ROOT}
        revisions = {name: revision(tree) for name, tree in trees.items()}
        samples: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
        for repeat in range(args.repeat):
            for name, tree in in_turn(trees, repeat):
                for figure, values in probe(tree, args.rounds).items():
                    samples[name].setdefault(figure, []).extend(values)
    medians = {name: {figure: round(statistics.median(values), 2) for figure, values in figures.items()}
               for name, figures in samples.items()}
    ratios = {figure: round(medians["current"][figure] / medians["baseline"][figure], 3)
              for figure in medians["current"]}
    for figure, ratio in ratios.items():
        print(f"{figure}: baseline {medians['baseline'][figure]}, current {medians['current'][figure]} "
              f"(x{ratio})")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {
        "command": " ".join(sys.argv[1:]), "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu_name(), "cpu_flags": cpu_flags(), "versions": versions(), "revisions": revisions,
        "medians": medians, "ratio_current_to_baseline": ratios, "samples": samples}
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
