"""Every embedding read for scoring is checked: entries inside their ark (a truncated ark or an offset
past its end is an error, never a shorter vector), finite values, no zero vectors, a usable mean file.
Errors are one line naming the scp line, the utterance and the ark; nothing is written under the
final score file name."""
import kaldiio
import numpy as np
import pytest
from click.testing import CliRunner

from svmix.bin.score import main as score_cli
from svmix.errors import SvmixError
from svmix.scoring import load_embeddings, load_mean, score_trials
from conftest import one_error_line


def write_ark(path, entries):
    kaldiio.save_ark(str(path), entries, scp=str(path.with_suffix(".scp")))
    return path.with_suffix(".scp")


def make_entries(n=6, dim=8, segments=None, seed=0):
    """``n`` random embeddings: vectors, or (segments, dim) matrices."""
    rng = np.random.default_rng(seed)
    shape = (dim,) if segments is None else (segments, dim)
    return {f"u{i}": rng.standard_normal(shape).astype(np.float32) + 0.1 for i in range(n)}


def scp_lines(scp):
    return scp.read_text().splitlines()


def run_score(tmp_path, scp, *extra, trials_text=None):
    """svmix-score on unlabelled trials over the scp's utterances, into a file with previous content."""
    trials = tmp_path / "trials"
    if trials_text is None:
        utts = [line.split()[0] for line in scp_lines(scp)]
        trials_text = "".join(f"{a} {b}\n" for a in utts for b in utts if a < b)
    trials.write_text(trials_text)
    out = tmp_path / "scores"
    out.write_text("previous\n")
    result = CliRunner().invoke(score_cli, ["--trials", str(trials), "--embeddings", str(scp),
                                            "--output", str(out), *map(str, extra)])
    return result, out


def assert_untouched(out):
    assert out.read_text() == "previous\n"
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(".scores")] == []


# ----------------------------------------------------------------------------- NaN / Inf / zero


@pytest.mark.parametrize("segments", [None, 3], ids=["vectors", "segments"])
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("position", [0, 2, 5])
def test_non_finite_embedding_is_an_error_naming_line_utterance_and_ark(tmp_path, segments, value, position):
    entries = make_entries(segments=segments)
    utt = f"u{position}"
    entries[utt].flat[-1] = value  # a single bad value (the last segment's last element)
    scp = write_ark(tmp_path / "emb.ark", entries)
    with pytest.raises(SvmixError) as info:
        load_embeddings(scp)
    message = str(info.value)
    assert message.startswith(f"{scp}:{position + 1}: embedding of '{utt}' contains NaN or infinite values")
    assert f"{tmp_path}/emb.ark:" in message and "1 of 6 embeddings" in message
    result, out = run_score(tmp_path, scp)  # unlabelled trials: no metrics step that could catch it
    one_error_line(result, f"'{utt}'", "NaN or infinite")
    assert_untouched(out)


@pytest.mark.parametrize("zeros", [["u0"], ["u3"], ["u1", "u2", "u4", "u5"]])
@pytest.mark.parametrize("segments", [None, 2], ids=["vectors", "segments"])
def test_zero_embedding_is_an_error_naming_the_first_utterances(tmp_path, zeros, segments):
    entries = make_entries(segments=segments)
    for utt in zeros:
        if segments:
            entries[utt][-1] = 0.0  # one zero segment is enough
        else:
            entries[utt][:] = 0.0
    scp = write_ark(tmp_path / "emb.ark", entries)
    with pytest.raises(SvmixError) as info:
        load_embeddings(scp)
    message = str(info.value)
    first = int(zeros[0][1:]) + 1
    assert message.startswith(f"{scp}:{first}: embedding of '{zeros[0]}' is all zeros")
    assert f"{len(zeros)} of 6 embeddings" in message
    assert all(f"'{utt}'" in message for utt in zeros[:3]) and ("..." in message) == (len(zeros) > 3)
    result, out = run_score(tmp_path, scp)
    one_error_line(result, f"'{zeros[0]}'", "all zeros")
    assert_untouched(out)


