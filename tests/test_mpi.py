"""Synchronized batch norm over MPI: K = 2 and 4 ranks (oversubscribed on 2 cores)."""

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec") or str(Path(sys.executable).with_name("mpiexec"))
WORKER = str(Path(__file__).with_name("mpi_worker.py"))
if not Path(MPIEXEC).exists():
    pytest.skip("no mpiexec", allow_module_level=True)


def _run(k: int, check: str, timeout: float = 180):
    # `python -m mpi4py` aborts the whole job when any rank raises (no hung ranks).
    cmd = [MPIEXEC, "-n", str(k), sys.executable, "-m", "mpi4py", WORKER, check]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("k", [2, 4])
def test_sync_batch_norm_equals_single_process_on_the_concatenated_batch(k):
    result = _run(k, "syncbn")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK syncbn on {k} ranks" in result.stdout


def test_a_failing_rank_ends_the_job_nonzero_within_a_time_bound():
    start = time.monotonic()
    result = _run(2, "fault", timeout=60)
    assert result.returncode != 0
    assert "rank 1 fails on purpose" in result.stderr
    assert time.monotonic() - start < 60


def _train(out, *extra, k=None):
    args = ["--dataset", "digits", "--dtype", "float64", "--steps", "30", "--batch-size", "50",
            "--checkpoint-every", "10", "--out", str(out), "--no-progress", *extra]  # fmt: skip
    cmd = [sys.executable, "-m", "normgrad", "train", *args]
    if k is not None:
        cmd = [MPIEXEC, "-n", str(k), *cmd, "--distributed"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("k", [2, 4])
def test_data_parallel_training_equals_single_process_training(tmp_path, k):
    """Same global batch of 50 (uneven slices at K = 4): same parameters, float64."""
    from normgrad.gradcheck import assert_close
    from normgrad.train import load_verified

    single, dist = tmp_path / "single", tmp_path / "dist"
    assert _train(single).returncode == 0
    result = _train(dist, k=k)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("30 steps") == 1  # rank 0 alone reports and writes
    a, b = load_verified(dist / "model.npz"), load_verified(single / "model.npz")
    assert str(a.pop("config")) == str(b.pop("config"))  # the run's settings, stored
    for name in b:
        # biases before batch norm have zero gradient: their values are rounding noise
        assert_close(a[name], b[name], rtol=1e-10, atol=1e-12, name=name)
    assert (dist / "metrics.csv").exists()


def test_resume_needs_the_same_number_of_processes(tmp_path, capsys):
    from normgrad import cli

    assert _train(tmp_path / "run", k=2).returncode == 0
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "written by 2 process(es)" in capsys.readouterr().err


def test_bench_mpi_counts_the_bytes_the_model_predicts():
    """Communication per step is a few numbers per channel per BN layer plus one gradient
    buffer, independent of the batch size (timings are reported, never asserted)."""
    from normgrad.dist import bench

    rows = bench.run(ks=(1, 2))
    params = rows[0]["parameters"]
    bn_layers, channels = 3, 100
    forward = 8 * (1 + 2 * channels)  # Allgather of (count, mean, M2) per BN layer
    backward = 8 * 2 * channels  # Allreduce of sum(dy), sum(dy * xhat)
    gradients = 8 * (params + 3)  # one fused buffer, plus the loss, hit count, stop flag
    expected = bn_layers * (forward + backward) + gradients
    for r in rows:
        assert r["collectives_per_step"] == 2 * bn_layers + 1
        assert r["bytes_sent_per_step_per_rank"] == expected


def test_bench_mpi_uses_only_the_trainers_public_api():
    import inspect

    from normgrad.dist import bench

    assert "trainer._" not in inspect.getsource(bench)


def test_bench_mpi_table_headers_stay_apart():
    from normgrad.dist import bench

    rows = [{"k": 1, "ms_per_step": 1.5, "collectives_per_step": 7.0,
             "bytes_sent_per_step_per_rank": 123456.0, "parameters": 100}]  # fmt: skip
    header = bench.format_rows(rows).splitlines()[1]
    assert re.split(r" {2,}", header.strip()) == [
        "K", "ms/step", "collectives/step", "bytes sent/step/rank",
    ]  # fmt: skip
