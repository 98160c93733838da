"""Machinery shared by the fast modules (``svmixer.py``, ``frontend.py``, ``ecapa.py``).

- :func:`adopt_children`: a fast module holds the reference's submodules (shared parameters);
- :func:`tracing`: whether a graph is being recorded (then fast modules run the reference code);
- :class:`DerivedWeights`: weights derived from parameters, cached until a parameter changes;
- :class:`Workspace` / ``WORKSPACE``: per-thread scratch buffers reused across calls and modules
  (``get``: one buffer per name and shape; ``scratch``: one memory region shared by several uses);
- :func:`gelu_`: the exact (erf) GELU in place.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import Callable, Dict, Optional, Tuple

import torch
from torch import nn

gelu_ = torch.ops.aten.gelu_  # exact (erf) GELU in place


def adopt_children(fast: nn.Module, reference: nn.Module) -> None:
    """Register ``reference``'s children on ``fast`` under the same names: shared parameters, and the
    same ``state_dict()`` keys (checkpoints load into and save from either)."""
    for name, child in reference.named_children():
        fast.add_module(name, child)


def tracing() -> bool:
    """True while torch.jit.trace, torch.export/ONNX or torch.compile records the graph."""
    return (torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()
            or torch.onnx.is_in_onnx_export())


class DerivedWeights:
    """Weights derived from parameters, recomputed only when a source parameter changes (its
    version counter moves, e.g. after ``load_state_dict``)."""

    def __init__(self):
        self._cache: Dict[str, tuple] = {}

    def get(self, name: str, make: Callable[[], torch.Tensor], *sources: torch.Tensor) -> torch.Tensor:
        # inference tensors (parameters created under inference_mode) have no version counter
        key = tuple((p.data_ptr(), -1 if p.is_inference() else p._version) for p in sources)
        hit = self._cache.get(name)
        if hit is None or hit[0] != key:
            with torch.inference_mode(False), torch.no_grad():  # usable in and out of inference mode
                hit = self._cache[name] = (key, make().contiguous())
        return hit[1]


class Workspace(threading.local):
    """Scratch buffers of one thread, looked up by (name, shape, dtype, device) and reused.

    ``init`` fills a new buffer's constant parts (a column of ones, zero padding), which no caller
    overwrites. The least recently used buffers are dropped beyond ``capacity`` (a few batch shapes).
    """

    capacity = 48

    def __init__(self):
        self.buffers: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()

    def get(self, name: str, shape: Tuple[int, ...], like: torch.Tensor,
            init: Optional[Callable[[torch.Tensor], object]] = None) -> torch.Tensor:
        key = (name, tuple(shape), like.dtype, like.device)
        buffer = self._lookup(key)
        if buffer is None:
            buffer = self._allocate(key, shape, like)
            if init is not None:
                with torch.inference_mode(False):
                    init(buffer)
        return buffer

    def scratch(self, name: str, shape: Tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A view of shape ``shape`` into one flat buffer per ``name`` (grown to the largest request),
        contents undefined: uses with disjoint lifetimes share its memory, which stays in cache."""
        numel = math.prod(shape)
        key = (name, None, like.dtype, like.device)
        buffer = self._lookup(key)
        if buffer is None or buffer.numel() < numel:
            buffer = self._allocate(key, (numel,), like)
        return buffer[:numel].view(shape)

    def _lookup(self, key: tuple) -> Optional[torch.Tensor]:
        buffer = self.buffers.get(key)
        if buffer is not None:
            self.buffers.move_to_end(key)
        return buffer

    def _allocate(self, key: tuple, shape: Tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
            buffer = self.buffers[key] = like.new_empty(shape)
        while len(self.buffers) > self.capacity:
            self.buffers.popitem(last=False)
        return buffer


WORKSPACE = Workspace()
