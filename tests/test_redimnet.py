"""ReDimNet backend: shapes, sizes, gradient flow into the layer weights, bad configurations."""
import pytest
import torch

from svmix.models import build_model
from svmix.registry import BACKENDS


def _states(batch=3, num_states=5, frames=149, hidden=128):
    return torch.randn(batch, num_states, frames, hidden)


@pytest.mark.parametrize("hidden, freq, strides", [(128, 16, (1, 2, 2, 2)), (128, 32, (2, 2)), (96, 24, (1, 2))])
def test_embeddings_have_the_configured_size(hidden, freq, strides):
    backend = BACKENDS.build({"name": "redimnet", "freq": freq, "freq_strides": strides}, hidden=hidden,
                             num_states=5, embed_dim=64)
    assert backend(_states(hidden=hidden)).shape == (3, 64)
    backend.eval()
    assert backend(_states(batch=1, frames=37, hidden=hidden)).shape == (1, 64)  # any length in eval


def test_gradients_reach_the_layer_weights_and_every_stage():
    backend = BACKENDS.build({"name": "redimnet", "freq": 16}, hidden=128, num_states=5, embed_dim=32)
    backend(_states()).pow(2).sum().backward()
    assert backend.layer_sum.weights.grad is not None and backend.layer_sum.weights.grad.abs().sum() > 0
    assert (backend.stage_weights.grad.abs() > 0).all()
    assert all(p.grad is not None for p in backend.parameters())


def test_layer_weights_select_states():
    """Zero weight on every state but one: the output ignores the others."""
    backend = BACKENDS.build({"name": "redimnet", "freq": 16}, hidden=128, num_states=5, embed_dim=32).eval()
    with torch.no_grad():
        backend.layer_sum.weights.zero_()
        backend.layer_sum.weights[0, 2] = 1.0
    a, b = _states(), _states()
    b[:, 2] = a[:, 2]
    with torch.no_grad():
        assert torch.allclose(backend(a), backend(b), atol=1e-5)


def test_student_with_redimnet_backend_trains_a_step():
    model = build_model({"hidden": 64, "frontend": {"channels": 16},
                         "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 32},
                         "backend": {"name": "redimnet", "freq": 16}})
    emb = model(torch.randn(2, 48000))
    assert emb.shape == (2, 192)
    emb.sum().backward()
    assert model.backend.layer_sum.weights.grad.abs().sum() > 0


@pytest.mark.parametrize("kwargs, message", [
    ({"freq": 48}, "not divisible by freq"),
    ({"freq": 16, "freq_strides": (2, 2, 2, 4)}, "product of freq_strides"),
    ({"freq": 16, "freq_strides": (1, 0)}, "freq_strides"),
    ({"freq": 16, "freq_strides": ()}, "freq_strides"),
])
def test_bad_configurations_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        BACKENDS.build({"name": "redimnet", **kwargs}, hidden=128, num_states=5)
