"""``--rank-timeout``: an MPI job whose ranks stop hearing each other ends, naming the
silent rank, instead of waiting forever.

Every collective of a run goes through a :class:`WatchedComm`, which notes when this rank
starts waiting in one. A :class:`Watchdog` thread on every rank watches that note: when
this rank has waited longer than the timeout, it asks every other rank, over a private
duplicate of the communicator, what it is doing. A rank that does not answer (stopped,
hung in C code, dead) or answers that it is not in a collective (still computing, or
stuck writing a file) is the silent one; the waiting rank prints one line naming it and
aborts the job. The lowest-numbered waiting rank speaks, so the line appears once.

The threads need MPI's ``MPI_THREAD_MULTIPLE`` (mpi4py asks for it by default).
"""

from __future__ import annotations

import os
import sys
import threading
import time

QUERY_TAG, REPLY_TAG = 7101, 7102
#: How long a rank that is about to abort the job waits after printing its line. MPI_Abort
#: makes ``mpiexec`` kill every process at once, and whatever of this rank's stderr its
#: proxy has not yet forwarded is lost with it (seen on a loaded machine): the pause lets
#: the line through. The other ranks are waiting in a collective meanwhile.
ABORT_GRACE_SECONDS = 0.5
#: How long a waiting rank gives the others to answer its question, at most.
ANSWER_SECONDS = 3.0


class WatchedComm:
    """An mpi4py communicator that notes when this rank waits in a collective (the
    methods the trainer, the batch norm layers and the setup protocol use)."""

    def __init__(self, comm):
        self.comm = comm
        self.waiting: str | None = None  # the collective this rank is in, if any
        self.waiting_since = 0.0
        self.where = "setup"  # what the rank was doing: "setup" or "step K"

    def Get_rank(self) -> int:
        return self.comm.Get_rank()

    def Get_size(self) -> int:
        return self.comm.Get_size()

    def Abort(self, code: int = 1):
        return self.comm.Abort(code)

    def Allgather(self, send, recv):
        return self._wait("Allgather", self.comm.Allgather, send, recv)

    def Allreduce(self, send, recv):
        return self._wait("Allreduce", self.comm.Allreduce, send, recv)

    def allgather(self, obj):
        return self._wait("allgather", self.comm.allgather, obj)

    def _wait(self, name, method, *args):
        self.waiting_since, self.waiting = time.monotonic(), name
        try:
            return method(*args)
        finally:
            self.waiting = None


class Watchdog:
    """The thread that ends the job when this rank has waited ``timeout`` seconds in a
    collective (module docstring). Use as a context manager around the whole run; every
    rank must enter it (duplicating the communicator is itself a collective)."""

    def __init__(self, comm: WatchedComm, timeout: float):
        from mpi4py import MPI

        self._mpi = MPI
        self.comm, self.timeout = comm, float(timeout)
        self.rank = comm.Get_rank()
        self.private = comm.comm.Dup()
        self._stop = threading.Event()
        self._sent: list = []  # requests of messages sent, kept until they complete
        self._thread = threading.Thread(target=self._watch, name="normgrad-watchdog", daemon=True)

    def __enter__(self) -> Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    # -- the thread ------------------------------------------------------------
    def _state(self) -> tuple[int, str | None, str, float]:
        since = time.monotonic() - self.comm.waiting_since if self.comm.waiting else 0.0
        return self.rank, self.comm.waiting, self.comm.where, since

    def _answer(self) -> None:
        status = self._mpi.Status()
        while self.private.Iprobe(source=self._mpi.ANY_SOURCE, tag=QUERY_TAG, status=status):
            source = status.Get_source()
            self.private.recv(source=source, tag=QUERY_TAG)
            self._send(self._state(), source, REPLY_TAG)

    def _send(self, message, dest: int, tag: int) -> None:
        """Send without waiting (the receiver may be the stopped rank), keeping the
        request alive until it completes."""
        self._sent = [r for r in self._sent if not r.Test()]
        self._sent.append(self.private.isend(message, dest=dest, tag=tag))

    def _watch(self) -> None:
        while not self._stop.wait(0.1):
            self._answer()
            if self.comm.waiting and time.monotonic() - self.comm.waiting_since > self.timeout:
                self._ask_and_abort()

    def _ask_and_abort(self) -> None:
        size = self.comm.Get_size()
        others = [r for r in range(size) if r != self.rank]
        for r in others:
            self._send(None, r, QUERY_TAG)
        answers: dict[int, tuple] = {}
        status = self._mpi.Status()
        deadline = time.monotonic() + min(self.timeout, ANSWER_SECONDS)
        while len(answers) < len(others) and time.monotonic() < deadline:
            self._answer()  # another waiting rank may be asking this one at the same time
            while self.private.Iprobe(source=self._mpi.ANY_SOURCE, tag=REPLY_TAG, status=status):
                answers[status.Get_source()] = self.private.recv(
                    source=status.Get_source(), tag=REPLY_TAG
                )
            time.sleep(0.02)
        if not self.comm.waiting:  # the collective finished while the others were asked
            return
        if any(r < self.rank and a[1] for r, a in answers.items()):
            return  # a lower-numbered rank waits too: it reports (the line appears once)
        silent = [f"rank {r} (no answer: stopped, hung or dead)" for r in others
                  if r not in answers]  # fmt: skip
        silent += [f"rank {r} (not in a collective: busy in {a[2]})"
                   for r, a in sorted(answers.items()) if not a[1]]  # fmt: skip
        _, name, where, since = self._state()
        abort_job(
            self.comm,
            1,
            f"normgrad train: rank {self.rank} waited {since:.1f} s in {name} during {where} "
            f"(--rank-timeout {self.timeout:g}); silent: {', '.join(silent) or 'unknown'}; "
            "aborting all ranks",
        )


def abort_job(comm, code: int, line: str) -> None:
    """Print ``line`` on stderr, give ``mpiexec`` time to forward it, then abort every
    rank with exit ``code`` (this process ends here even if MPI_Abort returns)."""
    print(line, file=sys.stderr, flush=True)
    time.sleep(ABORT_GRACE_SECONDS)
    comm.Abort(code)
    os._exit(code)
