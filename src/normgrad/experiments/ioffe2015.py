"""``normgrad reproduce ioffe2015``: Figure 1 of Ioffe & Szegedy (2015), section 4.1.

Two networks with three fully connected hidden layers of 100 sigmoid units and a 10-way
softmax, small Gaussian weights, minibatches of 60, trained with SGD: once without and once
with batch norm before each sigmoid, with the same seed, so the same initial weights and the
same data order. We record test accuracy over training (Figure 1a) and the 15th, 50th and
85th percentiles of one hidden unit's sigmoid input (Figure 1b, c), then write plots, the
series as CSV and a one-page report.

The paper used MNIST. Here the dataset is Fashion-MNIST when Debian's package (or
``--data-dir``) provides it, else scikit-learn's 8x8 digits, and the report says which.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normgrad.data import load_dataset
from normgrad.experiments import report
from normgrad.io import atomic_write, remove_stale_temporaries
from normgrad.tools.table import Column
from normgrad.train import RUN_FILES, TrainConfig, Trainer

PERCENTILES = (15, 50, 85)
# The unit whose sigmoid input we follow: the first unit of the last hidden layer.
UNIT = 0
N_PROBE = 1000  # test images the percentiles are taken over
PAPER = {  # the paper's setting, plus the two numbers it leaves open (chosen by a sweep)
    "hidden": [100, 100, 100],
    "activation": "sigmoid",
    "batch_size": 60,
    "optimizer": "sgd",
    "lr": 0.1,
    "weight_scale": 0.1,
}
# (label, --norm, run directory) of the two networks, in the order they train.
NETWORKS = (("without BN", "none", "no_bn"), ("with BN", "batch_norm", "bn"))
DEFAULT_STEPS = 50_000  # per network
FILES = ("report.md", "fig1a_accuracy.png", "fig1bc_sigmoid_input.png", "series.csv")


@dataclass
class Ioffe2015Result:
    """Per network label (``"without BN"``, ``"with BN"``): the final test accuracy and the
    seconds it trained; and, per accuracy level, the first step each reached it (or None)."""

    dataset: str
    final_accuracy: dict[str, float]
    seconds: dict[str, float]
    steps_to_reach: dict[float, dict[str, int | None]]
    files: tuple[str, ...] = FILES  # written in the output directory


def sigmoid_input_probe(x_probe: np.ndarray):
    """Percentiles of the last hidden layer's UNIT, just before its sigmoid (eval mode)."""

    def probe(step, model):
        names = [name for name, _ in model]
        last_act = max(i for i, n in enumerate(names) if n.startswith("act"))
        model.eval()
        h = x_probe
        for _, layer in list(model)[:last_act]:
            h = layer.forward(h)
        model.train()
        values = np.percentile(h[:, UNIT].astype(np.float64), PERCENTILES)
        return {f"p{p}": float(v) for p, v in zip(PERCENTILES, values, strict=True)}

    return probe


def steps_to_reach(rows: list[dict], level: float) -> int | None:
    for r in rows:
        if r.get("test_acc") is not None and r["test_acc"] >= level:
            return r["step"]
    return None


