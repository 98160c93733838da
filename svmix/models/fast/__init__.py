"""The fast CPU inference path: inference-only versions of a student's modules that compute what the
reference modules (``svmix.models``) compute, faster on a CPU.

What it is. :func:`prepare_for_inference` (``model.py``) switches a trained model in place; it works
on a ``SpeakerModel``, a bare encoder, or anything holding them:

- every waveform CNN (``ConvFrontend``) becomes a ``FastConvFrontend`` (``frontend.py``);
- every SV-Mixer block of a frame encoder becomes a ``FastSVMixerBlock`` (``svmixer.py``), and that
  encoder feeds its blocks time-major (T, B, H) frames; encoders without SV-Mixer blocks (Transformer,
  CycleMLP, ConvMixer) keep their reference blocks;
- every ECAPA-TDNN backend (``ECAPABackend``) becomes a ``FastECAPABackend`` (``ecapa.py``).

``common.py`` holds what they share: adopting the reference's submodules, weights derived from
parameters (cached until a parameter changes), and per-thread scratch buffers reused across calls.
Each module's own docstring says how it computes faster.

When it is used. The PyTorch segment embedder (``svmix.inference.embedder.SegmentEmbedder``) switches
its model, so extraction (``svmix-extract --runtime torch``) and ``svmix.load_model`` run it.
``svmix-export`` switches the model too and traces it; while a graph is recorded (torch.jit.trace,
ONNX, torch.export, torch.compile) the fast modules run the reference computation, so exported graphs
keep a dynamic batch axis. Training and validation during training use the reference modules.

Equivalence guarantee. Outputs equal the reference modules' within float32 rounding (≤ 1e-5 relative
to the output's scale; ``tests/test_fast_*.py`` check it with and without the C++ kernels). The fast
modules hold the reference's submodules: parameters are shared and ``state_dict()`` keys and values
are unchanged, so checkpoints load into and save from either (checkpoints store a state dict and the
model config, never module classes). The model must be in eval mode (``prepare_for_inference``
refuses a training-mode model): the fast modules ignore dropout and compute no gradients. Switching
twice changes nothing.

C++ kernels. On a CPU, the element-wise chains between the SV-Mixer block's GEMMs run as fused float32
kernels (``kernels.cpp``; ``kernels.py`` lists them), one pass each instead of two to four PyTorch
passes. They are compiled on first use on a machine with ``torch.utils.cpp_extension`` (a C++ compiler
with OpenMP, and ninja; about 10 s), once per instruction set and torch version, and the build is
cached in ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``). If the build fails, one
warning is logged and the fast modules run PyTorch fallbacks that compute the same. Setting
``SVMIX_CPU_KERNELS=0`` switches the kernels off (they are then not even built): the fallbacks run.
"""
from svmix.models.fast.model import prepare_for_inference, uses_fast_path  # noqa: F401
