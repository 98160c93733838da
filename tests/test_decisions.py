"""After the embedding: QMF from extraction's quality file, score fusion, operating points, calibrated
svmix-score and the API's verify (which agree to 1e-6)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import one_error_line
from svmix.bin.calibrate import main as calibrate_cli
from svmix.calibration import Calibration, fit_calibration, read_quality
from svmix.errors import SvmixError
from svmix.metrics import compute_cllr, compute_min_cllr, compute_min_dcf, dcf_at

pytestmark = pytest.mark.usefixtures("one_thread")


def write_trial_files(root, name, enroll, test, labels, systems, seconds=None):
    """A labelled trials file, one score file per system and (optionally) a quality file."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "trials").write_text("".join(f"{a} {b} {'target' if l else 'nontarget'}\n"
                                         for a, b, l in zip(enroll, test, labels)))
    paths = []
    for k, scores in enumerate(systems):
        path = root / f"{name}{k}"
        path.write_text("".join(f"{a} {b} {s:.6f}\n" for a, b, s in zip(enroll, test, scores)))
        paths.append(path)
    if seconds is not None:
        lines = ["utt\tduration\tembedding_norm\n"] + [f"{u}\t{d:.3f}\t{5.0:.6g}\n" for u, d in seconds.items()]
        (root / "quality.tsv").write_text("".join(lines))
    return root / "trials", paths


def duration_drift_set(rng, n_utts=600, n_trials=12000):
    """Trials whose cosine-like scores drift upwards as the shorter side gets shorter (as scores of short
    utterances do), so one threshold cannot serve all durations."""
    utts = [f"u{i:04d}" for i in range(n_utts)]
    seconds = dict(zip(utts, np.exp(rng.uniform(np.log(1.0), np.log(20.0), n_utts))))
    a, b = rng.integers(0, n_utts, (2, n_trials))
    keep = a != b
    a, b = a[keep], b[keep]
    labels = rng.random(len(a)) < 0.1
    shortest = np.minimum([seconds[utts[i]] for i in a], [seconds[utts[i]] for i in b])
    scores = 0.1 + 0.3 * labels + 0.1 * rng.standard_normal(len(a)) + 0.15 * (np.log(20.0) - np.log(shortest))
    return [utts[i] for i in a], [utts[i] for i in b], labels, scores, seconds


def test_qmf_from_quality_files_beats_plain_calibration_on_held_out_trials(tmp_path):
    rng = np.random.default_rng(11)
    dev = duration_drift_set(rng)
    test = duration_drift_set(rng)
    dev_trials, (dev_scores,) = write_trial_files(tmp_path / "dev", "s", *dev[:3], [dev[3]], dev[4])
    test_trials, (test_scores,) = write_trial_files(tmp_path / "test", "s", *test[:3], [test[3]], test[4])
    figures = {}
    for name, extra in (("plain", []), ("qmf", ["--quality", str(tmp_path / "dev")])):
        result = CliRunner().invoke(calibrate_cli, ["--scores", str(dev_scores), "--trials", str(dev_trials),
                                                    "--out", str(tmp_path / f"{name}.json"), *extra])
        assert result.exit_code == 0, result.output
        apply_extra = ["--quality", str(tmp_path / "test" / "quality.tsv")] if extra else []
        result = CliRunner().invoke(calibrate_cli, ["--scores", str(test_scores), "--apply",
                                                    str(tmp_path / f"{name}.json"), "--output",
                                                    str(tmp_path / f"{name}.llr"), *apply_extra])
        assert result.exit_code == 0, result.output
        llr = np.array([float(line.split()[2]) for line in (tmp_path / f"{name}.llr").read_text().splitlines()])
        figures[name] = (compute_min_dcf(llr, test[2], 0.05), compute_cllr(llr, test[2]))
    cal = Calibration.load(tmp_path / "qmf.json")
    assert cal.quality_measures == ["log_duration", "embedding_norm"]
    assert cal.features == ["score", "min_log_duration", "min_embedding_norm", "max_log_duration",
                            "max_embedding_norm"]
    assert figures["qmf"][0] < figures["plain"][0] - 0.02  # minDCF(0.05) on held-out trials
    assert figures["qmf"][1] < figures["plain"][1]
    # The same calibration without its quality measures, or plain with them: one-line errors.
    result = CliRunner().invoke(calibrate_cli, ["--scores", str(test_scores), "--apply", str(tmp_path / "qmf.json"),
                                                "--output", str(tmp_path / "x")])
    assert "give --quality" in one_error_line(result)
    result = CliRunner().invoke(calibrate_cli, ["--scores", str(test_scores), "--apply", str(tmp_path / "plain.json"),
                                                "--output", str(tmp_path / "x"), "--quality", str(tmp_path / "test")])
    assert "drop --quality" in one_error_line(result)


