"""Students: encoder/backend registries, SV-Mixer sizes and ablations, baselines, ECAPA, teacher init."""
import pytest
import torch
import torchaudio

from svmix.models import build_model, init_frontend_from_teacher
from svmix.models.cyclemlp import CycleFC
from svmix.models.encoder import BLOCK_LAYOUTS
from svmix.models.frontend import Frontend
from svmix.models.svmixer import SVMixerBlock
from svmix.models.transformer import SelfAttention
from svmix.registry import BACKENDS, ENCODERS
from svmix.teachers import SSLTeacher

H, T = 32, 20
TINY_ENCODER_OPTIONS = {
    "svmixer": {"group_dim": 8},
    "svmixer_anylen": {"group_dim": 8},
    "transformer": {"num_heads": 4, "ffn_dim": 64, "pos_conv_kernel": 4, "pos_conv_groups": 4},
}
TINY_BACKEND_OPTIONS = {"ecapa": {"channels": 16, "pooled_channels": 48, "se_bottleneck": 8,
                                  "attention_bottleneck": 8},
                        "redimnet": {"freq": 8, "attention_bottleneck": 8}}

# docs/method.md §Layer sizes, at H=1024, T=149.
BLOCK_PARAMS = 3_745_969
FRONTEND_PROJECTION_FINAL_NORM = 4_728_832


def tiny_encoder(name, num_layers=2):
    spec = {"name": name, "num_layers": num_layers, **TINY_ENCODER_OPTIONS.get(name, {})}
    return ENCODERS.build(spec, hidden=H, seq_len=T)


def count(module):
    return sum(p.numel() for p in module.parameters())


def meta_block(**kw):
    with torch.device("meta"):
        return SVMixerBlock(1024, 149, **kw)


@pytest.mark.parametrize("name", [n for n in ENCODERS.names() if n != "identity"])  # identity: tests/test_baselines.py
def test_encoder_returns_state_stack(name):
    torch.manual_seed(0)
    encoder = tiny_encoder(name, num_layers=3).eval()
    x = torch.randn(2, T, H)
    states = encoder(x)
    assert states.shape == (2, 4, T, H)
    assert torch.isfinite(states).all()
    # The last state is the final LayerNorm output: zero mean / unit variance per frame.
    assert torch.allclose(states[:, -1].mean(-1), torch.zeros(2, T), atol=1e-4)
    # Eval mode is deterministic; train mode uses dropout.
    assert torch.equal(states, encoder(x))
    encoder.train()
    assert not torch.allclose(encoder(x), encoder(x))


@pytest.mark.parametrize("name", ["svmixer", "mlpmixer", "convmixer", "cyclemlp"])
def test_stack_is_block_inputs_then_final_norm(name):
    encoder = tiny_encoder(name, num_layers=2).eval()
    x = torch.randn(2, T, H)
    states = encoder(x)
    permutation = BLOCK_LAYOUTS[encoder.block_layout]
    h = x.permute(permutation)
    for i, block in enumerate(encoder.blocks):
        got = states[:, i].permute(permutation)
        assert torch.allclose(got, h, atol=1e-5), f"state {i} is not the input of block {i}"
        h = block(h)
    h = h.permute(permutation)
    assert torch.allclose(states[:, -1], encoder.final_norm(h), atol=1e-5)


def test_fixed_and_variable_length_encoders():
    with pytest.raises(ValueError, match="needs 20 frames"):
        tiny_encoder("svmixer")(torch.randn(1, T + 3, H))
    for name in ("transformer", "convmixer", "cyclemlp"):
        assert tiny_encoder(name).eval()(torch.randn(1, T + 3, H)).shape == (1, 3, T + 3, H)


@pytest.mark.parametrize("name", BACKENDS.names())
def test_backend_embeddings(name):
    torch.manual_seed(0)
    backend = BACKENDS.build({"name": name, **TINY_BACKEND_OPTIONS.get(name, {})}, hidden=H, num_states=3,
                             embed_dim=24)
    states = torch.randn(4, 3, T, H)
    assert backend.train()(states).shape == (4, 24)
    backend.eval()
    out = backend(states)
    assert out.shape == (4, 24) and torch.isfinite(out).all()
    assert torch.equal(out, backend(states))


def test_svmixer_block_sizes_match_spec():
    block = meta_block()
    assert count(block) == BLOCK_PARAMS
    assert count(block.token_mixing) == 192_689
    assert count(block.channel_mixing) == 3_553_280
    for group_dim, millions in ((64, 2.50), (256, 6.24), (1024, 21.18)):
        assert round(count(meta_block(group_dim=group_dim)) / 1e6, 2) == millions


