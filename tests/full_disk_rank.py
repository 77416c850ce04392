"""Run under mpiexec by tests/test_faults.py: ``normgrad`` with rank 0's disk full from its
second checkpoint on (every fsync of checkpoint.npz's temporary fails with ENOSPC), as a
full disk where mounting a small tmpfs is not allowed."""

import errno
import os
import sys

from mpi4py import MPI

import normgrad.io
from normgrad import cli

real_fsync = os.fsync
checkpoints = []


def fsync(fd):
    name = os.readlink(f"/proc/self/fd/{fd}")
    if ".checkpoint.npz." in name:
        checkpoints.append(name)
        if len(checkpoints) >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fsync(fd)


if MPI.COMM_WORLD.Get_rank() == 0:
    normgrad.io.os.fsync = fsync
sys.exit(cli.main(sys.argv[1:]))
