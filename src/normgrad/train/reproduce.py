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

import csv
import time
from pathlib import Path

import numpy as np

from normgrad.data import fashion_mnist_available, load_dataset
from normgrad.progress import progress_factory
from normgrad.train.trainer import TrainConfig, Trainer

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


def default_dataset(data_dir: str | None) -> str:
    """Fashion-MNIST when its files are there (Debian's package or data_dir), else digits."""
    return "fashion-mnist" if fashion_mnist_available(data_dir) else "digits"


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


def steps_to_reach(rows: list[dict], level: float):
    for r in rows:
        if r.get("test_acc") is not None and r["test_acc"] >= level:
            return r["step"]
    return None


def ioffe2015(
    out_dir: str | Path,
    *,
    steps: int = 50_000,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    progress: bool = True,
    log=print,
) -> dict:
    """Train both networks, write everything to ``out_dir``; returns the summary."""
    out = Path(out_dir)
    dataset = dataset or default_dataset(data_dir)
    data = load_dataset(dataset, data_dir)
    log(f"dataset: {dataset} ({data.source}), {len(data.x_train)} train / {len(data.x_test)} test")
    eval_every = max(1, steps // 100)
    probe = sigmoid_input_probe(data.x_test[:N_PROBE].astype(np.float32))
    runs, times = {}, {}
    for position, (label, norm) in enumerate((("without BN", "none"), ("with BN", "batch"))):
        cfg = TrainConfig(
            dataset=dataset, data_dir=data_dir, norm=norm, steps=steps, seed=seed,
            eval_every=eval_every, checkpoint_every=max(steps // 5, 1), log_every=eval_every,
            **PAPER,
        )  # fmt: skip
        run_dir = out / ("bn" if norm == "batch" else "no_bn")
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(cfg.to_json())
        bars = progress_factory(progress, position=position, leave=True, dynamic_ncols=True)
        trainer = Trainer(cfg, run_dir, data=data, probe=probe, progress=bars, label=label)
        start = time.perf_counter()
        result = trainer.run()
        times[label] = time.perf_counter() - start
        runs[label] = [r for r in result.metrics if "test_acc" in r]
    summary = _write_outputs(out, runs, times, dataset, data.source, steps)
    return summary


def _write_outputs(out: Path, runs, times, dataset, source, steps) -> dict:
    labels = list(runs)
    keys = ["test_acc", *(f"p{p}" for p in PERCENTILES)]
    with open(out / "series.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["step", *(f"{k} ({lbl})" for lbl in labels for k in keys)])
        for rows in zip(*(runs[lbl] for lbl in labels), strict=True):
            writer.writerow([rows[0]["step"], *(r[k] for r in rows for k in keys)])
    _plot(out, runs)
    final = {lbl: runs[lbl][-1]["test_acc"] for lbl in labels}
    top = max(final.values())
    levels = sorted({round(top * f, 2) for f in (0.8, 0.9, 0.95, 0.98)})
    reach = {lvl: {lbl: steps_to_reach(runs[lbl], lvl) for lbl in labels} for lvl in levels}
    lines = [
        "# Batch normalization, Ioffe & Szegedy (2015), Figure 1: reproduced by normgrad",
        "",
        f"Dataset: **{dataset}** ({source}); the paper used MNIST. Network 784-100-100-100-10 "
        "(input size as the dataset has it), sigmoid, softmax cross-entropy; "
        f"weights N(0, {PAPER['weight_scale']}^2); SGD, learning rate {PAPER['lr']}, "
        f"minibatches of {PAPER['batch_size']}; {steps} steps; same seed, initial weights and "
        "data order for both networks. Batch norm (PyTorch's momentum 0.1) before each sigmoid.",
        "",
        "| | without BN | with BN |",
        "|---|---|---|",
        f"| final test accuracy | {final[labels[0]]:.4f} | {final[labels[1]]:.4f} |",
        f"| training time | {times[labels[0]]:.1f} s | {times[labels[1]]:.1f} s |",
        *(
            f"| steps to reach {lvl:.2f} | {_fmt(reach[lvl][labels[0]])} | "
            f"{_fmt(reach[lvl][labels[1]])} |"
            for lvl in levels
        ),
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
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return {"final": final, "reach": reach, "times": times, "dataset": dataset}


def _fmt(step) -> str:
    return "not reached" if step is None else str(step)


def _plot(out: Path, runs) -> None:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'normgrad[train]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, rows in runs.items():
        ax.plot([r["step"] for r in rows], [r["test_acc"] for r in rows], label=label)
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy")
    ax.set_title("(a) test accuracy")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "fig1a_accuracy.png", dpi=120)
    plt.close(fig)

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
    fig.savefig(out / "fig1bc_sigmoid_input.png", dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- weight scale

WS_HIDDEN = [50] * 7  # the course's 8-layer network
BS_HIDDEN = [100] * 5
NUM_TRAIN = 1000
NUM_VAL = 500


def _small_split(data):
    """The course's setting: 1000 training images, and a validation set held out of the
    rest of the training split (the test split is not touched)."""
    from normgrad.data import Dataset

    x, y = data.x_train, data.y_train
    if len(x) < NUM_TRAIN + NUM_VAL:
        raise ValueError(f"{data.name} has {len(x)} training images; need {NUM_TRAIN + NUM_VAL}")
    return Dataset(data.name, data.source, x[:NUM_TRAIN], y[:NUM_TRAIN], x[-NUM_VAL:], y[-NUM_VAL:])


def _course_run(out: Path, small, *, norm, hidden, weight_scale, batch_size, epochs, seed):
    cfg = TrainConfig(
        dataset=small.name, norm=norm, hidden=hidden, activation="relu", optimizer="adam",
        lr=1e-3, weight_scale=weight_scale, batch_size=batch_size, epochs=epochs, seed=seed,
        eval_every=NUM_TRAIN // batch_size, log_every=NUM_TRAIN // batch_size,
        checkpoint_every=10**9,
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(cfg, out, data=small)
    result = trainer.run()
    per_epoch = trainer.steps_per_epoch
    return {
        "val_acc": [e["test_acc"] for e in trainer.evals],  # epoch 0 (start) to the last
        "best_val_acc": max(e["test_acc"] for e in trainer.evals),
        "final_train_loss": float(trainer.losses[-per_epoch:].mean()),
        "steps": result.steps,
    }


def weight_scale(
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    epochs: int = 10,
    num_scales: int = 20,
    seed: int = 0,
    progress: bool = True,
    log=print,
) -> dict:
    """The course's two experiments: BN vs none across weight scales, and batch size."""
    out = Path(out_dir)
    dataset = dataset or default_dataset(data_dir)
    small = _small_split(load_dataset(dataset, data_dir))
    log(f"dataset: {dataset} ({small.source}), {NUM_TRAIN} train / {NUM_VAL} validation images")
    scales = np.logspace(-4, 0, num=num_scales)
    jobs = [("ws", float(ws), norm, 50) for ws in scales for norm in ("none", "batch")]
    jobs += [("bs", None, "none", 10)]
    jobs += [("bs", None, norm, bs) for norm in ("batch", "layer") for bs in (5, 10, 50)]
    make_bar = progress_factory(progress, leave=True, dynamic_ncols=True)
    bar = make_bar(total=len(jobs), desc="weight-scale runs") if make_bar else None
    ws_rows, bs_rows = [], []
    for kind, ws, norm, bs in jobs:
        if kind == "ws":
            r = _course_run(out / "runs" / f"ws{ws:.2e}_{norm}", small, norm=norm,
                            hidden=WS_HIDDEN, weight_scale=ws, batch_size=bs, epochs=epochs,
                            seed=seed)  # fmt: skip
            ws_rows.append({"weight_scale": ws, "norm": norm} | r)
        else:
            r = _course_run(out / "runs" / f"bs{bs}_{norm}", small, norm=norm,
                            hidden=BS_HIDDEN, weight_scale=2e-2, batch_size=bs, epochs=epochs,
                            seed=seed)  # fmt: skip
            bs_rows.append({"batch_size": bs, "norm": norm} | r)
        if bar:
            bar.update(1)
    if bar:
        bar.close()
    _write_weight_scale(out, ws_rows, bs_rows, dataset, small.source, epochs)
    return {"weight_scale": ws_rows, "batch_size": bs_rows, "dataset": dataset}


def _write_weight_scale(out: Path, ws_rows, bs_rows, dataset, source, epochs) -> None:
    with open(out / "weight_scale.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["weight_scale", "norm", "best_val_acc", "final_train_loss"])
        for r in ws_rows:
            w.writerow([r["weight_scale"], r["norm"], r["best_val_acc"], r["final_train_loss"]])
    with open(out / "batch_size.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["norm", "batch_size", *(f"val_acc_epoch{i}" for i in range(epochs + 1))])
        for r in bs_rows:
            w.writerow([r["norm"], r["batch_size"], *r["val_acc"]])
    _plot_weight_scale(out, ws_rows, bs_rows)

    def label(norm):
        return {"none": "baseline", "batch": "batch norm", "layer": "layer norm"}[norm]

    by_scale: dict[float, dict] = {}
    for r in ws_rows:
        by_scale.setdefault(r["weight_scale"], {})[r["norm"]] = r
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
        "| weight scale | best val acc, baseline | best val acc, BN | final train loss, "
        "baseline | final train loss, BN |",
        "|---|---|---|---|---|",
    ]
    for ws, pair in by_scale.items():
        lines.append(
            f"| {ws:.2e} | {pair['none']['best_val_acc']:.3f} | {pair['batch']['best_val_acc']:.3f}"
            f" | {pair['none']['final_train_loss']:.3f} | {pair['batch']['final_train_loss']:.3f} |"
        )
    lines += [
        "",
        f"## Batch size: {len(BS_HIDDEN) + 1} layers ({'-'.join(map(str, BS_HIDDEN))}), "
        "weight scale 2e-2",
        "",
        "![batch size](batch_size.png)",
        "",
        "| network | batch size | best val acc | final train loss |",
        "|---|---|---|---|",
        *(
            f"| {label(r['norm'])} | {r['batch_size']} | {r['best_val_acc']:.3f} | "
            f"{r['final_train_loss']:.3f} |"
            for r in bs_rows
        ),
    ]
    (out / "report.md").write_text("\n".join(lines) + "\n")


def _plot_weight_scale(out: Path, ws_rows, bs_rows) -> None:
    try:
        import matplotlib
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'normgrad[train]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for norm, name in (("none", "baseline"), ("batch", "batch norm")):
        rows = [r for r in ws_rows if r["norm"] == norm]
        x = [r["weight_scale"] for r in rows]
        axes[0].semilogx(x, [r["best_val_acc"] for r in rows], "-o", label=name)
        axes[1].loglog(x, [r["final_train_loss"] for r in rows], "-o", label=name)
    axes[0].set(xlabel="weight initialization scale", ylabel="best validation accuracy")
    axes[1].set(xlabel="weight initialization scale", ylabel="final training loss")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "weight_scale.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in bs_rows:
        name = {"none": "baseline", "batch": "batch norm", "layer": "layer norm"}[r["norm"]]
        ax.plot(range(len(r["val_acc"])), r["val_acc"], "-o", ms=3,
                label=f"{name}, batch {r['batch_size']}")  # fmt: skip
    ax.set(xlabel="epoch", ylabel="validation accuracy")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "batch_size.png", dpi=120)
    plt.close(fig)
