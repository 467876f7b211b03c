"""Where one segment's forward pass spends its time, in each precision.

Same model as bench/separation.py (random HTDemucs with the released `htdemucs`
hyper-parameters), one 7.8 s segment, the engine's own `forward`. Prints the
median wall time per precision, then the operators by self time, grouped into
attention, matrix products, convolutions and the rest (copies, norms, activations).

Then the SNR of `fast` against `exact` on this segment twice: as initialised, and
with every layer scale raised to 0.5. At initialisation the transformer's layer
scales are 1e-4 and the DConv branches' 1e-3, so those branches barely reach the
output and an SNR there says little about their precision; trained models have
grown them, and the second figure is a stand-in for that.

    python3 bench/profile_forward.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

GROUPS = {  # operator name prefix -> group
    "aten::_scaled_dot_product": "attention", "sami::native_attention": "attention",
    "aten::addmm": "matmul", "aten::mm": "matmul",
    "aten::bmm": "matmul", "aten::mkldnn_convolution": "convolution", "aten::_convolution": "convolution",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch
    from demucs.htdemucs import HTDemucs
    from torch.profiler import ProfilerActivity, profile

    from bench.separation import RELEASED
    from namespaces.music_source_separate.engine.inference import ModelCall, Precision, forward

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = HTDemucs(sources=["drums", "bass", "other", "vocals"], **RELEASED).eval()
    segment = torch.randn(1, 2, int(model.samplerate * float(model.segment))) * 0.3
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"bf16 kernels: {torch.ops.mkldnn._is_mkldnn_bf16_supported()}")
    for precision in Precision:
        call = ModelCall(model, segment, precision)
        with torch.inference_mode():
            forward(call)  # warm-up
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                forward(call)
                times.append(time.perf_counter() - started)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                forward(call)
        groups: dict[str, float] = {}
        for event in prof.key_averages():
            group = next((g for prefix, g in GROUPS.items() if event.key.startswith(prefix)), "other")
            groups[group] = groups.get(group, 0.0) + event.self_cpu_time_total / 1e3
        shares = ", ".join(f"{name} {ms:.0f} ms" for name, ms in sorted(groups.items(), key=lambda kv: -kv[1]))
        print(f"{precision.value:>6}: {statistics.median(times):.3f} s per segment; {shares}")

    for label in ("as initialised", "layer scales 0.5"):
        if label != "as initialised":
            with torch.no_grad():
                for name, parameter in model.named_parameters():
                    if name.endswith(".scale"):  # every LayerScale, transformer and DConv
                        parameter.fill_(0.5)
        with torch.inference_mode():
            exact = forward(ModelCall(model, segment, Precision.EXACT)).double()
            fast = forward(ModelCall(model, segment, Precision.FAST)).double()
        snr = 10 * torch.log10(exact.pow(2).sum() / (exact - fast).pow(2).sum())
        print(f"fast vs exact, {label}: SNR {snr.item():.1f} dB")


if __name__ == "__main__":
    main()
