"""Trial scoring: vectorised cosine / segment-pair / AS-norm scores against naive loops, and svmix-score."""
import json
import re

import kaldiio
import numpy as np
import pytest
from click.testing import CliRunner

from svmix.bin.score import main as score_cli
from svmix.data.datadir import Trial, read_trials, write_kv, write_trials
from svmix.errors import SvmixError
from svmix.scoring import TrialIndex, load_embeddings, read_scores, read_trial_index, score_trials, write_scores
from svmix.scoring.textio import iter_token_chunks
from svmix.scoring.trials import parse_trial_chunk


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def naive_score(a, b, mean=None):
    """Mean over all cross-segment cosines (a vector is a single segment)."""
    a, b = np.atleast_2d(a).astype(np.float64), np.atleast_2d(b).astype(np.float64)
    if mean is not None:
        a, b = a - mean, b - mean
    return float(np.mean([[cos(x, y) for y in b] for x in a]))


def make_vectors(n_spk=6, per_spk=5, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_spk, dim))
    return {f"s{s}-u{u}": (centres[s] + 0.7 * rng.standard_normal(dim) + 0.5).astype(np.float32)
            for s in range(n_spk) for u in range(per_spk)}


def make_trials(ids, n=300, seed=1):
    rng = np.random.default_rng(seed)
    pairs = rng.choice(len(ids), size=(n, 2))
    spk = lambda utt: utt.split("-")[0]  # noqa: E731
    return [Trial(ids[a], ids[b], int(spk(ids[a]) == spk(ids[b]))) for a, b in pairs]


def write_scp(path_prefix, entries):
    with kaldiio.WriteHelper(f"ark,scp:{path_prefix}.ark,{path_prefix}.scp") as writer:
        for utt, value in entries.items():
            writer(utt, np.asarray(value, np.float32))
    return f"{path_prefix}.scp"


def test_vector_scores_match_naive_loop_with_and_without_mean():
    emb = make_vectors()
    trials = make_trials(list(emb))
    mean = np.mean(list(emb.values()), axis=0)
    for m in (None, mean):
        got = score_trials(trials, emb, mean=m, chunk_size=7)
        want = [naive_score(emb[t.enroll], emb[t.test], m) for t in trials]
        np.testing.assert_allclose(got, want, atol=1e-5)
    assert not np.allclose(score_trials(trials, emb), score_trials(trials, emb, mean=mean), atol=1e-3)


def test_segment_matrix_scores_are_mean_cross_segment_cosines(tmp_path):
    rng = np.random.default_rng(3)
    emb = {f"s{u % 4}-u{u}": rng.standard_normal((rng.integers(1, 6), 12)).astype(np.float32) for u in range(20)}
    emb["s0-vector"] = rng.standard_normal(12).astype(np.float32)  # a plain vector mixed in
    trials = make_trials(list(emb), n=150)
    loaded = load_embeddings(write_scp(tmp_path / "segments", emb))
    assert loaded.segmented and [len(m) for m in loaded.data] == [len(np.atleast_2d(v)) for v in emb.values()]
    got = score_trials(trials, loaded, chunk_size=16)
    want = [naive_score(emb[t.enroll], emb[t.test]) for t in trials]
    np.testing.assert_allclose(got, want, atol=1e-5)


def naive_asnorm(e, t, cohort, top_n):
    s = cos(e, t)

    def stats(x):
        top = np.sort([cos(x, c) for c in cohort])[::-1][:top_n]
        return np.mean(top), np.std(top)

    (me, se), (mt, st) = stats(e), stats(t)
    return 0.5 * ((s - me) / se + (s - mt) / st)


