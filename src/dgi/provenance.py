"""Where a number came from: the git commit and the machine, recorded with every benchmark result."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

import torch


def git_commit() -> str:
    """HEAD of the checkout this code runs from, with "-dirty" when tracked files differ from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).parent).stdout.strip()
    try:
        return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "--untracked-files=no") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine(device: str = "cpu") -> dict:
    """Platform, CPU model and count, torch threads and version, accelerator, and the load average now
    (timings on a shared machine mean little without it)."""
    name = "cpu"
    if device != "cpu" and torch.cuda.is_available():
        name = torch.cuda.get_device_name()
    return {"platform": platform.platform(), "processor": cpu_model(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "device": name, "load_average_1min": os.getloadavg()[0],
            "vector_extensions": sorted(cpu_flags() & _VECTOR_FLAGS)}


_VECTOR_FLAGS = {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile"}  # what CPU timings depend on most


def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (empty where /proc/cpuinfo is missing)."""
    return set(_cpuinfo_field("flags", cpuinfo).split())


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    return _cpuinfo_field("model name", cpuinfo) or platform.processor()


def _cpuinfo_field(name: str, cpuinfo: Path) -> str:
    """The first value of `name` in /proc/cpuinfo, read up to that line only ("" where absent)."""
    try:
        with cpuinfo.open(encoding="utf-8", errors="replace") as lines:
            return next((line.split(":", 1)[1].strip() for line in lines if line.startswith(name)), "")
    except OSError:
        return ""


def resident_bytes() -> int:
    """This process's resident memory now (Linux /proc; page size from the OS)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
