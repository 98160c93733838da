"""The fast convolutional frontend computes what the reference ``ConvFrontend`` computes."""
import pytest
import torch

from conftest import assert_close_to_scale, compare_fast
from svmix.models.fast.frontend import FastConvFrontend
from svmix.models.frontend import ConvFrontend

# Max abs difference allowed, relative to the output scale (max |reference|). Observed: ≤ ~1e-6;
# both sides round in float32 differently (folded GroupNorm statistics vs. GroupNorm's own).
TOL = 1e-5
MIN_SCALE = 0.05  # the outputs' scale exceeds this (not a comparison of near-zero tensors)
SMALL = 16  # channels of the tiny test models


def _reference(channels=SMALL, seed=0) -> ConvFrontend:
    """A frontend with random weights scaled to keep activations O(1), and a non-trivial GroupNorm."""
    model = ConvFrontend(channels).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.conv_layers:
            w = layer.conv.weight
            w.copy_(torch.randn(w.shape, generator=g) * 2.0 / w[0].numel() ** 0.5)
        norm = model.conv_layers[0].layer_norm
        norm.weight.copy_(1 + 0.5 * torch.randn(norm.weight.shape, generator=g))
        norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=g))
    return model


def _wav(batch, samples, seed=1) -> torch.Tensor:
    return 0.1 * torch.randn(batch, samples, generator=torch.Generator().manual_seed(seed))


def _assert_close(got, expected):
    assert_close_to_scale(got, expected, TOL, MIN_SCALE)


def _compare(ref, wav, fast=None):
    return compare_fast(ref, fast or FastConvFrontend(ref), wav, TOL, MIN_SCALE)


# 400 samples: one output frame (the receptive field); the others leave remainders at various strides
@pytest.mark.parametrize("samples", [400, 401, 719, 1234, 4000, 4321])
@pytest.mark.parametrize("batch", [1, 3])
def test_matches_reference_small(batch, samples):
    _compare(_reference(), _wav(batch, samples))


def test_matches_reference_per_layer_channels():
    _compare(_reference(channels=(8, 16, 12, 12, 20, 8, 24)), _wav(2, 3210))


@pytest.mark.parametrize("batch", [1, 3])
def test_matches_reference_full_size(batch):
    _compare(_reference(channels=512), _wav(batch, 48000))


def test_matches_reference_across_time_chunks():
    ref = _reference()
    fast = FastConvFrontend(ref)
    fast.max_chunk_frames = 4  # 49 frames → 13 chunks of 4 frames, the last one shorter
    _compare(ref, _wav(2, 15770), fast)


def test_without_layer0_group_norm():
    ref = _reference()
    ref.conv_layers[0].layer_norm = None
    _compare(ref, _wav(2, 4000))


@pytest.mark.parametrize("level", [0.0, 0.3])
def test_silence_and_constant_input(level):
    """Zero variance: the eps keeps layer 0 finite, and the output equals the reference's."""
    ref = _reference()
    wav = torch.cat([torch.full((2, 4000), level), _wav(1, 4000)])  # also next to a normal utterance
    _compare(ref, wav)


def test_dc_offset_is_harmless():
    """A large DC offset: the fast path (mean-removed statistics) stays close to a float64 reference."""
    ref = _reference()
    wav = _wav(2, 4000) + 3.0
    with torch.inference_mode():
        expected = ref.double()(wav.double()).float()
        got = FastConvFrontend(ref.float())(wav)
    _assert_close(got, expected)


def test_state_dict_and_parameters_are_shared():
    ref = _reference()
    fast = FastConvFrontend(ref)
    assert list(fast.state_dict()) == list(ref.state_dict())
    assert all(a is b for a, b in zip(fast.parameters(), ref.parameters()))
    assert (fast.kernels, fast.strides, fast.out_channels) == (ref.kernels, ref.strides, ref.out_channels)


def test_inference_mode_and_no_grad_agree():
    ref = _reference()
    fast = FastConvFrontend(ref)
    wav = _wav(2, 4000)
    with torch.inference_mode():
        in_inference = fast(wav)
    with torch.no_grad():
        in_no_grad = fast(wav)
    plain = fast(wav)  # forward runs without grad by itself
    assert not plain.requires_grad
    assert torch.equal(in_inference, in_no_grad) and torch.equal(in_no_grad, plain)


def test_derived_weights_follow_load_state_dict():
    ref = _reference(seed=0)
    fast = FastConvFrontend(ref)
    wav = _wav(2, 4000)
    _compare(ref, wav, fast)  # fills the cache
    other = _reference(seed=5)
    fast.load_state_dict(other.state_dict())
    with torch.inference_mode():
        _assert_close(fast(wav), other(wav))


def test_traced_fast_frontend_keeps_a_dynamic_batch():
    ref = _reference()
    fast = FastConvFrontend(ref)
    traced = torch.jit.trace(fast, _wav(2, 4000))
    wav = _wav(3, 4000, seed=7)
    with torch.inference_mode():
        _assert_close(traced(wav), ref(wav))


def test_rejects_input_shorter_than_the_receptive_field():
    with pytest.raises(ValueError):
        FastConvFrontend(_reference())(_wav(1, 399))
