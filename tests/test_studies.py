"""The studies recipe (recipes/mini_studies/run.sh, docs/studies.md): a tiny run of every study end to end
from the recipe's defaults (a tiny mini world, one training step per system, a tiny small teacher),
its tables, figure and run times; a rerun that redoes nothing; the study definitions against their
configs; and bad options, each one line before any work."""
import os
import re
import struct
import subprocess
import zlib
from pathlib import Path

import pytest
import yaml

from local.studies import STUDIES, study_rows
from svmix.yaml_config import read_model_config

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "recipes/mini_studies/run.sh"
CONF = ROOT / "conf/model"
TINY_WORLD = ("--num-test-speakers 2 --test-utts-per-speaker 3 --num-test-trials 12 --num-val-speakers 2 "
              "--val-utts-per-speaker 2 --num-val-trials 4 --num-train-speakers 4 --utts-per-speaker 4")
TINY_SMALL_TEACHER = {"model": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                "intermediate_size": 64, "conv_dim": [16] * 7, "num_conv_pos_embeddings": 16,
                                "num_conv_pos_embedding_groups": 4},
                      "train": {"batch_size": 2, "crop_seconds": 1.0, "warmup_steps": 1}}
TINY = ["--nj", "2", "--depths", "2 4", "--test-sets", "test", "--corpus-opts", TINY_WORLD,
        "--augment-opts", "--num-noises 3 --num-music 2 --num-rirs 3", "--teacher-opts", "--steps 2",
        "--train-opts", "--max-steps 1 --override train.batch_size=4 --override train.val_every=1 "
                        "--override train.val_segments=1 --override train.num_workers=0 --no-progress",
        "--extract-opts", "--num-workers 0 --num-threads 1"]
# The label cells of every study's rows, in table order (the floor closes each table).
EXPECTED_ROWS = {
    "students": [["Transformer"], ["MLP-Mixer"], ["CycleMLP"], ["ConvMixer"], ["SV-Mixer"]],
    "ablations": [["none"], ["GCM"], ["LGM"], ["MSM"], ["LGM + MSM + GCM"]],
    "backends": [[s, b] for s in ("Transformer", "SV-Mixer") for b in ("linear", "ECAPA-TDNN", "ReDimNet")],
    "teachers": [[t, s] for t in ("main", "small") for s in ("Transformer", "SV-Mixer")],
    "depth": [[s, d] for s in ("SV-Mixer", "MLP-Mixer") for d in ("2", "4")],
}