@pytest.mark.parametrize("fault", ["nan", "zero"])
def test_in_memory_embeddings_and_cohorts_are_checked_too(fault):
    entries = make_entries()
    entries["u4"][1] = np.nan if fault == "nan" else 0.0
    if fault == "zero":
        entries["u4"][:] = 0.0
    trials = [("u0", "u1"), ("u2", "u3")]
    with pytest.raises(SvmixError, match="embedding of 'u4'"):
        score_trials(trials, entries)
    with pytest.raises(SvmixError, match="embedding of 'u4'"):
        score_trials(trials, make_entries(), norm="asnorm", cohort=entries, top_n=2)


# ----------------------------------------------------------------------------- truncated arks

def truncated_copy(tmp_path, entries, cut_from_end, reverse=False):
    """The ark of ``entries`` without its last ``cut_from_end`` bytes (the last entry is cut), with an
    scp in file order or reversed (the cut entry read first, so no dimension comparison can catch it)."""
    scp = write_ark(tmp_path / "full.ark", entries)
    data = (tmp_path / "full.ark").read_bytes()
    ark = tmp_path / "cut.ark"
    ark.write_bytes(data[:len(data) - cut_from_end])
    lines = scp.read_text().replace(str(tmp_path / "full.ark"), str(ark)).splitlines()
    out = tmp_path / "cut.scp"
    out.write_text("\n".join(lines[::-1] if reverse else lines) + "\n")
    return out, ark, len(lines) if not reverse else 1


@pytest.mark.parametrize("reverse", [False, True], ids=["in-order", "cut-entry-first"])
@pytest.mark.parametrize("segments", [None, 3], ids=["vectors", "segments"])
def test_every_truncation_of_the_last_entry_is_detected(tmp_path, segments, reverse):
    entries = make_entries(n=4, dim=8, segments=segments)
    last_size = len(kaldiio_bytes(entries["u3"]))
    for cut in range(1, last_size + 1):  # from one missing byte to the whole entry after "u3 "
        scp, ark, line = truncated_copy(tmp_path, entries, cut, reverse)
        with pytest.raises(SvmixError) as info:
            load_embeddings(scp)
        message = str(info.value)
        assert message.startswith(f"{scp}:{line}: cannot read the embedding of 'u3'"), (cut, message)
        assert str(ark) in message and ("truncated" in message or "past the end" in message), (cut, message)


def kaldiio_bytes(array):
    """The bytes kaldiio writes for one ark entry's data (after '<utt> ')."""
    import io

    buf = io.BytesIO()
    kaldiio.matio.write_array(buf, array)
    return buf.getvalue()


def test_truncated_ark_is_not_scored_as_a_shorter_vector(tmp_path):
    """The reported case: two embeddings, the second cut short, unlabelled trials -> formerly exit 0."""
    entries = make_entries(n=2, dim=16)
    scp, ark, line = truncated_copy(tmp_path, entries, cut_from_end=4 * 8, reverse=True)
    result, out = run_score(tmp_path, scp, trials_text="u0 u1\nu1 u1\n")
    one_error_line(result, f"{scp}:1", "'u1'", str(ark), "truncated")
    assert_untouched(out)


@pytest.mark.parametrize("past", [0, 1, 10 ** 9])
def test_scp_offset_past_the_end_of_the_ark_names_line_and_file(tmp_path, past):
    entries = make_entries(n=3)
    scp = write_ark(tmp_path / "emb.ark", entries)
    size = (tmp_path / "emb.ark").stat().st_size
    lines = scp_lines(scp)
    lines[1] = f"u1 {tmp_path / 'emb.ark'}:{size + past}"
    scp.write_text("\n".join(lines) + "\n")
    with pytest.raises(SvmixError) as info:
        load_embeddings(scp)
    assert str(info.value) == (f"{scp}:2: cannot read the embedding of 'u1': offset {size + past} is past the end "
                               f"of {tmp_path / 'emb.ark'} ({size} bytes; truncated ark?)")
    result, out = run_score(tmp_path, scp)
    one_error_line(result, f"{scp}:2", "past the end", "emb.ark")
    assert_untouched(out)


