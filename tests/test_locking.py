"""One output, one run: the output lock (svmix/utils/locking.py) with real concurrent processes,
for every tool that writes a directory or file (extract, cache, train, export)."""
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import kaldiio
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import make_datadir
from svmix.errors import SvmixError
from svmix.utils.locking import LOCK_NAME, OutputBusyError, lock_path, output_lock

BIN = Path(sys.executable).parent
HOLDER = textwrap.dedent("""
    import os, sys, time
    from svmix.utils.locking import output_lock
    with output_lock(sys.argv[1], "svmix-holder", is_dir=sys.argv[2] == "dir"):
        if len(sys.argv) > 3:  # a forked worker (like a DataLoader's) that outlives this process
            child = os.fork()
            if child == 0:
                time.sleep(120)
                os._exit(0)
            print(child, flush=True)
        print("held", flush=True)
        sys.stdin.read()  # hold the lock until the test closes stdin
""")


class Holder:
    """Another process holding the lock of ``target`` until ``release()`` (or a kill)."""

    def __init__(self, tmp_path: Path, target: Path, is_dir: bool = True, env=None, fork: bool = False):
        script = tmp_path / "hold_output.py"
        script.write_text(HOLDER)
        self.proc = subprocess.Popen([sys.executable, str(script), str(target), "dir" if is_dir else "file",
                                      *(["fork"] if fork else [])],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env={**os.environ, **(env or {})})
        self.child = int(self.proc.stdout.readline()) if fork else None
        assert self.proc.stdout.readline().strip() == "held"
        self.pid = self.proc.pid

    def release(self) -> None:
        self.proc.stdin.close()
        assert self.proc.wait(60) == 0

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(60)


def assert_names_holder(message: str, holder: Holder) -> None:
    assert f"pid {holder.pid} on {socket.gethostname()}" in message, message
    assert "started 20" in message and "hold_output.py" in message and "svmix-holder" in message, message
    assert "\n" not in message


@pytest.mark.parametrize("is_dir", [True, False])
def test_second_run_refuses_naming_the_first_then_gets_it(tmp_path, is_dir):
    target = tmp_path / ("out" if is_dir else "model.onnx")
    holder = Holder(tmp_path, target, is_dir)
    with pytest.raises(OutputBusyError) as info:
        output_lock(target, "svmix-test", is_dir=is_dir)
    assert_names_holder(str(info.value), holder)
    assert info.value.owner["pid"] == holder.pid
    holder.release()
    assert not lock_path(target, is_dir).exists()  # the last holder removes the lock file
    with output_lock(target, "svmix-test", is_dir=is_dir) as lock:
        assert json.loads(lock.path.read_text())["pid"] == os.getpid()
    assert not lock_path(target, is_dir).exists()


def test_waiting_run_serialises_behind_the_first(tmp_path):
    holder = Holder(tmp_path, tmp_path / "out")
    release_at = time.monotonic() + 1.0
    subprocess.Popen([sys.executable, "-c", f"import time; time.sleep(1.0); import os, signal; "
                      f"os.kill({holder.pid}, signal.SIGTERM)"])
    with output_lock(tmp_path / "out", "svmix-test", wait_seconds=60):
        assert time.monotonic() >= release_at - 0.1
    holder.proc.wait(60)


@pytest.mark.parametrize("fork", [False, True], ids=["alone", "with_orphaned_worker"])
def test_lock_of_a_killed_run_is_taken_over(tmp_path, caplog, fork):
    out = tmp_path / "out"
    holder = Holder(tmp_path, out, fork=fork)
    holder.kill()  # SIGKILL: the lock file stays, naming a dead process (whose forked worker may live on)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    logger = logging.getLogger("svmix")
    logger.addHandler(caplog.handler)
    try:
        with output_lock(out, "svmix-test"):
            pass
    finally:
        logger.removeHandler(caplog.handler)
    if holder.child is not None:
        os.kill(holder.child, signal.SIGKILL)
    assert f"pid {holder.pid}" in caplog.text and "no longer running" in caplog.text
    assert not (out / LOCK_NAME).exists()


