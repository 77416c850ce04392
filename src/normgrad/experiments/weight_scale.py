"""``normgrad reproduce weight-scale``: the CS231n batch norm experiments.

1. Weight scale: an 8-layer ReLU network with and without batch norm, initialized with
   each of ``num_scales`` weight scales from 1e-4 to 1; best validation accuracy and final
   training loss of each.
2. Batch size: a 6-layer network with batch norm and with layer norm at batch sizes 5, 10
   and 50, and a baseline without normalization at 10; validation accuracy per epoch.

As in the course, every run trains on 1000 images and is validated on 500 others, both
from the dataset's training split (:meth:`Dataset.hold_out_validation`); the test split is
not touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normgrad.data import Dataset, load_dataset
from normgrad.experiments import report
from normgrad.io import remove_stale_temporaries
from normgrad.progress import progress_bar
from normgrad.tools.table import Column
from normgrad.train import RUN_FILES, TrainConfig, Trainer

WS_HIDDEN = [50] * 7  # the course's 8-layer network
BS_HIDDEN = [100] * 5
BS_WEIGHT_SCALE = 2e-2
NUM_TRAIN = 1000
NUM_VAL = 500
DEFAULT_EPOCHS = 10  # per run
DEFAULT_NUM_SCALES = 20
LABELS = {"none": "baseline", "batch_norm": "batch norm", "layer_norm": "layer norm"}
FILES = ("report.md", "weight_scale.png", "batch_size.png", "weight_scale.csv", "batch_size.csv")


@dataclass
class WeightScaleResult:
    """One row per run. Weight-scale rows: ``weight_scale``, ``norm``; batch-size rows:
    ``batch_size``, ``norm``; both: ``val_acc`` (per epoch, from before the first),
    ``best_val_acc``, ``final_train_loss`` (mean over the last epoch) and ``steps``."""

    dataset: str
    weight_scale: list[dict]
    batch_size: list[dict]
    files: tuple[str, ...] = FILES  # written in the output directory


def _course_run(out: Path, data: Dataset, *, norm, hidden, weight_scale, batch_size, epochs,
                seed) -> dict:  # fmt: skip
    per_epoch = NUM_TRAIN // batch_size
    cfg = TrainConfig(
        dataset=data.name, norm=norm, hidden=hidden, activation="relu", optimizer="adam",
        lr=1e-3, weight_scale=weight_scale, batch_size=batch_size, epochs=epochs, seed=seed,
        eval_every=per_epoch, log_every=per_epoch, checkpoint_every=10**9,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out, RUN_FILES)  # left by a killed earlier run
    trainer = Trainer(cfg, out, data=data, evaluate_on="validation")
    result = trainer.run()
    val_acc = [e["validation_acc"] for e in trainer.evals]  # epoch 0 (start) to the last
    return {
        "val_acc": val_acc,
        "best_val_acc": max(val_acc),
        "final_train_loss": float(trainer.losses[-trainer.steps_per_epoch :].mean()),
        "steps": result.steps,
    }


def run(
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    epochs: int = DEFAULT_EPOCHS,
    num_scales: int = DEFAULT_NUM_SCALES,
    seed: int = 0,
    progress: bool = True,
    log: Callable[[str], object] = print,
) -> WeightScaleResult:
    """Both experiments; writes the CSVs, plots and report.md to ``out_dir``."""
    report.require_at_least_one(epochs=epochs, num_scales=num_scales)
    report.pyplot()  # fail now, not after training, if matplotlib is missing
    report.check_output_dir(out_dir)  # before the dataset is read
    dataset = dataset or report.default_dataset(data_dir)
    data = load_dataset(dataset, data_dir).hold_out_validation(NUM_TRAIN, NUM_VAL)
    out = report.output_dir(out_dir)
    log(f"dataset: {dataset} ({data.source}), {NUM_TRAIN} train / {NUM_VAL} validation images")
    scales = np.logspace(-4, 0, num=num_scales)
    jobs = [("ws", float(ws), norm, 50) for ws in scales for norm in ("none", "batch_norm")]
    jobs += [("bs", None, "none", 10)]
    jobs += [("bs", None, norm, bs) for norm in ("batch_norm", "layer_norm") for bs in (5, 10, 50)]
    ws_rows, bs_rows = [], []
    with progress_bar(total=len(jobs), desc="weight-scale runs", enabled=progress, leave=True,
                      dynamic_ncols=True) as bar:  # fmt: skip
        for kind, ws, norm, bs in jobs:
            if kind == "ws":
                r = _course_run(out / "runs" / f"ws{ws:.2e}_{norm}", data, norm=norm,
                                hidden=WS_HIDDEN, weight_scale=ws, batch_size=bs, epochs=epochs,
                                seed=seed)  # fmt: skip
                ws_rows.append({"weight_scale": ws, "norm": norm} | r)
            else:
                r = _course_run(out / "runs" / f"bs{bs}_{norm}", data, norm=norm,
                                hidden=BS_HIDDEN, weight_scale=BS_WEIGHT_SCALE, batch_size=bs,
                                epochs=epochs, seed=seed)  # fmt: skip
                bs_rows.append({"batch_size": bs, "norm": norm} | r)
            bar.update(1)
    _write_outputs(out, ws_rows, bs_rows, dataset, data.source, epochs)
    return WeightScaleResult(dataset, ws_rows, bs_rows)


def _write_outputs(out: Path, ws_rows, bs_rows, dataset, source, epochs) -> None:
    report.write_csv(
        out / "weight_scale.csv",
        ["weight_scale", "norm", "best_val_acc", "final_train_loss"],
        ([r["weight_scale"], r["norm"], r["best_val_acc"], r["final_train_loss"]] for r in ws_rows),
    )
    report.write_csv(
        out / "batch_size.csv",
        ["norm", "batch_size", *(f"val_acc_epoch{i}" for i in range(epochs + 1))],
        ([r["norm"], r["batch_size"], *r["val_acc"]] for r in bs_rows),
    )
    _plot(out, ws_rows, bs_rows)

    by_scale: dict[float, dict] = {}
    for r in ws_rows:
        by_scale.setdefault(r["weight_scale"], {})[r["norm"]] = r
    ws_table = report.markdown_table(
        [
            Column("weight scale", ".2e", align="right"),
            Column("best val acc, baseline", ".3f", align="right"),
            Column("best val acc, BN", ".3f", align="right"),
            Column("final train loss, baseline", ".3f", align="right"),
            Column("final train loss, BN", ".3f", align="right"),
        ],
        (
            [
                ws,
                pair["none"]["best_val_acc"],
                pair["batch_norm"]["best_val_acc"],
                pair["none"]["final_train_loss"],
                pair["batch_norm"]["final_train_loss"],
            ]
            for ws, pair in by_scale.items()
        ),
    )
    bs_table = report.markdown_table(
        [
            Column("network"),
            Column("batch size", align="right"),
            Column("best val acc", ".3f", align="right"),
            Column("final train loss", ".3f", align="right"),
        ],
        (
            [LABELS[r["norm"]], r["batch_size"], r["best_val_acc"], r["final_train_loss"]]
            for r in bs_rows
        ),
    )
    lines = [
        "# Batch norm and initialization, batch norm and batch size (the CS231n experiments)",
        "",
        f"Dataset: **{dataset}** ({source}): {NUM_TRAIN} training images, {NUM_VAL} "
        f"validation images held out of the training split. ReLU networks, Adam (lr 1e-3), "
        f"{epochs} epochs.",
        "",
        f"## Weight scale: 8 layers ({'-'.join(map(str, WS_HIDDEN))}), batches of 50",
        "",
        "![weight scale](weight_scale.png)",
        "",
        ws_table,
        "",
        f"## Batch size: {len(BS_HIDDEN) + 1} layers ({'-'.join(map(str, BS_HIDDEN))}), "
        f"weight scale {BS_WEIGHT_SCALE:g}",
        "",
        "![batch size](batch_size.png)",
        "",
        bs_table,
    ]
    report.write_report(out / "report.md", lines)


def _plot(out: Path, ws_rows, bs_rows) -> None:
    plt = report.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for norm in ("none", "batch_norm"):
        rows = [r for r in ws_rows if r["norm"] == norm]
        x = [r["weight_scale"] for r in rows]
        axes[0].semilogx(x, [r["best_val_acc"] for r in rows], "-o", label=LABELS[norm])
        axes[1].loglog(x, [r["final_train_loss"] for r in rows], "-o", label=LABELS[norm])
    axes[0].set(xlabel="weight initialization scale", ylabel="best validation accuracy")
    axes[1].set(xlabel="weight initialization scale", ylabel="final training loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    report.save_figure(fig, out / "weight_scale.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in bs_rows:
        ax.plot(range(len(r["val_acc"])), r["val_acc"], "-o", ms=3,
                label=f"{LABELS[r['norm']]}, batch {r['batch_size']}")  # fmt: skip
    ax.set(xlabel="epoch", ylabel="validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    report.save_figure(fig, out / "batch_size.png")
