"""Run under mpiexec by tests/test_mpi.py: synchronized batch norm on K ranks must equal
single-process batch norm on the concatenated batch. Exits non-zero on any mismatch."""

import sys

import numpy as np
from mpi4py import MPI

import normgrad as ng
from normgrad.gradcheck import assert_close

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()


def shard_counts(total: int) -> list[int]:
    """Uneven shards; rank 1 holds nothing when there are 3 or more ranks."""
    weights = [3, 0, 5, 2, 4, 1][:size] if size >= 3 else [3, 5][:size]
    counts = [total * w // sum(weights) for w in weights]
    counts[-1] += total - sum(counts)
    return counts


def check_sync_batch_norm():
    layouts = [((12, 5), 1), ((10, 3, 4, 4), 1), ((9, 4, 3, 2), -1)]
    for shape, axis in layouts:
        for bessel in (False, True):
            rng = np.random.default_rng(7)
            x = rng.standard_normal(shape) * 3 + 2
            dy = rng.standard_normal(shape)
            c = shape[axis]
            gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
            counts = shard_counts(shape[0])
            lo = sum(counts[:rank])
            rows = slice(lo, lo + counts[rank])
            rm, rv = np.zeros(c), np.ones(c)
            rm_ref, rv_ref = rm.copy(), rv.copy()
            kw = {"channel_axis": axis, "bessel": bessel, "momentum": 0.3}
            y, cache = ng.batch_norm_forward(x[rows], gamma, beta, running_mean=rm,
                                             running_var=rv, comm=comm, **kw)  # fmt: skip
            dx, dg, db = ng.batch_norm_backward(dy[rows], cache)
            y_ref, c_ref = ng.batch_norm_forward(x, gamma, beta, running_mean=rm_ref,
                                                 running_var=rv_ref, **kw)  # fmt: skip
            dx_ref, dg_ref, db_ref = ng.batch_norm_backward(dy, c_ref)
            where = f"rank {rank}/{size} {shape} axis {axis} bessel {bessel}"
            assert_close(y, y_ref[rows], rtol=1e-12, name=f"y, {where}")
            assert_close(dx, dx_ref[rows], rtol=1e-12, name=f"dx, {where}")
            assert_close(comm.allreduce(dg), dg_ref, rtol=1e-12, name=f"dgamma, {where}")
            assert_close(comm.allreduce(db), db_ref, rtol=1e-12, name=f"dbeta, {where}")
            assert_close(rm, rm_ref, rtol=1e-12, name=f"running_mean, {where}")
            assert_close(rv, rv_ref, rtol=1e-12, name=f"running_var, {where}")
            # the same on every rank, to the bit
            assert all(np.array_equal(rm, other) for other in comm.allgather(rm)), where
            # negative control: a shard's own statistics are not the batch's
            if counts[rank] >= 2:
                y_local, _ = ng.batch_norm_forward(x[rows], gamma, beta, **kw)
                assert not np.allclose(y_local, y_ref[rows]), f"control, {where}"


def check_global_count_error():
    x = np.ones((1 if rank == 0 else 0, 3))
    try:
        ng.batch_norm_forward(x, None, None, comm=comm)
    except ValueError as exc:
        assert "over all ranks" in str(exc)
    else:
        raise AssertionError("one value per channel over all ranks must be an error")


def check_fault():
    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    ng.batch_norm_forward(
        np.ones((4, 3)) * rank + np.arange(12).reshape(4, 3), None, None, comm=comm
    )  # fmt: skip  (the other ranks wait here)


if __name__ == "__main__":
    {"syncbn": lambda: (check_sync_batch_norm(), check_global_count_error()),
     "fault": check_fault}[sys.argv[1]]()  # fmt: skip
    comm.Barrier()
    if rank == 0:
        print(f"OK {sys.argv[1]} on {size} ranks", flush=True)
