"""The ``normgrad`` command line: each command parses its options, calls one library
function and prints what it returns.

Subcommands import what they need when they run, so ``normgrad --help`` stays fast and the
core never imports the command line. A :class:`~normgrad.errors.NormgradUsageError` (bad
input: a missing file, a bad setting, a missing extra) prints one line and exits 2, as
argparse's own errors do; any other exception is a bug and surfaces as a traceback (exit 1).
The exit codes are :data:`EXIT_CODES`, shown by ``normgrad --help``.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from dataclasses import fields
from pathlib import Path

import normgrad
from normgrad.errors import MissingDependencyError, NormgradUsageError

DESCRIPTION = """\
normgrad: batch, layer, group, instance and RMS normalization with exact forward
and backward passes, derived three ways (staged graph, closed form, automatic) and
checked against each other, against central differences and against PyTorch."""


EXIT_CODES = """\
exit codes:
  0    success
  1    a check failed (verify, check, explain), or a bug in normgrad (with a traceback)
  2    a usage mistake (checked before anything is written), or a file that cannot be
       written (a full disk): one line on stderr says what to change
  3    train: the loss became NaN/Inf; the last good checkpoint is kept
  130  interrupted (Ctrl-C); train saves a checkpoint first and prints how to resume
  143  terminated (SIGTERM); as 130"""

#: explain and graph walk or draw every element of a small example; the numerical check
#: costs about N^2 operations for N elements (4096 elements: 2-4 s on a loaded 2-core VM).
EXAMPLE_MAX_ELEMENTS = 4096


class _Terminated(Exception):
    """SIGTERM outside a training loop (which handles it itself)."""


def _cmd_verify(args: argparse.Namespace) -> int:
    from normgrad import verify
    from normgrad.reference.pytorch import torch_available

    if args.json:
        _check_json(args.json)  # fail now, not after every check has run
    use_torch = torch_available() and not args.no_torch
    print(verify.header(use_torch), flush=True)
    section = None

    def show(row: verify.Row) -> None:
        nonlocal section
        if row.section != section:
            section = row.section
            print("\n" + verify.section_header(section), flush=True)
        print(verify.format_row(row), flush=True)

    rows = verify.run_verify(seed=args.seed, use_torch=use_torch, on_row=show)
    failed = [r for r in rows if not r.passed]
    print(f"\n{len(rows) - len(failed)} passed, {len(failed)} failed")
    if args.json:
        _write_text(args.json, verify.rows_to_json(rows), "--json")
    return 1 if failed else 0


def _cmd_conformance(args: argparse.Namespace) -> int:
    from normgrad import conformance

    if args.json:
        _write_text(args.json, "", "--json")  # fail now, not after every case has run
    frameworks = conformance.FRAMEWORKS
    if args.frameworks:
        wanted = [w.strip() for w in args.frameworks.split(",") if w.strip()]
        known = {f.name.lower(): f for f in frameworks}
        unknown = [w for w in wanted if w.lower() not in known]
        if unknown:
            raise NormgradUsageError(
                f"--frameworks: unknown {unknown[0]!r}; expected names from "
                f"{', '.join(f.name for f in frameworks)}"
            )
        frameworks = [known[w.lower()] for w in wanted]
    cases = conformance.quick_cases() if args.quick else conformance.CASES
    progress = None if args.no_progress else (lambda label: print(f"  {label}", flush=True))
    report = conformance.run_conformance(cases, frameworks, on_case=progress)
    print(conformance.format_report(report))
    if args.json:
        _write_text(args.json, conformance.to_json(report), "--json")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and exit code 2), not usage + error."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"invalid shape {text!r}: expected positive integers separated by commas, e.g. 4,3"
        ) from None
    if not shape or any(n < 1 for n in shape):
        raise argparse.ArgumentTypeError(
            f"invalid shape {text!r}: every dimension must be a positive integer"
        )
    return shape


def _example(args: argparse.Namespace):
    from normgrad.learn.examples import make_example

    if args.shape is not None:
        size = 1
        for n in args.shape:
            size *= n
        if size > EXAMPLE_MAX_ELEMENTS:
            shape = ",".join(map(str, args.shape))
            raise NormgradUsageError(
                f"--shape {shape} has {size:,} elements; {args.command} works on small examples "
                f"of at most {EXAMPLE_MAX_ELEMENTS:,} elements (a few seconds; the numerical check "
                "grows with the square of the size)"
            )

    try:
        return make_example(
            args.op, args.shape, seed=args.seed, num_groups=args.groups, bessel=args.bessel
        )
    except (ValueError, TypeError) as exc:
        # The core's argument checks are the authority on which shapes and group counts an
        # op accepts; here they judge what the user typed, so they are usage errors.
        raise NormgradUsageError(str(exc)) from None


def _cmd_explain(args: argparse.Namespace) -> int:
    from normgrad.learn.explain import explain

    text = explain(_example(args))
    print(text)
    return 0 if text.rstrip().endswith("All four agree.") else 1


def _cmd_graph(args: argparse.Namespace) -> int:
    from normgrad.io import check_output_file
    from normgrad.learn import graph

    try:
        fmt = graph.infer_format(args.out, args.format)
    except ValueError as exc:  # the user's --out or --format
        raise NormgradUsageError(str(exc)) from None
    check_output_file(args.out, "--out")
    example = _example(args)
    try:
        path = graph.draw_example(example, args.out, fmt)
    except FileNotFoundError as exc:  # no such output directory
        raise NormgradUsageError(str(exc)) from None
    except OSError as exc:  # the user's --out: no permission, a full disk
        raise NormgradUsageError(f"cannot write --out {args.out}: {exc.strerror}") from None
    except ImportError as exc:  # no graphviz package
        raise MissingDependencyError(str(exc)) from None
    except graph.RenderError as exc:
        print(f"normgrad graph: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _say_at_once(message: str) -> None:
    """A timeout, said when it happens: the report comes when grading ends."""
    print(f"normgrad check: {message}", file=sys.stderr, flush=True)


def _cmd_check(args: argparse.Namespace) -> int:
    import json

    from normgrad.io import check_output_file
    from normgrad.learn import grader

    for option, dest in (("--json", args.json), ("--gradescope", args.gradescope)):
        if dest:  # writable, checked before the learner's code runs; creates nothing
            check_output_file(dest, option)
    try:
        path, name = grader.parse_target(args.target)
        report = grader.grade(path, name, timeout=args.timeout, on_timeout=_say_at_once)
    except grader.UsageError as exc:  # the grader's own usage errors: a file it cannot grade
        # An autograder still gets a report that says why (score 0), not an empty file.
        if args.json:
            failed = {"source": args.target, "passed": False, "error": str(exc)}
            _write_text(args.json, json.dumps(failed | {"functions": [], "rows": []}), "--json")
        if args.gradescope:
            failed = {"score": 0.0, "output": str(exc), "tests": []}
            _write_text(args.gradescope, json.dumps(failed, indent=2), "--gradescope")
        raise NormgradUsageError(str(exc)) from None
    if args.json:
        _write_text(args.json, report.json(), "--json")
    if args.gradescope:
        _write_text(args.gradescope, json.dumps(report.gradescope(), indent=2), "--gradescope")
    print(report.text(verbose=args.verbose))
    return 0 if report.passed else 1


def _train_config(args: argparse.Namespace):
    """The TrainConfig of ``normgrad train``'s options (every field the parser holds)."""
    from normgrad.train import TrainConfig

    options = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig.from_options(**options)


