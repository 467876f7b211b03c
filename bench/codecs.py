"""Output encoding: every format through today's path and the new one, in the same run.

A stereo test signal of `--seconds` at 44.1 kHz (tones, a beat, noise: `bench/separation.py`'s
`music`) is encoded `--repeats` times by each path; the median seconds are reported with the
bytes, the SNR below 16 kHz of the decoded file against the input (FFmpeg decodes, ADTS aligned
past its priming frame), the length FFmpeg and libsndfile decode against the samples encoded,
and the longest the encoding thread kept another thread from running (the GIL held).

Every path is the gateway's `encode()` (its clipping included). wav and flac go through libsndfile
(one path); mp3 through PyAV's libmp3lame (the path before, and still the fallback when no LAME
library loads: run here with none found) and through LAME directly (`audio/lame.py`, the same
settings); aac (ADTS) and m4a (AAC in MP4) through PyAV's FFmpeg encoder.

    python3 bench/codecs.py [--seconds 180] [--repeats 5] [--out bench/results/codecs.json]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata as metadata
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.separation import RATE, cpu_name, music  # noqa: E402
from namespaces.music_source_separate.audio import encode as encoding  # noqa: E402
from namespaces.music_source_separate.audio.encode import encode  # noqa: E402
from namespaces.music_source_separate.audio.lame import lame  # noqa: E402

SNR_BAND_HZ = 16_000
PRIMING = {"aac": 1024}  # ADTS says nothing of the encoder's priming: the decoded file starts late by it


def mp3_without_lame(x: np.ndarray) -> bytes:
    """The gateway's mp3 as it was before LAME was called directly: its fallback, with no LAME found."""
    found = encoding.lame
    encoding.lame = lambda: None  # type: ignore[assignment]
    try:
        return encode(x, RATE, "mp3")
    finally:
        encoding.lame = found


def paths() -> list[tuple[str, str, Callable[[np.ndarray], bytes]]]:
    """(format, path, encoder) in report order; `encode` is what the gateway runs."""
    return [
        ("wav", "libsndfile", lambda x: encode(x, RATE, "wav")),
        ("flac", "libsndfile", lambda x: encode(x, RATE, "flac")),
        ("mp3", "pyav (before)", mp3_without_lame),
        ("mp3", "lame (now)", lambda x: encode(x, RATE, "mp3")),
        ("aac", "pyav", lambda x: encode(x, RATE, "aac")),
        ("m4a", "pyav", lambda x: encode(x, RATE, "m4a")),
    ]


def longest_gil_hold(work: Callable[[], bytes]) -> tuple[bytes, float]:
    """Run `work` while another thread ticks every millisecond: (its result, the longest tick gap in s)."""
    done = threading.Event()
    gaps = [0.0]

    def tick() -> None:
        last = time.perf_counter()
        while not done.is_set():
            time.sleep(0.001)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    ticker = threading.Thread(target=tick)
    ticker.start()
    try:
        out = work()
    finally:
        done.set()
        ticker.join()
    return out, max(gaps)


def ffmpeg_decode(data: bytes, fmt: str) -> np.ndarray:
    """(2, frames) float32 as FFmpeg decodes the file (its format named, as the client that asked knows it)."""
    demuxer = {"wav": "wav", "flac": "flac", "mp3": "mp3", "aac": "aac", "m4a": "mov"}[fmt]
    with tempfile.NamedTemporaryFile(suffix="." + fmt) as handle:
        handle.write(data)
        handle.flush()
        raw = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", demuxer, "-i", handle.name,
                              "-f", "f32le", "-ac", "2", "-"], check=True, capture_output=True).stdout
    return np.frombuffer(raw, np.float32).reshape(-1, 2).T


def snr_below(reference: np.ndarray, decoded: np.ndarray, cutoff: float = SNR_BAND_HZ) -> float:
    """SNR in dB of `decoded` against `reference` (same shape) over the band below `cutoff`."""
    ours, theirs = np.fft.rfft(reference, axis=1), np.fft.rfft(decoded, axis=1)
    band = np.fft.rfftfreq(reference.shape[1], 1 / RATE) < cutoff
    error = np.sum(np.abs(ours[:, band] - theirs[:, band]) ** 2)
    return float(10 * np.log10(np.sum(np.abs(ours[:, band]) ** 2) / error))


def measure(fmt: str, path: str, run: Callable[[np.ndarray], bytes], x: np.ndarray, repeats: int) -> dict[str, Any]:
    seconds, holds = [], []
    data = b""
    for _ in range(repeats):
        start = time.perf_counter()
        data, hold = longest_gil_hold(lambda: run(x))
        seconds.append(time.perf_counter() - start)
        holds.append(hold)
    decoded = ffmpeg_decode(data, fmt)
    lag = PRIMING.get(fmt, 0)
    aligned = decoded[:, lag:lag + x.shape[1]]
    frames = x.shape[1]
    libsndfile = sf.info(io.BytesIO(data)).frames if fmt in ("wav", "flac", "mp3") else None
    row = {"format": fmt, "path": path, "seconds": round(statistics.median(seconds), 3),
           "seconds_all": [round(s, 3) for s in seconds], "bytes": len(data),
           "snr_below_16k_db": round(snr_below(x, aligned), 2) if aligned.shape == x.shape else None,
           "frames_expected": frames, "frames_ffmpeg": int(decoded.shape[1]), "frames_libsndfile": libsndfile,
           "longest_gil_hold_ms": round(1000 * statistics.median(holds), 1)}
    print(f"{fmt:5} {path:14} {row['seconds']:7.3f} s {len(data):>10} B  SNR {row['snr_below_16k_db']} dB  "
          f"ffmpeg {decoded.shape[1] - frames:+d}  libsndfile "
          f"{'-' if libsndfile is None else f'{libsndfile - frames:+d}'}  GIL {row['longest_gil_hold_ms']} ms",
          flush=True)
    return row


def versions() -> dict[str, Any]:
    import av

    ffmpeg = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.split("\n", 1)[0]
    library = lame()
    return {"python": platform.python_version(), "numpy": np.__version__, "av": av.__version__,
            "libavcodec (PyAV's)": ".".join(map(str, av.library_versions["libavcodec"])),
            "lameenc": metadata.version("lameenc"),
            "lame": f"{library.version} ({Path(library.path).name})" if library else None,
            "soundfile": sf.__version__, "libsndfile": sf.__libsndfile_version__, "ffmpeg (decoding)": ffmpeg,
            "sami-gateway": metadata.version("sami-gateway")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/codecs.json")
    args = parser.parse_args()
    x = music(args.seconds)
    rows = [measure(fmt, path, run, x, args.repeats) for fmt, path, run in paths()]
    before, now = (next(r for r in rows if r["format"] == "mp3" and r["path"] == p)
                   for p in ("pyav (before)", "lame (now)"))
    summary = {"mp3_speedup": round(before["seconds"] / now["seconds"], 2),
               "mp3_snr_difference_db": round(now["snr_below_16k_db"] - before["snr_below_16k_db"], 2)}
    print(f"mp3: {summary['mp3_speedup']}x faster, SNR {summary['mp3_snr_difference_db']:+.2f} dB")
    result = {"date": datetime.date.today().isoformat(), "command": "python3 bench/codecs.py " + " ".join(sys.argv[1:]),
              "signal": f"{args.seconds:g} s of stereo at {RATE} Hz (bench/separation.py music)",
              "repeats": args.repeats, "summary": summary, "rows": rows,
              "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform()},
              "versions": versions()}
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
