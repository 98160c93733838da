"""The declared teacher interface (svmix.teachers.protocol): every teacher source satisfies it, and a
teacher that does not is a one-line error where it enters svmix (no downloads, tiny random models)."""
import types

import pytest
import torch

from conftest import make_datadir
from svmix.errors import SvmixError
from svmix.models import build_model, init_frontend_from_teacher
from svmix.teachers import SSLTeacher, Teacher, check_teacher, load_teacher, save_teacher
from svmix.teachers.hf_format import save_hf_wavlm
from svmix.teachers.model import build_torchaudio_model
from svmix.teachers.protocol import _ATTRIBUTES, _METHODS

CONV = [[16, 10, 5]] + [[16, 3, 2]] * 4 + [[16, 2, 2]] * 2
WAVLM_PARAMS = dict(extractor_mode="group_norm", extractor_conv_layer_config=CONV, extractor_conv_bias=False,
                    encoder_embed_dim=24, encoder_projection_dropout=0.0, encoder_pos_conv_kernel=8,
                    encoder_pos_conv_groups=4, encoder_num_layers=2, encoder_num_heads=2,
                    encoder_attention_dropout=0.0, encoder_ff_interm_features=32, encoder_ff_interm_dropout=0.0,
                    encoder_dropout=0.0, encoder_layer_norm_first=False, encoder_layer_drop=0.0,
                    encoder_num_buckets=16, encoder_max_distance=32)


class TinyBundle:
    """Stands in for a torchaudio pipeline bundle: same private fields, a random tiny model, no download."""
    _model_type = "WavLM"
    _normalize_waveform = True
    _params = {**WAVLM_PARAMS, "aux_num_out": None}

    def get_model(self):
        torch.manual_seed(0)
        return build_torchaudio_model("wavlm", WAVLM_PARAMS)


def torchaudio_bundle_teacher(tmp_path, monkeypatch):
    import torchaudio.pipelines

    monkeypatch.setattr(torchaudio.pipelines, "WAVLM_BASE", TinyBundle(), raising=True)
    return load_teacher("WAVLM_BASE")


def hf_directory_teacher(tmp_path, monkeypatch):
    torch.manual_seed(1)
    save_hf_wavlm(build_torchaudio_model("wavlm", WAVLM_PARAMS), WAVLM_PARAMS, tmp_path / "hf")
    return load_teacher(tmp_path / "hf")


def svmix_checkpoint_teacher(tmp_path, monkeypatch):
    torch.manual_seed(2)
    save_teacher(SSLTeacher(build_torchaudio_model("wavlm", WAVLM_PARAMS), "wavlm", WAVLM_PARAMS),
                 tmp_path / "teacher.pt")
    return load_teacher(tmp_path / "teacher.pt")


def mini_teacher(tmp_path, monkeypatch):
    from svmix.teachers.mini import load_config, train_mini_teacher

    config = load_config(None, {"model.hidden_size": 16, "model.num_hidden_layers": 1, "model.num_attention_heads": 2,
                                "model.intermediate_size": 32, "model.conv_dim": [8] * 7,
                                "model.num_conv_pos_embeddings": 8, "model.num_conv_pos_embedding_groups": 4,
                                "train.steps": 1, "train.batch_size": 2, "train.crop_seconds": 1.0,
                                "train.warmup_steps": 1, "train.log_every": 1})
    data = make_datadir(tmp_path / "corpus", num_speakers=2, utts_per_speaker=2, seconds=(1.2, 1.5))
    train_mini_teacher(data, tmp_path / "mini", config, progress=False)
    return load_teacher(tmp_path / "mini")


SOURCES = {"torchaudio_bundle": torchaudio_bundle_teacher, "huggingface_dir": hf_directory_teacher,
           "svmix_checkpoint": svmix_checkpoint_teacher, "mini_teacher": mini_teacher}


@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_teacher_source_satisfies_the_interface(source, tmp_path, monkeypatch, one_thread):
    teacher = SOURCES[source](tmp_path, monkeypatch)
    assert isinstance(teacher, Teacher) and check_teacher(teacher) is teacher
    assert (teacher.frame_shift, teacher.receptive_field) == (320, 400)
    wav = 0.1 * torch.randn(2, 6000)
    states = teacher(wav)
    assert len(states) == teacher.num_layers + 1
    assert all(s.shape == (2, teacher.num_frames(6000), teacher.hidden_size) for s in states)
    assert teacher.normalize(wav).shape == wav.shape
    torch.testing.assert_close(teacher.hidden_states(teacher.normalize(wav))[-1], states[-1], rtol=0, atol=0)
    if source == "torchaudio_bundle":  # the bundle's input normalisation is part of the teacher
        assert teacher.normalize_waveform and teacher.fingerprint == "torchaudio:WAVLM_BASE"


def _stand_in(**changes):
    """An object with every member of a real teacher, then ``changes`` applied (None deletes)."""
    real = SSLTeacher(build_torchaudio_model("wavlm", WAVLM_PARAMS), "wavlm", WAVLM_PARAMS)
    members = {name: getattr(real, name) for name in (*_ATTRIBUTES, *_METHODS)}
    for name, value in changes.items():
        if value is None:
            del members[name]
        else:
            members[name] = value
    return types.SimpleNamespace(**members)


def test_a_complete_stand_in_passes():
    assert check_teacher(_stand_in()) is not None


@pytest.mark.parametrize("member", sorted((*_ATTRIBUTES, *_METHODS)))
def test_a_missing_member_is_a_one_line_error_naming_it(member):
    with pytest.raises(SvmixError, match=rf"missing .*\b{member}\b") as info:
        check_teacher(_stand_in(**{member: None}), "teacher 'x'")
    assert "\n" not in str(info.value) and str(info.value).startswith("teacher 'x': ")


@pytest.mark.parametrize("member,value", [(name, bad) for name in ("hidden_size", "num_layers", "frame_shift",
                                                                    "receptive_field")
                                          for bad in (0, -320, 2.5, "320", True)]
                         + [("spec", 3), ("fingerprint", 42), ("normalize_waveform", "yes"),
                            ("model", "not a module"), ("hidden_states", 5)])
def test_ill_typed_members_are_one_line_errors(member, value):
    with pytest.raises(SvmixError, match=member) as info:
        check_teacher(_stand_in(**{member: value}))
    assert "\n" not in str(info.value)


def test_trainer_and_frontend_init_check_the_teacher(tmp_path):
    from svmix.train.trainer import TeacherTargets

    raw = build_torchaudio_model("wavlm", WAVLM_PARAMS)  # a torchaudio model is not a teacher by itself
    with pytest.raises(SvmixError, match="not a teacher"):
        TeacherTargets({"name": "last_mse", "layers": None}, None, raw, torch.device("cpu"))
    model = build_model({"hidden": 16, "frontend": {"channels": 16},
                         "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8}, "backend": {"name": "linear"}})
    with pytest.raises(SvmixError, match="not a teacher"):
        init_frontend_from_teacher(model, raw)
    targets = TeacherTargets({"name": "last_mse", "layers": None}, None, _stand_in(), torch.device("cpu"))
    assert targets.layers == [2] and targets.hidden_size == 24 and targets.frame_shift == 320
