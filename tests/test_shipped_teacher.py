"""The shipped mini-world teachers (teachers/mini_world on filterbanks, the default; teachers/mini_world_conv
on the waveform, the previous one): each loads through load_teacher exactly like a downloaded Hugging Face
model, satisfies the teacher interface, is the size its model card states, fits the repository's 25 MB
budget, and its card says how to reproduce it."""
import json
import re
from pathlib import Path

import pytest
import torch

from svmix.teachers import Teacher, check_teacher, load_teacher

ROOT = Path(__file__).resolve().parents[1]
# directory, its config's feature extractor, receptive field (samples), the config that reproduces it
SHIPPED = {"mini_world": ("fbank", 560, "conf/teacher_pretrain.yaml"),
           "mini_world_conv": ("conv", 400, "conf/teacher_pretrain_conv.yaml")}


@pytest.fixture(scope="module", params=sorted(SHIPPED))
def shipped(request):
    return request.param, ROOT / "teachers" / request.param, load_teacher(ROOT / "teachers" / request.param)


def test_the_shipped_teacher_loads_as_a_hugging_face_wavlm(shipped, one_thread):
    name, directory, teacher = shipped
    extractor, field, _ = SHIPPED[name]
    config = json.loads((directory / "config.json").read_text())
    assert config["model_type"] == "wavlm" and config["architectures"] == ["WavLMModel"]
    assert config.get("svmix_feature_extractor", "conv") == extractor
    assert isinstance(teacher, Teacher) and check_teacher(teacher) is teacher
    assert (teacher.num_layers, teacher.hidden_size) == (config["num_hidden_layers"], config["hidden_size"]) == (6, 256)
    assert (teacher.frame_shift, teacher.receptive_field) == (320, field)
    wav = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        states = teacher(wav)
        again = teacher(wav)
    assert len(states) == 7 and all(s.shape == (2, teacher.num_frames(16000), 256) for s in states)
    assert all(torch.isfinite(s).all() for s in states)
    torch.testing.assert_close(states[-1], again[-1], rtol=0, atol=0)  # eval mode: no dropout
    # The two utterances are told apart by the last layer (the weights are not a random init's zeros).
    assert float((states[-1][0] - states[-1][1]).abs().mean()) > 1e-3


def test_the_model_card_matches_the_weights(shipped):
    name, directory, teacher = shipped
    card = (directory / "MODEL_CARD.md").read_text()
    params = sum(p.numel() for p in teacher.model.parameters())
    stated = float(re.search(r"\*\*Size:\*\* ([0-9.]+)M parameters", card).group(1))
    assert abs(params / 1e6 - stated) < 0.01
    assert (directory / "model.safetensors").stat().st_size <= 25 * 2 ** 20
    config = SHIPPED[name][2]
    assert f"svmix-train-teacher --pretrain --data data/mini_world/pool --config {config} --out teachers/{name}" in card
    assert (ROOT / config).is_file()
    for heading in ("**Objective:**", "**Supervision:**", "**Data:**", "**Training:**"):
        assert heading in card
    training = json.loads((directory / "training.json").read_text())
    assert re.search(rf"\*\*Training:\*\* {training['steps']} steps, seed {training['seed']}\b", card), training.keys()
