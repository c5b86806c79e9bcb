"""The same model from the same data on every x86-64 CPU: the numerical paths that PyTorch picks by
instruction set are pinned before torch is imported (`export/__init__.py` calls `pin` first).

Why each setting is there, measured with torch 2.13.0+cpu on an AMD EPYC with AVX-512 (max |difference|
of the MLP's predictions on the 506 rows between whole exports, each setting varied alone):
- MKL_CBWR=COMPATIBLE: MKL, which runs the Linear layers' GEMMs, picks its kernels by CPU (AVX-512 on
  Intel Xeon, AVX2 on AMD EPYC): 2.67 without it. With it MKL takes one code path on every CPU, and
  MKL_ENABLE_INSTRUCTIONS (AVX512, AVX2, SSE4_2) no longer changes anything (0).
- ATEN_CPU_CAPABILITY=default: ATen's own kernels (the loss, its gradient, AdamW's update) are built
  once per instruction set, AVX2 and AVX-512 with fused multiply-adds: 0.357 between `default` and
  avx2 or avx512. `default` is the build for the x86-64 baseline, the same code on every CPU.
- DNNL_MAX_CPU_ISA=SSE41: changes nothing today (these layers run on MKL, not oneDNN); pinned so that
  a torch that routes them to oneDNN's JIT kernels stays reproducible.
- Adam's square root: not an instruction-set setting at all. torch's goes to MKL's vector math, which
  picks its code by CPUID and is not correctly rounded; `export/adam.py` takes it with numpy instead
  (an Intel Xeon and an emulated AMD EPYC gave different weights after 20 epochs before, the same after).
A tiny difference becomes a different model because early stopping then keeps another epoch.
The pins cost ~10% of the export's time (10.6 s instead of 9.3 s).
"""

from __future__ import annotations

import ctypes
import os
import platform
from importlib.metadata import version
from pathlib import Path
from typing import Any

from export.errors import ExportError

PINNED = {"MKL_CBWR": "COMPATIBLE", "ATEN_CPU_CAPABILITY": "default", "DNNL_MAX_CPU_ISA": "SSE41"}
LIBRARIES = ("numpy", "scikit-learn", "torch", "onnx", "skl2onnx", "onnxscript", "onnxruntime", "tqdm")
# What torch and MKL report once the pins are in force.
_ATEN_CAPABILITY = "DEFAULT"
_MKL_CBWR_BRANCH, _MKL_CBWR_COMPATIBLE = 1, 3  # mkl_service.h: MKL_CBWR_BRANCH, MKL_CBWR_COMPATIBLE
# The instruction-set extensions that decide which kernels a library would pick, as /proc/cpuinfo names them.
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_tile")


def pin() -> None:
    """Override whatever the environment says: a user's own setting would give another model."""
    os.environ.update(PINNED)


def check() -> None:
    """Raise unless torch runs with the pins (they are read once, when torch first loads)."""
    import torch

    torch.set_num_threads(1)  # a sum split over threads is reduced in an order that depends on their count
    torch.use_deterministic_algorithms(True)
    found = {"aten": torch.backends.cpu.get_cpu_capability(), "mkl_cbwr": _mkl_cbwr_branch()}
    if found != {"aten": _ATEN_CAPABILITY, "mkl_cbwr": _MKL_CBWR_COMPATIBLE}:
        raise ExportError(f"torch runs unpinned CPU kernels ({found}): it was imported before the export "
                          f"package could set {PINNED}; import export before torch")


def training_environment() -> dict[str, Any]:
    """The exporting machine and what made its training reproducible, for the ONNX metadata."""
    import torch

    check()
    return {
        "cpu": _cpu_model(),
        "instruction_sets": [flag for flag in _ISA_FLAGS if flag in _cpu_flags()],
        "pinned": PINNED,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": torch.get_num_threads(),
        "libraries": {"python": platform.python_version(), **{name: version(name) for name in LIBRARIES}},
    }


def _mkl_cbwr_branch() -> int:
    import torch

    library = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"))
    branch: int = library.mkl_serv_cbwr_get(_MKL_CBWR_BRANCH)
    return branch


def _cpuinfo() -> dict[str, str]:
    path = Path("/proc/cpuinfo")
    lines = path.read_text().splitlines() if path.exists() else []
    first: dict[str, str] = {}
    for key, _, value in (line.partition(":") for line in lines):
        first.setdefault(key.strip(), value.strip())
    return first


def _cpu_model() -> str:
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    return set(_cpuinfo().get("flags", "").split())