def _cmd_train(args: argparse.Namespace) -> int:
    from normgrad.train import mpi_world

    comm = mpi_world() if args.distributed else None
    root = comm is None or comm.Get_rank() == 0
    try:
        return _train(args, comm, root)
    except NormgradUsageError:
        if root:
            raise
        return 2  # every rank fails with the same message (train.run._agreed): rank 0 says it


def _train(args: argparse.Namespace, comm, root: bool) -> int:
    from normgrad.train import TrainingDiverged, TrainingInterrupted, resume_run, start_run

    progress = not args.no_progress
    if args.rank_timeout is not None and comm is None:
        raise NormgradUsageError("--rank-timeout is for --distributed runs")
    if args.resume:
        given = [*args.given_options, *(["--out"] if args.out else []),
                 *(["--overwrite"] if args.overwrite else [])]  # fmt: skip
        if given:
            raise NormgradUsageError(
                f"--resume DIR continues a run with its own settings; drop {', '.join(given)}"
            )
        out = Path(args.resume)
    elif args.out:
        out = Path(args.out)
    else:
        raise NormgradUsageError("--out DIR is required (or --resume DIR)")
    try:
        if args.resume:
            report = resume_run(
                out, comm=comm, progress=progress, log=print, rank_timeout=args.rank_timeout
            )
        else:
            report = start_run(
                _train_config(args), out, comm=comm, progress=progress, overwrite=args.overwrite,
                rank_timeout=args.rank_timeout,
            )  # fmt: skip
    except TrainingInterrupted as exc:  # every rank stops after the same step
        if root:
            print(
                f"normgrad train: stopped by {signal.Signals(exc.signal_number).name} after "
                f"step {exc.step} of {exc.total}; checkpoint saved in {exc.checkpoint_path}; "
                f"continue with: {_resume_command(out, comm)}",
                file=sys.stderr,
            )
        return 128 + exc.signal_number
    except TrainingDiverged as exc:  # every rank sees the same loss, so all stop here
        if root:
            if exc.checkpoint_kept:
                kept = "the last good checkpoint is kept"
            else:
                kept = "no checkpoint was written"
            print(f"normgrad train: stopped: {exc}; {kept} in {out}", file=sys.stderr)
        return 3
    if root:
        print(
            f"{report.steps} steps; {report.split} accuracy {report.accuracy:.4f}; "
            f"wrote {report.model_path}"
        )
    return 0


