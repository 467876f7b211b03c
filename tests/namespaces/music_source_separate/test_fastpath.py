"""The fast forms of attention and DConv (fastpath.py) and the native attention kernel (native.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from demucs.demucs import DConv
from torch import Tensor, nn
from torch.nn import functional as F

from namespaces.music_source_separate.defaults import DEFAULT_KERNEL_DIR
from namespaces.music_source_separate.demo_store import tiny_htdemucs
from namespaces.music_source_separate.engine import fastpath, native
from namespaces.music_source_separate.engine.inference import ModelCall, Precision, forward

BF16 = torch.autocast("cpu", dtype=torch.bfloat16)


def snr(reference: Tensor, estimate: Tensor) -> float:
    reference, estimate = reference.double(), estimate.double()
    return float(10 * torch.log10(reference.pow(2).sum() / (reference - estimate).pow(2).sum()))


@pytest.fixture(scope="module")
def kernel() -> bool:
    """Whether the native kernel runs here. Where the CPU has AVX512-BF16 it must build and load:
    a broken build fails these tests instead of quietly falling back."""
    if native.cpu_supported():
        assert native.library() is not None, "the CPU has avx512_bf16 but the kernel did not build"
        return True
    assert native.library() is None
    return False


def heads(batch: int, length: int, count: int, scale: float = 1.0) -> Tensor:
    """(batch, heads, length, 64) viewed from (batch, length, heads, 64), as attention hands them over."""
    return (torch.randn(batch, length, count, native.HEAD_DIM) * scale).transpose(1, 2)


@pytest.mark.parametrize(("batch", "lq", "lk"), [(1, 37, 21), (2, 301, 129), (1, 1344, 2688), (1, 5, 1)])
def test_native_attention_is_as_accurate_as_bf16_flash_attention(kernel: bool, batch: int, lq: int, lk: int) -> None:
    torch.manual_seed(lq)
    q, k, v = heads(batch, lq, 3, scale=2.0), heads(batch, lk, 3, scale=2.0), heads(batch, lk, 3)
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    qb, kb, vb = q.bfloat16(), k.bfloat16(), v.bfloat16()
    ours = native.attention(qb, kb, vb)
    if not kernel:
        assert ours is None
        return
    assert ours is not None and ours.shape == (batch, 3, lq, native.HEAD_DIM) and ours.dtype == torch.bfloat16
    flash = F.scaled_dot_product_attention(qb, kb, vb)
    assert snr(exact, ours) >= snr(exact, flash) - 0.5
    assert snr(exact, ours) > 35


def test_native_attention_takes_only_what_it_was_written_for() -> None:
    q = heads(1, 8, 2).bfloat16()
    assert native.usable(q, q, q)
    assert native.usable(q, heads(1, 3, 2).bfloat16(), heads(1, 3, 2).bfloat16())  # other key count
    assert not native.usable(q.float(), q.float(), q.float())  # fp32
    wide = torch.randn(1, 2, 8, 32, dtype=torch.bfloat16)
    assert not native.usable(wide, wide, wide)  # heads of 32
    strided = torch.randn(1, 2, 8, 128, dtype=torch.bfloat16)[..., ::2]
    assert not native.usable(strided, strided, strided)  # dimension not contiguous
    assert not native.usable(q, heads(1, 8, 3).bfloat16(), heads(1, 8, 3).bfloat16())  # head counts differ
    assert not native.usable(q, q[:, :, :0], q[:, :, :0])  # no keys


def test_native_attention_propagates_nan_as_pytorch_does(kernel: bool) -> None:
    q, k, v = (heads(1, 9, 2).bfloat16() for _ in range(3))
    k[0, 1, 4, 7] = float("nan")
    ours = native.attention(q, k, v)
    if not kernel:
        assert ours is None
        return
    assert ours is not None
    assert torch.isnan(ours[0, 1]).all() and not torch.isnan(ours[0, 0]).any()
    assert torch.isnan(F.scaled_dot_product_attention(q, k, v)[0, 1]).all()


def test_cpu_flag_is_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16 avx512_vnni\n")
    assert native.cpu_supported(cpuinfo)
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16x avx512_vnni\n")
    assert not native.cpu_supported(cpuinfo)
    assert not native.cpu_supported(tmp_path / "missing")


def test_build_is_cached_by_source_and_reports_a_failing_compiler(tmp_path: Path) -> None:
    if native.cpu_supported():
        built = native.build(tmp_path / "ok")
        assert native.build(tmp_path / "ok", compiler=["false"]) == built  # a failing compiler: the cache is used
    wrapped = native.build(tmp_path / "wrapped", compiler=["env", "cc"])  # a command with arguments (ccache gcc)
    assert wrapped.name.startswith("attention-")
    with pytest.raises(RuntimeError, match="failed"):
        native.build(tmp_path / "fresh", compiler=["false"])
    assert list((tmp_path / "fresh").iterdir()) == []  # nothing half-written left behind


def test_build_reads_no_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CC", "false")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert native.default_compiler() and native.build(tmp_path / "plain").is_file()
    assert native.cache_dir() == DEFAULT_KERNEL_DIR.expanduser()


def test_configure_sets_the_directory_and_the_compiler(tmp_path: Path) -> None:
    try:
        native.configure(tmp_path / "configured", ["false"])
        assert native.cache_dir() == tmp_path / "configured"
        with pytest.raises(RuntimeError, match="false failed"):
            native.build(tmp_path / "fresh")
        assert native.build(tmp_path / "given", compiler=["env", "cc"]).parent == tmp_path / "given"
        if native.cpu_supported():  # the kernel is loaded from the configured directory
            native.configure(tmp_path / "loaded")
            assert native.library() is not None and list((tmp_path / "loaded").glob("attention-*.so"))
        native.configure()
        assert native.cache_dir() == DEFAULT_KERNEL_DIR.expanduser()
    finally:
        native.configure()


def test_attention_module_takes_the_kernel_only_when_active(kernel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    layer = nn.MultiheadAttention(128, 2, batch_first=True).eval()
    x, memory = torch.randn(1, 300, 128), torch.randn(1, 170, 128)
    with torch.inference_mode(), BF16:
        expected_self = layer(x, x, x, need_weights=False)[0]
        expected_cross = layer(x, memory, memory, need_weights=False)[0]
    fastpath.accelerate(layer)
    assert type(layer) is fastpath.NativeAttention
    calls: list[int] = []
    real = native.attention
    monkeypatch.setattr(native, "attention", lambda *a: calls.append(1) or real(*a))
    with torch.inference_mode(), BF16:
        assert torch.equal(layer(x, x, x, need_weights=False)[0], expected_self)  # inactive: PyTorch's own
        with fastpath.active(True):
            ours_self = layer(x, x, x, need_weights=False)[0]
            ours_cross = layer(x, memory, memory, need_weights=False)[0]
            with_weights = layer(x, x, x, need_weights=True)
        with fastpath.active(True):  # what the kernel cannot do keeps PyTorch's path
            layer(x, x, x, need_weights=False, key_padding_mask=torch.zeros(1, 300, dtype=torch.bool))
            layer(x[0], x[0], x[0], need_weights=False)  # unbatched
    with torch.enable_grad(), BF16, fastpath.active(True):
        layer(x, x, x, need_weights=False)  # training needs a backward the kernel does not have
    assert len(calls) == (2 if kernel else 0)
    assert with_weights[1] is not None  # asking for the weights keeps PyTorch's path
    assert snr(expected_self.float(), ours_self.float()) > 35
    assert snr(expected_cross.float(), ours_cross.float()) > 35


def trained_like_dconv(channels: int) -> DConv:
    """A DConv whose branch matters: layer scales and norms as training leaves them, not at init."""
    torch.manual_seed(channels)
    dconv = DConv(channels, compress=8, depth=2, init=1e-3).eval()
    for layer in dconv.layers:
        layer[-1].scale.data.uniform_(0.1, 1.0)
        layer[4].weight.data.uniform_(0.5, 1.5)
        layer[4].bias.data.normal_(0, 0.3)
    return dconv


def test_fused_dconv_equals_dconv(kernel: bool) -> None:
    dconv = trained_like_dconv(48)
    rows = fastpath.FUSE_MIN_ROWS + fastpath.FUSE_BLOCK_ROWS // 2 + 3  # a partial last block
    x = torch.randn(rows, 48, 90)
    few = x[:fastpath.FUSE_MIN_ROWS - 1]
    with torch.inference_mode():
        expected, expected_few = dconv(x), dconv(few)
        fastpath.accelerate(dconv)
        assert type(dconv) is fastpath.FusedDConv
        assert torch.equal(dconv(x), expected)  # inactive
        with fastpath.active(True):
            fused = dconv(x)
            narrow = dconv(few)
            with BF16:
                fused_under_autocast = dconv(x)
    assert fused.shape == expected.shape and fused.dtype == torch.float32
    assert (fused - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    assert torch.equal(fused_under_autocast, fused)  # fp32 inside, whatever the autocast
    assert torch.equal(narrow, expected_few)  # too few rows: the original


def test_fused_dconv_blocks_long_rows_over_time(kernel: bool) -> None:
    dconv = trained_like_dconv(16)
    x = torch.randn(1, 16, fastpath.FUSE_MIN_TIME + fastpath.FUSE_BLOCK_TIME // 3)
    with torch.inference_mode():
        expected = dconv(x)
        fastpath.accelerate(dconv)
        with fastpath.active(True):
            fused = dconv(x)
    assert (fused - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()


def test_pointwise_convolution_is_the_same_product() -> None:
    torch.manual_seed(2)
    conv2d, conv1d = nn.Conv2d(12, 20, 1).eval(), nn.Conv1d(12, 20, 1).eval()
    strided = nn.Conv1d(12, 20, 1, stride=2).eval()
    x2, x1 = torch.randn(1, 12, 33, 17), torch.randn(1, 12, 301)
    with torch.inference_mode():
        expected = [conv2d(x2), conv1d(x1)]
        batch = torch.randn(2, 12, 5)
        expected_batch = conv1d(batch)
        for module in (conv2d, conv1d, strided):
            fastpath.accelerate(module)
        assert type(conv2d) is fastpath.PointwiseConv2d and type(conv1d) is fastpath.PointwiseConv1d
        assert type(strided) is nn.Conv1d  # a stride is not a plain product
        with fastpath.active(True):
            got = [conv2d(x2), conv1d(x1)]
            assert torch.equal(conv1d(batch), expected_batch)  # more than one item: the convolution
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.shape == theirs.shape
        assert (ours - theirs).abs().max().item() <= 1e-5 * theirs.abs().max().item()


def test_dconv_with_an_lstm_or_no_layers_keeps_its_own_forward() -> None:
    for dconv in (DConv(16, compress=4, depth=2, lstm=True).eval(), DConv(16, depth=0).eval()):
        fastpath.accelerate(dconv)
        assert type(dconv) is DConv


def test_fused_dconv_leaves_other_dtypes_to_the_original() -> None:
    dconv = trained_like_dconv(16).double()
    x = torch.randn(fastpath.FUSE_MIN_ROWS, 16, 20, dtype=torch.float64)
    with torch.inference_mode():
        expected = dconv(x)
        fastpath.accelerate(dconv)
        with fastpath.active(True):
            assert torch.equal(dconv(x), expected)


def test_fast_forward_of_an_htdemucs_with_64_dim_heads(kernel: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_htdemucs(3, t_heads=1)  # a transformer of width 64 in one head: the kernel's shape
    state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    calls: list[int] = []
    real = native.attention
    monkeypatch.setattr(native, "attention", lambda *a: calls.append(1) or real(*a))
    mix = torch.randn(1, 2, 3 * 44100)
    with torch.inference_mode():
        exact = forward(ModelCall(model, mix, Precision.EXACT))
        fast = forward(ModelCall(model, mix, Precision.FAST))
        exact_again = forward(ModelCall(model, mix, Precision.EXACT))
    assert calls if kernel else not calls
    assert torch.equal(exact, exact_again)  # `exact` runs Demucs's own modules, unchanged
    assert model.state_dict().keys() == state.keys()
    assert all(torch.equal(model.state_dict()[name], tensor) for name, tensor in state.items())
    assert snr(exact, fast) > 30


@pytest.mark.parametrize("length", [343980, 44100, 1024 * 7])
def test_overlap_add_inverse_stft_equals_demucs(length: int) -> None:
    model = tiny_htdemucs(4)
    frames = -(-length // model.hop_length)  # as HTDemucs._spec makes them
    torch.manual_seed(length)
    z = torch.randn(1, 4, 2, model.nfft // 2, frames, dtype=torch.complex64)
    expected = model._ispec(z, length)
    fastpath.accelerate(model)
    assert type(model) is fastpath.OverlapAddHTDemucs
    assert torch.equal(model._ispec(z, length), expected)  # inactive
    with fastpath.active(True):
        ours = model._ispec(z, length)
        with pytest.raises(RuntimeError, match="window overlap"):  # too few frames: Demucs's own error
            model._ispec(z[..., :frames // 2], length)
    assert ours.shape == expected.shape == (1, 4, 2, length)
    assert (ours - expected).abs().max().item() <= 1e-5 * expected.abs().max().item()
