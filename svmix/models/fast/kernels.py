"""The fused float32 CPU kernels of the fast SV-Mixer blocks (``kernels.cpp``; building, caching and
switching them off: see the package docstring).

``kernels()`` builds the C++ file once per instruction set and torch version with
``torch.utils.cpp_extension`` (for the instruction set PyTorch itself uses here) and returns the
``torch.ops.svmix_cpu`` namespace, or None when they are switched off or do not build (one warning):

- ``layer_norm_into(x, weight, bias, eps, out)``: LayerNorm of (R, H) rows written straight into a
  strided (R, G, H/G) view of a GEMM input buffer (PyTorch's ``.out`` variant stages a copy);
- ``local_mixing(x, y, first_taps, first_bias, second_taps, second_bias)``: the LGM local branch,
  x + conv(GELU(conv(y))) with depthwise convs over time, in one pass over (T, B, H) frames;
- ``upsample_add_into(z, low, index, weight, bias, out)``: the merge input of multi-scale mixing, the
  full-rate path z plus the linearly upsampled half-rate path plus the biases, into a strided view;
- ``gelu_transpose_into(src, out)``: GELU of (G, R, h) written as (R, G, h).
"""
from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import Optional

import torch

from svmix.utils.logging import DETAIL

logger = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("kernels.cpp")
ISA_FLAGS = {  # what ATen's own kernels for each capability are compiled with
    "AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
    "AVX2": ["-mavx2", "-mfma", "-mf16c"],
}


@functools.lru_cache(maxsize=None)
def kernels() -> Optional[object]:
    """The compiled ``torch.ops.svmix_cpu`` kernels, or None (then use the PyTorch fallbacks)."""
    if os.environ.get("SVMIX_CPU_KERNELS", "1") == "0":
        return None
    capability = torch.backends.cpu.get_cpu_capability()
    # one build per instruction set (home dirs shared by different machines) and per torch (its ABI);
    # not the name older checkouts build svmix/models/cpu_kernels.cpp under, so they do not rebuild each other's
    name = re.sub(r"\W", "_", f"svmix_fast_kernels_{capability}_torch{torch.__version__}").lower()
    logger.info("svmix: loading the fused CPU kernels (%s; compiled on first use on a machine, about 10 s)", name,
                extra=DETAIL)  # each process says it: the log file keeps it, a pipe need not
    try:
        cpp_extension = _import_cpp_extension()
        cpp_extension.load(name=name, sources=[str(SOURCE)], is_python_module=False,
                           extra_cflags=["-O3", "-fopenmp", *ISA_FLAGS.get(capability, [])],
                           extra_ldflags=["-fopenmp"])
    except Exception as error:  # no compiler, no ninja, no OpenMP, ...: the fallbacks compute the same
        lines = str(error).strip().splitlines() or [type(error).__name__]
        reason = next((line for line in lines if "error:" in line), lines[0]).strip()  # the compiler's diagnostic
        logger.warning("svmix: fused CPU kernels unavailable (%s); using the PyTorch fallbacks", reason[:300])
        return None
    return torch.ops.svmix_cpu


def _import_cpp_extension():
    """``torch.utils.cpp_extension``, without the warning its import logs on a machine with a CUDA
    toolkit but no GPU (a line in every CPU tool's log that says nothing about the kernels)."""
    import_logger = logging.getLogger("torch.utils.cpp_extension")
    level = import_logger.level
    import_logger.setLevel(logging.ERROR)
    try:
        from torch.utils import cpp_extension
    finally:
        import_logger.setLevel(level)
    return cpp_extension


def usable(x: torch.Tensor) -> Optional[object]:
    """The kernels when they can process ``x`` (a float32 CPU tensor), else None."""
    if x.device.type != "cpu" or x.dtype != torch.float32:
        return None
    return kernels()