def _resume_command(out: Path, comm) -> str:
    if comm is None:
        return f"normgrad train --resume {out}"
    return f"mpiexec -n {comm.Get_size()} normgrad train --resume {out} --distributed"


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from normgrad.train import evaluate_run

    result = evaluate_run(args.run_dir)
    print(
        f"{args.run_dir}: test accuracy {result.accuracy:.4f} on {result.count} "
        f"{result.dataset} images"
    )
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from normgrad.io import check_output_dir
    from normgrad.tools.table import Column, Table

    out = check_output_dir(Path(args.out or args.experiment), "--out")
    common = {"dataset": args.dataset, "data_dir": args.data_dir, "seed": args.seed,
              "progress": not args.no_progress}  # fmt: skip
    if args.experiment == "ioffe2015":
        from normgrad.experiments import ioffe2015

        result = ioffe2015.run(out, steps=args.steps, eval_stats=args.eval_stats,
                               jobs=args.jobs, **common)  # fmt: skip
        columns = [Column("network"), Column("final test accuracy", ".4f", align="right"),
                   Column("training time", align="right")]  # fmt: skip
        rows = [[label, acc, f"{result.seconds[label]:.0f} s"]
                for label, acc in result.final_accuracy.items()]  # fmt: skip
        print(Table(columns).render(rows))
        print(f"wall time {result.wall_seconds:.0f} s ({result.jobs} process(es) at once)")
    else:
        from normgrad.experiments import weight_scale

        result = weight_scale.run(out, epochs=args.epochs, **common)
    print(f"wrote {out / result.files[0]}, {', '.join(result.files[1:])}")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from normgrad import bench

    if args.json:
        _check_json(args.json)  # fail now, not after minutes of measuring
    if args.mpi:
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            raise MissingDependencyError(
                "bench --mpi needs mpi4py: pip install 'normgrad[mpi]'"
            ) from None
        from normgrad.dist import bench as mpi_bench

        rows = mpi_bench.run()
        print(mpi_bench.format_rows(rows))
        if args.json:
            _write_text(args.json, bench.to_json({"mpi": rows}), "--json")
        return 0
    if args.train:
        result = bench.train_benchmark(steps=300 if args.quick else 1000,
                                       progress=not args.no_progress)  # fmt: skip
        print(bench.format_train_report(result))
        if args.json:
            _write_text(args.json, bench.to_json(result), "--json")
        return 0
    result = bench.run(quick=args.quick, progress=not args.no_progress)
    print(bench.format_report(result))
    if args.json:
        _write_text(args.json, bench.to_json(result), "--json")
    return 0


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid --hidden {text!r}: e.g. 100,100,100") from None
    if not sizes or any(n < 1 for n in sizes):
        raise argparse.ArgumentTypeError(f"invalid --hidden {text!r}: sizes must be positive")
    return sizes


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer; got {text!r}")
    return value


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds; got {text!r}")
    return value


