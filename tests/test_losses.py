"""Training losses against naive per-sample computations (docs/method.md §Losses)."""
import math

import pytest
import torch
import torch.nn.functional as F

from svmix.registry import CLASSIFICATION_LOSSES
from svmix.train.losses import AAMSoftmaxTopK, DistilHuBERTLoss, LastMSE, LastMSEPooled


def naive_aam(loss: AAMSoftmaxTopK, emb, labels, margin=0.2, scale=30.0, k=5, neg=0.1, impostor_weight=1.0,
              counts=None):
    """Per sample, with python loops: the coded AAM-softmax with top-K hard negatives."""
    W = F.normalize(loss.weight.detach().double(), dim=1)
    total, norm = 0.0, 0.0
    for e, y in zip(emb.double(), labels.tolist()):
        cos = (F.normalize(e, dim=0) @ W.T).tolist()
        ranking = [(-2 * c if j == y else c) for j, c in enumerate(cos)]
        hard = sorted(range(len(cos)), key=lambda j: -ranking[j])[:k]
        exps = []
        for j, c in enumerate(cos):
            s = math.sqrt(min(max(1 - c * c, 0.0), 1.0))
            pos, hn = c * math.cos(margin) - s * math.sin(margin), c * math.cos(neg) + s * math.sin(neg)
            if j == y and j in hard:  # as coded: one_hot*phi + topk*hard + (1-one_hot-topk)*cos
                logit = pos + hn - c
            elif j == y:
                logit = pos
            elif j in hard:
                logit = hn
            else:
                logit = c
            weight = impostor_weight if (j in hard and j != y) else 1.0
            exps.append((scale * logit, weight))
        log_z = math.log(sum(w * math.exp(z) for z, w in exps))
        nll = log_z - exps[y][0]
        w_y = (sum(counts) / counts[y]) if counts is not None else 1.0
        total += w_y * nll
        norm += w_y
    return total / norm


@pytest.mark.parametrize("impostor_weight", [1.0, 10.0])
def test_aam_topk_matches_naive_with_class_weights(impostor_weight):
    torch.manual_seed(0)
    counts = [3, 1, 4, 2, 5, 7, 1, 2]
    loss = AAMSoftmaxTopK(16, 8, class_counts=counts, impostor_weight=impostor_weight)
    emb = torch.randn(12, 16)
    labels = torch.randint(0, 8, (12,))
    # Make sample 0's target cosine strongly negative so the target lands in the top-K ranking.
    emb[0] = -loss.weight.detach()[labels[0]] * 3
    cos = F.linear(F.normalize(emb), F.normalize(loss.weight.detach()))
    ranking = cos * (1 - 3 * F.one_hot(labels, 8))
    assert labels[0] in ranking[0].topk(5).indices  # the coded corner case is exercised
    got = loss(emb, labels).item()
    want = naive_aam(loss, emb, labels, impostor_weight=impostor_weight, counts=counts)
    assert got == pytest.approx(want, rel=1e-5)


def test_class_weights_are_total_over_count_and_change_the_loss():
    torch.manual_seed(1)
    counts = [1, 9, 2, 8, 3, 7, 4]
    weighted = AAMSoftmaxTopK(8, 7, class_counts=counts)
    plain = AAMSoftmaxTopK(8, 7, class_counts=counts, class_weighted=False)
    plain.weight.data.copy_(weighted.weight.data)
    assert torch.allclose(weighted.class_weights, torch.tensor([34.0 / c for c in counts]))
    emb, labels = torch.randn(10, 8), torch.tensor([0, 1, 1, 1, 2, 3, 4, 5, 6, 0])
    assert plain(emb, labels).item() == pytest.approx(naive_aam(plain, emb, labels), rel=1e-5)
    assert weighted(emb, labels).item() == pytest.approx(naive_aam(weighted, emb, labels, counts=counts), rel=1e-5)
    assert weighted(emb, labels).item() != pytest.approx(plain(emb, labels).item(), rel=1e-3)


def test_aam_weight_init_and_registry():
    loss = CLASSIFICATION_LOSSES.build({"name": "aam_topk", "top_k": 3}, embed_dim=192, num_classes=50, class_counts=[2] * 50)
    assert loss.weight.shape == (50, 192)
    std = loss.weight.std().item()
    assert std == pytest.approx(math.sqrt(2.0 / (50 + 192)), rel=0.1)  # xavier normal


