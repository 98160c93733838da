"""The filterbank teacher: a WavLM whose conv feature extractor is replaced by stacked log-mel
filterbanks (config.json ``svmix_feature_extractor: fbank``), pretrained, saved and loaded like the
conv teacher, on the students' frame grid."""
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from svmix.errors import SvmixError
from svmix.models.fbank import ProjectedFbankFrontend, StackedFbank
from svmix.models.init_from_teacher import init_frontend_from_teacher
from svmix.models.speaker_model import build_model
from svmix.models.teacher_frontend import TeacherFrontend
from svmix.teachers import load_teacher, save_teacher
from svmix.teachers.pretrain import pretrain_config, pretrain_teacher

from conftest import make_datadir, make_tiny_teacher
from test_teacher_pretrain import TINY


@pytest.fixture
def fbank_teacher(tmp_path):
    return make_tiny_teacher(tmp_path / "fbank_teacher", do_normalize=False, svmix_feature_extractor="fbank")


def test_a_filterbank_teacher_pretrains_and_loads_like_a_downloaded_wavlm(tmp_path, one_thread):
    pool = make_datadir(tmp_path / "pool", num_speakers=3, utts_per_speaker=2, seconds=(1.2, 1.8), trials=False)
    config = {**TINY, "model": {**TINY["model"], "svmix_feature_extractor": "fbank"}}
    out = tmp_path / "teacher"
    summary = pretrain_teacher(pool, out, config, progress=False)
    assert summary["final"]["step"] == TINY["train"]["steps"] and np.isfinite(summary["final"]["loss"])
    hf = json.loads((out / "config.json").read_text())
    assert hf["svmix_feature_extractor"] == "fbank" and (hf["conv_dim"], hf["conv_kernel"], hf["conv_stride"]) == ([160], [560], [320])
    assert not any(k.startswith("feature_extractor.") for k in load_file(out / "model.safetensors"))
    assert "log-mel filterbanks" in (out / "MODEL_CARD.md").read_text()
    teacher = load_teacher(out)
    assert isinstance(teacher.model.feature_extractor, StackedFbank)
    assert (teacher.frame_shift, teacher.receptive_field, teacher.num_layers) == (320, 560, 2)
    states = teacher(torch.randn(1, 16000) * 0.1)
    assert len(states) == 3 and states[-1].shape == (1, 49, 32) and all(torch.isfinite(h).all() for h in states)


@pytest.mark.parametrize("seed", range(3))
def test_frame_counts_agree_with_the_students_filterbanks_at_every_length(fbank_teacher, seed):
    teacher = load_teacher(fbank_teacher)
    student = ProjectedFbankFrontend(16)
    rng = np.random.default_rng(seed)
    lengths = [560, 561, 879, 880, 881, 1199, 1200, 48000] + [int(n) for n in rng.integers(560, 40000, 6)]
    for n in lengths:
        states = teacher(torch.randn(1, n) * 0.1)
        assert states[0].shape[1] == teacher.num_frames(n) == student.num_frames(n) == student(torch.randn(1, n)).shape[1], n
    assert teacher.num_frames(559) == student.num_frames(559) == 0


def test_the_teacher_features_are_the_students_filterbanks(fbank_teacher):
    teacher = load_teacher(fbank_teacher)
    wav = torch.randn(2, 24000) * 0.1
    features, _ = teacher.model.feature_extractor(wav, None)
    assert torch.equal(features, StackedFbank().stacked(wav))


def test_every_way_of_loading_a_filterbank_teacher_gives_the_same_states(tmp_path, fbank_teacher):
    teacher = load_teacher(fbank_teacher)
    wav = torch.randn(1, 20000) * 0.1
    reference = torch.stack(teacher(wav))
    save_teacher(teacher, tmp_path / "teacher.pt")  # svmix checkpoint format
    assert torch.equal(torch.stack(load_teacher(tmp_path / "teacher.pt")(wav)), reference)
    frontend = TeacherFrontend(32, path=str(fbank_teacher))  # "teacher + backend": built from the record
    frontend.load_pretrained()
    assert torch.equal(frontend(wav)[0], reference[:, 0])


@pytest.mark.parametrize("value", ["mfcc", "", 3, None, True, ["fbank"]])
def test_an_unknown_feature_extractor_in_config_json_is_a_one_line_error(fbank_teacher, value):
    path = fbank_teacher / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "svmix_feature_extractor": value}))
    with pytest.raises(SvmixError, match=r"config.json: unsupported teacher configuration \(svmix_feature_extractor=") as e:
        load_teacher(fbank_teacher)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", ["mfcc", 1, None, ["fbank"]])
def test_an_unknown_feature_extractor_in_a_pretraining_config_is_a_one_line_error(value):
    with pytest.raises(SvmixError, match="model.svmix_feature_extractor") as e:
        pretrain_config({"model": {"svmix_feature_extractor": value}}, where="conf/x.yaml")
    assert "conf/x.yaml" in str(e.value) and "\n" not in str(e.value)


def test_a_waveform_student_is_not_initialised_from_a_filterbank_teacher(fbank_teacher):
    model = build_model({"hidden": 32, "frontend": {"channels": 16},
                         "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8}, "backend": {"name": "linear"}})
    with pytest.raises(SvmixError, match="the teacher has no waveform convolutions"):
        init_frontend_from_teacher(model, load_teacher(fbank_teacher))