def _weight_scale(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def _check_json(path: str) -> None:
    """--json FILE must be writable; checked before any work, creating nothing."""
    from normgrad.io import check_output_file

    check_output_file(path, "--json")


def _write_text(path: str, text: str, what: str) -> None:
    from normgrad.io import atomic_write

    try:
        atomic_write(path, text)
    except OSError as exc:  # the user's path: no such directory, no permission
        raise NormgradUsageError(f"cannot write {what} {path}: {exc.strerror}") from None


class _GivenOption(argparse.Action):
    """Stores the value as ``store`` does, and notes that the option was given: ``--resume``
    takes every setting from the run and refuses any on the command line."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given_options = [*namespace.given_options, option_string]


def _add_train_options(p: argparse.ArgumentParser) -> None:
    """``normgrad train``'s run settings, one per TrainConfig field, whose defaults (and
    the defaults their help shows) are TrainConfig's."""
    from normgrad.data import DATASETS
    from normgrad.train.config import (
        ACTIVATIONS,
        DTYPES,
        EVAL_STATS,
        NORM_CHOICES,
        OPTIMIZERS,
        TrainConfig,
        canonical_norm,
    )

    def option(flag: str, help: str, *, to=p, shown=None, **kw) -> None:
        """Add ``flag`` with TrainConfig's default; ``shown`` replaces the default in the
        help text (``""``: say nothing)."""
        dest = flag[2:].replace("-", "_")
        default = TrainConfig.default(dest)
        if shown is None:
            shown = ",".join(map(str, default)) if isinstance(default, list) else str(default)
        text = f"{help} (default {shown})" if shown else help
        to.add_argument(flag, action=_GivenOption, default=default, help=text, **kw)

    option("--dataset", "the images to train on", choices=DATASETS)
    option(
        "--data-dir",
        "directory with the four IDX files; mnist downloads missing ones into it (pooch: "
        "normgrad[mnist]; default: the user's cache); fashion-mnist defaults to Debian's "
        "dataset-fashion-mnist package",
        metavar="DIR",
        shown="",
    )
    option(
        "--norm",
        "the normalization before each activation; the core's aliases (batch, layer, "
        "group, batchnorm, ...) also work",
        type=canonical_norm,
        choices=NORM_CHOICES,
    )
    option("--hidden", "hidden layer sizes", type=_hidden, metavar="SIZES")
    option("--activation", "the activation", choices=ACTIVATIONS)
    option("--batch-size", "images per step", type=int, metavar="N")
    length = p.add_mutually_exclusive_group()
    option(
        "--steps",
        "training steps",
        to=length,
        type=int,
        metavar="N",
        shown=f"{TrainConfig.DEFAULT_STEPS} unless --epochs is given",
    )
    option(
        "--epochs", "or: passes over the training set", to=length, type=int, metavar="N", shown=""
    )
    option("--lr", "learning rate", type=float)
    option("--optimizer", "the optimizer", choices=OPTIMIZERS)
    option("--momentum", "SGD momentum", type=float)
    option(
        "--weight-scale",
        "std of the initial weights, or he/xavier/lecun",
        type=_weight_scale,
        metavar="STD|NAME",
    )
    option("--seed", "seeds the weights and the order of the data", type=_seed)
    option("--checkpoint-every", "steps between checkpoints", type=int, metavar="K")
    option("--eval-every", "steps between test evaluations", type=int, metavar="K")
    option("--dtype", "of parameters and data", choices=DTYPES)
    option(
        "--eval-stats",
        "what batch norm is evaluated with: its running averages, or population statistics "
        "(the paper's Algorithm 2, over --population-batches training batches)",
        choices=EVAL_STATS,
    )
    option("--population-batches", "training batches population statistics use", type=int,
           metavar="K")  # fmt: skip
    p.set_defaults(given_options=[])


