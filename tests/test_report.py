"""RESULTS.md (svmix/report.py): every system on every test condition, mean ± std over the seeds,
sizes by part, a per-seed table beside it; only the timing section depends on the machine."""
import json
import shutil
import statistics

import pytest
import yaml
from click.testing import CliRunner

from conftest import make_datadir, one_error_line
from svmix.checkpoint import save_model
from svmix.errors import SvmixError
from svmix.models import build_model, resolve_model_config
from svmix.profiling import profile_model
from svmix.report import FLOOR_NAME, write_report

TINY = {"segment_seconds": 1.0, "num_eval_segments": 2, "hidden": 16, "embed_dim": 8, "frontend": {"channels": 8},
        "encoder": {"name": "svmixer", "num_layers": 1, "group_dim": 8}, "backend": {"name": "linear"}}
SEEDS = [1, 2, 3]
EER = {"test": [10.0, 12.0, 14.0], "test_noisy": [20.0, 24.0, 31.0]}  # per seed


def write_run(run, seed, scale, sets=("test", "test_noisy"), rtf=0.01, extra=None):
    run.mkdir(parents=True, exist_ok=True)
    config = resolve_model_config(dict(TINY))
    save_model(run / "model.pt", build_model(config), {"val_eer": 30.0 + seed, **(extra or {})})
    (run / "config.yaml").write_text(yaml.safe_dump({"model": config, "train": {"seed": seed, "batch_size": 4}}))
    for s in sets:
        eer = scale * EER[s][SEEDS.index(seed)] if seed is not None else scale * EER[s][0]
        (run / f"metrics_{s}_trials.json").write_text(json.dumps(
            {"eer": eer, "eer_ci": [eer - 2.0, eer + 4.0], "min_dcf": {"0.01": eer / 50, "0.05": eer / 100}}))
        (run / f"emb_{s}").mkdir(exist_ok=True)
        (run / f"emb_{s}" / "extract_stats.json").write_text(json.dumps({"rtf": rtf}))


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data = make_datadir(root / "corpus", num_speakers=3, utts_per_speaker=2, seconds=(1.1, 1.3))
    for name in ("test", "test_noisy"):
        shutil.copytree(data, root / "data" / name)
    exp = root / "exp"
    for system, scale in (("svmixer_mini", 1.0), ("svmixer_mini_nokd", 2.0)):
        for k in SEEDS:
            write_run(exp / system / f"seed{k}", k, scale)
    floor = exp / "floor"
    floor.mkdir()
    for s in ("test", "test_noisy"):
        (floor / f"metrics_{s}_trials.json").write_text(json.dumps(
            {"eer": 40.0, "eer_ci": [35.0, 45.0], "min_dcf": {"0.01": 1.0, "0.05": 0.9}}))
    (exp / "commands.log").write_text("svmix-train --config a\nsvmix-train --config a\nsvmix-score x\n")
    return root


def report(recipe, out=None, **kw):
    exp = recipe / "exp"
    args = dict(systems=[exp / "svmixer_mini", exp / "svmixer_mini_nokd"],
                test_dirs=[recipe / "data/test", recipe / "data/test_noisy"], seeds=SEEDS, floor_dir=exp / "floor",
                notes=["test=clean", "test_noisy=reverberated and noised"], commands_file=exp / "commands.log")
    args.update(kw)
    out = out or exp / "RESULTS.md"
    return write_report(out=out, **args), out


def _cells(line):
    return [c.strip() for c in line.strip().strip("|").split("|")]


def cells(text, section, first_cell):
    """{column: value} of the row starting with ``first_cell`` in the table of ``## section``."""
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    lines = [line for line in body.splitlines() if line.startswith("| ")]
    match = [line for line in lines[1:] if _cells(line)[0] == first_cell]
    assert len(match) == 1, (first_cell, body)
    return dict(zip(_cells(lines[0]), _cells(match[0])))