def test_ranks_of_one_torchrun_launch_share_the_lock(tmp_path, monkeypatch):
    launch = {"WORLD_SIZE": "2", "RANK": "1", "TORCHELASTIC_RUN_ID": "job-a", "MASTER_ADDR": "h", "MASTER_PORT": "1"}
    holder = Holder(tmp_path, tmp_path / "out", env=launch)
    for key, value in {**launch, "RANK": "0"}.items():
        monkeypatch.setenv(key, value)
    with output_lock(tmp_path / "out", "svmix-test"):  # rank 0 of the same launch
        with output_lock(tmp_path / "out", "svmix-test"):  # and a nested acquisition
            pass
        holder.release()
        assert (tmp_path / "out" / LOCK_NAME).exists()  # still held by this rank
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "job-b")
    holder = Holder(tmp_path, tmp_path / "out", env=launch)
    with pytest.raises(OutputBusyError, match=f"pid {holder.pid}"):  # another launch
        output_lock(tmp_path / "out", "svmix-test")
    holder.release()


# ----------------------------------------------------------------------------- every tool

@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from test_cache import tiny_wavlm_dir
    from test_extract import make_checkpoint

    root = tmp_path_factory.mktemp("locking")
    return {"ckpt_a": make_checkpoint(root / "exp_a" / "model.pt", seed=0),
            "ckpt_b": make_checkpoint(root / "exp_b" / "model.pt", seed=1),
            "data": make_datadir(root, num_speakers=3, utts_per_speaker=4, seconds=(3.0, 4.0), seed=2, trials=False),
            "teacher": tiny_wavlm_dir(root / "teacher")}


def run_tool(tool: str, world, out: Path):
    """Run ``tool`` on output ``out``; returns the one-line error text (or raises if it succeeded)."""
    if tool == "extract":
        from svmix.bin.extract import main as cli
        args = ["--model", world["ckpt_a"], "--data", world["data"], "--out", out, "--num-workers", "0"]
    elif tool == "cache":
        from svmix.bin.cache_teacher import main as cli
        args = ["--teacher", world["teacher"], "--data", world["data"], "--layers", "1", "--out", out]
    elif tool == "export":
        from svmix.bin.export import main as cli
        args = ["--model", world["ckpt_a"], "--format", "torchscript", "--out", out, "--no-check"]
    else:
        from svmix.train.trainer import train
        with pytest.raises(SvmixError) as info:
            train({"train": {"max_steps": 1}}, world["data"], out)  # a valid config: the lock refuses
        return str(info.value)
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.output, result.stderr
    return errors[0]


@pytest.mark.parametrize("tool", ["extract", "cache", "train", "export"])
def test_every_tool_refuses_an_output_another_run_holds(world, tmp_path, tool):
    out = tmp_path / ("model.ts" if tool == "export" else "out")
    if tool != "export":
        out.mkdir()
        (out / "earlier.txt").write_text("an earlier run's file\n")
    holder = Holder(tmp_path, out, is_dir=tool != "export")
    try:
        message = run_tool(tool, world, out)
    finally:
        holder.release()
    assert_names_holder(message, holder)
    assert "in use by another" in message and str(out) in message
    if tool == "export":
        assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["hold_output.py"]
    else:
        assert sorted(p.name for p in out.iterdir()) == ["earlier.txt"]


def test_two_extractions_with_different_models_into_one_out(world, tmp_path):
    """The issue's case: the second run (model B) refuses, naming the first; the output is model A's alone."""
    out, ref = tmp_path / "emb", tmp_path / "ref"
    common = ["--data", str(world["data"]), "--chunk-size", "1", "--num-workers", "0", "--num-threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([str(BIN / "svmix-extract"), "--model", str(world["ckpt_a"]), "--out", str(out), *common],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while not list(out.glob("chunks/*.ark")) and first.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # frozen while holding the lock, so the second run surely overlaps
    try:
        assert first.poll() is None, first.communicate()
        second = subprocess.run([str(BIN / "svmix-extract"), "--model", str(world["ckpt_b"]), "--out", str(out),
                                 *common], capture_output=True, text=True, env=env)
    finally:
        first.send_signal(signal.SIGCONT)
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err
    errors = [line for line in second.stderr.splitlines() if "error:" in line]
    assert second.returncode == 1 and len(errors) == 1 and "Traceback" not in second.stderr, second.stderr
    assert errors[0].startswith("svmix-extract: error:") and f"pid {first.pid}" in errors[0]
    assert "svmix-extract --model" in errors[0] and str(world["ckpt_a"]) in errors[0]

    subprocess.run([str(BIN / "svmix-extract"), "--model", str(world["ckpt_a"]), "--out", str(ref), *common],
                   check=True, capture_output=True, env=env)
    assert (out / "xvector.ark").read_bytes() == (ref / "xvector.ark").read_bytes()  # model A's, nothing mixed in
    got = dict(kaldiio.load_scp(str(out / "xvector.scp")))
    assert len(got) == 12 and all(np.isfinite(v).all() for v in got.values())
    assert not (out / LOCK_NAME).exists()