def run(*args, cwd=ROOT):
    # SVMIX_CPU_KERNELS=0: extraction with PyTorch ops, without first checking the fused kernels' build,
    # which every extraction of a checkout other than the last one built would redo (CPU time).
    return subprocess.run(["bash", str(RECIPE), *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1", "SVMIX_CPU_KERNELS": "0"})


def sections(markdown):
    """{heading: text} of the ``## `` sections."""
    parts = re.split(r"^## (.+)$", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def table_rows(text):
    """The header and rows of the first markdown table in ``text``, as lists of cells."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| "))
    block = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        block.append([c.strip() for c in line.strip("|").split("|")])
    return block[0], block[2:]


def png_is_valid(data):
    """PNG signature, IHDR first with a positive size, every chunk's CRC right, IEND last."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    pos, names = 8, []
    while pos < len(data):
        length, name = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        if zlib.crc32(name + body) != crc:
            return False
        names.append(name)
        if name == b"IHDR" and min(struct.unpack(">II", body[:8])) <= 0:
            return False
        pos += 12 + length
    return names[0] == b"IHDR" and names[-1] == b"IEND" and b"IDAT" in names


@pytest.fixture(scope="module")
def studies_run(tmp_path_factory):
    """Every study once, from the recipe's default paths (data/mini_world, exp/studies) in a fresh dir."""
    top = tmp_path_factory.mktemp("studies")
    (top / "small.yaml").write_text(yaml.safe_dump(TINY_SMALL_TEACHER))
    proc = run(*TINY, "--small-teacher-config", str(top / "small.yaml"), cwd=top)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return top, proc.stdout + proc.stderr


@pytest.mark.slow
def test_every_study_writes_its_table(studies_run):
    top, out = studies_run
    results = (top / "exp/studies/RESULTS.md").read_text()
    found = sections(results)
    assert "Test conditions" in found
    for name, expected in EXPECTED_ROWS.items():
        text = found[STUDIES[name].title]
        if name == "teachers":  # the teachers themselves first, then the students
            text = text.split("The students:", 1)[1]
        header, rows = table_rows(text)
        width = len(STUDIES[name].header)
        assert header[:width + 2] == [*STUDIES[name].header, "config", "test: EER (%)"], name
        assert [r[:width] for r in rows[:-1]] == expected, name
        assert rows[-1][0] == "MFCC-mean cosine (floor)"
        for r in rows:
            eer = float(r[width + 1].split(" ")[0])
            assert 0 <= eer <= 100 and re.fullmatch(r"\[\d+\.\d\d, \d+\.\d\d\]", r[width + 2]), (name, r)
        for r in rows[:-1]:  # params (M): frontend / encoder / backend / total
            params = [float(x) for x in r[-2].split(" / ")]
            assert len(params) == 4 and abs(sum(params[:3]) - params[3]) < 0.002, (name, r)
        assert "Training settings: identical in every row" in found[STUDIES[name].title], name
        assert "Frontend: `fbank_projected` in every row." in found[STUDIES[name].title], name  # --input fbank
    assert "# RESULTS" in out and "## Run time" in out  # printed at the end


@pytest.mark.slow
def test_the_studies_share_systems_and_teachers(studies_run):
    top, _ = studies_run
    exp = top / "exp/studies"
    main = sorted(p.name for p in (exp / "main_teacher").iterdir() if (p / "seed0/model.pt").is_file())
    assert main == sorted({"transformer_mini", "mlpmixer_mini", "cyclemlp_mini", "convmixer_mini", "svmixer_mini",
                           "svmixer_mini_none", "svmixer_mini_gcm", "svmixer_mini_lgm", "svmixer_mini_msm",
                           "transformer_mini_linear", "transformer_mini_redimnet", "svmixer_mini_linear",
                           "svmixer_mini_redimnet", "svmixer_mini_2l", "mlpmixer_mini_2l"})
    small = sorted(p.name for p in (exp / "small_teacher").iterdir() if (p / "seed0/model.pt").is_file())
    assert small == ["svmixer_mini", "transformer_mini"]
    # One training run per system: svmixer_mini is in every study and was trained once per teacher.
    commands = (exp / "main_teacher/commands.log").read_text()
    assert commands.count("--exp exp/studies/main_teacher/svmixer_mini/seed0") == 1
    # Each teacher's cache holds its own last layer; the systems distilled from it.
    for name, layers in (("main_teacher", 6), ("small_teacher", 2)):
        assert yaml.safe_load((exp / name / "teacher_cache/manifest.json").read_text())["layers"] == [layers]
        config = yaml.safe_load((exp / name / "svmixer_mini/seed0/config.yaml").read_text())
        assert config["train"]["kd"]["layers"] == [layers]
    teachers = table_rows(sections((exp / "RESULTS.md").read_text())[STUDIES["teachers"].title])[1]
    assert [(r[0], r[2]) for r in teachers] == [("main", "6"), ("small", "2")]  # name, layers
    assert all(float(r[-1]) >= 0 for r in teachers)  # the teachers' own EER on the test set
    assert (exp / "small_teacher/teacher/config.json").is_file()
    assert (exp / "main_teacher/RESULTS.md").is_file() and (exp / "small_teacher/RESULTS.md").is_file()


@pytest.mark.slow
def test_depth_study_draws_a_png(studies_run):
    top, _ = studies_run
    png = top / "exp/studies/depth.png"
    assert png_is_valid(png.read_bytes())
    assert "![EER against total parameters](depth.png)" in (top / "exp/studies/RESULTS.md").read_text()


@pytest.mark.slow
def test_run_time_is_stated_per_study(studies_run):
    top, _ = studies_run
    text = sections((top / "exp/studies/RESULTS.md").read_text())["Run time (machine-dependent)"]
    assert re.search(r"total wall time: (\d+h\d\dm\d\ds|\d+m\d\ds|\d+s) ", text)
    _, rows = table_rows(text)
    assert [r[0] for r in rows] == [s.title for s in STUDIES.values()]
    assert all(re.fullmatch(r"\d+h\d\dm\d\ds|\d+m\d\ds|\d+s", r[2]) for r in rows)
    times = (top / "exp/studies/run_times.tsv").read_text()
    assert "job/main/svmixer_mini\t" in times and "small_teacher\t" in times


@pytest.mark.slow
def test_a_rerun_redoes_nothing(studies_run):
    top, _ = studies_run
    exp = top / "exp/studies"
    models = sorted(exp.glob("*_teacher/*/seed0/model.pt"))
    before = {p: p.stat().st_mtime_ns for p in models}
    proc = run(*TINY, "--small-teacher-config", str(top / "small.yaml"), cwd=top)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "skip small_teacher" in out and "skip teacher_eval_main" in out
    logs = "".join(p.read_text() for p in exp.glob("*_teacher/logs/*.log"))
    assert "skip train_svmixer_mini_seed0" in logs and "run  train_" not in logs and "run  extract_" not in logs
    assert {p: p.stat().st_mtime_ns for p in models} == before
    assert "over 2 run(s)" in (exp / "RESULTS.md").read_text()


def test_study_rows_match_their_configs():
    """Each row's config is what its labels say (encoder, modules, backend, depth)."""
    encoders = {"Transformer": "transformer", "MLP-Mixer": "mlpmixer", "CycleMLP": "cyclemlp",
                "ConvMixer": "convmixer", "SV-Mixer": "svmixer"}
    backends = {"linear": "linear", "ECAPA-TDNN": "ecapa", "ReDimNet": "redimnet"}
    base = read_model_config(CONF / "svmixer_mini.yaml")
    for name in STUDIES:
        for row in study_rows(name, [2, 4, 6, 8], CONF):
            model = read_model_config(CONF / f"{row.system}.yaml")
            assert model["frontend"] == base["frontend"] and model["hidden"] == base["hidden"], row
            if name in ("students", "backends", "teachers", "depth"):
                student = row.labels[0] if name != "teachers" else row.labels[1]
                assert model["encoder"]["name"] == encoders[student], row
            if name == "ablations":
                on = {m for m in ("lgm", "msm", "gcm") if model["encoder"].get(m, True)}
                assert on == ({m.lower() for m in row.labels[0].split(" + ")} - {"none"}), row
                assert {k: v for k, v in model["encoder"].items() if k not in ("lgm", "msm", "gcm")} == base["encoder"]
            if name == "backends":
                assert model["backend"]["name"] == backends[row.labels[1]], row
            else:
                assert model["backend"] == base["backend"], row
            if name == "depth":
                assert model["encoder"]["num_layers"] == int(row.labels[1]), row


def test_help_lists_every_option_and_print_options_resolves_them(tmp_path):
    proc = run("--help")
    assert proc.returncode == 0
    listed = re.findall(r"^  --(\S+)", proc.stdout.split("Options (default):", 1)[1], flags=re.M)
    assert "studies" in listed and "depths" in listed and "nj" in listed and listed[-1] == "print-options"
    assert "hours" in proc.stdout  # the expected time
    values = {"stage": "1", "stop_stage": "4", "nj": "3", "seed": "7", "seeds": "1,2", "input": "waveform", "studies": "depth students",
              "depths": "6 2", "data": "some/data", "test_sets": "test", "augment_dir": "some/augment",
              "exp": str(tmp_path / "exp"), "corpus_opts": "--a 1", "augment_opts": "--b 2", "teacher_opts": "--c 3",
              "train_opts": "--max-steps 9", "extract_opts": "--num-threads 1"}
    args = [a for name, value in values.items() for a in (f"--{name.replace('_', '-')}", value)]
    proc = run(*args, "--print-options")
    assert proc.returncode == 0, proc.stderr
    printed = dict(line.split("=", 1) for line in proc.stdout.splitlines())
    assert {k: printed[k] for k in values} == values
    assert printed["teacher"] == f"{ROOT}/teachers/mini_world" and printed["small_systems"] == ""
    assert printed["input_opts"] == ""  # --input waveform: each config's own frontend
    defaults = dict(line.split("=", 1) for line in run("--print-options").stdout.splitlines())
    assert defaults["input"] == "fbank" and defaults["input_opts"] == "--override model.frontend.name=fbank_projected"
    assert printed["main_systems"].split() == ["transformer_mini", "mlpmixer_mini", "cyclemlp_mini", "convmixer_mini",
                                               "svmixer_mini", "svmixer_mini_2l", "svmixer_mini_6l",
                                               "mlpmixer_mini_2l", "mlpmixer_mini_6l"]
    assert not (tmp_path / "exp").exists()


def _help_options():
    listing = run("--help").stdout.split("Options (default):", 1)[1]
    return [n for n in re.findall(r"^  --(\S+)", listing, flags=re.M) if n != "print-options"]


# Bad values, generated per kind of option, then the recipe's own checks; each fails in one line, exit 2,
# before anything is written.
BAD = [(["--" + o, v], f"--{o} must be an integer") for o in ("stage", "stop-stage", "nj") for v in ("x", "1.5", "")]
BAD += [(["--nj", v], "--nj must be at least 1") for v in ("0", "-3")]
BAD += [(["--input", v], f"--input must be fbank or waveform, got '{v}'") for v in ("Fbank", "conv", "", " fbank", "wav")]
BAD += [(["--studies", v], m) for v, m in (("table1", "unknown study 'table1'"), ("Students", "unknown study"),
                                           ("students students", "lists 'students' twice"), ("", "must not be empty"),
                                           ("students,depth", "unknown study 'students,depth'"))]
BAD += [(["--studies", "depth", "--depths", v], m) for v, m in (
    ("0", "'0' is not a layer count"), ("-2", "'-2' is not a layer count"), ("02", "'02' is not a layer count"),
    ("x", "'x' is not a layer count"), ("2.5", "'2.5' is not a layer count"), ("4,6", "'4,6' is not a layer count"),
    ("2 2", "--depths lists 2 twice"), ("", "--depths must not be empty"),
    ("3", "svmixer_mini_3l.yaml not found (--depths 3: one model config per depth)"))]
BAD += [(["--seeds", v], m) for v, m in (("a", "--seeds must be comma-separated"), ("01", "without leading zeros"),
                                         ("-1", "--seeds must be comma-separated"), ("1,1", "lists a seed twice"),
                                         ("", "--seeds must not be empty"))]
BAD += [(["--test-sets", v], m) for v, m in (("a/b", "'a/b' is not a plain name"), ("test test", "lists 'test' twice"),
                                             ("", "--test-sets must not be empty"))]
BAD += [(["--" + o, ""], f"--{o} must not be empty") for o in ("exp", "data", "augment-dir", "train-config",
                                                             "model-conf-dir")]
BAD += [
    (["--teacher", "/nonexistent/teacher"], "--teacher /nonexistent/teacher: not found"),
    (["--train-config", "/nonexistent.yaml"], "--train-config /nonexistent.yaml: file not found"),
    (["--model-conf-dir", "/nonexistent"], "/nonexistent"),
    (["--studies", "teachers", "--small-teacher-config", "/nonexistent.yaml"],
     "--small-teacher-config /nonexistent.yaml: file not found"),
    (["--studies", "teachers", "--stage", "2"], "the small teacher exp/studies/small_teacher/teacher is not trained yet"),
    (["--no-such-option", "1"], "unknown option --no-such-option; known options: --stage"),
    (["extra"], "unexpected argument 'extra'"),
]


@pytest.mark.parametrize("args, message", BAD, ids=[" ".join(a) or "empty" for a, _ in BAD])
def test_bad_options_fail_in_one_line_before_any_work(args, message, tmp_path):
    proc = run(*args, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith(f"{RECIPE}: error: "), proc.stderr
    assert proc.stdout == "" and not any(tmp_path.iterdir())


def test_every_option_without_a_value_fails(tmp_path):
    for name in _help_options():
        proc = run(f"--{name}", cwd=tmp_path)
        assert proc.returncode == 2 and proc.stderr.splitlines() == [f"{RECIPE}: error: option --{name} needs a value"]
    assert not any(tmp_path.iterdir())