def test_quality_file_errors_name_file_and_line(tmp_path):
    path = tmp_path / "quality.tsv"
    path.write_text("utt\tduration\tembedding_norm\nu1\t2.0\t3.0\nu2\tx\t1\n")
    with pytest.raises(SvmixError, match=r"quality.tsv:3: expected"):
        read_quality(path)
    path.write_text("utt duration\n")
    with pytest.raises(SvmixError, match=r"quality.tsv:1: expected the header"):
        read_quality(path)
    path.write_text("utt\tduration\tembedding_norm\nu1\t0\t3.0\n")
    with pytest.raises(SvmixError, match=r"quality.tsv:2: duration must be positive"):
        read_quality(path)
    (tmp_path / "emb").mkdir()
    with pytest.raises(SvmixError, match="no quality file"):
        read_quality(tmp_path / "emb")


def test_fusion_of_two_systems_fits_one_weight_each_and_beats_either(tmp_path):
    rng = np.random.default_rng(4)

    def two_systems(n=20000):
        labels = rng.random(n) < 0.1
        enroll, test = [f"e{i % 50}" for i in range(n)], [f"t{i}" for i in range(n)]
        a = 0.2 + 0.25 * labels + 0.1 * rng.standard_normal(n)          # a cosine-like system
        b = -3.0 + 4.0 * labels + 2.5 * rng.standard_normal(n)          # another scale, independent errors
        return enroll, test, labels, a, b

    dev, test = two_systems(), two_systems()
    dev_trials, dev_paths = write_trial_files(tmp_path / "dev", "sys", *dev[:3], dev[3:])
    _, test_paths = write_trial_files(tmp_path / "test", "sys", *test[:3], test[3:])
    fusion = tmp_path / "fusion.json"
    result = CliRunner().invoke(calibrate_cli, ["--scores", str(dev_paths[0]), "--scores", str(dev_paths[1]),
                                                "--trials", str(dev_trials), "--out", str(fusion)])
    assert result.exit_code == 0, result.output
    cal = Calibration.load(fusion)
    assert cal.num_systems == 2 and cal.features == ["score1", "score2"] and min(cal.weights) > 0
    # Test scores of system 2 in another line order: aligned by pair to system 1's.
    lines = test_paths[1].read_text().splitlines()
    test_paths[1].write_text("\n".join(lines[::-1]) + "\n")
    result = CliRunner().invoke(calibrate_cli, ["--scores", str(test_paths[0]), "--scores", str(test_paths[1]),
                                                "--apply", str(fusion), "--output", str(tmp_path / "fused")])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in (tmp_path / "fused").read_text().splitlines()]
    assert [r[:2] for r in rows] == [line.split()[:2] for line in test_paths[0].read_text().splitlines()]
    fused = np.array([float(r[2]) for r in rows])
    api = fit_calibration(np.stack([np.round(dev[3], 6), np.round(dev[4], 6)], axis=1), dev[2])
    np.testing.assert_allclose(fused, api.apply(np.stack([np.round(test[3], 6), np.round(test[4], 6)], axis=1)),
                               atol=1e-6)
    labels = test[2]
    for single in (test[3], test[4]):
        assert compute_min_dcf(fused, labels, 0.05) < compute_min_dcf(single, labels, 0.05)
        assert compute_min_cllr(fused, labels) < compute_min_cllr(single, labels)
    assert compute_cllr(fused, labels) - compute_min_cllr(fused, labels) < 0.05  # fused output is calibrated
    # One system given to a fusion: a one-line error.
    result = CliRunner().invoke(calibrate_cli, ["--scores", str(test_paths[0]), "--apply", str(fusion),
                                                "--output", str(tmp_path / "x")])
    assert "fuses 2 system(s)" in one_error_line(result)


@pytest.mark.parametrize("seed", [0, 1])
def test_operating_points_chosen_on_dev_hold_on_held_out_trials(seed):
    rng = np.random.default_rng(seed)

    def sample(n_target=2000, n_nontarget=20000):
        s = np.r_[0.55 + 0.12 * rng.standard_normal(n_target), 0.15 + 0.12 * rng.standard_normal(n_nontarget)]
        return s, np.r_[np.ones(n_target, bool), np.zeros(n_nontarget, bool)]

    (dev, dev_l), (test, test_l) = sample(), sample()
    for p in (0.01, 0.05):
        cal = fit_calibration(dev, dev_l, p_target=p, operating_point="min-dcf")
        dev_llr = cal.apply(dev)
        assert dcf_at(dev_llr, dev_l, p, cal.llr_threshold) == pytest.approx(compute_min_dcf(dev, dev_l, p))
        test_llr = cal.apply(test)
        assert np.array_equal(cal.decide(test_llr), test_llr > cal.llr_threshold)
        assert dcf_at(test_llr, test_l, p, cal.llr_threshold) - compute_min_dcf(test, test_l, p) < 0.05
    cal = fit_calibration(dev, dev_l, operating_point="far", far=0.01)
    dev_far = np.mean(cal.apply(dev[~dev_l]) > cal.llr_threshold)
    assert 0.0095 <= dev_far <= 0.01
    assert abs(np.mean(cal.apply(test[~test_l]) > cal.llr_threshold) - 0.01) < 0.004
    assert "false-accept rate 0.01" in cal.describe_operating_point()