def test_asnorm_matches_naive_reference_per_utterance_and_speaker_mean_cohort():
    emb = make_vectors(seed=4)
    trials = make_trials(list(emb), n=120)
    cohort = make_vectors(n_spk=8, per_spk=3, seed=5)
    got = score_trials(trials, emb, norm="asnorm", cohort=cohort, top_n=5)
    want = [naive_asnorm(emb[t.enroll], emb[t.test], list(cohort.values()), 5) for t in trials]
    np.testing.assert_allclose(got, want, atol=1e-4)

    utt2spk = {utt: utt.split("-")[0] for utt in cohort}
    speakers = sorted(set(utt2spk.values()))
    means = [np.mean([v / np.linalg.norm(v) for u, v in cohort.items() if utt2spk[u] == s], axis=0) for s in speakers]
    got = score_trials(trials, emb, norm="asnorm", cohort=cohort, cohort_utt2spk=utt2spk, top_n=3)
    want = [naive_asnorm(emb[t.enroll], emb[t.test], means, 3) for t in trials]
    np.testing.assert_allclose(got, want, atol=1e-4)


def test_api_errors_missing_ids_cohort_and_unknown_norm():
    emb = make_vectors()
    trials = make_trials(list(emb), n=5)
    with pytest.raises(SvmixError, match="1 utterances named in 2 of 7 trials are missing .* first missing: 'x'"):
        score_trials(trials + [("x", trials[0].test), (trials[1].enroll, "x")], emb)
    with pytest.raises(SvmixError, match="cohort"):
        score_trials(trials, emb, norm="asnorm")
    with pytest.raises(SvmixError, match="unknown score normalisation 'znorm'"):
        score_trials(trials, emb, norm="znorm")


def test_inconsistent_dimension_names_the_utterance(tmp_path):
    emb = make_vectors()
    emb["s9-odd"] = np.ones(7, np.float32)
    scp = write_scp(tmp_path / "emb", emb)
    with pytest.raises(SvmixError, match="'s9-odd' has dimension 7"):
        load_embeddings(scp)


TRIAL_TEXTS = {
    "mixed formats, blank lines": "a b target\n\n1 c d\n  e   f\t nontarget\n0 g h\n1 target x\n",
    "kaldi, non-ASCII, no final newline": "a b target\nc d nontarget\ne\u00e9 f target",
    "voxceleb": "1 a b\n0 c d\n1 e f\n",
    "unlabelled": "a b\nc d\n",
    "voxceleb line naming 'target' among kaldi lines": "1 a target\nb c nontarget\n",
    "NUL in an id, CRLF": "a\x00 b target\r\nc d nontarget\r\n",
}


@pytest.mark.parametrize("text", TRIAL_TEXTS.values(), ids=TRIAL_TEXTS.keys())
def test_fast_trial_reader_follows_read_trials_semantics(tmp_path, text):
    path = tmp_path / "trials"
    path.write_bytes(text.encode())
    want = [(t.enroll, t.test, t.label) for t in read_trials(path)]
    vocab = {}
    index = read_trial_index(path, vocab, grow=True)
    names = {v: k for k, v in vocab.items()}
    got = [(names[e], names[t], int(lab) if lab >= 0 else None)
           for e, t, lab in zip(index.enroll, index.test, index.labels)]
    assert got == want
    assert index.labelled == all(label is not None for *_, label in want)
    # small chunks split lines across reads and formats across chunks; numbering and tokens must not change
    for chunk_chars in (5, 13):
        chunks = list(iter_token_chunks(path, chunk_chars=chunk_chars))
        rows = [row for c in chunks for row in zip(*parse_trial_chunk(str(path), c))]
        assert [(e, t, int(lab) if lab >= 0 else None) for e, t, lab in rows] == want
        assert np.concatenate([c.lines for c in chunks]).tolist() == [t.line for t in read_trials(path)]


def test_trial_errors_name_the_line(tmp_path):
    path = tmp_path / "trials"
    path.write_text("a b target\nc d maybe\n")
    with pytest.raises(SvmixError, match=r"trials:2: expected"):
        read_trial_index(path, {}, grow=True)
    path.write_text("".join(f"1 u{i} v{i}\n" for i in range(60)).replace("1 u37 v37", "1 u37 v37 w"))
    for chunk_chars in (64, 1 << 20):
        with pytest.raises(SvmixError, match=r"trials:38: expected"):
            for chunk in iter_token_chunks(path, chunk_chars=chunk_chars):
                parse_trial_chunk(str(path), chunk)


