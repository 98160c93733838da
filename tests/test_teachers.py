"""Teacher loading: HF-format directories reproduce transformers' hidden states layer by layer."""
import json

import numpy as np
import pytest
import torch

from svmix.errors import SvmixError
from svmix.teachers import load_teacher, save_teacher, teacher_fingerprint

transformers = pytest.importorskip("transformers")

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)

CASES = {
    # name: (model class, config class, config overrides, weights file, with task head)
    "wavlm_base_postln": ("WavLMModel", "WavLMConfig", {}, "model.safetensors"),
    "wavlm_large_stable_ln": ("WavLMModel", "WavLMConfig",
                              {"do_stable_layer_norm": True, "feat_extract_norm": "layer", "conv_bias": True},
                              "pytorch_model.bin"),
    "hubert_base": ("HubertModel", "HubertConfig", {}, "pytorch_model.bin"),
    "hubert_no_proj_ln": ("HubertModel", "HubertConfig", {"feat_proj_layer_norm": False}, "model.safetensors"),
    "wav2vec2_large_stable_ln": ("Wav2Vec2Model", "Wav2Vec2Config",
                                 {"do_stable_layer_norm": True, "feat_extract_norm": "layer", "conv_bias": True},
                                 "model.safetensors"),
    "wav2vec2_ctc_head": ("Wav2Vec2ForCTC", "Wav2Vec2Config", {"vocab_size": 12}, "pytorch_model.bin"),
}


def make_hf_dir(tmp_path, name, seed=0, do_normalize=False):
    cls_name, cfg_name, overrides, weights = CASES[name]
    torch.manual_seed(seed)
    config = getattr(transformers, cfg_name)(**TINY, **overrides)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():  # random non-trivial LayerNorm/bias values, so a mis-mapped one shows
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    out = tmp_path / f"{name}_{seed}"
    model.save_pretrained(out)
    if weights == "pytorch_model.bin":
        (out / "model.safetensors").unlink()
        torch.save(model.state_dict(), out / "pytorch_model.bin")
    if do_normalize is not None:
        (out / "preprocessor_config.json").write_text(json.dumps({"do_normalize": do_normalize}))
    base = getattr(model, "wav2vec2", model)
    return out, base


def hf_reference(model, wav):
    """transformers' hidden states with the last entry after the final LayerNorm (docs/conventions.md §Layer indexing).

    transformers 5 no longer ties hidden_states[-1] to last_hidden_state for stable-layer-norm models
    (4.x did); the convention is the final-LN output, which is last_hidden_state in both versions.
    """
    with torch.no_grad():
        out = model(wav, output_hidden_states=True)
    return list(out.hidden_states[:-1]) + [out.last_hidden_state]


@pytest.mark.parametrize("name", sorted(CASES))
def test_hf_directory_matches_transformers_every_layer(tmp_path, name):
    path, model = make_hf_dir(tmp_path, name)
    teacher = load_teacher(path)
    wav = 0.1 * torch.randn(2, 12345)
    got = teacher(wav)
    ref = hf_reference(model, wav)
    assert len(got) == len(ref) == teacher.num_layers + 1 == 3
    for i, (a, b) in enumerate(zip(got, ref)):
        assert a.shape == b.shape == (2, teacher.num_frames(12345), 32), i
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0, msg=f"layer {i}")
    assert (teacher.hidden_size, teacher.frame_shift, teacher.receptive_field) == (32, 320, 400)


def test_post_ln_last_entry_is_raw_last_layer_output(tmp_path):
    path, model = make_hf_dir(tmp_path, "wavlm_base_postln")
    wav = 0.1 * torch.randn(1, 8000)
    with torch.no_grad():
        out = model(wav, output_hidden_states=True)
    torch.testing.assert_close(out.hidden_states[-1], out.last_hidden_state)
    torch.testing.assert_close(load_teacher(path)(wav)[-1], out.hidden_states[-1], atol=1e-4, rtol=0)


def test_waveform_normalisation_follows_preprocessor_config(tmp_path):
    path, model = make_hf_dir(tmp_path, "wavlm_large_stable_ln", do_normalize=True)
    teacher = load_teacher(path)
    assert teacher.normalize_waveform
    wav = 0.05 * torch.randn(1, 9000) + 0.01
    normed = (wav - wav.mean()) / torch.sqrt(wav.var(unbiased=False) + 1e-7)
    for a, b in zip(teacher(wav), hf_reference(model, normed)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)
    path2, _ = make_hf_dir(tmp_path, "wavlm_base_postln", do_normalize=False)
    assert not load_teacher(path2).normalize_waveform
    # without preprocessor_config.json: HF's rule (normalise iff the conv extractor uses LayerNorm)
    (path / "preprocessor_config.json").unlink()
    (path2 / "preprocessor_config.json").unlink()
    assert load_teacher(path).normalize_waveform and not load_teacher(path2).normalize_waveform


def test_teacher_stays_frozen_in_eval_mode(tmp_path):
    path, _ = make_hf_dir(tmp_path, "wavlm_base_postln")
    teacher = load_teacher(path)
    parent = torch.nn.ModuleDict({"teacher": teacher, "student": torch.nn.Linear(2, 2)})
    parent.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert parent["student"].training
    assert not any(p.requires_grad for p in teacher.parameters())
    wav = torch.randn(1, 4000, requires_grad=True)
    assert not any(h.requires_grad for h in teacher(wav))


def test_svmix_checkpoint_roundtrip_and_fingerprints(tmp_path):
    path, _ = make_hf_dir(tmp_path, "hubert_no_proj_ln")
    teacher = load_teacher(path)
    ckpt = tmp_path / "teacher.pt"
    save_teacher(teacher, ckpt)
    again = load_teacher(ckpt)
    wav = torch.randn(1, 6000)
    for a, b in zip(teacher(wav), again(wav)):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert teacher.fingerprint == teacher_fingerprint(path) != teacher_fingerprint(ckpt)
    other, _ = make_hf_dir(tmp_path, "hubert_no_proj_ln", seed=1)
    assert teacher_fingerprint(other) != teacher_fingerprint(path)
    assert teacher_fingerprint("WAVLM_LARGE") == "torchaudio:WAVLM_LARGE"  # no download for a fingerprint


def test_bad_teacher_specs_are_user_errors(tmp_path):
    with pytest.raises(SvmixError, match="neither a torchaudio bundle"):
        load_teacher(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SvmixError, match="no config.json"):
        load_teacher(empty)
    path, _ = make_hf_dir(tmp_path, "wavlm_base_postln")
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "num_hidden_layers": 3}))
    with pytest.raises(SvmixError, match="do not match"):
        load_teacher(path)
    (path / "config.json").write_text(json.dumps({**cfg, "model_type": "bert"}))
    with pytest.raises(SvmixError, match="unknown Hugging Face model_type 'bert'"):
        load_teacher(path)
    (path / "model.safetensors").write_bytes(np.zeros(10, np.uint8).tobytes())
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SvmixError, match="cannot read weights"):
        load_teacher(path)
    bogus = tmp_path / "bogus.pt"
    torch.save({"state_dict": {}}, bogus)
    with pytest.raises(SvmixError, match="not an svmix teacher checkpoint"):
        load_teacher(bogus)
