"""The resumable sharded-job engine: publish/done, resume, checksums, plans, ranks, local workers."""
import errno
import json
import os

import pytest

from svmix.errors import SvmixError
from svmix.utils.sharded_job import JobLayout, ShardedJob, naming_file

LAYOUT = JobLayout(plan_file="plan.json", unit_dir="units", unit_name="unit-{:03d}", data_suffix=".bin")
N = 7


def unit_bytes(i: int) -> bytes:
    return bytes((i * 37 + k) % 256 for k in range(1000 + 13 * i))


def toy_work(job, units, worker, fail_at=None):
    """Publish ``units``, appending each to OUT/work.log (which units ran, and where)."""
    for i in units:
        if i == fail_at:
            raise RuntimeError(f"unit {i} failed")
        with job.publish(i) as unit:
            data = unit_bytes(i)
            unit.write(data[:500])
            unit.write(data[500:])
            unit.info["worker"] = [worker.rank, worker.index]
        with open(job.out / "work.log", "a") as f:
            f.write(f"{i} {os.getpid()} {worker.index}\n")


def toy_merge(job):
    merged = b"".join(job.data_path(i).read_bytes() for i in range(job.num_units))
    (job.out / "merged.bin").write_bytes(merged)
    return {"bytes": len(merged), "resumed": sorted(job.resumed)}


def toy_finished(job):
    return {"complete": True} if (job.out / "merged.bin").is_file() else None


def make_job(out, plan=None, **kwargs):
    return ShardedJob(out, plan or {"what": "toy", "n": N}, N, LAYOUT, tool="test", **kwargs)


def ran(out):
    path = out / "work.log"
    return [int(line.split()[0]) for line in path.read_text().splitlines()] if path.exists() else []


def expected_merge():
    return b"".join(unit_bytes(i) for i in range(N))


def test_runs_every_unit_once_and_merges(tmp_path):
    out = tmp_path / "job"
    result = make_job(out).run(toy_work, toy_merge, finished=toy_finished)
    assert result == {"bytes": len(expected_merge()), "resumed": []}
    assert (out / "merged.bin").read_bytes() == expected_merge()
    assert sorted(ran(out)) == list(range(N))
    marker = json.loads((out / "units" / "unit-003.json").read_text())
    assert marker["bytes"] == len(unit_bytes(3)) and marker["worker"] == [0, 0]
    assert {"crc32", "sha256"} <= set(marker)
    again = make_job(out)
    assert again.run(toy_work, toy_merge, finished=toy_finished) == {"complete": True}
    assert again.complete_at_start and sorted(ran(out)) == list(range(N))  # nothing redone
    assert not (out / ".svmix.lock").exists()


@pytest.mark.parametrize("fail_at", [0, 3, N - 1])
def test_failed_run_resumes_from_published_units(tmp_path, fail_at):
    import functools

    out = tmp_path / "job"
    with pytest.raises(RuntimeError, match=f"unit {fail_at} failed"):
        make_job(out).run(functools.partial(toy_work, fail_at=fail_at), toy_merge, finished=toy_finished)
    assert ran(out) == list(range(fail_at))
    assert not (out / ".svmix.lock").exists()
    if fail_at == 0:  # nothing published: the run removes the plan, unit and output dirs it created
        assert not out.exists()
    else:
        assert (out / "plan.json").is_file()
    result = make_job(out).run(toy_work, toy_merge, finished=toy_finished)
    assert result["resumed"] == list(range(fail_at))
    assert ran(out) == list(range(N))  # each unit done exactly once over both runs
    assert (out / "merged.bin").read_bytes() == expected_merge()


