"""benchmarks/bench_scale.py at a tiny size: the corpus has VoxCeleb2's shape and the table its rows."""
import importlib.util
import json

import numpy as np
import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("bench_scale", ROOT / "benchmarks" / "bench_scale.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_corpus_shape_is_voxceleb2_like():
    rng = np.random.default_rng(0)
    counts = bench.speaker_counts(rng, bench.VOX2_UTTS, bench.VOX2_SPEAKERS)
    assert counts.sum() == bench.VOX2_UTTS and len(counts) == bench.VOX2_SPEAKERS and counts.min() >= 1
    assert counts.max() > 3 * counts.mean() > 3 * counts.min()  # uneven, as VoxCeleb2's speakers are
    seconds = bench.durations(rng, 100_000)
    assert seconds.min() >= 4.0 and seconds.max() <= 30.0 and 7.3 < seconds.mean() < 8.3


@pytest.mark.slow
def test_bench_runs_tiny_and_prints_every_row(tmp_path, capsys):
    out = tmp_path / "bench.json"
    bench.main(["--utterances", "2000", "--sources", "20", "--workers", "2", "--batches", "40",
                "--throughput-seconds", "2", "--workdir", str(tmp_path), "--json", str(out)])
    table = capsys.readouterr().out
    for row in ("svmix-validate-data (empty scan cache)", "training start-up to first batch, first run",
                "training start-up to first batch, second run", "per-worker RSS, 2 workers, 40 batches of 16",
                "per-worker USS", "loader throughput, full augmentation", "2 GPUs at batch 128"):
        assert f"| {row}" in table, table
    result = json.loads(out.read_text())
    first, second = result["startup"]
    assert first["utterances"] == second["utterances"] == 2000 and first["speakers"] == result["speakers"] == 11
    assert second["scan_s"] < first["scan_s"]  # the second start reads the audio-scan cache
    assert second["batches"] == 40 and second["rss_end_mb"] > 0 and second["uss_end_mb"] > 0
    assert result["throughput"]["crops_per_s"] > 0 and result["validate"]["peak_mb"] > 0
    assert list(tmp_path.iterdir()) == [out]  # the corpus was removed