def run(
    out_dir: str | Path,
    *,
    steps: int = DEFAULT_STEPS,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], object] = print,
) -> Ioffe2015Result:
    """Train both networks, write everything to ``out_dir``; returns the summary."""
    report.require_at_least_one(steps=steps)
    report.pyplot()  # fail now, not after training, if matplotlib is missing
    report.check_output_dir(out_dir)  # before the dataset is read
    dataset = dataset or report.default_dataset(data_dir)
    data = load_dataset(dataset, data_dir)
    out = report.output_dir(out_dir)
    log(f"dataset: {dataset} ({data.source}), {len(data.train)} train / {len(data.test)} test")
    eval_every = max(1, steps // 100)
    probe = sigmoid_input_probe(data.test.x[:N_PROBE].astype(np.float32))
    runs, seconds = {}, {}
    for position, (label, norm, subdir) in enumerate(NETWORKS):
        cfg = TrainConfig(
            dataset=dataset, data_dir=data_dir, norm=norm, steps=steps, seed=seed,
            eval_every=eval_every, checkpoint_every=max(steps // 5, 1), log_every=eval_every,
            **PAPER,
        )  # fmt: skip
        run_dir = out / subdir
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir, RUN_FILES)  # left by a killed earlier run
        atomic_write(run_dir / "config.json", cfg.to_json())
        bar_options = {"position": position, "leave": True, "dynamic_ncols": True}
        trainer = Trainer(cfg, run_dir, data=data, probe=probe, progress=progress,
                          bar_options=bar_options, label=label)  # fmt: skip
        start = time.perf_counter()
        result = trainer.run()
        seconds[label] = time.perf_counter() - start
        runs[label] = [r for r in result.metrics if "test_acc" in r]
    return _write_outputs(out, runs, seconds, dataset, data.source, steps)


def _write_outputs(out: Path, runs, seconds, dataset, source, steps) -> Ioffe2015Result:
    labels = list(runs)
    keys = ["test_acc", *(f"p{p}" for p in PERCENTILES)]
    report.write_csv(
        out / "series.csv",
        ["step", *(f"{k} ({lbl})" for lbl in labels for k in keys)],
        (
            [rows[0]["step"], *(r[k] for r in rows for k in keys)]
            for rows in zip(*(runs[lbl] for lbl in labels), strict=True)
        ),
    )
    _plot(out, runs)
    final = {lbl: runs[lbl][-1]["test_acc"] for lbl in labels}
    top = max(final.values())
    levels = sorted({round(top * f, 2) for f in (0.8, 0.9, 0.95, 0.98)})
    reach = {lvl: {lbl: steps_to_reach(runs[lbl], lvl) for lbl in labels} for lvl in levels}
    summary = [
        ["final test accuracy", *(f"{final[lbl]:.4f}" for lbl in labels)],
        ["training time", *(f"{seconds[lbl]:.1f} s" for lbl in labels)],
        *(
            [f"steps to reach {lvl:.2f}", *(_fmt(reach[lvl][lbl]) for lbl in labels)]
            for lvl in levels
        ),
    ]
    columns = [Column(""), *(Column(lbl, align="right") for lbl in labels)]
    lines = [
        "# Batch normalization, Ioffe & Szegedy (2015), Figure 1: reproduced by normgrad",
        "",
        f"Dataset: **{dataset}** ({source}); the paper used MNIST. Network 784-100-100-100-10 "
        "(input size as the dataset has it), sigmoid, softmax cross-entropy; "
        f"weights N(0, {PAPER['weight_scale']}^2); SGD, learning rate {PAPER['lr']}, "
        f"minibatches of {PAPER['batch_size']}; {steps} steps; same seed, initial weights and "
        "data order for both networks. Batch norm (PyTorch's momentum 0.1) before each sigmoid.",
        "",
        report.markdown_table(columns, summary),
        "",
        "![test accuracy](fig1a_accuracy.png)",
        "",
        f"15th, 50th and 85th percentiles of the input to one sigmoid (unit {UNIT} of the last "
        f"hidden layer, over {N_PROBE} test images, eval mode):",
        "",
        "![sigmoid input](fig1bc_sigmoid_input.png)",
        "",
        "The series are in series.csv; each run's metrics, model and checkpoint are in no_bn/ "
        "and bn/.",
    ]
    report.write_report(out / "report.md", lines)
    return Ioffe2015Result(dataset, final, seconds, reach)


def _fmt(step) -> str:
    return "not reached" if step is None else str(step)


def _plot(out: Path, runs) -> None:
    plt = report.pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in runs.items():
        ax.plot([r["step"] for r in rows], [r["test_acc"] for r in rows], label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.set_title("(a) test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    report.save_figure(fig, out / "fig1a_accuracy.png")

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, (label, rows) in zip(axes, runs.items(), strict=True):
        steps = [r["step"] for r in rows]
        for p in PERCENTILES:
            ax.plot(steps, [r[f"p{p}"] for r in rows], label=f"{p}th percentile")
        ax.set_title(f"({'b' if ax is axes[0] else 'c'}) sigmoid input, {label}")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("input to the sigmoid")
    axes[0].legend()
    fig.tight_layout()
    report.save_figure(fig, out / "fig1bc_sigmoid_input.png")
