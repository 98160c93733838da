"""Assembly of the fast path (see the package docstring): ``prepare_for_inference`` switches a model's
modules to their fast versions in place (optionally with int8 SV-Mixer blocks, ``int8.py``),
``uses_fast_path`` tells whether that has been done."""
from __future__ import annotations

from torch import nn

from svmix.models.ecapa import ECAPABackend
from svmix.models.encoder import FrameEncoder
from svmix.models.fast.ecapa import FastECAPABackend
from svmix.models.fast.frontend import FastConvFrontend
from svmix.models.fast.int8 import Int8SVMixerBlock
from svmix.models.fast.svmixer import FastSVMixerBlock
from svmix.models.frontend import ConvFrontend
from svmix.models.svmixer import SVMixerBlock


PRECISIONS = ("float32", "int8")


def prepare_for_inference(model: nn.Module, precision: str = "float32") -> nn.Module:
    """Switch ``model`` (eval mode) to the fast path in place and return it; a second call changes nothing.

    ``precision="int8"``: SV-Mixer blocks become int8 blocks (``int8.py``: GEMMs with int8 weights
    and dynamically quantised activations; CPU only, not exportable); the rest is as for float32.
    Blocks already switched keep their precision."""
    if model.training:
        raise ValueError("prepare_for_inference needs an eval-mode model (call model.eval() first)")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    block_type = Int8SVMixerBlock if precision == "int8" else FastSVMixerBlock
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is ConvFrontend:
                setattr(module, name, FastConvFrontend(child))
            elif type(child) is ECAPABackend:
                setattr(module, name, FastECAPABackend(child))
        if isinstance(module, FrameEncoder) and len(module.blocks) \
                and all(isinstance(block, SVMixerBlock) for block in module.blocks):
            for i, block in enumerate(module.blocks):
                module.blocks[i] = block_type(block)
            module.block_layout = block_type.layout
    return model


def uses_fast_path(model: nn.Module) -> bool:
    """True when ``model`` contains fast modules (i.e. ``prepare_for_inference`` has been applied)."""
    return any(isinstance(m, (FastSVMixerBlock, Int8SVMixerBlock, FastConvFrontend, FastECAPABackend)) for m in model.modules())
