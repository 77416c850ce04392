"""Run under mpiexec by tests/test_faults.py: ``normgrad`` with rank 0 busy in Python (not
in any collective) for 30 s before its checkpoint at step 20, as a rank stuck in a loop."""

import sys
import time

from mpi4py import MPI

from normgrad import cli
from normgrad.train.trainer import Trainer

save_checkpoint = Trainer.save_checkpoint


def busy_before_step_20(self):
    if MPI.COMM_WORLD.Get_rank() == 0 and self.step == 20:
        start = time.monotonic()
        while time.monotonic() - start < 30:
            sum(range(1000))
    return save_checkpoint(self)


Trainer.save_checkpoint = busy_before_step_20
sys.exit(cli.main(sys.argv[1:]))