def _add_example_args(p: argparse.ArgumentParser) -> None:
    from normgrad.core.table import OPS

    defaults = ", ".join(f"{name} {','.join(map(str, s.example_shape))}" for name, s in OPS.items())
    p.add_argument("--op", choices=tuple(OPS), default="batch_norm", help="which normalization")
    p.add_argument("--shape", type=_parse_shape, help=f"input shape, e.g. 4,3 ({defaults})")
    p.add_argument("--seed", type=_seed, default=0, help="for x, gamma, beta, dout (default 0)")
    p.add_argument("--groups", type=int, help="number of groups for group_norm (default 2)")
    p.add_argument("--bessel", action="store_true", help="Bessel-corrected variance (/ (M-1))")


def build_parser() -> argparse.ArgumentParser:
    from normgrad.experiments import EXPERIMENTS, ioffe2015, weight_scale

    parser = _Parser(
        prog="normgrad",
        description=DESCRIPTION,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"normgrad {normgrad.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser(
        "verify",
        help="check every op and layout: staged vs closed form vs numerical vs PyTorch",
        description=(
            "Run every normalization op in every layout and variance convention, and print\n"
            "the relative error of the staged backward against the closed form, of the\n"
            "closed form against central differences, and of both passes against PyTorch\n"
            "(when installed); then the second derivatives against central differences,\n"
            "the autodiff engine and PyTorch's double backward; then the staged backward,\n"
            "the closed form and the Bessel-corrected formula as first written down,\n"
            "against the library; then the precision checks. Exits 1 if any check fails."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seed", type=_seed, default=0, help="seed for the random inputs (default 0)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparisons")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "conformance",
        help="hard inputs through every installed framework, errors against float64",
        description=(
            "Run hard inputs (float32 with mean 1e4 at several N and layouts, float16, N = 2,\n"
            "a constant channel, tiny and large eps) through normgrad's NumPy and Numba\n"
            "backends, PyTorch, JAX/Flax and Keras, whichever are installed, and print the\n"
            "max errors of outputs, gradients and running statistics against a float64\n"
            "two-pass ground truth, with the versions. Missing frameworks are listed."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument("--quick", action="store_true", help="the same cases at most 2^16 elements")
    p.add_argument(
        "--frameworks", metavar="NAMES", help="comma-separated names (default: all installed)"
    )
    p.add_argument("--no-progress", action="store_true", help="do not name each case as it runs")
    p.set_defaults(func=_cmd_conformance)

    p = sub.add_parser(
        "explain",
        help="walk the backward pass step by step on a small example",
        description=(
            "Print the backward pass of a normalization on a small seeded example, one\n"
            "graph node at a time, from the last node down to 0 (docs/design.md §3): the\n"
            "node, its local derivative, the gradient it passes down, where two gradients\n"
            "meet and are added; then the closed form and a check that the staged,\n"
            "closed-form, automatic and numerical gradients agree. --bessel shows where\n"
            "n/(n-1) comes from."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_example_args(p)
    p.set_defaults(func=_cmd_explain)

    p = sub.add_parser(
        "graph",
        help="draw the computational graph with values and gradients (SVG, PNG or DOT)",
        description=(
            "Draw the computational graph of a normalization as the autodiff engine builds\n"
            "it: one node per primitive with its step number, shape, value and gradient\n"
            "(after a backward pass with a seeded dout); the nodes where gradients meet and\n"
            "are summed are orange. SVG and PNG need Graphviz's dot program\n"
            "(apt-get install graphviz); without it the .dot file is written instead.\n"
            "Needs: pip install 'normgrad[graph]'."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_example_args(p)
    p.add_argument("--out", required=True, help="output file (.svg, .png or .dot)")
    p.add_argument("--format", choices=("svg", "png", "dot"), help="default: from --out")
    p.set_defaults(func=_cmd_graph)

    p = sub.add_parser(
        "check",
        help="grade a learner's batchnorm_*/layernorm_*/spatial_*/rmsnorm_* functions",
        description=(
            "Import FILE.py (a learner's layers.py in the CS231n API, any course year) as\n"
            "the course notebook would, and grade every normalization function it defines,\n"
            "or just NAME with FILE.py:NAME: forwards (train mode, running statistics,\n"
            "test mode) against the reference, backwards through the learner's own\n"
            "forward, over several shapes, eps and momentum values and edge cases. One\n"
            "verdict per function: pass, wrong values, wrong shape, crashed, timed out,\n"
            "not implemented, or 'fix the forward first'. A wrong result is matched\n"
            "against the mistakes students make (eps outside the square root at test time,\n"
            "momentum ignored, spatial batch norm over the wrong axes, group norm grouping\n"
            "the wrong channels, a missing variance path, ...) and named. Each call gets\n"
            "fresh copies of its inputs and --timeout seconds; the report is always\n"
            "printed (and written). Exits 1 if any function fails, 2 if FILE cannot be\n"
            "graded."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="FILE.py[:NAME]", help="the learner's module")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.add_argument(
        "--gradescope", metavar="FILE", help="also write Gradescope's results.json to FILE"
    )
    p.add_argument(
        "--timeout", type=_positive_seconds, default=10.0, metavar="S",
        help="seconds each call of a learner's function may take (default: 10)",
    )  # fmt: skip
    p.add_argument("--verbose", action="store_true", help="also print the per-case table")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "train",
        help="train a fully connected network (checkpointed, resumable)",
        description=(
            "Train a fully connected network with normgrad's layers. Writes DIR/config.json,\n"
            "DIR/metrics.csv, DIR/model.npz and DIR/checkpoint.npz (atomic, verified on\n"
            "load). --resume DIR continues a run where its checkpoint left it; the result is\n"
            "bit-for-bit that of an uninterrupted run. A NaN/Inf loss stops the run (exit 3)\n"
            "and keeps the last good checkpoint. Ctrl-C or SIGTERM finishes the current step,\n"
            "saves a checkpoint, prints the command that resumes, and exits 130 or 143."
        ),
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_train_options(p)
    p.add_argument("--out", metavar="DIR", help="where the run is written")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the run already in --out DIR (without it, a DIR holding a run is refused)",
    )
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI (mpiexec -n K normgrad train --distributed ...): each rank "
        "takes a slice of every batch, batch norm is synchronized, rank 0 writes",
    )
    p.add_argument(
        "--rank-timeout",
        type=_positive_seconds,
        metavar="SECONDS",
        help="with --distributed: abort the job, naming the silent rank, when a rank has "
        "waited this long for the others (default: wait forever)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("evaluate", help="test accuracy of a trained model (DIR from train)")
    p.add_argument("run_dir", metavar="DIR")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "reproduce",
        help="reproduce an experiment: ioffe2015 (batch norm's Figure 1), weight-scale "
        "(the course's init and batch-size study)",
        description=(
            "ioffe2015: Ioffe & Szegedy (2015), section 4.1 and Figure 1. Two 784-100-100-\n"
            "100-10 sigmoid networks, without and with batch norm, same seed and data order,\n"
            "minibatches of 60. Writes test-accuracy and sigmoid-input-percentile plots\n"
            "(every unit of the last hidden layer; the BN network with population and with\n"
            "batch statistics), series.csv, sigmoid_inputs.npz and report.md to --out.\n"
            "Threads: BLAS/OpenMP are limited to 1 thread per process (threadpoolctl), and\n"
            "the two networks train at once in 2 processes on 2+ cores (--jobs).\n"
            "weight-scale: the CS231n experiments: best validation accuracy and final training\n"
            "loss of an 8-layer net with and without batch norm over "
            f"{weight_scale.DEFAULT_NUM_SCALES} weight scales\n"
            "(1e-4 to 1), and batch and layer norm at batch sizes 5, 10 and 50.\n"
            "Both use Fashion-MNIST when installed (apt-get install dataset-fashion-mnist),\n"
            "else scikit-learn's digits."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("experiment", choices=tuple(EXPERIMENTS))
    p.add_argument("--steps", type=int, default=ioffe2015.DEFAULT_STEPS,
                   help="ioffe2015: steps per network (default %(default)s)")  # fmt: skip
    p.add_argument("--epochs", type=int, default=weight_scale.DEFAULT_EPOCHS,
                   help="weight-scale: epochs per run (default %(default)s)")  # fmt: skip
    p.add_argument("--eval-stats", choices=ioffe2015.EVAL_STATS, default="population",
                   help="ioffe2015: the BN network's headline test accuracy with population "
                   "statistics (the paper's Algorithm 2) or running averages; both are "
                   "recorded (default %(default)s)")  # fmt: skip
    p.add_argument("--jobs", type=int, default=None,
                   help="ioffe2015: networks trained at once, one process and one BLAS "
                   f"thread each (default {ioffe2015.default_jobs()} here)")  # fmt: skip
    p.add_argument("--out", help="output directory (default ./EXPERIMENT)")
    p.add_argument("--dataset", choices=("fashion-mnist", "mnist", "digits"),
                   help="default: fashion-mnist if installed, else digits")  # fmt: skip
    p.add_argument(
        "--data-dir",
        help="directory with the four IDX files (mnist: downloaded "
        "into it when missing, with normgrad[mnist]; default the user's cache)",
    )
    p.add_argument("--seed", type=_seed, default=0, help="default 0")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser(
        "bench",
        help="time every op: staged, NumPy, fused, PyTorch, and the cache-aware memory floor "
        "(--mpi: data-parallel scaling)",
        description=(
            "Time batch norm at (256, 1024), (4096, 1024), (65536, 256) and (32, 64, 56, 56)\n"
            "in NCHW and NHWC, training forward+backward and eval forward, and layer, group,\n"
            "instance and RMS norm training steps, in float32 and float64: the staged\n"
            "backward, the NumPy closed form, the fused Numba path and PyTorch's CPU kernel\n"
            "(same thread count), side by side, as medians (with interquartile ranges) of\n"
            "interleaved runs, each timed call from memory (caches flushed before it, after\n"
            "an untimed call of the same method). Each is reported as a multiple of PyTorch's\n"
            "time and of the cache-aware memory-traffic floor (5 transfers of x where a\n"
            "reduction group fits in a core's cache, else 8; bandwidth: the higher of two\n"
            "STREAM triads, at the start and the end of the run), with\n"
            "the floor used and why, the CPU, its caches and the thread counts, and a warning\n"
            "when the machine was busy. Also peak extra memory and the paper's network."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="float32, two shapes, 7 repetitions")
    p.add_argument(
        "--mpi", action="store_true",
        help="instead: data-parallel step time and bytes communicated at K = 1, 2, 4 ranks",
    )  # fmt: skip
    p.add_argument(
        "--train", action="store_true",
        help="instead: training steps/s of the paper's two networks (without and with BN), "
        "normgrad at 1 BLAS thread against PyTorch at its best thread count (~1 min)",
    )  # fmt: skip
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    in_main_thread = threading.current_thread() is threading.main_thread()
    if in_main_thread:  # signal handlers can only be set there
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        _check_environment()
        return args.func(args)
    except NormgradUsageError as exc:
        print(f"normgrad {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"normgrad {args.command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    except _Terminated:
        print(f"normgrad {args.command}: terminated (SIGTERM)", file=sys.stderr)
        return 128 + signal.SIGTERM
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum, frame):
    raise _Terminated


def _check_environment() -> None:
    """The environment variables normgrad reads, checked before any work starts."""
    from normgrad.backends import BACKENDS, ENV_VAR

    value = os.environ.get(ENV_VAR)
    if value is not None and value not in BACKENDS:
        raise NormgradUsageError(
            f"the environment variable {ENV_VAR} must be one of {', '.join(BACKENDS)}; "
            f"got {value!r}"
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