def naive_distilhubert(loss: DistilHuBERTLoss, states, targets, mask):
    total = 0.0
    B = states.shape[0]
    for b in range(B):
        for k, head in enumerate(loss.heads):
            p = head(states[b, -1]).double()
            t = targets[b, k].double()
            frames = [i for i in range(p.shape[0]) if mask[b, i]]
            l1 = sum((p[i] - t[i]).abs().mean().item() for i in frames) / len(frames)
            cos = sum(F.logsigmoid(F.cosine_similarity(p[i], t[i], dim=0)).item() for i in frames)
            total += l1 - loss.cos_weight * cos
    return total / B


def test_distilhubert_matches_naive_sum_over_frames_and_heads():
    torch.manual_seed(2)
    loss = DistilHuBERTLoss(student_hidden=6, teacher_hidden=5, num_targets=3)
    states, targets = torch.randn(2, 4, 7, 6), torch.randn(2, 3, 7, 5)
    full = torch.ones(2, 7, dtype=torch.bool)
    assert loss(states, targets).item() == pytest.approx(naive_distilhubert(loss, states, targets, full), rel=1e-5)
    mask = full.clone()
    mask[1, 4:] = False
    assert loss(states, targets, mask).item() == pytest.approx(naive_distilhubert(loss, states, targets, mask),
                                                               rel=1e-5)
    # The cosine term is summed over frames: it scales with T, the L1 term does not.
    assert len(list(loss.parameters())) == 3 * 4


def test_last_mse_is_mean_over_btH_and_masks_padding():
    torch.manual_seed(3)
    loss = LastMSE(student_hidden=5, teacher_hidden=5)
    assert loss.projection is None
    states, targets = torch.randn(3, 2, 6, 5), torch.randn(3, 1, 6, 5)
    assert loss(states, targets).item() == pytest.approx(F.mse_loss(states[:, -1], targets[:, 0]).item(), rel=1e-6)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[0, 2:] = False
    mask[2, 5:] = False
    want = torch.cat([((states[b, -1] - targets[b, 0])[mask[b]] ** 2).flatten() for b in range(3)]).mean()
    assert loss(states, targets, mask).item() == pytest.approx(want.item(), rel=1e-6)


@pytest.mark.parametrize("make", [lambda: LastMSE(4, 3), lambda: DistilHuBERTLoss(4, 3, num_targets=2),
                                  lambda: LastMSEPooled(4, 3, pooled_weight=2.0)])
def test_kd_ignores_padded_frames(make):
    torch.manual_seed(4)
    loss = make()
    k = 2 if isinstance(loss, DistilHuBERTLoss) else 1
    states = torch.randn(2, 3, 8, 4, requires_grad=True)
    targets = torch.randn(2, k, 8, 3)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[0, 5:] = False
    a = loss(states, targets, mask)
    (grad_a,) = torch.autograd.grad(a, states)
    garbage = targets.clone()
    garbage[0, :, 5:] = 1e3  # teacher frames past the real end of a short utterance
    b = loss(states, garbage, mask)
    (grad_b,) = torch.autograd.grad(b, states)
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    assert torch.allclose(grad_a, grad_b)
    assert grad_a[0, -1, 5:].abs().sum() == 0
    assert loss(states, garbage).item() > a.item() * 10  # without the mask the garbage counts


