"""Synchronized statistics across processes (MPI), at the edge.

The core calls these helpers only when a ``comm`` is passed. They use nothing but the
communicator's own buffer methods (``Allgather``, ``Allreduce``), so the core never imports
mpi4py; any mpi4py communicator works (``pip install 'normgrad[mpi]'`` brings mpi4py and
the ``mpich`` wheel, so no system MPI is needed).
"""

from __future__ import annotations

import numpy as np


def combine_moments(counts, means, m2s):
    """Chan's parallel formula: the (count, mean, M2) of the union of K groups.

    Args: ``counts`` (K,), ``means`` and ``m2s`` (K, C), float64. Empty groups are allowed.
    """
    total = counts.sum()
    if total == 0:
        return 0, np.zeros(means.shape[1]), np.zeros(means.shape[1])
    mean = (counts[:, None] * means).sum(axis=0) / total
    m2 = (m2s + counts[:, None] * (means - mean) ** 2).sum(axis=0)
    return int(total), mean, m2


def allgather_moments(comm, count: int, mean: np.ndarray, m2: np.ndarray):
    """Every rank's per-channel (count, mean, M2), combined: one collective."""
    c = mean.size
    send = np.concatenate([[float(count)], mean.ravel(), m2.ravel()])
    recv = np.empty((comm.Get_size(), send.size))
    comm.Allgather(send, recv)
    return combine_moments(recv[:, 0], recv[:, 1 : 1 + c], recv[:, 1 + c :])


def allreduce_sum(comm, *arrays: np.ndarray) -> list[np.ndarray]:
    """The sums over ranks of several float64 arrays, in one collective."""
    send = np.concatenate([a.ravel() for a in arrays]).astype(np.float64)
    recv = np.empty_like(send)
    comm.Allreduce(send, recv)
    out, start = [], 0
    for a in arrays:
        out.append(recv[start : start + a.size].reshape(a.shape))
        start += a.size
    return out
