"""The machine beneath PyTorch: the native bf16 attention kernel (attention.c). (glibc's allocator is
the process's choice: `sami_gateway.runtime.heap`.)"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..defaults import DEFAULT_KERNEL_DIR

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("attention.c")
FLAGS = ["-O3", "-shared", "-fPIC", "-fopenmp",
         "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16", "-mfma"]
HEAD_DIM = 64
CPU_FLAG = "avx512_bf16"
COMPILERS = ("cc", "gcc")  # looked up on PATH when no compiler command is given


@dataclass(frozen=True)
class BuildSettings:
    """Where the kernel is built and cached, and the compiler command (None: `COMPILERS` on PATH)."""

    cache_dir: Path = DEFAULT_KERNEL_DIR
    compiler: tuple[str, ...] | None = None


_settings = BuildSettings()  # replaced by `configure`; nothing here reads the environment


def cpu_supported(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether this CPU has the AVX512-BF16 dot products the kernel is written with."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return False
    return any(line.startswith("flags") and CPU_FLAG in line.split() for line in text.splitlines())


def configure(cache_dir: Path | str | None = None, compiler: Sequence[str] | None = None) -> None:
    """Build the kernel in `cache_dir` with `compiler` (a command and its arguments, e.g.
    ["ccache", "gcc"]); None keeps the library's default. Call it before the first separation:
    a kernel already loaded is let go and the next call to `library` loads it afresh."""
    global _settings
    _settings = BuildSettings(Path(cache_dir) if cache_dir is not None else DEFAULT_KERNEL_DIR,
                                 tuple(compiler) if compiler is not None else None)
    library.cache_clear()


def cache_dir() -> Path:
    """The directory `library` builds the kernel in and loads it from."""
    return _settings.cache_dir.expanduser()


def default_compiler() -> list[str]:
    """The first of `COMPILERS` on PATH, or [] where there is none."""
    found = next((path for path in map(shutil.which, COMPILERS) if path), None)
    return [found] if found else []


def build(target_dir: Path | str, compiler: Sequence[str] | None = None) -> Path:
    """Compile attention.c into `target_dir` with `compiler` (default: the configured one, else
    `default_compiler()`) unless this source was built there already."""
    command = list(compiler or _settings.compiler or default_compiler())
    if not command:
        raise RuntimeError(f"no C compiler ({' or '.join(COMPILERS)}) on PATH")
    target_dir = Path(target_dir)
    source = SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join(FLAGS).encode()).hexdigest()[:16]
    target = target_dir / f"attention-{digest}.so"
    if target.exists():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target_dir) as scratch:
        built = Path(scratch) / target.name
        result = subprocess.run([*command, *FLAGS, "-o", str(built), str(SOURCE)],
                                capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {result.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: a concurrent builder finds a whole file or none
    return target


@functools.cache
def library() -> ctypes.CDLL | None:
    """The loaded kernel, or None (logged once) where it cannot run here.

    It is built with the configured compiler on first use, cached in `cache_dir()` by the hash of
    its source (a private directory of this process where that one is not writable), loaded with
    ctypes and run on PyTorch's OpenMP threads. Without AVX512-BF16 or a working compiler, callers
    keep PyTorch's scaled_dot_product_attention.
    """
    if not cpu_supported():
        log.info("native attention off: this CPU has no %s", CPU_FLAG)
        return None
    for directory in (cache_dir(), None):  # None: a private directory of this process's own
        try:
            lib = ctypes.CDLL(str(build(directory or Path(tempfile.mkdtemp(prefix="sami-gateway-native-")))))
        except (OSError, RuntimeError, subprocess.SubprocessError) as error:
            log.warning("native attention: cannot build in %s: %s", directory, error)
            continue
        pointer, count = ctypes.c_void_p, ctypes.c_long
        lib.attend.argtypes = [pointer] * 4 + [count] * 3 + [pointer] * 4 + [count, ctypes.c_int, ctypes.c_float]
        lib.attend.restype = ctypes.c_int
        return lib
    log.warning("native attention off: PyTorch's attention is used instead")
    return None


def usable(q: Tensor, k: Tensor, v: Tensor) -> bool:
    """Shapes and layouts the kernel takes: bf16 (batch, heads, length, 64) on CPU, rows contiguous."""
    return (q.device.type == "cpu" and q.dim() == 4 and q.shape[-1] == HEAD_DIM
            and all(t.dtype == torch.bfloat16 and t.stride(-1) == 1 and t.dim() == 4 for t in (q, k, v))
            and k.shape == v.shape and k.shape[:2] == q.shape[:2] and k.shape[-1] == HEAD_DIM
            and k.shape[2] > 0 and q.shape[2] > 0)


def attention(q: Tensor, k: Tensor, v: Tensor) -> Tensor | None:
    """softmax(q k^T / sqrt(64)) v for bf16 (batch, heads, length, 64) views, or None where the
    kernel cannot take them. The result is a (batch, heads, length, 64) view of a contiguous
    (batch, length, heads, 64) tensor, the layout multi-head attention merges heads from."""
    lib = library()
    if lib is None or not usable(q, k, v):
        return None
    with torch.profiler.record_function("sami::native_attention"):  # its threads are invisible to the profiler
        return _run(lib, q, k, v)


def _run(lib: ctypes.CDLL, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    batch, heads, lq, _ = q.shape
    out = torch.empty(batch, lq, heads, HEAD_DIM, dtype=torch.bfloat16).transpose(1, 2)
    strides = [(ctypes.c_long * 3)(*t.stride()[:3]) for t in (q, k, v, out)]
    code = lib.attend(q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), heads, lq, k.shape[2],
                      *(ctypes.cast(s, ctypes.c_void_p) for s in strides), batch * heads,
                      torch.get_num_threads(), HEAD_DIM ** -0.5)
    if code != 0:
        raise MemoryError("native attention could not allocate its work buffers")
    return out