@pytest.mark.parametrize("line, names", [
    ("u1 {d}/nowhere.ark:3", ["nowhere.ark", "not found"]),
    ("u1", ["expected '<utterance> <ark>:<offset>'"]),
    ("u1 {d}/emb.ark:7", ["'u1'"]),  # an offset inside another entry: not a Kaldi header
    ("u0 {d}/emb.ark:3", ["'u0' appears twice (first on line 1)"]),
])
def test_bad_scp_lines_are_one_line_errors_naming_the_line(tmp_path, line, names):
    scp = write_ark(tmp_path / "emb.ark", make_entries(n=3))
    lines = scp_lines(scp)
    lines[1] = line.format(d=tmp_path)
    scp.write_text("\n".join(lines) + "\n")
    with pytest.raises(SvmixError) as info:
        load_embeddings(scp)
    assert str(info.value).startswith(f"{scp}:2: ") and all(n in str(info.value) for n in names), str(info.value)
    assert "\n" not in str(info.value)


def test_non_utf8_scp_names_the_line(tmp_path):
    scp = write_ark(tmp_path / "emb.ark", make_entries(n=3))
    scp.write_bytes(scp.read_bytes().replace(b"u2", b"u\xe92", 1))
    result, out = run_score(tmp_path, scp, trials_text="u0 u1\n")
    one_error_line(result, f"{scp}:3", "not UTF-8", "0xe9")
    assert_untouched(out)


# ----------------------------------------------------------------------------- mean files

def mean_file(tmp_path, kind):
    path = tmp_path / "mean.npy"
    if kind == "garbage":
        path.write_bytes(b"\x93NUMPY not really an array" * 3)
    elif kind == "empty_file":
        path.write_bytes(b"")
    elif kind == "text":
        path.write_text("0.1 0.2 0.3\n")
    elif kind == "pickled_objects":
        np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "strings":
        np.save(path, np.array(["a", "b"]))
    elif kind == "matrix":
        np.save(path, np.zeros((2, 8), np.float32))
    elif kind == "scalar":
        np.save(path, np.float32(1.0))
    elif kind == "empty_vector":
        np.save(path, np.zeros(0, np.float32))
    elif kind == "wrong_dim":
        np.save(path, np.zeros(5, np.float32))
    elif kind == "nan":
        np.save(path, np.full(8, np.nan, np.float32))
    elif kind == "npz_named_npy":
        with open(path, "wb") as f:
            np.savez(f, mean=np.zeros(8, np.float32))
    elif kind == "truncated":
        np.save(path, np.zeros(8, np.float32))
        path.write_bytes(path.read_bytes()[:-10])
    elif kind == "missing":
        pass
    return path


MEAN_FAULTS = ["garbage", "empty_file", "text", "pickled_objects", "strings", "matrix", "scalar", "empty_vector",
               "wrong_dim", "nan", "npz_named_npy", "truncated", "missing"]


@pytest.mark.parametrize("kind", MEAN_FAULTS)
def test_bad_mean_file_is_a_one_line_error_naming_it(tmp_path, kind):
    scp = write_ark(tmp_path / "emb.ark", make_entries())
    path = mean_file(tmp_path, kind)
    result, out = run_score(tmp_path, scp, "--mean", path)
    one_error_line(result, "mean")
    assert str(path) in result.stderr or kind == "wrong_dim"  # a wrong dimension names both files
    assert_untouched(out)
    if kind != "wrong_dim":
        with pytest.raises(SvmixError, match=str(path)):
            load_mean(path)


def test_good_mean_file_is_used(tmp_path):
    entries = make_entries()
    scp = write_ark(tmp_path / "emb.ark", entries)
    mean = np.mean(list(entries.values()), axis=0)
    np.save(tmp_path / "mean.npy", mean)
    np.testing.assert_array_equal(load_mean(tmp_path / "mean.npy"), mean)
    result, out = run_score(tmp_path, scp, "--mean", tmp_path / "mean.npy", trials_text="u0 u1\n")
    assert result.exit_code == 0, result.output
    got = float(out.read_text().split()[2])
    a, b = entries["u0"] - mean, entries["u1"] - mean
    assert abs(got - float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))) < 2e-6
