"""Synchronized batch norm over MPI: K = 2 and 4 ranks (oversubscribed on 2 cores)."""

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
