"""The fast CPU inference path computes exactly what the reference SV-Mixer computes."""
import itertools

import pytest
import torch

from svmix.models import build_model
from svmix.models.fast import kernels as cpu_kernels
from svmix.models.fast import prepare_for_inference, uses_fast_path
from svmix.models.fast import svmixer as svmixer_fast
from svmix.models.fast.frontend import FastConvFrontend
from svmix.models.fast.svmixer import FastSVMixerBlock
from svmix.models.svmixer import SVMixerBlock, SVMixerEncoder

TOL = 1e-5
# (lgm, msm, gcm, lgm_mode): the code's block, the paper's sequential LGM and every Table II ablation
VARIANTS = [(True, True, True, "parallel"), (True, True, True, "sequential")] + [
    (lgm, msm, gcm, "parallel") for lgm, msm, gcm in itertools.product((True, False), repeat=3)
    if not (lgm and msm and gcm)]


@pytest.fixture(params=["fused", "pytorch"])
def kernel_path(request, monkeypatch):
    """Run once with the fused CPU kernels and once with their PyTorch fallbacks."""
    if request.param == "pytorch":
        monkeypatch.setattr(cpu_kernels, "usable", lambda x: None)
    elif cpu_kernels.kernels() is None:
        pytest.skip("the fused CPU kernels are not available here")
    return request.param


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Non-default weights and clearly non-zero biases, so a dropped or misplaced term shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.2))


def _time_major(x: torch.Tensor) -> torch.Tensor:
    """(B, T, H) → the fast blocks' (T, B, H)."""
    return x.transpose(0, 1).contiguous()


def _compare_block(hidden, seq_len, group_dim, batch, variant, seed=0):
    lgm, msm, gcm, mode = variant
    ref = SVMixerBlock(hidden, seq_len, group_dim, lgm=lgm, msm=msm, gcm=gcm, lgm_mode=mode).eval()
    _randomise(ref, seed)
    fast = FastSVMixerBlock(ref)
    x = torch.randn(batch, seq_len, hidden, generator=torch.Generator().manual_seed(seed + 1))
    with torch.inference_mode():
        expected = ref(x.transpose(1, 2)).transpose(1, 2)
        got = fast(_time_major(x)).transpose(0, 1)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() <= TOL
    return expected


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "lgm{:d}-msm{:d}-gcm{:d}-{}".format(*v))
@pytest.mark.parametrize("seq_len", [37, 20])  # odd: the average pool drops the last frame
def test_fast_block_matches_reference_for_every_variant(variant, seq_len, kernel_path):
    expected = _compare_block(32, seq_len, 8, 3, variant)
    assert expected.abs().max() > 0.5  # the comparison is not between near-zero tensors


def test_fast_block_matches_reference_at_full_size(kernel_path):
    _compare_block(1024, 149, 128, 2, VARIANTS[0])


@pytest.mark.parametrize("variant", VARIANTS[:2] + [(False, False, False, "parallel")],
                         ids=["lgm-parallel", "lgm-sequential", "vanilla"])
def test_tiles_and_reused_workspace_give_the_same_result(monkeypatch, variant, kernel_path):
    """Uneven tiles (a short last one), several batch sizes in turn (the workspace keeps buffers per
    shape, constant parts written once) and results that never alias the workspace."""
    lgm, msm, gcm, mode = variant
    ref = SVMixerBlock(48, 37, 8, lgm=lgm, msm=msm, gcm=gcm, lgm_mode=mode).eval()
    _randomise(ref, 3)
    fast = FastSVMixerBlock(ref)
    # batch 5: a group's hidden is 5·37 frames × 32 = 5920 elements → 6 groups in tiles of 4 + 2
    # (a power of two per tile); one dense group (vanilla) → tiles of 125 + 60 frames;
    # 5·48 = 240 columns → time tiles of 70, 70, 70, 30
    monkeypatch.setattr(svmixer_fast, "HIDDEN_TILE", 24000)
    monkeypatch.setattr(svmixer_fast, "COLUMN_TILE", 70)
    with torch.inference_mode():
        results = []
        for batch in (5, 2, 5, 1):
            x = torch.randn(batch, 37, 48)
            got = fast(_time_major(x)).transpose(0, 1)
            results.append((got, got.clone(), ref(x.transpose(1, 2)).transpose(1, 2)))
    for got, copy, expected in results:
        assert torch.equal(got, copy)  # later calls did not overwrite an earlier result
        assert (got - expected).abs().max() <= TOL