def test_mean_and_std_over_seeds_per_test_set(recipe):
    text, out = report(recipe)
    got = cells(text, "Accuracy", "svmixer_mini")
    assert got["seeds"] == "3"
    assert got["test: EER (%)"] == "12.00 ± 2.00"
    sd = statistics.stdev(EER["test_noisy"])
    assert got["test_noisy: EER (%)"] == f"{statistics.fmean(EER['test_noisy']):.2f} ± {sd:.2f}"
    assert got["test: EER 95% CI"] == "[10.00, 16.00]"  # the mean of the per-seed bounds
    assert got["test: minDCF@0.01"] == f"{0.24:.3f} ± {0.04:.3f}"
    assert got["val EER (%)"] == "32.00 ± 1.00"
    nokd = cells(text, "Accuracy", "svmixer_mini_nokd")
    assert nokd["test: EER (%)"] == "24.00 ± 4.00"
    floor = cells(text, "Accuracy", FLOOR_NAME)
    assert floor["test: EER (%)"] == "40.00" and floor["seeds"] == "-" and floor["test: EER 95% CI"] == "[35.00, 45.00]"
    # The commands, once each, in order.
    assert text.split("## Commands", 1)[1].count("svmix-train --config a") == 1


def test_test_conditions_are_stated_from_the_data(recipe):
    text, _ = report(recipe)
    # 3 voices x 2 utterances: 15 pairs, 3 of them target.
    assert list(cells(text, "Test conditions", "test").values()) == ["test", "`trials`", "3", "6", "15", "3", "clean"]
    assert cells(text, "Test conditions", "test_noisy")["condition"] == "reverberated and noised"


def test_sizes_by_part_are_the_profilers(recipe):
    text, _ = report(recipe)
    profile = profile_model(resolve_model_config(dict(TINY)))
    got = cells(text, "Size", "svmixer_mini")
    for part in ("frontend", "encoder", "backend"):
        assert got[f"{part} params (M)"] == f"{profile['parts'][part]['params'] / 1e6:.3f}"
        assert got[f"{part} GMACs"] == f"{profile['parts'][part]['gmacs']:.3f}"
    assert got["total params (M)"] == f"{profile['params'] / 1e6:.3f}"
    assert got["config"].count("`") == 2 and "," not in got["config"]  # one hash: seeds differ only in seed
    assert FLOOR_NAME not in text.split("## Size", 1)[1].split("## Timing", 1)[0]  # no model


def test_per_seed_table_is_written_beside_and_linked(recipe):
    text, out = report(recipe)
    per_seed = (out.parent / "RESULTS_per_seed.md").read_text()
    assert "(RESULTS_per_seed.md)" in text
    for k, eer in zip(SEEDS, EER["test"]):
        lines = [line for line in per_seed.splitlines() if line.startswith(f"| svmixer_mini | {k} |")]
        assert len(lines) == 2  # accuracy and timing
        assert f"| {eer:.2f} | [{eer - 2:.2f}, {eer + 4:.2f}] |" in lines[0]


def test_only_the_timing_section_depends_on_the_machine(recipe, tmp_path):
    """A second experiment with other timings gives the same accuracy and size tables."""
    shutil.copytree(recipe / "exp", tmp_path / "exp")
    for stats in (tmp_path / "exp").rglob("extract_stats.json"):
        stats.write_text(json.dumps({"rtf": 0.5}))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, _ = report(recipe, out=tmp_path / "a/RESULTS.md")
    second, _ = report(recipe, out=tmp_path / "b/RESULTS.md", systems=[tmp_path / "exp/svmixer_mini",
                                                               tmp_path / "exp/svmixer_mini_nokd"],
                       floor_dir=tmp_path / "exp/floor", commands_file=tmp_path / "exp/commands.log")
    assert first.split("## Timing")[0] == second.split("## Timing")[0]
    assert cells(first, "Timing (machine-dependent)", "svmixer_mini")["CPU RTF"] == "0.0100 ± 0.0000"
    assert cells(second, "Timing (machine-dependent)", "svmixer_mini")["CPU RTF"] == "0.5000 ± 0.0000"


def test_a_seed_without_metrics_is_counted(recipe, tmp_path):
    shutil.copytree(recipe / "exp", tmp_path / "exp")
    (tmp_path / "exp/svmixer_mini/seed3/metrics_test_trials.json").unlink()
    text, _ = report(recipe, out=tmp_path / "RESULTS.md", systems=[tmp_path / "exp/svmixer_mini"])
    assert cells(text, "Accuracy", "svmixer_mini")["test: EER (%)"] == "11.00 ± 1.41 (2/3 seeds)"


def test_single_seed_shows_plain_values(recipe, tmp_path):
    text, _ = report(recipe, out=tmp_path / "RESULTS.md", seeds=[2], floor_dir=None)
    got = cells(text, "Accuracy", "svmixer_mini")
    assert got["test: EER (%)"] == "12.00" and got["seeds"] == "1" and FLOOR_NAME not in text


