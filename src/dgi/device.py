"""Where tensors live and in which precision: `train.device` and `train.precision` turned into torch terms."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from functools import wraps
from pathlib import Path
from typing import TypeVar

import faiss
import torch

from dgi.provenance import cpu_flags

_NATIVE_BF16_FLAGS = {"avx512_bf16", "amx_bf16"}
F = TypeVar("F", bound=Callable)


def set_threads(threads: int) -> None:
    """One thread setting for every compute library the project uses (torch, and FAISS's OpenMP pool for
    k-means and exact search): two pools of N threads each on N cores oversubscribe them."""
    torch.set_num_threads(threads)
    faiss.omp_set_num_threads(threads)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present; an explicit CUDA device that is missing is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but no CUDA device is available (use cpu or auto)")
    return device


def cpu_has_native_bf16(cpuinfo: Path = Path("/proc/cpuinfo")) -> bool:
    """Whether the CPU computes bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    return bool(_NATIVE_BF16_FLAGS & cpu_flags(cpuinfo))


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of `train.precision` on `device`: None means plain fp32.

    `auto` takes bf16 only where it is native (a CUDA GPU that supports it, or a CPU with AVX512-BF16 /
    AMX), so it never makes training slower; `bf16` forces it (emulated where not native).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    native = torch.cuda.is_bf16_supported() if device.type == "cuda" else cpu_has_native_bf16()
    return torch.bfloat16 if native else None


@contextlib.contextmanager
def autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
        yield


def full_precision(function: F) -> F:
    """Run `function` in fp32 even under autocast: code assignments (argmax over cosine logits, the SID
    targets) and scaled logits (gamma 30, temperature 0.05) lose too much at bf16's 8-bit mantissa."""

    @wraps(function)
    def wrapper(*args, **kwargs):
        device_type = next((a.device.type for a in args if isinstance(a, torch.Tensor)), "cpu")
        if not torch.is_autocast_enabled(device_type):
            return function(*args, **kwargs)
        args = [a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args]
        with torch.autocast(device_type=device_type, enabled=False):
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