def test_ablation_switches_change_parameter_counts():
    token_mlp = 149 * 596 + 596 + 596 * 149 + 149
    layer_norm = 2 * 1024
    grouped_mlp = 2 * (1024 * 4096 // 8) + 4096 + 1024
    dense_mlp = 2 * 1024 * 4096 + 4096 + 1024
    # LGM off: depthwise k7/k3 convolutions go, the time MLP stays.
    assert count(meta_block(lgm=False)) == BLOCK_PARAMS - (1024 * 8 + 1024 * 4)
    assert count(meta_block(lgm=False).token_mixing) == layer_norm + token_mlp
    # MSM off: the low-rate path goes.
    assert count(meta_block(msm=False)) == BLOCK_PARAMS - grouped_mlp
    # GCM off: dense MLPs and a dense merge convolution (= group_dim H).
    dense_merge_extra = 1024 * 1024 * 3 - 1024 * 128 * 3
    assert count(meta_block(gcm=False)) == BLOCK_PARAMS + 2 * (dense_mlp - grouped_mlp) + dense_merge_extra
    # All off: vanilla MLP-Mixer, also registered as "mlpmixer".
    assert count(meta_block(lgm=False, msm=False, gcm=False)) == 8_576_177
    with torch.device("meta"):
        mixer = ENCODERS.build({"name": "mlpmixer", "num_layers": 1}, hidden=1024, seq_len=149)
    assert count(mixer.blocks[0]) == 8_576_177
    # The paper's sequential LGM: one depthwise k3 conv instead of k7 → GELU → k3.
    assert count(meta_block(lgm_mode="sequential")) == BLOCK_PARAMS - 1024 * 8


def test_sequential_lgm_runs():
    block = SVMixerBlock(H, T, group_dim=8, lgm_mode="sequential").eval()
    x = torch.randn(2, H, T)
    assert block(x).shape == x.shape
    with pytest.raises(ValueError, match="LGM mode"):
        SVMixerBlock(H, T, group_dim=8, lgm_mode="both")


@pytest.mark.parametrize("layers,millions", [(5, 23.46), (9, 38.44), (13, 53.43), (17, 68.41), (23, 90.89)])
def test_whole_student_sizes(layers, millions):
    with torch.device("meta"):
        model = build_model({"encoder": {"name": "svmixer", "num_layers": layers, "group_dim": 128}})
    student = count(model.frontend) + count(model.encoder)
    assert student == FRONTEND_PROJECTION_FINAL_NORM + layers * BLOCK_PARAMS
    assert round(student / 1e6, 2) == millions


def test_baseline_layer_sizes():
    with torch.device("meta"):
        transformer = ENCODERS.build({"name": "transformer", "num_layers": 1}, hidden=1024, seq_len=149)
        convmixer = ENCODERS.build({"name": "convmixer", "num_layers": 1}, hidden=1024, seq_len=149)
        cyclemlp = ENCODERS.build({"name": "cyclemlp", "num_layers": 1}, hidden=1024, seq_len=149)
        with_position = ENCODERS.build({"name": "transformer", "num_layers": 1, "pos_conv_kernel": 128},
                                       hidden=1024, seq_len=149)
    assert count(transformer.blocks[0]) == 8_399_872
    assert count(convmixer.blocks[0]) == 8_414_208
    assert count(cyclemlp.blocks[0]) == 9_447_424  # paper: 9.45M
    assert count(with_position) - count(transformer) == 1024 * 64 * 128 + 1024


def test_cycle_fc_reads_channels_at_cycling_time_offsets():
    fc = CycleFC(8, stepsize=7)
    with torch.no_grad():
        fc.fc.weight.copy_(torch.eye(8).unsqueeze(-1))
        fc.fc.bias.zero_()
    x = torch.arange(1, 41.0).view(1, 8, 5)
    y = fc(x)[0]
    for channel, offset in enumerate([0, 1, 2, 3, -3, -2, -1, 0]):
        for t in range(5):
            source = t + offset
            expected = x[0, channel, source] if 0 <= source < 5 else 0.0
            assert y[channel, t] == expected


def test_self_attention_matches_torch_multihead_attention():
    torch.manual_seed(0)
    ours = SelfAttention(H, num_heads=4).eval()
    reference = torch.nn.MultiheadAttention(H, 4, batch_first=True).eval()
    with torch.no_grad():
        reference.in_proj_weight.copy_(ours.qkv.weight)
        reference.in_proj_bias.copy_(ours.qkv.bias)
        reference.out_proj.weight.copy_(ours.out.weight)
        reference.out_proj.bias.copy_(ours.out.bias)
    x = torch.randn(2, T, H)
    expected, _ = reference(x, x, x, need_weights=False)
    assert torch.allclose(ours(x), expected, atol=1e-5)


def test_ecapa_size_and_training_noise():
    with torch.device("meta"):
        ecapa = BACKENDS.build({"name": "ecapa"}, hidden=1024, num_states=13)
    assert round(count(ecapa) / 1e6, 2) == 9.58  # docs/method.md §Backends: about 9.58M at L=12
    assert ecapa.layer_sum.weights.shape == (1, 13, 1, 1)
    torch.manual_seed(0)
    backend = BACKENDS.build({"name": "ecapa", **TINY_BACKEND_OPTIONS["ecapa"]}, hidden=H, num_states=3)
    weights = backend.layer_sum.weights
    assert ((weights >= 0) & (weights < 1)).all()
    states = torch.randn(4, 3, T, H)
    backend.train()
    torch.manual_seed(1)
    first = backend(states)
    torch.manual_seed(2)
    assert not torch.allclose(first, backend(states)), "training-time Gaussian noise is missing"


def test_speaker_model_end_to_end():
    model = build_model({"hidden": H, "frontend": {"channels": 16},
                         "encoder": {"name": "svmixer", "num_layers": 2, "group_dim": 8},
                         "backend": {"name": "ecapa", **TINY_BACKEND_OPTIONS["ecapa"]}}).eval()
    wav = torch.randn(2, model.segment_samples)
    assert model.seq_len == 149
    assert model.hidden_states(wav).shape == (2, 3, 149, H)
    assert model(wav).shape == (2, 192)


def small_teacher(factory, extractor_mode, conv_bias, embed_dim=H, **extra):
    """An SSLTeacher around a small torchaudio model (``.model``)."""
    params = dict(**extra, extractor_mode=extractor_mode,
                  extractor_conv_layer_config=[(16, 10, 5)] + [(16, 3, 2)] * 4 + [(16, 2, 2)] * 2,
                  extractor_conv_bias=conv_bias, encoder_embed_dim=embed_dim, encoder_projection_dropout=0.0,
                  encoder_pos_conv_kernel=4, encoder_pos_conv_groups=2, encoder_num_layers=1,
                  encoder_num_heads=2, encoder_attention_dropout=0.0, encoder_ff_interm_features=16,
                  encoder_ff_interm_dropout=0.0, encoder_dropout=0.0, encoder_layer_norm_first=False,
                  encoder_layer_drop=0.0)
    arch = "wavlm" if factory is torchaudio.models.wavlm_model else "wav2vec2"
    return SSLTeacher(factory(**params, aux_num_out=None), arch, params)


def test_init_frontend_from_group_norm_teacher():
    teacher = small_teacher(torchaudio.models.wav2vec2_model, "group_norm", False)
    model = build_model({"hidden": H, "frontend": {"channels": 16},
                         "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8},
                         "backend": {"name": "linear"}})
    copied = init_frontend_from_teacher(model, teacher)
    expected = [f"frontend.feature_extractor.conv_layers.{i}.conv.weight" for i in range(7)]
    expected += ["frontend.feature_extractor.conv_layers.0.layer_norm.weight",
                 "frontend.feature_extractor.conv_layers.0.layer_norm.bias",
                 "frontend.feature_projection.layer_norm.weight", "frontend.feature_projection.layer_norm.bias",
                 "frontend.feature_projection.projection.weight", "frontend.feature_projection.projection.bias"]
    assert sorted(copied) == sorted(expected)
    wav = torch.randn(1, 16000)
    with torch.no_grad():
        teacher_features, _ = teacher.model.feature_extractor(wav, None)
        teacher_projected = teacher.model.encoder.feature_projection(teacher_features)
    assert torch.allclose(model.frontend.eval()(wav), teacher_projected, atol=1e-5)


def test_init_frontend_skips_mismatched_norms_and_shapes():
    teacher = small_teacher(torchaudio.models.wavlm_model, "layer_norm", True, embed_dim=2 * H,
                            encoder_num_buckets=8, encoder_max_distance=16)
    frontend = Frontend(H, channels=16)
    before = frontend.feature_extractor.conv_layers[0].layer_norm.weight.clone()
    copied = init_frontend_from_teacher(frontend, teacher)
    # Conv weights fit; LayerNorm ≠ GroupNorm, and the H vs 2H projection does not fit.
    assert sorted(copied) == sorted([f"feature_extractor.conv_layers.{i}.conv.weight" for i in range(7)]
                                    + ["feature_projection.layer_norm.weight", "feature_projection.layer_norm.bias"])
    assert torch.equal(frontend.feature_extractor.conv_layers[3].conv.weight,
                       teacher.model.feature_extractor.conv_layers[3].conv.weight)
    assert torch.equal(frontend.feature_extractor.conv_layers[0].layer_norm.weight, before)