def test_score_file_text_matches_printf_formatting(tmp_path):
    ids = ["a", "\u00e9t\u00e9-1", "id10270/x6uYqmx31kE/00001.wav"]
    rng = np.random.default_rng(2)
    scores = np.r_[rng.standard_normal(500) * 10.0 ** rng.integers(-7, 4, 500),
                   0.0, -0.0, -4e-7, np.nan, np.inf, -np.inf, 3e13, 123456789.5]
    trials = TrialIndex(rng.integers(0, 3, len(scores)), rng.integers(0, 3, len(scores)), np.zeros(len(scores)))
    write_scores(tmp_path / "scores", ids, trials, scores, chunk_size=64)
    got = (tmp_path / "scores").read_text(encoding="utf-8").splitlines()
    want = [f"{ids[e]} {ids[t]} {s:.6f}" for e, t, s in zip(trials.enroll, trials.test, scores)]
    assert len(got) == len(want)
    differ = [(g, w) for g, w in zip(got, want) if g != w]
    assert len(differ) <= 2, differ  # at most rare last-digit ties
    assert all(abs(float(g.split()[2]) - float(w.split()[2])) <= 1.01e-6 for g, w in differ)


def test_read_scores_aligns_by_pair_and_reports_missing(tmp_path):
    trials_path = tmp_path / "trials"
    write_trials(trials_path, [Trial("a", "b", 1), Trial("c", "d", 0), Trial("a", "d", 0)])
    vocab = {}
    index = read_trial_index(trials_path, vocab, grow=True)
    scores = tmp_path / "scores"
    scores.write_text("c d 0.2\na d -0.5\nx y 9\na b 0.75\n")
    np.testing.assert_allclose(read_scores(scores, index, vocab), [0.75, 0.2, -0.5])
    scores.write_text("a b 0.75\n")
    with pytest.raises(SvmixError, match="no score for 2 of 3 trials; first: 'c d'"):
        read_scores(scores, index, vocab)


@pytest.fixture
def scored_setup(tmp_path):
    emb = make_vectors(n_spk=8, per_spk=4, seed=7)
    scp = write_scp(tmp_path / "xvector", emb)
    trials = make_trials(list(emb), n=200, seed=8)
    trials_path = tmp_path / "trials"
    write_trials(trials_path, trials, "voxceleb")
    return tmp_path, emb, scp, trials, trials_path


def test_cli_scores_in_trial_order_with_metrics_json(scored_setup):
    tmp_path, emb, scp, trials, trials_path = scored_setup
    out, js = tmp_path / "scores", tmp_path / "metrics.json"
    result = CliRunner().invoke(score_cli, ["--trials", str(trials_path), "--embeddings", scp,
                                            "--output", str(out), "--metrics-json", str(js)])
    assert result.exit_code == 0, result.output
    assert "EER" in result.stdout
    lines = [line.split() for line in out.read_text().splitlines()]
    assert [(a, b) for a, b, _ in lines] == [(t.enroll, t.test) for t in trials]
    np.testing.assert_allclose([float(s) for _, _, s in lines],
                               [naive_score(emb[t.enroll], emb[t.test]) for t in trials], atol=2e-6)
    metrics = json.loads(js.read_text())
    # No utt2spk beside the trials: no confidence intervals.
    assert set(metrics) == {"eer", "min_dcf", "n_target", "n_nontarget", "act_dcf", "cllr", "min_cllr"}
    assert set(metrics["min_dcf"]) == set(metrics["act_dcf"]) == {"0.01", "0.05"}
    assert metrics["n_target"] + metrics["n_nontarget"] == len(trials)
    assert metrics["n_target"] == sum(t.label for t in trials)


