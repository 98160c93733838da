"""Switch a trained student to the fast CPU inference path (``svmix.models.svmixer_fast``).

``prepare_for_inference(model)`` replaces, in place, every reference SV-Mixer block of every
channels-first frame encoder inside ``model`` (a SpeakerModel, a bare encoder, or anything holding
them) by its fast equivalent, which shares the same parameters, and switches that encoder to (B, T, H)
blocks. Outputs stay equal to the reference within float rounding (≤ 1e-5). Encoders without
SV-Mixer blocks (e.g. the Transformer) are left alone; calling it twice changes nothing. (The
waveform CNN is left as is: its mkldnn convolutions already run at GEMM speed.)

The model must be in eval mode: fast blocks ignore dropout. ``state_dict()`` keys are unchanged.
"""
from __future__ import annotations

from torch import nn

from svmix.models.svmixer import FrameEncoder, SVMixerBlock
from svmix.models.svmixer_fast import FastSVMixerBlock


def prepare_for_inference(model: nn.Module) -> nn.Module:
    if model.training:
        raise ValueError("prepare_for_inference needs an eval-mode model (call model.eval() first)")
    for module in model.modules():
        if isinstance(module, FrameEncoder) and module.channels_first and len(module.blocks) \
                and all(isinstance(block, SVMixerBlock) for block in module.blocks):
            for i, block in enumerate(module.blocks):
                module.blocks[i] = FastSVMixerBlock(block)
            module.channels_first = False  # fast blocks take (B, T, H): no transposes at all
    return model


def uses_fast_path(model: nn.Module) -> bool:
    """True when ``model`` contains fast blocks (i.e. ``prepare_for_inference`` has been applied)."""
    return any(isinstance(m, FastSVMixerBlock) for m in model.modules())
