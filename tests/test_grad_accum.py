"""Gradient accumulation (train.accum_grad): k micro-batches of b give the gradient of one batch of k·b."""
import pytest
import torch

from svmix.errors import SvmixError
from svmix.models import build_model
from svmix.train.config import resolve_config
from svmix.train.objective import DistillationObjective
from svmix.train.trainer import accumulated_backward

MODEL = {"segment_seconds": 0.5, "hidden": 16, "embed_dim": 8, "frontend": {"channels": 8},
         "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 8}, "backend": {"name": "linear"}}
SPEAKERS = [5, 1, 2, 8]  # unequal class counts: the class-weighted AAM mean is not a plain mean


def objective_and_batch(kd_name, batch=12, seed=0):
    torch.manual_seed(seed)
    student = build_model(MODEL)
    kd = {"name": kd_name, "layers": [1, 2] if kd_name == "distilhubert" else [2], "lambda": 0.7}
    objective = DistillationObjective(student, SPEAKERS, {"name": "aam_topk", "top_k": 2}, kd, teacher_hidden=12)
    g = torch.Generator().manual_seed(seed + 1)
    wav = 0.1 * torch.randn(batch, student.segment_samples, generator=g)
    labels = torch.randint(0, len(SPEAKERS), (batch,), generator=g)
    frames = student.seq_len
    targets = torch.randn(batch, len(kd["layers"]), frames, 12, generator=g)
    mask = torch.ones(batch, frames, dtype=torch.bool)
    for i in range(0, batch, 3):  # short, padded utterances: unequal valid frames per micro-batch
        mask[i, frames // (2 + i % 4):] = False
    return objective, (wav, labels, targets, mask)


def gradients(objective):
    return {n: p.grad.clone() for n, p in objective.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("kd_name", ["last_mse", "distilhubert"])
@pytest.mark.parametrize("accum", [2, 3, 4])
def test_k_micro_batches_give_the_gradient_of_one_large_batch(kd_name, accum, one_thread):
    objective, batch = objective_and_batch(kd_name)
    # Eval mode: no dropout, and BatchNorm (the linear backend has one) uses its running statistics,
    # so each sample's loss does not depend on the rest of its batch. In train mode BatchNorm
    # normalises with micro-batch statistics, and accumulation is not equivalent (checked below).
    objective.eval()
    whole = accumulated_backward(objective, objective, *batch, accum=1)
    reference = gradients(objective)
    objective.zero_grad(set_to_none=True)
    parts = accumulated_backward(objective, objective, *batch, accum=accum)
    accumulated = gradients(objective)
    assert reference.keys() == accumulated.keys() and len(reference) > 10
    for name in reference:
        torch.testing.assert_close(accumulated[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)
    for key in ("loss", "aam", "kd"):
        torch.testing.assert_close(parts[key], whole[key], rtol=1e-5, atol=1e-6)
    # Averaging the micro-batch means instead of weighting them by their normalisers would be wrong here.
    objective.zero_grad(set_to_none=True)
    wav, labels, targets, mask = batch
    size = len(wav) // accum
    for j in range(accum):
        part = slice(j * size, (j + 1) * size)
        (objective(wav[part], labels[part], targets[part], mask[part])["loss"] / accum).backward()
    naive = gradients(objective)
    assert max((naive[n] - reference[n]).abs().max() / reference[n].abs().max().clamp_min(1e-12)
               for n in reference) > 1e-3


def test_batch_norm_in_train_mode_sees_micro_batch_statistics(one_thread):
    objective, batch = objective_and_batch("distilhubert")
    objective.train()
    for module in objective.modules():  # dropout off, BatchNorm left in train mode
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    accumulated_backward(objective, objective, *batch, accum=1)
    reference = gradients(objective)
    objective.zero_grad(set_to_none=True)
    accumulated_backward(objective, objective, *batch, accum=3)
    accumulated = gradients(objective)
    assert not all(torch.allclose(accumulated[n], reference[n], rtol=1e-4, atol=1e-6) for n in reference)


def test_uneven_split_and_config_range_are_errors():
    objective, batch = objective_and_batch("distilhubert", batch=10)
    with pytest.raises(SvmixError, match="does not split into 3 equal micro-batches"):
        accumulated_backward(objective, objective, *batch, accum=3)
    assert resolve_config({"model": MODEL, "train": {"max_steps": 1}})["train"]["accum_grad"] == 1
    for bad in (0, -1, 1.5, "2", 10 ** 5):
        with pytest.raises(SvmixError, match="train.accum_grad"):
            resolve_config({"model": MODEL, "train": {"max_steps": 1, "accum_grad": bad}})
