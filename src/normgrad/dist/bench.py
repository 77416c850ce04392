"""``normgrad bench --mpi``: data-parallel step time and bytes communicated, K = 1, 2, 4.

The parent runs ``mpiexec -n K python -m normgrad.dist.bench`` for each K. Every rank
trains the paper's network (784-100x3-10, sigmoid, synchronized batch norm, global batch
60, float32) on random data through the trainer's own data-parallel step, with the
communicator wrapped in a counter of the bytes each rank hands to its collectives. Rank 0
prints one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from normgrad.tools.table import Column, Table

STEPS = 200
BATCH = 60


class CountingComm:
    """Forwards to an mpi4py communicator, counting collectives and the bytes sent."""

    def __init__(self, comm):
        self.comm, self.calls, self.bytes_sent = comm, 0, 0

    def Get_rank(self):  # noqa: N802 - mpi4py's names
        return self.comm.Get_rank()

    def Get_size(self):  # noqa: N802
        return self.comm.Get_size()

    def Allgather(self, send, recv):  # noqa: N802
        self.calls += 1
        self.bytes_sent += send.nbytes
        return self.comm.Allgather(send, recv)

    def Allreduce(self, send, recv):  # noqa: N802
        self.calls += 1
        self.bytes_sent += send.nbytes
        return self.comm.Allreduce(send, recv)


def _worker() -> None:
    from mpi4py import MPI

    from normgrad.data import Dataset, Split
    from normgrad.train import TrainConfig, Trainer

    comm = CountingComm(MPI.COMM_WORLD)
    rng = np.random.default_rng(0)
    n = BATCH * 50
    images = Split(rng.random((n, 784), dtype=np.float32), rng.integers(0, 10, n))
    data = Dataset("random", "random", train=images, test=images[:BATCH])
    cfg = TrainConfig(
        dataset="random", norm="batch_norm", activation="sigmoid", batch_size=BATCH,
        steps=STEPS, weight_scale=0.1, eval_every=10**9, checkpoint_every=10**9,
    )  # fmt: skip
    # Only train_step is called: the trainer never writes to its output directory.
    trainer = Trainer(cfg, "/nonexistent", data=data, comm=comm)
    for step in range(10):  # warm-up
        trainer.train_step(step)
    comm.calls = comm.bytes_sent = 0
    MPI.COMM_WORLD.Barrier()
    start = time.perf_counter()
    for step in range(STEPS):
        trainer.train_step(step)
    MPI.COMM_WORLD.Barrier()
    elapsed = time.perf_counter() - start
    if comm.Get_rank() == 0:
        params = sum(p.size for p in trainer.model.parameters().values())
        print(json.dumps({
            "k": comm.Get_size(),
            "ms_per_step": 1e3 * elapsed / STEPS,
            "bytes_sent_per_step_per_rank": comm.bytes_sent / STEPS,
            "collectives_per_step": comm.calls / STEPS,
            "parameters": int(params),
        }))  # fmt: skip


# One thread per rank, as data-parallel jobs run: a BLAS thread pool in every rank would
# fight the other ranks (and MPI's busy-waiting) for the same cores.
SINGLE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}


def run(ks=(1, 2, 4)) -> list[dict]:
    """Run the worker under mpiexec for each K; returns one dict per K."""
    mpiexec = Path(sys.executable).with_name("mpiexec")
    cmd0 = str(mpiexec) if mpiexec.exists() else "mpiexec"
    env = os.environ | SINGLE_THREAD
    rows = []
    for k in ks:
        cmd = [cmd0, "-n", str(k), sys.executable, "-m", "mpi4py", "-m", "normgrad.dist.bench"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True, env=env)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return rows


COLUMNS = (
    Column("K", align="right"),
    Column("ms/step", ".3f", align="right"),
    Column("collectives/step", ".1f", align="right"),
    Column("bytes sent/step/rank", ",.0f", align="right"),
)


def format_rows(rows: list[dict]) -> str:
    title = (
        f"data-parallel training step, paper network, global batch {BATCH}, float32, "
        f"synchronized BN ({rows[0]['parameters']:,} parameters); one thread per rank; "
        f"{os.cpu_count()} cores, so K above that is oversubscribed"
    )
    table = Table(COLUMNS).render(
        [r["k"], r["ms_per_step"], r["collectives_per_step"], r["bytes_sent_per_step_per_rank"]]
        for r in rows
    )
    return f"{title}\n{table}"


if __name__ == "__main__":
    _worker()