@pytest.mark.parametrize("damage", ["flip_byte", "truncate", "delete_data", "garbage_marker"])
def test_damaged_unit_is_found_and_redone(tmp_path, damage):
    out = tmp_path / "job"
    make_job(out).run(toy_work, toy_merge)
    (out / "merged.bin").unlink()
    data = out / "units" / "unit-004.bin"
    if damage == "flip_byte":  # same size: only the checksum can tell
        raw = bytearray(data.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        data.write_bytes(bytes(raw))
    elif damage == "truncate":
        data.write_bytes(data.read_bytes()[:-1])
    elif damage == "delete_data":
        data.unlink()
    else:
        (out / "units" / "unit-004.json").write_text("{not json")
    job = make_job(out)
    assert job.problem(4) is not None or not job.done(4)
    job.run(toy_work, toy_merge, finished=toy_finished)
    assert ran(out) == list(range(N)) + [4]
    assert (out / "merged.bin").read_bytes() == expected_merge()


def test_other_plan_refuses_or_restarts(tmp_path):
    out = tmp_path / "job"
    make_job(out).run(toy_work, toy_merge)
    other = {"what": "toy", "n": N, "model": "B"}
    with pytest.raises(SvmixError, match=r"other settings \(differs in model\)"):
        make_job(out, other, on_other_plan="refuse").run(toy_work, toy_merge)
    assert ran(out) == list(range(N))
    make_job(out, {**other, "path": "x"}, ignore=("path",))  # ignored keys are no difference
    make_job(out, other, on_other_plan="restart").run(toy_work, toy_merge)
    assert ran(out) == list(range(N)) * 2  # everything redone for the other plan
    assert json.loads((out / "plan.json").read_text()) == other


def test_sticky_keys_keep_their_first_value_on_resume(tmp_path):
    import functools

    out = tmp_path / "job"
    with pytest.raises(RuntimeError):
        make_job(out, {"n": N, "batch": 4}, sticky=("batch",)).run(functools.partial(toy_work, fail_at=2), toy_merge)
    job = make_job(out, {"n": N, "batch": 9}, sticky=("batch",))
    job.run(toy_work, toy_merge)
    assert job.plan["batch"] == 4 and ran(out) == list(range(N))


def test_torchrun_ranks_share_units_and_the_last_merges(tmp_path, monkeypatch):
    out = tmp_path / "job"
    monkeypatch.setenv("WORLD_SIZE", "3")
    for rank in (2, 0):
        monkeypatch.setenv("RANK", str(rank))
        assert make_job(out).run(toy_work, toy_merge, finished=toy_finished) is None
    assert sorted(ran(out)) == [0, 2, 3, 5, 6]
    monkeypatch.setenv("RANK", "1")
    assert make_job(out).run(toy_work, toy_merge, finished=toy_finished)["bytes"] == len(expected_merge())
    assert sorted(ran(out)) == list(range(N)) and (out / "merged.bin").read_bytes() == expected_merge()
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(SvmixError, match="inconsistent"):
        make_job(out).run(toy_work, toy_merge)


def test_local_workers_split_the_units(tmp_path):
    out = tmp_path / "job"
    make_job(out, log_file=out / "job.log").run(toy_work, toy_merge, nj=3)
    by_worker, pids = {}, set()
    for line in (out / "work.log").read_text().splitlines():
        unit, pid, index = map(int, line.split())
        by_worker.setdefault(index, []).append(unit)
        pids.add(pid)
    assert by_worker == {0: [0, 3, 6], 1: [1, 4], 2: [2, 5]}
    assert os.getpid() not in pids  # all in spawned workers (a pool process may serve two of them)
    assert (out / "merged.bin").read_bytes() == expected_merge()


@pytest.mark.parametrize("ok_writes, file", [(0, "plan.json"), (1, "units/unit-000.bin"), (2, "units/unit-000.json"),
                                              (3, "units/unit-001.bin")])
def test_a_full_disk_names_the_file(tmp_path, monkeypatch, ok_writes, file):
    calls = []

    def fsync_until_full(fd):  # the last step of every atomic write
        calls.append(fd)
        if len(calls) > ok_writes:
            raise OSError(errno.ENOSPC, "No space left on device")

    out = tmp_path / "job"
    monkeypatch.setattr(os, "fsync", fsync_until_full)
    with pytest.raises(OSError) as info:
        make_job(out).run(toy_work, toy_merge)
    assert str(info.value) == f"[Errno 28] No space left on device: '{out / file}'"
    if ok_writes < 3:  # nothing published: nothing left
        assert not out.exists()
    monkeypatch.undo()
    make_job(out).run(toy_work, toy_merge)
    assert (out / "merged.bin").read_bytes() == expected_merge()


def test_naming_file_keeps_a_name_given_already(tmp_path):
    with pytest.raises(OSError, match="already named"):
        with naming_file(tmp_path / "x"):
            raise OSError(errno.EACCES, "Permission denied", "already named")
