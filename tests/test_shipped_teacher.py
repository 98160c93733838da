"""The shipped mini-world teacher (teachers/mini_world): it loads through load_teacher exactly like a
downloaded Hugging Face model, satisfies the teacher interface, is the size the model card states,
fits the repository's 25 MB budget, and its card says how to reproduce it."""
import json
import re
from pathlib import Path

import pytest
import torch

from svmix.teachers import Teacher, check_teacher, load_teacher

TEACHER = Path(__file__).resolve().parents[1] / "teachers" / "mini_world"


@pytest.fixture(scope="module")
def teacher():
    return load_teacher(TEACHER)


def test_the_shipped_teacher_loads_as_a_hugging_face_wavlm(teacher, one_thread):
    config = json.loads((TEACHER / "config.json").read_text())
    assert config["model_type"] == "wavlm" and config["architectures"] == ["WavLMModel"]
    assert isinstance(teacher, Teacher) and check_teacher(teacher) is teacher
    assert (teacher.num_layers, teacher.hidden_size) == (config["num_hidden_layers"], config["hidden_size"]) == (6, 256)
    assert (teacher.frame_shift, teacher.receptive_field) == (320, 400)
    wav = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        states = teacher(wav)
        again = teacher(wav)
    assert len(states) == 7 and all(s.shape == (2, teacher.num_frames(16000), 256) for s in states)
    assert all(torch.isfinite(s).all() for s in states)
    torch.testing.assert_close(states[-1], again[-1], rtol=0, atol=0)  # eval mode: no dropout
    # The two utterances are told apart by the last layer (the weights are not a random init's zeros).
    assert float((states[-1][0] - states[-1][1]).abs().mean()) > 1e-3


def test_the_model_card_matches_the_weights(teacher):
    card = (TEACHER / "MODEL_CARD.md").read_text()
    params = sum(p.numel() for p in teacher.model.parameters())
    stated = float(re.search(r"\*\*Size:\*\* ([0-9.]+)M parameters", card).group(1))
    assert abs(params / 1e6 - stated) < 0.01
    assert (TEACHER / "model.safetensors").stat().st_size <= 25 * 2 ** 20
    assert "svmix-train-teacher --pretrain --data data/mini_world/pool --config conf/teacher_pretrain.yaml" in card
    for heading in ("**Objective:**", "**Supervision:**", "**Data:**", "**Training:**"):
        assert heading in card
    training = json.loads((TEACHER / "training.json").read_text())
    assert re.search(rf"\*\*Training:\*\* {training['steps']} steps, seed {training['seed']}\b", card), training.keys()