def test_several_trials_lists_get_a_column_group_each(recipe, tmp_path):
    for k in SEEDS:
        run = recipe / "exp/svmixer_mini" / f"seed{k}"
        shutil.copy(run / "metrics_test_trials.json", tmp_path / "m.json")
        (run / "metrics_test_other.json").write_text((tmp_path / "m.json").read_text())
    shutil.copy(recipe / "data/test/trials", recipe / "data/test/other")
    try:
        text, _ = report(recipe, out=tmp_path / "RESULTS.md", test_dirs=[recipe / "data/test"], notes=["test=clean"],
                         trials_names=["trials", "other"], systems=[recipe / "exp/svmixer_mini"], floor_dir=None)
    finally:
        (recipe / "data/test/other").unlink()
    got = cells(text, "Accuracy", "svmixer_mini")
    assert got["test/trials: EER (%)"] == got["test/other: EER (%)"] == "12.00 ± 2.00"


@pytest.mark.parametrize("change, message", [
    (dict(seeds=[1, 9]), "seed9: no model.pt"),
    (dict(notes=["dev=clean"]), "--note names 'dev'"),
    (dict(notes=["test clean"]), "--note 'test clean': expected TEST_SET=DESCRIPTION"),
    (dict(test_dirs=[]), "no test sets"),
    (dict(trials_names=["missing"]), "missing: trials not found"),
])
def test_bad_requests_are_one_line_errors(recipe, tmp_path, change, message):
    with pytest.raises(SvmixError, match=message.replace("(", r"\(")):
        report(recipe, out=tmp_path / "RESULTS.md", **change)
    assert not (tmp_path / "RESULTS.md").exists()