def test_cli_confidence_intervals_resample_the_speakers_of_utt2spk(scored_setup):
    tmp_path, emb, scp, trials, trials_path = scored_setup
    write_kv(tmp_path / "utt2spk", [(utt, utt.split("-")[0]) for utt in emb])
    runs = {}
    for name, extra in (("beside", []), ("explicit", ["--utt2spk", str(tmp_path / "utt2spk")])):
        js = tmp_path / f"{name}.json"
        result = CliRunner().invoke(score_cli, ["--trials", str(trials_path), "--embeddings", scp, "--output",
                                                str(tmp_path / f"{name}.scores"), "--metrics-json", str(js),
                                                "--bootstrap", "200", *extra])
        assert result.exit_code == 0, result.output
        assert "95% CI" in result.stdout
        runs[name] = json.loads(js.read_text())
    m = runs["beside"]
    assert runs["explicit"] == m  # the utt2spk beside the trials is the default
    assert m["eer_ci"][0] <= m["eer"] <= m["eer_ci"][1]
    assert m["bootstrap"]["speakers"] == 8 and m["bootstrap"]["resamples"] + m["bootstrap"]["skipped"] == 200
    assert set(m["min_dcf_ci"]) == {"0.01", "0.05"}
    # A trial utterance without a speaker is a one-line error naming it.
    first = trials[0].enroll
    write_kv(tmp_path / "partial", [(utt, utt.split("-")[0]) for utt in emb if utt != first])
    result = CliRunner().invoke(score_cli, ["--trials", str(trials_path), "--embeddings", scp, "--output",
                                            str(tmp_path / "x.scores"), "--utt2spk", str(tmp_path / "partial")])
    assert result.exit_code == 1 and f"no speaker for utterance '{first}'" in result.output
    # The same incomplete file found beside the trials (not asked for): scores and metrics, no intervals.
    (tmp_path / "partial").replace(tmp_path / "utt2spk")
    js = tmp_path / "no_ci.json"
    result = CliRunner().invoke(score_cli, ["--trials", str(trials_path), "--embeddings", scp, "--output",
                                            str(tmp_path / "y.scores"), "--metrics-json", str(js)])
    assert result.exit_code == 0, result.output
    assert "eer_ci" not in json.loads(js.read_text())


def test_cli_missing_ids_one_line_error_and_output_left_intact(scored_setup):
    tmp_path, emb, scp, trials, trials_path = scored_setup
    write_trials(trials_path, trials + [Trial("ghost-1", trials[0].test, 0), Trial(trials[0].enroll, "ghost-2", 1)])
    out = tmp_path / "scores"
    out.write_text("previous results\n")
    result = CliRunner().invoke(score_cli, ["--trials", str(trials_path), "--embeddings", scp, "--output", str(out)])
    assert result.exit_code != 0
    assert len(result.stderr.strip().splitlines()) == 1
    assert "2 utterances named in 2 of 202 trials are missing" in result.stderr
    assert "first missing: 'ghost-1'" in result.stderr
    assert out.read_text() == "previous results\n"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".scores")) == []

    result = CliRunner().invoke(score_cli, ["--trials", str(trials_path), "--embeddings", scp,
                                            "--output", str(out), "--skip-missing"])
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == len(trials)


def test_cli_asnorm_and_mean_from_match_api(scored_setup):
    tmp_path, emb, scp, trials, trials_path = scored_setup
    cohort = make_vectors(n_spk=10, per_spk=2, seed=9)
    cohort_scp = write_scp(tmp_path / "cohort", cohort)
    utt2spk = tmp_path / "utt2spk"
    utt2spk.write_text("".join(f"{u} {u.split('-')[0]}\n" for u in cohort))
    out = tmp_path / "scores"
    result = CliRunner().invoke(score_cli, ["--trials", str(trials_path), "--embeddings", scp, "--output", str(out),
                                            "--cohort", cohort_scp, "--cohort-utt2spk", str(utt2spk),
                                            "--top-n", "4", "--mean-from", cohort_scp])
    assert result.exit_code == 0, result.output
    mean = np.mean(list(cohort.values()), axis=0)
    want = score_trials(trials, emb, norm="asnorm", cohort=cohort, top_n=4, mean=mean,
                        cohort_utt2spk={u: u.split("-")[0] for u in cohort})
    got = [float(line.split()[2]) for line in out.read_text().splitlines()]
    np.testing.assert_allclose(got, want, atol=2e-6)


def mixed_trials_text(fmt, n, odd_line, first_labelled=True):
    """``n`` trials, labelled in format ``fmt`` or unlabelled, with line ``odd_line`` of the other kind."""
    def line(i, labelled):
        if not labelled:
            return f"e{i} t{i}"
        if fmt == "kaldi":
            return f"e{i} t{i} {'target' if i % 3 == 0 else 'nontarget'}"
        return f"{int(i % 3 == 0)} e{i} t{i}"
    return "".join(line(i, first_labelled != (i + 1 == odd_line)) + "\n" for i in range(n))


