"""The ``normgrad`` command line.

Subcommands import what they need when they run, so ``normgrad --help`` stays fast and the
core never imports the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import normgrad

DESCRIPTION = """\
normgrad: batch, layer, group and instance normalization with exact forward and
backward passes, derived three ways (staged graph, closed form, numerical) and
checked against each other and against PyTorch."""


def _cmd_verify(args: argparse.Namespace) -> int:
    from normgrad import verify
    from normgrad.reference.pytorch import torch_available

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
        try:
            with open(args.json, "w") as fh:
                fh.write(verify.rows_to_json(rows))
        except OSError as exc:
            print(
                f"normgrad verify: cannot write --json {args.json}: {exc.strerror}", file=sys.stderr
            )
            return 2
    return 1 if failed else 0


class UsageError(Exception):
    """Bad input on the command line: one line on stderr, exit code 2."""


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

    try:
        return make_example(
            args.op, args.shape, seed=args.seed, num_groups=args.groups, bessel=args.bessel
        )
    except (ValueError, TypeError) as exc:
        raise UsageError(str(exc)) from None


def _cmd_explain(args: argparse.Namespace) -> int:
    from normgrad.learn.explain import explain

    text = explain(_example(args))
    print(text)
    return 0 if text.rstrip().endswith("All four agree.") else 1


def _cmd_graph(args: argparse.Namespace) -> int:
    from normgrad.learn import graph

    try:
        fmt = graph.infer_format(args.out, args.format)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    example = _example(args)
    try:
        path = graph.draw_example(example, args.out, fmt)
    except (FileNotFoundError, ImportError) as exc:  # no such directory; no graphviz package
        raise UsageError(str(exc)) from None
    except graph.RenderError as exc:
        print(f"normgrad graph: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


def _cmd_check(args: argparse.Namespace) -> int:
    from normgrad.learn import grader

    try:
        path, name = grader.parse_target(args.target)
        rows = grader.grade(path, name)
    except grader.UsageError as exc:
        raise UsageError(str(exc)) from None
    if args.json:
        _write_text(args.json, grader.rows_to_json(rows), "--json")
    print(grader.format_rows(rows))
    return 1 if any(not r.passed for r in rows) else 0


TRAIN_DEFAULTS = {
    "dataset": "digits", "data_dir": None, "norm": "batch", "hidden": [100, 100, 100],
    "activation": "relu", "batch_size": 60, "steps": None, "epochs": None, "lr": 0.1,
    "optimizer": "sgd", "momentum": 0.0, "weight_scale": "he", "seed": 0,
    "checkpoint_every": 1000, "eval_every": 500, "dtype": "float32",
}  # fmt: skip


def _progress(args):
    from normgrad.progress import progress_factory

    try:
        return progress_factory(not args.no_progress)
    except ImportError as exc:
        raise UsageError(f"{exc} (or --no-progress)") from None


def _cmd_train(args: argparse.Namespace) -> int:
    from normgrad.data import DatasetError
    from normgrad.train import CheckpointError, TrainConfig, Trainer, TrainingDiverged

    comm = None
    if args.distributed:
        try:
            from mpi4py import MPI
        except ImportError:
            raise UsageError("--distributed needs mpi4py: pip install 'normgrad[mpi]'") from None
        comm = MPI.COMM_WORLD
    root = comm is None or comm.Get_rank() == 0
    given = {k: getattr(args, k) for k in TRAIN_DEFAULTS if getattr(args, k) is not None}
    if args.resume:
        if given or args.out:
            names = ", ".join(
                "--" + k.replace("_", "-") for k in [*given, *(["out"] if args.out else [])]
            )
            raise UsageError(f"--resume DIR continues a run with its own settings; drop {names}")
        out = Path(args.resume)
        try:
            config = TrainConfig.from_json((out / "config.json").read_text())
        except FileNotFoundError:
            raise UsageError(f"{out}: no config.json; not a normgrad training run") from None
    else:
        if not args.out:
            raise UsageError("--out DIR is required (or --resume DIR)")
        out = Path(args.out)
        settings = TRAIN_DEFAULTS | given
        if settings["steps"] is None and settings["epochs"] is None:
            settings["steps"] = 2000
        config = TrainConfig(**settings)
        if (out / "checkpoint.npz").exists():
            raise UsageError(f"{out} already holds a run: --resume {out}, or choose another --out")
    try:
        config.validate()
        progress = _progress(args) if root else None
        trainer = Trainer(config, out, progress=progress, label=out.name or "train", comm=comm)
    except (ValueError, DatasetError) as exc:
        raise UsageError(str(exc)) from None
    if args.resume:
        if trainer.checkpoint_path.exists():
            try:
                trainer.load_checkpoint()
            except CheckpointError as exc:
                raise UsageError(str(exc)) from None
            if root:
                print(f"resuming {out} at step {trainer.step} of {trainer.total}")
    else:
        out.mkdir(parents=True, exist_ok=True)
        if root:
            (out / "config.json").write_text(config.to_json())
    try:
        result = trainer.run()
    except TrainingDiverged as exc:  # every rank sees the same loss, so all stop here
        kept = (
            "the last good checkpoint is kept"
            if trainer.checkpoint_path.exists()
            else "no checkpoint was written"
        )
        if root:
            print(f"normgrad train: stopped: {exc}; {kept} in {out}", file=sys.stderr)
        return 3
    except Exception:
        if comm is None:
            raise
        # One failed rank must not leave the others waiting in a collective forever.
        import traceback

        traceback.print_exc()
        print(f"normgrad train: rank {comm.Get_rank()} failed; aborting all ranks", file=sys.stderr)
        comm.Abort(1)
        return 1  # not reached: MPI_Abort ends every rank
    if root:
        print(
            f"{result.steps} steps; test accuracy {result.test_accuracy:.4f}; wrote {out}/model.npz"
        )
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from normgrad.data import DatasetError
    from normgrad.train import CheckpointError, accuracy, load_model

    try:
        model, config, data = load_model(args.run_dir)
    except (CheckpointError, DatasetError) as exc:
        raise UsageError(str(exc)) from None
    acc = accuracy(model, data.x_test.astype(config.dtype), data.y_test)
    print(f"{args.run_dir}: test accuracy {acc:.4f} on {len(data.x_test)} {config.dataset} images")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from normgrad.data import DatasetError
    from normgrad.train import reproduce

    out = Path(args.out or args.experiment)
    if not out.parent.is_dir():
        raise UsageError(f"the parent directory of --out {out} does not exist")
    out.mkdir(exist_ok=True)
    if args.steps < 1 or args.epochs < 1:
        raise UsageError("--steps and --epochs must be at least 1")
    try:
        if args.experiment == "weight-scale":
            summary = reproduce.weight_scale(
                out, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
                epochs=args.epochs, progress=not args.no_progress,
            )  # fmt: skip
            print(f"wrote {out}/report.md, weight_scale.png, batch_size.png and the CSVs")
            return 0
        summary = reproduce.ioffe2015(
            out, steps=args.steps, dataset=args.dataset, data_dir=args.data_dir, seed=args.seed,
            progress=not args.no_progress,
        )  # fmt: skip
    except (DatasetError, ImportError, ValueError) as exc:
        raise UsageError(str(exc)) from None
    for label, acc in summary["final"].items():
        print(f"{label:<11} final test accuracy {acc:.4f}  ({summary['times'][label]:.0f} s)")
    print(f"wrote {out}/report.md, fig1a_accuracy.png, fig1bc_sigmoid_input.png, series.csv")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from normgrad import bench

    if args.mpi:
        try:
            import mpi4py  # noqa: F401
        except ImportError:
            raise UsageError("bench --mpi needs mpi4py: pip install 'normgrad[mpi]'") from None
        from normgrad.dist import bench as mpi_bench

        rows = mpi_bench.run()
        print(mpi_bench.format_rows(rows))
        if args.json:
            _write_text(args.json, bench.to_json({"mpi": rows}), "--json")
        return 0
    if args.json:
        _write_text(args.json, "", "--json")  # fail now, not after minutes of measuring
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


def _weight_scale(text: str):
    try:
        return float(text)
    except ValueError:
        return text


def _write_text(path: str, text: str, what: str) -> None:
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError as exc:
        raise UsageError(f"cannot write {what} {path}: {exc.strerror}") from None


def _add_example_args(p: argparse.ArgumentParser) -> None:
    from normgrad.learn.examples import DEFAULT_SHAPES, OPS

    defaults = ", ".join(f"{op} {','.join(map(str, s))}" for op, s in DEFAULT_SHAPES.items())
    p.add_argument("--op", choices=OPS, default="batch_norm", help="which normalization")
    p.add_argument("--shape", type=_parse_shape, help=f"input shape, e.g. 4,3 ({defaults})")
    p.add_argument("--seed", type=int, default=0, help="seed for x, gamma, beta, dout (default 0)")
    p.add_argument("--groups", type=int, help="number of groups for group_norm (default 2)")
    p.add_argument("--bessel", action="store_true", help="Bessel-corrected variance (/ (M-1))")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="normgrad",
        description=DESCRIPTION,
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
            "(when installed); then seeds 000-002 against the library and the precision\n"
            "checks. Exits 1 if any check fails."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seed", type=int, default=0, help="seed for the random inputs (default 0)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparisons")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.set_defaults(func=_cmd_verify)

    p = sub.add_parser(
        "explain",
        help="walk the backward pass step by step on a small example",
        description=(
            "Print the backward pass of a normalization on a small seeded example, one\n"
            "graph node at a time in seed 002's numbering (9 down to 0): the node, its local\n"
            "derivative, the gradient it passes down, where two gradients meet and are\n"
            "added; then the closed form and a check that the staged, closed-form, automatic\n"
            "and numerical gradients agree. --bessel shows where n/(n-1) comes from."
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
        help="grade a learner's batchnorm_*/layernorm_*/spatial_* functions",
        description=(
            "Import FILE.py (a learner's layers.py in the CS231n API) and grade every\n"
            "normalization function it defines, or just NAME with FILE.py:NAME: forwards\n"
            "against the reference, backwards through the learner's own forward, over\n"
            "several shapes, seeds, eps values and edge cases. Wrong results are matched\n"
            "against known mistakes (Bessel's n/(n-1) where the biased gradient is due,\n"
            "missing mean or variance path, unsummed dgamma/dbeta, eps outside the square\n"
            "root, a flipped sign, the two gradients into x not added). Exits 1 if any\n"
            "check fails, 2 if FILE cannot be graded."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("target", metavar="FILE.py[:NAME]", help="the learner's module")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    p.set_defaults(func=_cmd_check)

    p = sub.add_parser(
        "train",
        help="train a fully connected network (checkpointed, resumable)",
        description=(
            "Train a fully connected network with normgrad's layers. Writes DIR/config.json,\n"
            "DIR/metrics.csv, DIR/model.npz and DIR/checkpoint.npz (atomic, verified on\n"
            "load). --resume DIR continues a run where its checkpoint left it; the result is\n"
            "bit-for-bit that of an uninterrupted run. A NaN/Inf loss stops the run (exit 3)\n"
            "and keeps the last good checkpoint."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--dataset", choices=("fashion-mnist", "mnist", "digits"),
                   help="default digits (needs no files)")  # fmt: skip
    p.add_argument("--data-dir", help="directory with the four IDX files (mnist, fashion-mnist)")
    p.add_argument("--norm", choices=("batch", "layer", "group", "none"), help="default batch")
    p.add_argument("--hidden", type=_hidden, help="hidden sizes, default 100,100,100")
    p.add_argument("--activation", choices=("relu", "sigmoid"), help="default relu")
    p.add_argument("--batch-size", type=int, help="default 60")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--steps", type=int, help="training steps (default 2000)")
    length.add_argument("--epochs", type=int, help="or: passes over the training set")
    p.add_argument("--lr", type=float, help="learning rate, default 0.1")
    p.add_argument("--optimizer", choices=("sgd", "adam"), help="default sgd")
    p.add_argument("--momentum", type=float, help="SGD momentum, default 0")
    p.add_argument("--weight-scale", type=_weight_scale,
                   help="std of the initial weights, or he/xavier/lecun (default he)")  # fmt: skip
    p.add_argument("--seed", type=int, help="seeds weights and data order, default 0")
    p.add_argument("--checkpoint-every", type=int, metavar="K", help="steps, default 1000")
    p.add_argument("--eval-every", type=int, metavar="K", help="steps, default 500")
    p.add_argument("--dtype", choices=("float32", "float64"), help="default float32")
    p.add_argument("--out", metavar="DIR", help="where the run is written")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    p.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI (mpiexec -n K normgrad train --distributed ...): each rank "
        "takes a slice of every batch, batch norm is synchronized, rank 0 writes",
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
            "minibatches of 60. Writes test-accuracy and sigmoid-input-percentile plots,\n"
            "series.csv and report.md to --out.\n"
            "weight-scale: the CS231n experiments: best validation accuracy and final training\n"
            "loss of an 8-layer net with and without batch norm over 20 weight scales\n"
            "(1e-4 to 1), and batch and layer norm at batch sizes 5, 10 and 50.\n"
            "Both use Fashion-MNIST when installed (apt-get install dataset-fashion-mnist),\n"
            "else scikit-learn's digits."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("experiment", choices=("ioffe2015", "weight-scale"))
    p.add_argument("--steps", type=int, default=50_000, help="ioffe2015: steps per network")
    p.add_argument("--epochs", type=int, default=10, help="weight-scale: epochs per run")
    p.add_argument("--out", help="output directory (default ./EXPERIMENT)")
    p.add_argument("--dataset", choices=("fashion-mnist", "mnist", "digits"),
                   help="default: fashion-mnist if installed, else digits")  # fmt: skip
    p.add_argument("--data-dir", help="directory with the four IDX files")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_reproduce)

    p = sub.add_parser(
        "bench",
        help="time batch norm: staged, NumPy, fused, PyTorch, and the memory floor "
        "(--mpi: data-parallel scaling)",
        description=(
            "Time batch norm at (256, 1024), (4096, 1024), (65536, 256) and (32, 64, 56, 56)\n"
            "in NCHW and NHWC, float32 and float64, training forward+backward and eval\n"
            "forward: seed 002's staged path, the NumPy closed form, the fused Numba path and\n"
            "PyTorch's CPU kernel (same thread count), side by side, as medians of\n"
            "interleaved runs. Each is reported as a multiple of PyTorch's time and of the\n"
            "memory-traffic floor (from a STREAM triad in the same run). Also layer and\n"
            "group norm, peak extra memory, and the paper's network in samples/s."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="float32, two shapes, 5 repetitions")
    p.add_argument(
        "--mpi", action="store_true",
        help="instead: data-parallel step time and bytes communicated at K = 1, 2, 4 ranks",
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
    try:
        return args.func(args)
    except UsageError as exc:
        print(f"normgrad {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into `head` and closed: not an error of ours
        sys.stderr.close()
        return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