def test_cli(recipe, tmp_path):
    from svmix.bin.report import main

    exp = recipe / "exp"
    args = ["--system", str(exp / "svmixer_mini"), "--seeds", "1,2,3", "--test-data", str(recipe / "data/test"),
            "--floor", str(exp / "floor"), "--note", "test=clean", "--out", str(tmp_path / "RESULTS.md")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert cells((tmp_path / "RESULTS.md").read_text(), "Accuracy", "svmixer_mini")["test: EER (%)"] == "12.00 ± 2.00"
    result = CliRunner().invoke(main, args[:-2] + ["--seeds", "1,1", "--out", str(tmp_path / "RESULTS_per_seed.md")])
    assert result.exit_code != 0 and "listed twice" in result.output
    result = CliRunner().invoke(main, [*args[:2], "--seeds", "4", *args[4:]])
    assert result.exit_code == 1 and "seed4: no model.pt" in one_error_line(result, "svmix-report")


def test_pictures_are_linked_where_drawn_and_said_missing_elsewhere(recipe, tmp_path):
    import re

    plots = tmp_path / "exp"
    plots.mkdir()
    drawn = ["det_test_trials.png", "tsne_svmixer_mini_seed1_test.png", "hist_svmixer_mini_seed1_test_trials.png"]
    for name in drawn:
        (plots / name).write_bytes(b"\x89PNG")
    out = tmp_path / "out/RESULTS.md"
    text, _ = report(recipe, out=out, plots_dir=plots)
    section = text.split("## Pictures\n", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\(([^)]+)\)", section)
    assert sorted((out.parent / link).resolve() for link in links) == sorted(plots / n for n in drawn)
    row = cells(text, "Pictures", "svmixer_mini")
    assert row["test: embeddings"].startswith("[t-SNE](") and row["test_noisy: embeddings"] == "t-SNE: not drawn"
    assert row["test: scores"].startswith("[histogram](") and row["test_noisy: scores"] == "histogram: not drawn"
    assert "- test_noisy: DET: not drawn" in section and FLOOR_NAME not in section
    assert "seed 1" in section and "minDCF(0.05) threshold" in section
    assert "## Pictures" not in report(recipe, out=tmp_path / "RESULTS.md")[0]


def test_a_set_with_its_own_trials_lists_and_a_missing_set(recipe, tmp_path):
    for k in SEEDS:
        run = recipe / "exp/svmixer_mini" / f"seed{k}"
        (run / "metrics_test_noisy_other.json").write_text((run / "metrics_test_noisy_trials.json").read_text())
    shutil.copy(recipe / "data/test_noisy/trials", recipe / "data/test_noisy/other")
    try:
        text, _ = report(recipe, out=tmp_path / "RESULTS.md", systems=[recipe / "exp/svmixer_mini"], floor_dir=None,
                         set_trials=["test_noisy=other"], missing=["vcmix=corpus folder '/x' not found"])
    finally:
        (recipe / "data/test_noisy/other").unlink()
    got = cells(text, "Accuracy", "svmixer_mini")
    assert got["test/trials: EER (%)"] == "12.00 ± 2.00" and got["test_noisy/other: EER (%)"] == "25.00 ± 5.57"
    assert "test_noisy/trials: EER (%)" not in got
    assert "- vcmix: corpus folder '/x' not found" in text.split("## Accuracy", 1)[0]


@pytest.mark.parametrize("change, message", [
    (dict(set_trials=["voices=trials"]), "--trials-of names 'voices'"),
    (dict(set_trials=["test"]), "--trials-of 'test': expected TEST_SET=NAME"),
    (dict(missing=["test=gone"]), "--missing names 'test', which is a test set"),
    (dict(missing=["vcmix"]), "--missing 'vcmix': expected TEST_SET=REASON"),
])
def test_bad_set_lists_are_one_line_errors(recipe, tmp_path, change, message):
    with pytest.raises(SvmixError, match=message):
        report(recipe, out=tmp_path / "RESULTS.md", **change)


def test_backends_before_after_rows_with_the_development_lists(recipe, tmp_path):
    """One development set per condition (tools/recipe_stages.sh: calibration_<dev>.json,
    fusion_<dev>.json): every list named, the rows mean ± std over the seeds, min Cllr beside Cllr."""
    exp = tmp_path / "exp"
    shutil.copytree(recipe / "exp", exp)
    devs = {"dev": tmp_path / "dev" / "trials", "dev_clean": tmp_path / "dev_clean" / "trials"}
    for path in devs.values():
        path.parent.mkdir()
        path.write_text("a b target\n")
    for k in SEEDS:
        run = exp / "svmixer_mini" / f"seed{k}"
        for s in ("test", "test_noisy"):
            for suffix, eer, cllr in (("asnorm", 9.0 + k, None), ("cal", 10.0 + k, 0.5 + k / 100)):
                (run / f"metrics_{s}_trials_{suffix}.json").write_text(json.dumps(
                    {"eer": eer, "min_dcf": {"0.05": 0.2}, "act_dcf": {"0.05": 0.25}, "cllr": cllr,
                     "min_cllr": None if cllr is None else 0.4 + k / 50}))
        fused = exp / "fusion" / f"seed{k}"
        fused.mkdir(parents=True)
        for name, trials in devs.items():
            (run / f"calibration_{name}.json").write_text(json.dumps({"fitted_on": {"trials": str(trials)}}))
            (fused / f"fusion_{name}.json").write_text(json.dumps({"fitted_on": {"trials": str(trials), "scores": [
                f"{exp}/svmixer_mini/seed{k}/scores_{name}", f"{exp}/svmixer_mini_nokd/seed{k}/scores_{name}"]}}))
        for s in ("test", "test_noisy"):
            (fused / f"metrics_{s}_trials.json").write_text(json.dumps(
                {"eer": 5.0, "min_dcf": {"0.05": 0.1}, "act_dcf": {"0.05": 0.12}, "cllr": 0.3, "min_cllr": 0.25}))
    text, _ = report(recipe, out=tmp_path / "RESULTS.md", systems=[exp / "svmixer_mini", exp / "svmixer_mini_nokd"],
                     fusion_dir=exp / "fusion")
    section = text.split("## Score back-ends (before → after)\n", 1)[1].split("\n## ", 1)[0]
    assert f"fitted on `{devs['dev']}`, `{devs['dev_clean']}` (" in section
    rows = [_cells(line) for line in section.splitlines() if line.startswith("| ")]
    header, body = rows[0], rows[1:]
    assert [r[:2] for r in body] == [["svmixer_mini", "cosine"], ["svmixer_mini", "AS-norm"],
                                     ["svmixer_mini", "calibration"], ["svmixer_mini_nokd", "cosine"],
                                     ["svmixer_mini + svmixer_mini_nokd", "fusion"]]
    values = {tuple(r[:2]): dict(zip(header, r)) for r in body}
    assert values["svmixer_mini", "cosine"]["test: EER (%)"] == "12.00 ± 2.00"
    assert values["svmixer_mini", "calibration"]["test: EER (%)"] == "12.00 ± 1.00"
    assert values["svmixer_mini", "calibration"]["test_noisy: Cllr"] == "0.520 ± 0.010"
    assert values["svmixer_mini", "calibration"]["test_noisy: min Cllr"] == "0.440 ± 0.020"
    assert values["svmixer_mini", "AS-norm"]["test: Cllr"] == "n/a"
    assert values["svmixer_mini", "AS-norm"]["test: min Cllr"] == "n/a"
    assert values["svmixer_mini + svmixer_mini_nokd", "fusion"]["test: actDCF@0.05"] == "0.120 ± 0.000"
    assert values["svmixer_mini + svmixer_mini_nokd", "fusion"]["test: min Cllr"] == "0.250 ± 0.000"
    # no back-end run: no section; a calibration fitted on a test list: refused
    assert "## Score back-ends" not in report(recipe, out=tmp_path / "plain" / "RESULTS.md")[0]
    (exp / "svmixer_mini/seed1/calibration_dev.json").write_text(json.dumps(
        {"fitted_on": {"trials": str(recipe / "data/test/trials")}}))
    with pytest.raises(SvmixError, match="a test list of this report"):
        report(recipe, out=tmp_path / "RESULTS.md", systems=[exp / "svmixer_mini"])


LMFT_TRAIN = {"max_steps": 60, "optimizer": {"lr": 1.0e-4}, "aam": {"margin": 0.4}, "augment": None,
              "margin_ramp": {"start": 0.2, "steps": 30}, "kd": {"name": None}, "crop_seconds": None}


def test_lmft_before_after_rows_pair_each_seed_with_the_run_it_continued(recipe, tmp_path):
    exp = tmp_path / "exp"
    shutil.copytree(recipe / "exp", exp)
    for k in SEEDS:  # svmix-train --init-from records its start in the checkpoint
        write_run(exp / "svmixer_mini_lmft" / f"seed{k}", k, 0.5,
                  extra={"init_from": str(exp / "svmixer_mini" / f"seed{k}"), "train_config": LMFT_TRAIN})
    systems = [exp / "svmixer_mini", exp / "svmixer_mini_nokd", exp / "svmixer_mini_lmft"]
    text, _ = report(recipe, out=tmp_path / "RESULTS.md", systems=systems)
    row = cells(text, "Large-margin fine-tuning (before → after)", "svmixer_mini_lmft")
    assert row["fine-tuned from"] == "svmixer_mini"
    assert row["test: EER (%) before → after"] == "12.00 ± 2.00 → 6.00 ± 1.00"
    assert row["test_noisy: ΔEER (points)"] == f"{-0.5 * statistics.fmean(EER['test_noisy']):.2f} ± " \
                                               f"{0.5 * statistics.stdev(EER['test_noisy']):.2f}"
    assert row["test: minDCF@0.01 before → after"] == "0.240 ± 0.040 → 0.120 ± 0.020"
    assert row["settings"] == "margin 0.2 → 0.4 over 30 steps, 60 steps at lr 0.0001, no augmentation, no KD, " \
                              "crops of the model segment"
    assert cells(text, "Accuracy", "svmixer_mini_lmft")["seeds"] == "3"  # an ordinary system there too
    # Without its base system in the report, or continuing from another seed, it is no LMFT row.
    assert "## Large-margin" not in report(recipe, out=tmp_path / "a" / "RESULTS.md",
                                           systems=[exp / "svmixer_mini_lmft"])[0]
    write_run(exp / "svmixer_mini_lmft" / "seed2", 2, 0.5,
              extra={"init_from": str(exp / "svmixer_mini" / "seed1" / "model.pt"), "train_config": LMFT_TRAIN})
    assert "## Large-margin" not in report(recipe, out=tmp_path / "b" / "RESULTS.md", systems=systems)[0]
    write_run(exp / "svmixer_mini_lmft" / "seed2", 2, 0.5,  # a checkpoint path is its run dir
              extra={"init_from": str(exp / "svmixer_mini" / "seed2" / "model.pt"), "train_config": LMFT_TRAIN})
    assert "## Large-margin" in report(recipe, out=tmp_path / "c" / "RESULTS.md", systems=systems)[0]