@pytest.mark.parametrize("fmt", ["kaldi", "voxceleb"])
@pytest.mark.parametrize("first_labelled", [True, False])
@pytest.mark.parametrize("odd_line", [2, 37, 60])
def test_half_labelled_trials_are_an_error_in_both_readers(tmp_path, fmt, first_labelled, odd_line):
    path = tmp_path / "trials"
    path.write_text(mixed_trials_text(fmt, 60, odd_line, first_labelled))
    kinds = ("unlabelled", "labelled")
    expected = (f"{path}:{odd_line}: {kinds[not first_labelled]} trial, but the first trial (line 1) is "
                f"{kinds[first_labelled]}")
    with pytest.raises(SvmixError, match=re.escape(expected)):
        read_trials(path)
    with pytest.raises(SvmixError, match=re.escape(expected)):
        read_trial_index(path, {}, grow=True)
    problems = []
    read_trials(path, problems=problems)
    assert [str(p) for p in problems] == [f"{expected}; label every trial (target/nontarget or 1/0) or none"]


def test_half_labelled_trials_given_in_python_are_an_error():
    emb = make_vectors()
    ids = list(emb)
    with pytest.raises(SvmixError, match="trials:3: unlabelled trial, but the first trial"):
        score_trials([(ids[0], ids[1], 1), (ids[0], ids[2], 0), (ids[1], ids[2])], emb)


def test_cli_half_labelled_trials_exit_1_without_output(scored_setup):
    tmp_path, emb, scp, trials, trials_path = scored_setup
    lines = trials_path.read_text().splitlines()
    lines[41] = " ".join(lines[41].split()[1:])  # drop the VoxCeleb label of line 42
    trials_path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores"
    result = CliRunner().invoke(score_cli, ["--trials", str(trials_path), "--embeddings", scp, "--output", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"error: {trials_path}:42: unlabelled trial" in result.stderr.strip().splitlines()[-1]
    assert not out.exists()


@pytest.mark.parametrize("bad", [[0], [57], [3, 199]])
def test_non_finite_scores_are_never_written(scored_setup, monkeypatch, bad):
    """A last check before writing: whatever produced them, NaN scores do not reach the score file."""
    import svmix.scoring.pipeline as pipeline

    tmp_path, emb, scp, trials, trials_path = scored_setup
    real = pipeline.score_trials

    def with_nan(*args, **kwargs):
        scores = real(*args, **kwargs).astype(np.float64)
        scores[bad] = np.nan
        return scores

    monkeypatch.setattr(pipeline, "score_trials", with_nan)
    out = tmp_path / "scores"
    out.write_text("previous\n")
    with pytest.raises(SvmixError) as info:
        pipeline.score_file(trials_path, scp, out)
    first = trials[bad[0]]
    assert str(info.value) == (f"{out}: not written: {len(bad)} of 200 scores are NaN or infinite; first: "
                               f"{trials_path}:{bad[0] + 1} '{first.enroll} {first.test}'")
    assert out.read_text() == "previous\n"


@pytest.mark.parametrize("line", [1, 3, 40])
@pytest.mark.parametrize("bad", [b"\xe9", b"\xff", b"\xe2\x82"], ids=["latin-1", "ff", "cut-multibyte"])
def test_non_utf8_trials_and_score_files_name_the_line(tmp_path, line, bad):
    path = tmp_path / "trials"
    lines = [f"e{i} t{i} target".encode() for i in range(50)]
    lines[line - 1] = b"e" + bad + lines[line - 1][1:]
    path.write_bytes(b"\n".join(lines) + b"\n")
    for chunk_chars in (16, 1 << 20):
        with pytest.raises(SvmixError, match=rf"^{path}:{line}: not UTF-8 text \(byte 0x{bad[0]:02x} at character 2\)"):
            list(iter_token_chunks(path, chunk_chars=chunk_chars))
    with pytest.raises(SvmixError, match=rf"^{path}:{line}: not UTF-8"):
        read_trial_index(path, {}, grow=True)
