"""Switch a trained student to the fast CPU inference path.

``prepare_for_inference(model)`` works in place on a SpeakerModel, a bare encoder, or anything
holding them, and shares all parameters (``state_dict()`` keys are unchanged):

- every waveform CNN (``ConvFrontend``) becomes a ``FastConvFrontend`` (``svmix.models.frontend_fast``:
  layer 0's GroupNorm folded into its conv, the other layers as channels-last GEMMs), for every student;
- every reference SV-Mixer block of a frame encoder becomes a ``FastSVMixerBlock``
  (``svmix.models.svmixer_fast``) and that encoder switches to the fast blocks' time-major layout;
  encoders without SV-Mixer blocks (e.g. the Transformer) are left alone;
- every ECAPA-TDNN backend (``ECAPABackend``) becomes a ``FastECAPABackend`` (``svmix.models.ecapa_fast``:
  channels-last GEMMs, the k-tap convs as accumulating GEMMs over time-shifted views, no 3C-wide
  attention context).

Outputs stay equal to the reference within float32 rounding (≤ 1e-5 relative). The model must be in
eval mode: fast modules ignore dropout. Calling it twice changes nothing.
"""
from __future__ import annotations

from torch import nn

from svmix.models.ecapa import ECAPABackend
from svmix.models.ecapa_fast import FastECAPABackend
from svmix.models.frontend import ConvFrontend
from svmix.models.frontend_fast import FastConvFrontend
from svmix.models.svmixer import FrameEncoder, SVMixerBlock
from svmix.models.svmixer_fast import FastSVMixerBlock


def prepare_for_inference(model: nn.Module) -> nn.Module:
    if model.training:
        raise ValueError("prepare_for_inference needs an eval-mode model (call model.eval() first)")
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child) is ConvFrontend:
                setattr(module, name, FastConvFrontend(child))
            elif type(child) is ECAPABackend:
                setattr(module, name, FastECAPABackend(child))
        if isinstance(module, FrameEncoder) and len(module.blocks) \
                and all(isinstance(block, SVMixerBlock) for block in module.blocks):
            for i, block in enumerate(module.blocks):
                module.blocks[i] = FastSVMixerBlock(block)
            module.block_layout = FastSVMixerBlock.layout
    return model


def uses_fast_path(model: nn.Module) -> bool:
    """True when ``model`` contains fast modules (i.e. ``prepare_for_inference`` has been applied)."""
    return any(isinstance(m, (FastSVMixerBlock, FastConvFrontend, FastECAPABackend)) for m in model.modules())
