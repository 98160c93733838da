"""Write failures (full disk, quota, read-only or forbidden directory) name the file being written, in
every tool, through the one atomic-write helper; the previous file is left as it was and no temporary
file stays behind. A real full disk (a tiny tmpfs) is used where the machine allows mounting one."""
import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from svmix.bin.metrics import main as metrics_cli
from svmix.bin.prepare_augment import main as augment_cli
from svmix.bin.score import main as score_cli
from svmix.data.datadir import Trial, write_trials
from svmix.utils.fileio import WriteError, atomic_open, atomic_path, write_json
from conftest import one_error_line

ERRNOS = [errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES]


def fail_with(code):
    def fail(*args, **kwargs):
        raise OSError(code, os.strerror(code))
    return fail


def leftovers(directory):
    return sorted(p.name for p in Path(directory).iterdir() if p.name.endswith(".tmp"))


@pytest.mark.parametrize("code", ERRNOS, ids=errno.errorcode.get)
@pytest.mark.parametrize("step", ["mkstemp", "write", "fsync", "replace"])
def test_atomic_write_errors_name_the_final_path(tmp_path, monkeypatch, code, step):
    target = tmp_path / "out.txt"
    target.write_text("previous\n")
    if step == "mkstemp":
        monkeypatch.setattr(tempfile, "mkstemp", fail_with(code))
    elif step in ("fsync", "replace"):
        monkeypatch.setattr(os, step, fail_with(code))
    with pytest.raises(WriteError) as info:
        with atomic_open(target) as f:
            f.write("new\n")
            if step == "write":
                fail_with(code)()  # what f.write or f.close raise when the disk fills up
    error = info.value
    assert isinstance(error, OSError) and error.errno == code
    assert str(error) == f"{target}: cannot write ({os.strerror(code)}); any previous version is left unchanged"
    monkeypatch.undo()
    assert target.read_text() == "previous\n" and leftovers(tmp_path) == []


def test_errors_about_other_files_inside_the_block_pass_through(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"x")
            open(tmp_path / "input-that-is-missing")
    assert not isinstance(info.value, WriteError) and "input-that-is-missing" in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_names_the_file(tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where a directory should be\n")
    with pytest.raises(WriteError, match=f"^{blocker / 'sub' / 'out.json'}: cannot write"):
        write_json(blocker / "sub" / "out.json", {"a": 1})


# ----------------------------------------------------------------------------- tools on a full disk

@pytest.fixture
def scored(tmp_path):
    import kaldiio

    rng = np.random.default_rng(0)
    entries = {f"u{i}": rng.standard_normal(8).astype(np.float32) for i in range(20)}
    kaldiio.save_ark(str(tmp_path / "emb.ark"), entries, scp=str(tmp_path / "emb.scp"))
    ids = list(entries)
    write_trials(tmp_path / "trials", [Trial(a, b, int(int(a[1:]) % 2 == int(b[1:]) % 2))
                                       for a in ids for b in ids if a < b])
    out = tmp_path / "scores"
    assert CliRunner().invoke(score_cli, ["--trials", str(tmp_path / "trials"), "--embeddings",
                                          str(tmp_path / "emb.scp"), "--output", str(out)]).exit_code == 0
    return tmp_path



def tool_runs(root):
    """(cli, args, the file the failing write is for)."""
    out = root / "new"
    return {
        "score": (score_cli, ["--trials", root / "trials", "--embeddings", root / "emb.scp", "--output",
                              out / "scores"], out / "scores"),
        "metrics-json": (metrics_cli, ["--scores", root / "scores", "--trials", root / "trials", "--json",
                                       out / "m.json"], out / "m.json"),
        "metrics-det-plot": (metrics_cli, ["--scores", root / "scores", "--trials", root / "trials", "--det-plot",
                                           out / "det.png"], out / "det.png"),
        "prepare-augment": (augment_cli, ["--out", out / "aug", "--synthetic", "--num-noises", "1", "--num-music",
                                          "0", "--num-rirs", "0"], out / "aug" / "wav" / "noise" / "noise-00000.wav"),
    }


@pytest.mark.parametrize("tool", ["score", "metrics-json", "metrics-det-plot", "prepare-augment"])
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT])
def test_tools_name_the_file_they_could_not_write(scored, monkeypatch, tool, code):
    cli, args, target = tool_runs(scored)[tool]
    monkeypatch.setattr(os, "fsync", fail_with(code))  # the last step of every atomic write before the rename
    error = one_error_line(CliRunner().invoke(cli, [str(a) for a in args]))
    assert f"{target}: cannot write ({os.strerror(code)})" in error
    monkeypatch.undo()
    assert not target.exists() and leftovers(target.parent) == []


@pytest.fixture
def tiny_disk(tmp_path):
    """A 256 KiB tmpfs (needs root and mount); skipped where it cannot be mounted."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_a_real_full_disk(scored, tiny_disk, monkeypatch):
    (tiny_disk / "filler").write_bytes(b"\0" * (256 * 1024 - 4096 * 4))  # a few blocks left
    # svmix-score: the score file does not fit
    big = scored / "big_trials"
    ids = [f"u{i}" for i in range(20)]
    big.write_text("".join(f"{a} {b}\n" for _ in range(40) for a in ids for b in ids))
    proc = subprocess.run([str(Path(sys.executable).parent / "svmix-score"), "--trials", str(big), "--embeddings",
                           str(scored / "emb.scp"), "--output", str(tiny_disk / "scores")],
                          capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and len(errors) == 1, proc.stderr
    assert f"{tiny_disk / 'scores'}: cannot write (No space left on device)" in errors[0]
    assert sorted(p.name for p in tiny_disk.iterdir()) == ["filler"]
    # svmix-prepare-augment: stops before synthesizing when the audio cannot fit ...
    args = ["--out", str(tiny_disk / "aug"), "--synthetic", "--num-noises", "2", "--num-music", "0", "--num-rirs", "0"]
    error = one_error_line(CliRunner().invoke(augment_cli, args))
    assert "synthesizing augmentation audio needs about" in error and str(tiny_disk) in error
    # ... and names the file when the disk fills up anyway
    import svmix.data.augment_resources as augment_resources

    monkeypatch.setattr(augment_resources, "check_free_space", lambda *a, **k: None)
    error = one_error_line(CliRunner().invoke(augment_cli, args))
    assert f"{tiny_disk / 'aug' / 'wav' / 'noise' / 'noise-00000.wav'}: cannot write (libsndfile:" in error
    assert not list((tiny_disk / "aug").rglob("*.wav")) and not list((tiny_disk / "aug").rglob("*.tmp"))
