"""The fast ECAPA-TDNN backend computes what the reference ``ECAPABackend`` computes."""
import pytest
import torch

from conftest import assert_close_to_scale, compare_fast
from svmix.models import build_model
from svmix.models.ecapa import ECAPABackend
from svmix.models.fast import prepare_for_inference, uses_fast_path
from svmix.models.fast.ecapa import FastECAPABackend

# Max abs difference allowed, relative to the output scale (max |reference|). Observed: ≤ 3.3e-7
# (the tiny and the full-size cases alike); both sides round in float32 in a different order.
TOL = 1e-5
MIN_SCALE = 0.5  # the outputs' scale exceeds this (not a comparison of near-zero tensors)
TINY_BACKEND = {"hidden": 32, "channels": 16, "se_bottleneck": 8, "pooled_channels": 48, "attention_bottleneck": 8,
                "scale": 4}


def _randomise(module: torch.nn.Module, seed: int) -> None:
    """Random weights keeping activations O(1), and non-trivial BatchNorm statistics and affine."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (1 / max(1, p[0].numel()) ** 0.5 if p.dim() > 1 else 0.3))
        for m in module.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.copy_(0.5 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + 1.5 * torch.rand(m.running_var.shape, generator=g))
                m.weight.copy_(1 + 0.3 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=g))


def _reference(num_states=4, seed=0, **options) -> ECAPABackend:
    model = ECAPABackend(num_states=num_states, **{**TINY_BACKEND, **options}).eval()
    _randomise(model, seed)
    return model


def _states(batch, num_states, frames, hidden, seed=1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(batch, num_states, frames, hidden, generator=g) + 0.5


def _assert_close(got, expected):
    assert_close_to_scale(got, expected, TOL, MIN_SCALE)


def _compare(ref, states, fast=None):
    return compare_fast(ref, fast or FastECAPABackend(ref), states, TOL, MIN_SCALE)


@pytest.mark.parametrize("frames", [37, 149])
@pytest.mark.parametrize("num_states", [3, 6])
@pytest.mark.parametrize("batch", [1, 3])
def test_matches_reference_small(batch, num_states, frames):
    _compare(_reference(num_states), _states(batch, num_states, frames, 32))


def test_matches_reference_full_size():
    ref = ECAPABackend(hidden=1024, num_states=6).eval()
    _randomise(ref, 0)
    _compare(ref, _states(2, 6, 149, 1024))


@pytest.mark.parametrize("options, frames", [
    ({"scale": 2, "dilations": (1, 5)}, 37),  # Res2Net convs with different zero frames than the widest
    ({"scale": 1}, 37),                       # no Res2Net convs: the block's single split passes through
    ({}, 3),                                  # fewer frames than the dilations
])
def test_matches_reference_other_shapes(options, frames):
    _compare(_reference(**options), _states(2, 4, frames, 32))


def test_non_contiguous_input():
    ref = _reference()
    states = _states(3, 4, 37, 32)
    permuted = states.transpose(1, 2).contiguous().transpose(1, 2)  # (B, S, T, H) view of (B, T, S, H) memory
    assert not permuted.is_contiguous() and torch.equal(permuted, states)
    fast = FastECAPABackend(ref)
    got = _compare(ref, permuted, fast)
    with torch.inference_mode():
        _assert_close(got, fast(states))


def test_workspace_reuse_across_batch_sizes():
    """Buffers are kept per shape and reused; results never alias them."""
    ref = _reference()
    fast = FastECAPABackend(ref)
    results = []
    with torch.inference_mode():
        for batch in (3, 1, 3, 2):
            states = _states(batch, 4, 37, 32, seed=batch)
            got = fast(states)
            results.append((got, got.clone(), ref(states)))
    for got, copy, expected in results:
        assert torch.equal(got, copy)
        _assert_close(got, expected)


def test_inference_mode_and_no_grad_agree():
    fast = FastECAPABackend(_reference())
    states = _states(2, 4, 37, 32)
    with torch.inference_mode():
        in_inference = fast(states)  # caches derived weights inside inference mode
    with torch.no_grad():
        in_no_grad = fast(states)
    plain = fast(states)  # forward runs without grad by itself
    assert not plain.requires_grad
    assert torch.equal(in_inference, in_no_grad) and torch.equal(in_no_grad, plain)


def test_state_dict_and_parameters_are_shared():
    ref = _reference()
    fast = FastECAPABackend(ref)
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert all(a is b for a, b in zip(fast.parameters(), ref.parameters()))
    assert all(a is b for a, b in zip(fast.buffers(), ref.buffers()))


def test_derived_weights_follow_load_state_dict():
    ref = _reference(seed=0)
    fast = FastECAPABackend(ref)
    states = _states(2, 4, 37, 32)
    _compare(ref, states, fast)  # fills the cache
    other = _reference(seed=5)
    fast.load_state_dict(other.state_dict())
    with torch.inference_mode():
        _assert_close(fast(states), other(states))
        # BatchNorm statistics alone (buffers, not parameters) also refresh the folded scale and shift
        for m in other.modules():
            if isinstance(m, torch.nn.BatchNorm1d):
                m.running_mean.add_(0.5)
        fast.load_state_dict(other.state_dict())
        _assert_close(fast(states), other(states))


def test_traced_fast_backend_keeps_a_dynamic_batch():
    ref = _reference()
    traced = torch.jit.trace(FastECAPABackend(ref), _states(2, 4, 37, 32))
    states = _states(3, 4, 37, 32, seed=7)
    with torch.inference_mode():
        _assert_close(traced(states), ref(states))


def test_refuses_training_mode():
    fast = FastECAPABackend(_reference())
    fast.train()
    with pytest.raises(RuntimeError, match="inference only"):
        fast(_states(1, 4, 37, 32))


TINY = {"hidden": 32, "embed_dim": 8, "segment_seconds": 1.0, "frontend": {"channels": 16},
        "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 8},
        "backend": {"name": "ecapa", "channels": 16, "se_bottleneck": 8, "pooled_channels": 48,
                    "attention_bottleneck": 8}}


def test_prepare_for_inference_swaps_the_backend():
    torch.manual_seed(0)
    model = build_model(TINY).eval()
    _randomise(model.backend, 3)
    wav = torch.randn(3, model.segment_samples, generator=torch.Generator().manual_seed(5))
    keys = list(model.state_dict())
    with torch.inference_mode():
        expected = model(wav)
        prepare_for_inference(model)
        got = model(wav)
    assert type(model.backend) is FastECAPABackend and uses_fast_path(model)
    assert list(model.state_dict()) == keys
    assert (got - expected).abs().max() <= 1e-5
