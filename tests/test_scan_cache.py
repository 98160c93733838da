"""The audio-scan cache (a restart does not reopen unchanged audio files) and the NumPy training index."""
import os
from pathlib import Path

import numpy as np
import pytest

import svmix.data.audio as audio
from svmix.data.audio import read_scan_cache, scan_audio, scan_cache_path
from svmix.data.datadir import DataDir
from svmix.data.index import StringArray, group_by_label
from svmix.data.validate import validate_datadir
from svmix.train.dataset import TrainingSet


@pytest.fixture
def header_reads(monkeypatch):
    """Counts the files whose header is read (``audio_info`` calls)."""
    opened = []
    real = audio.audio_info

    def counting(path, utt_id=None):
        opened.append(str(path))
        return real(path, utt_id)

    monkeypatch.setattr(audio, "audio_info", counting)
    return opened


def _training_set(data, scan_cache):
    wav = DataDir(data).wav_scp
    return TrainingSet(list(wav), list(wav.values()), [i % 3 for i in range(len(wav))], segment_samples=16000,
                       seq_len=49, scan_cache=scan_cache)


def test_second_start_reads_no_audio_header_and_a_touched_file_is_rescanned(tiny_datadir, header_reads):
    cache = str(scan_cache_path(tiny_datadir))
    wav = DataDir(tiny_datadir).wav_scp
    _training_set(tiny_datadir, cache)
    assert sorted(header_reads) == sorted(wav.values())
    assert len(read_scan_cache(cache)) == len(wav)
    header_reads.clear()
    _training_set(tiny_datadir, cache)
    assert header_reads == []  # every result came from the cache
    touched = next(iter(wav.values()))
    st = os.stat(touched)
    os.utime(touched, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))
    _training_set(tiny_datadir, cache)
    assert header_reads == [touched]
    header_reads.clear()
    _training_set(tiny_datadir, cache)  # the new mtime was recorded
    assert header_reads == []


def test_scan_cache_shared_with_validate_data_and_never_hides_a_change(tiny_datadir, header_reads):
    wav = DataDir(tiny_datadir).wav_scp
    assert validate_datadir(tiny_datadir).ok
    assert len(header_reads) == len(wav)
    header_reads.clear()
    assert validate_datadir(tiny_datadir).ok and header_reads == []
    victim, path = next(iter(wav.items()))
    with open(path, "r+b") as f:  # cut the file short: a new size, whatever its mtime
        f.truncate(os.path.getsize(path) // 2)
    report = validate_datadir(tiny_datadir)
    assert header_reads == [path] and report.bad_utts == {victim}
    assert "truncated audio" in report.problems[0].message
    os.remove(path)
    good, bad = scan_audio(wav, cache=scan_cache_path(tiny_datadir))
    assert "not found" in bad[victim] and victim not in good


def test_scan_cache_lives_outside_the_data_dir(tiny_datadir, tmp_path, monkeypatch):
    monkeypatch.setenv("SVMIX_CACHE_DIR", str(tmp_path / "c"))
    cache = scan_cache_path(tiny_datadir)
    assert cache.startswith(str(tmp_path / "c")) and cache != scan_cache_path(tmp_path)
    before = sorted(os.listdir(tiny_datadir))
    assert validate_datadir(tiny_datadir).ok
    assert sorted(os.listdir(tiny_datadir)) == before and os.path.isfile(cache)


def test_damaged_or_foreign_scan_cache_is_ignored(tiny_datadir, header_reads):
    cache = Path(scan_cache_path(tiny_datadir))
    wav = DataDir(tiny_datadir).wav_scp
    scan_audio(wav, cache=cache)
    lines = cache.read_text().splitlines(keepends=True)
    cache.write_text("".join(lines[:3]) + lines[3][:5])  # cut mid-line, as by a full disk
    header_reads.clear()
    good, _ = scan_audio(wav, cache=cache)
    assert len(header_reads) == len(wav) and len(good) == len(wav)
    cache.write_text("something else\n")
    header_reads.clear()
    assert len(scan_audio(wav, cache=cache)[0]) == len(wav) and len(header_reads) == len(wav)


def test_string_array_and_label_groups():
    names = ["a", "", "ünï-çødé", "x" * 300, "spk1/utt 2"]
    table = StringArray(names)
    assert list(table) == names and len(table) == 5 and table[-1] == names[-1] and table[1:3] == names[1:3]
    with pytest.raises(IndexError):
        table[5]
    labels = np.array([2, 0, 2, 1, 0, 2])
    order, starts = group_by_label(labels)
    assert [sorted(order[starts[k]:starts[k + 1]].tolist()) for k in range(3)] == [[1, 4], [3], [0, 2, 5]]


def _private_growth_touching(index, n):
    """Private dirty kB a forked child gains by reading every entry of ``index``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(r)
        try:
            before = _private_dirty_kb()
            total = 0
            for i in range(n):
                total += len(index[i])
            os.write(w, str(_private_dirty_kb() - before).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    return int(out)


def _private_dirty_kb():
    with open("/proc/self/smaps_rollup") as f:
        return sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty"))


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps_rollup"), reason="needs Linux smaps_rollup")
def test_forked_reader_of_the_numpy_index_copies_no_pages():
    """Why the index is not a list of str: reading a list's entries in a forked DataLoader worker
    writes their reference counts and copies their pages; reading a StringArray copies nothing."""
    n = 100_000
    names = [f"/data/voxceleb2/dev/aac/id{i % 5994:05d}/{i:011d}/{i % 97:05d}.wav" for i in range(n)]
    as_list = list(names)
    as_array = StringArray(names)
    del names
    list_kb, array_kb = _private_growth_touching(as_list, n), _private_growth_touching(as_array, n)
    assert list_kb > 4_000  # ~ 100k objects of ~100 bytes each: the copy-on-write the array avoids
    assert array_kb < list_kb / 10


def test_plain_wav_header_reader_agrees_with_libsndfile(tmp_path):
    import soundfile as sf

    from svmix.data.audio import audio_info, plain_wav_info

    rng = np.random.default_rng(0)
    for name, rate, channels, subtype, fmt in (("a.wav", 16000, 1, "PCM_16", "WAV"), ("b.wav", 8000, 2, "FLOAT", "WAV"),
                                               ("c.wav", 44100, 3, "PCM_24", "WAV"), ("d.flac", 16000, 1, "PCM_16", "FLAC"),
                                               ("e.wav", 16000, 1, "ULAW", "WAV")):
        path = tmp_path / name
        sf.write(path, 0.1 * rng.standard_normal((int(rate * 0.37), channels)), rate, subtype=subtype, format=fmt)
        info = sf.info(path)
        assert audio_info(path) == (info.frames, info.samplerate), name
        plain = plain_wav_info(path)
        if fmt == "FLAC" or subtype == "ULAW":
            assert plain is None, name  # left to libsndfile
        else:
            assert plain[:2] == (info.frames, info.samplerate) and plain[2] == plain[3], name
    with open(tmp_path / "a.wav", "r+b") as f:
        f.truncate(1000)
    with pytest.raises(audio.AudioError, match="truncated audio"):
        audio_info(tmp_path / "a.wav")