def test_last_mse_pooled_is_the_per_crop_mse_plus_the_centred_pooled_cosine():
    torch.manual_seed(5)
    states, targets = torch.randn(4, 2, 6, 5), torch.randn(4, 1, 6, 5)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[1, 3:] = False
    pred, target = states[:, -1], targets[:, 0]
    mse = torch.stack([((pred[b] - target[b])[mask[b]] ** 2).mean() for b in range(4)])
    pooled = torch.stack([pred[b][mask[b]].mean(0) for b in range(4)])
    pooled_t = torch.stack([target[b][mask[b]].mean(0) for b in range(4)])
    cos = F.cosine_similarity(pooled - pooled.mean(0), pooled_t - pooled_t.mean(0), dim=-1)
    for weight in (0.0, 1.0, 3.0):
        loss = LastMSEPooled(5, 5, pooled_weight=weight)
        assert loss(states, targets, mask).item() == pytest.approx((mse + weight * (1 - cos)).mean().item(), rel=1e-5)
    # The pooled term sees speaker directions only: a common offset or a scale of the targets leaves it alone.
    loss, frame_only = LastMSEPooled(5, 5, pooled_weight=1.0), LastMSEPooled(5, 5, pooled_weight=0.0)
    term = lambda t: (loss(states, t, mask) - frame_only(states, t, mask)).item()
    assert term(targets + torch.randn(5)) == pytest.approx(term(targets), abs=1e-5)
    assert term(3.0 * targets) == pytest.approx(term(targets), abs=1e-5)
    assert term(states[:, -1:].clone()) == pytest.approx(0.0, abs=1e-5)  # the student's own states: cos 1
    assert LastMSEPooled(5, 5)(states[:1], targets[:1]).isfinite()  # one crop: no centring, still defined
    with pytest.raises(ValueError):
        LastMSEPooled(4, 4, num_targets=2)


def test_last_mse_projects_when_hidden_sizes_differ():
    loss = LastMSE(student_hidden=4, teacher_hidden=6)
    assert loss.projection.in_features == 4 and loss.projection.out_features == 6
    out = loss(torch.randn(2, 3, 5, 4), torch.randn(2, 1, 5, 6))
    out.backward()
    assert loss.projection.weight.grad is not None
    with pytest.raises(ValueError):
        LastMSE(4, 4, num_targets=2)


class _FakeStudent(torch.nn.Module):
    """The student interface DistillationObjective uses: hidden_states, backend, embed_dim, config."""

    embed_dim, config = 6, {"hidden": 4}

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(1, 4)
        self.head = torch.nn.Linear(4, 6)

    def hidden_states(self, wav):  # (B, S) -> (B, L+1, T, H), T = S // 10
        frames = wav.unfold(1, 10, 10).mean(-1, keepdim=True)
        return torch.stack([self.proj(frames), self.proj(frames).tanh()], dim=1)

    def backend(self, states):
        return self.head(states[:, -1].mean(1))


@pytest.mark.parametrize("name,k", [("last_mse", 1), ("distilhubert", 2)])
def test_kd_target_norm_layer_is_invariant_to_target_scale_and_offset(name, k):
    """train.kd.target_norm=layer: each target frame is standardised over H before the KD loss, so a
    teacher whose states are a frame-wise affine map of another's gives the same loss (generated cases)."""
    from svmix.train.objective import DistillationObjective

    gen = torch.Generator().manual_seed(7)
    for case in range(5):
        torch.manual_seed(case)
        student = _FakeStudent()
        objectives = {norm: DistillationObjective(student, [3, 3], {"name": "aam_topk"},
                                                  {"name": name, "layers": list(range(k)), "lambda": 1.0,
                                                   "target_norm": norm}, teacher_hidden=5)
                      for norm in (None, "layer")}
        objectives["layer"].kd.load_state_dict(objectives[None].kd.state_dict())
        wav, labels = torch.randn(2, 80, generator=gen), torch.tensor([0, 1])
        targets = torch.randn(2, k, 8, 5, generator=gen)
        scale = torch.rand(2, k, 8, 1, generator=gen) * 50 + 0.5
        offset = torch.randn(2, k, 8, 1, generator=gen) * 20
        moved = targets * scale + offset
        normed = {t: objectives["layer"](wav, labels, t)["kd"].item() for t in (targets, moved)}
        raw = {t: objectives[None](wav, labels, t)["kd"].item() for t in (targets, moved)}
        assert normed[targets] == pytest.approx(normed[moved], rel=1e-4), case
        assert raw[moved] > 2 * raw[targets], case  # the raw loss follows the target scale
        standardised = F.layer_norm(targets, (5,))
        assert normed[targets] == pytest.approx(objectives[None](wav, labels, standardised)["kd"].item(), rel=1e-5)


def test_kd_target_norm_rejects_unknown_values():
    from svmix.train.objective import DistillationObjective

    with pytest.raises(ValueError, match="target_norm"):
        DistillationObjective(_FakeStudent(), [3, 3], {"name": "aam_topk"},
                              {"name": "last_mse", "layers": [0], "lambda": 1.0, "target_norm": "batch"}, 5)