def test_fast_block_runs_outside_inference_mode_without_gradients():
    ref = SVMixerBlock(32, 37, 8).eval()
    fast = FastSVMixerBlock(ref)
    x = torch.randn(37, 2, 32)
    with torch.inference_mode():
        first = fast(x)  # caches derived weights inside inference mode
    again = fast(x)  # grad mode: must still work
    assert not again.requires_grad
    assert torch.equal(first, again)


def test_fast_block_refuses_training_mode():
    fast = FastSVMixerBlock(SVMixerBlock(32, 37, 8).eval())
    fast.train()
    with pytest.raises(RuntimeError, match="inference only"):
        fast(torch.randn(37, 1, 32))


TINY = {"hidden": 32, "embed_dim": 8, "segment_seconds": 1.0, "frontend": {"channels": 16},
        "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 8},
        "backend": {"name": "ecapa", "channels": 16, "se_bottleneck": 8, "pooled_channels": 48,
                    "attention_bottleneck": 8}}


def _tiny_model(config=TINY, seed=0):
    torch.manual_seed(seed)
    model = build_model(config).eval()
    _randomise(model.encoder, seed)
    return model


def test_prepare_for_inference_keeps_embeddings_and_states():
    model = _tiny_model()
    wav = torch.randn(3, model.segment_samples, generator=torch.Generator().manual_seed(5))
    keys = list(model.state_dict())
    with torch.inference_mode():
        ref_states, ref_emb = model.hidden_states(wav), model(wav)
        assert prepare_for_inference(model) is model
        prepare_for_inference(model)  # idempotent
        states, emb = model.hidden_states(wav), model(wav)
    assert uses_fast_path(model)
    assert all(isinstance(b, FastSVMixerBlock) for b in model.encoder.blocks)
    assert isinstance(model.frontend.feature_extractor, FastConvFrontend)
    assert list(model.state_dict()) == keys  # checkpoints still load into / save from it
    assert (states - ref_states).abs().max() <= TOL
    assert (emb - ref_emb).abs().max() <= TOL


def test_prepare_for_inference_on_bare_encoder_and_other_encoders():
    encoder = SVMixerEncoder(32, 37, 2, group_dim=8).eval()
    x = torch.randn(2, 37, 32)
    with torch.inference_mode():
        expected = encoder(x)
        got = prepare_for_inference(encoder)(x)
    assert (got - expected).abs().max() <= TOL

    transformer = _tiny_model({**TINY, "encoder": {"name": "transformer", "num_layers": 1, "num_heads": 4}})
    wav = torch.randn(2, transformer.segment_samples)
    with torch.inference_mode():
        expected = transformer(wav)
        before = {k: v.clone() for k, v in transformer.state_dict().items()}
        prepare_for_inference(transformer)
        got = transformer(wav)
    assert isinstance(transformer.frontend.feature_extractor, FastConvFrontend)  # every student's CNN
    assert not any(isinstance(m, FastSVMixerBlock) for m in transformer.modules())
    assert all(torch.equal(before[k], v) for k, v in transformer.state_dict().items())
    assert (got - expected).abs().max() <= TOL


def test_prepare_for_inference_refuses_training_mode():
    with pytest.raises(ValueError, match="eval-mode"):
        prepare_for_inference(build_model(TINY).train())


def test_weights_loaded_after_prepare_are_used():
    """Derived weights are cached; loading new parameters must invalidate them."""
    model = prepare_for_inference(_tiny_model(seed=0))
    other = _tiny_model(seed=1)
    wav = torch.randn(2, model.segment_samples)
    with torch.inference_mode():
        before = model(wav)
        model.load_state_dict(other.state_dict())
        after, expected = model(wav), other(wav)
    assert (before - expected).abs().max() > 1e-3
    assert (after - expected).abs().max() <= TOL


def test_model_built_under_inference_mode():
    """Parameters created under inference_mode are inference tensors (no version counter)."""
    reference = _tiny_model(seed=2)
    wav = torch.randn(2, reference.segment_samples)
    with torch.inference_mode():
        model = build_model(TINY).eval()
        model.load_state_dict(reference.state_dict())
        assert next(model.parameters()).is_inference()
        got = prepare_for_inference(model)(wav)
        expected = reference(wav)
    assert (got - expected).abs().max() <= TOL