def test_calibrated_svmix_score_and_verify_agree(tmp_path):
    import svmix
    from conftest import make_datadir
    from svmix.bin.score import main as score_cli
    from svmix.inference.extract import extract_embeddings, list_inputs
    from test_extract import make_checkpoint

    ckpt = make_checkpoint(tmp_path / "exp" / "model.pt")
    data = make_datadir(tmp_path, num_speakers=2, utts_per_speaker=3, seconds=(1.0, 6.0), seed=5)
    emb = tmp_path / "emb"
    extract_embeddings(ckpt, list_inputs(data=data), emb, num_workers=0, progress=False)
    result = CliRunner().invoke(score_cli, ["--trials", str(data / "trials"), "--embeddings", str(emb / "xvector.scp"),
                                            "--output", str(tmp_path / "cos"), "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    cal_path = tmp_path / "cal.json"
    result = CliRunner().invoke(calibrate_cli, ["--scores", str(tmp_path / "cos"), "--trials", str(data / "trials"),
                                                "--quality", str(emb), "--out", str(cal_path),
                                                "--operating-point", "min-dcf", "--p-target", "0.01"])
    assert result.exit_code == 0, result.output
    assert "minDCF threshold at p_target=0.01" in result.output
    fitted = Calibration.load(cal_path)
    assert json.loads(cal_path.read_text())["llr_threshold"] == fitted.llr_threshold
    assert fitted.quality_measures == ["log_duration", "embedding_norm"]
    # 15 nearly separable trials give a fitted calibration huge weights; compare the CLI and the API
    # with one of realistic size (weights of cosine-score calibrations are ~10), at a stored threshold.
    cal = Calibration(fitted.features, [12.0, 0.8, 0.3, 0.4, -0.2], -6.0, p_target=0.01,
                      quality_measures=fitted.quality_measures, operating_point="min-dcf", threshold=-1.5)
    cal_path = tmp_path / "realistic.json"
    cal.save(cal_path)
    result = CliRunner().invoke(score_cli, ["--trials", str(data / "trials"), "--embeddings", str(emb / "xvector.scp"),
                                            "--output", str(tmp_path / "llr"), "--calibration", str(cal_path),
                                            "--bootstrap", "0"])
    assert result.exit_code == 0, result.output
    assert "accept llr > -1.5000 (minDCF threshold at p_target=0.01" in result.output
    rows = [line.split() for line in (tmp_path / "llr").read_text().splitlines()]
    assert len(rows) == 15
    # The operating point does not change LLRs: put it amid them, so that verify both accepts and rejects.
    threshold = float(np.median([float(r[2]) for r in rows])) + 1e-4
    cal.threshold = threshold
    cal.save(cal_path)
    model = svmix.load_model(ckpt, calibration=cal_path)
    wavs = dict(line.split() for line in (data / "wav.scp").read_text().splitlines())
    cosines = {tuple(r[:2]): float(r[2]) for r in map(str.split, (tmp_path / "cos").read_text().splitlines())}
    decisions = []
    for a, b, llr in rows:
        got = model.verify(wavs[a], wavs[b])
        # Not 1e-6: the file has six decimals (5e-7) and extraction batches segments across utterances,
        # which moves float32 embedding bits; times the weights this is ~2e-6 (measured 1.8e-6).
        assert abs(got.llr - float(llr)) <= 5e-6, (a, b)
        assert got.accept == (got.llr > threshold) and got.threshold == pytest.approx(threshold)
        decisions.append(got.accept)
        assert got.llr != pytest.approx(cosines[a, b], abs=1e-3)  # LLRs, not cosines
    assert 0 < sum(decisions) < len(decisions)  # both decisions occur
    # A quality-aware calibration cannot take bare embeddings; no calibration: verify says how to get one.
    with pytest.raises(SvmixError, match="give audio"):
        model.verify(model.embed(wavs[rows[0][0]]), wavs[rows[0][1]])
    with pytest.raises(SvmixError, match="needs a calibration"):
        svmix.load_model(ckpt).verify(wavs[rows[0][0]], wavs[rows[0][1]])
