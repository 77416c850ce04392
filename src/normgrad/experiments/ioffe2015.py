"""``normgrad reproduce ioffe2015``: Figure 1 of Ioffe & Szegedy (2015), section 4.1.

Two networks with three fully connected hidden layers of 100 sigmoid units and a 10-way
softmax, small Gaussian weights, minibatches of 60, trained with SGD: once without and once
with batch norm before each sigmoid, with the same seed, so the same initial weights and the
same data order. We record over training:

- (a) test accuracy; the BN network evaluated as the paper's inference network, with
  population statistics (Algorithm 2, :mod:`normgrad.nn.population`; ``eval_stats``), and
  also with the running averages (momentum 0.1) many libraries use instead;
- (b, c) the inputs to the sigmoids of the last hidden layer, on a fixed set of
  ``N_PROBE`` test images: the 15th, 50th and 85th percentile of every one of its 100
  units. The BN network is probed twice: as the inference network (population statistics)
  and as the *training* network sees its inputs (batch statistics, the images in
  mini-batches of 60), which is what the paper's Figure 1(c) shows (its N_BN^tr).

Then plots, the series (CSV for a few units, NPZ for the whole layer) and a report that
puts the paper's claims next to what this run measured.

The paper used MNIST. Here the dataset is Fashion-MNIST when Debian's package (or
``--data-dir``) provides it, else scikit-learn's 8x8 digits; ``--dataset mnist`` reads (or
downloads) MNIST itself. The report says which.

Speed: the two networks train at once in two processes when the machine has two cores or
more (``jobs``), each with one BLAS thread (threadpoolctl): at 60 x 784 by 784 x 100 a
second thread costs more than it gives.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from normgrad.data import load_dataset
from normgrad.experiments import report
from normgrad.io import atomic_open, atomic_write, remove_stale_temporaries
from normgrad.nn.population import batch_statistics_mode
from normgrad.tools.table import Column
from normgrad.train import RUN_FILES, TrainConfig, Trainer

PERCENTILES = (15, 50, 85)
N_PROBE = 1200  # fixed test images the percentiles are taken over (20 batches of 60), or
# every test image of a smaller test split (scikit-learn's digits has 297)
UNITS_SHOWN = (0, 1, 2, 3)  # the "handful" of last-layer units plotted one by one
PAPER = {  # the paper's setting, plus the two numbers it leaves open (chosen by a sweep)
    "hidden": [100, 100, 100],
    "activation": "sigmoid",
    "batch_size": 60,
    "optimizer": "sgd",
    "lr": 0.1,
    "weight_scale": 0.1,
}
# (label, --norm, run directory) of the two networks.
NETWORKS = (("without BN", "none", "no_bn"), ("with BN", "batch_norm", "bn"))
#: The probes, by key: (network label, how its batch norm normalizes, title in the figure).
#: "batch" is the training network (the paper's Figure 1c shows it); "population" and
#: "running" are the inference network with Algorithm 2's statistics or running averages.
VIEWS = {
    "no_bn": ("without BN", None, "(b) without BN"),
    "bn_batch": ("with BN", "batch", "(c) with BN, training network (batch stats)"),
    "bn_population": ("with BN", "population", "(c') with BN, inference, population stats"),
    "bn_running": ("with BN", "running", "(c'') with BN, inference, running averages"),
}
DEFAULT_STEPS = 50_000  # per network
EVAL_STATS = ("population", "running")
FILES = ("report.md", "fig1a_accuracy.png", "fig1bc_sigmoid_input.png", "series.csv",
         "sigmoid_inputs.npz")  # fmt: skip
EARLY_FRACTION = 0.1  # the first tenth of training: the transient the statistics leave out


@dataclass
class Ioffe2015Result:
    """Per network label (``"without BN"``, ``"with BN"``): the final test accuracy and the
    seconds it trained; per accuracy level, the first step each reached it (or None); and
    per probe (VIEWS key) the stability numbers of the report (:func:`stability`)."""

    dataset: str
    final_accuracy: dict[str, float]
    seconds: dict[str, float]
    steps_to_reach: dict[float, dict[str, int | None]]
    stability: dict[str, dict[str, float]]
    wall_seconds: float = 0.0
    jobs: int = 1
    cpu_seconds: dict[str, float] | None = None  # per network: CPU time of its process
    files: tuple[str, ...] = FILES  # written in the output directory


def last_hidden_inputs(model, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """The inputs to the last hidden layer's sigmoids, ``(n, units)``, for images ``x``.

    ``batch_size`` None: the model in eval mode (batch norm with the statistics its running
    buffers hold). A number: the training network, batch norm normalizing each mini-batch
    of that many images with the batch's own statistics (no running statistics change)."""
    layers = list(model)
    last_act = max(i for i, (name, _) in enumerate(layers) if name.startswith("act"))
    below = [layer for _, layer in layers[:last_act]]

    def run(h):
        for layer in below:
            h = layer.forward(h)
        return h

    if batch_size is None:
        model.eval()
        try:
            return run(x)
        finally:
            model.train()
    with batch_statistics_mode(model):
        return np.concatenate([run(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])


class SigmoidInputProbe:
    """Called by the trainer at every evaluation (inside its inference statistics): keeps
    the 15/50/85th percentiles of every last-layer unit, ``(3, units)`` per evaluation and
    view, in ``self.series``; returns unit 0's for the metrics rows."""

    def __init__(self, x_probe: np.ndarray, views: tuple[str, ...], batch_size: int):
        self.x, self.views, self.batch_size = x_probe, views, batch_size
        self.steps: list[int] = []
        self.series: dict[str, list[np.ndarray]] = {v: [] for v in views}
        self.gamma: list[np.ndarray] = []  # |gamma| of the last batch norm, per evaluation

    def _record(self, model, views) -> dict:
        row = {}
        for view in views:
            batch = self.batch_size if VIEWS[view][1] == "batch" else None
            h = last_hidden_inputs(model, self.x, batch).astype(np.float64)
            pct = np.percentile(h, PERCENTILES, axis=0)  # (3, units)
            self.series[view].append(pct)
            row |= {f"{view} p{p}": float(v) for p, v in zip(PERCENTILES, pct[:, 0], strict=True)}
        return row

    def __call__(self, step, model) -> dict:
        """Eval mode holds the population statistics (or there is no batch norm)."""
        self.steps.append(step)
        norms = [layer for name, layer in model if name.startswith("norm")]
        if norms:  # the last batch norm's gamma: the spread its sigmoids' inputs train to
            self.gamma.append(np.abs(norms[-1].params["gamma"]).astype(np.float64))
        return self._record(model, [v for v in self.views if VIEWS[v][1] != "running"])

    def running_averages(self, step, model) -> dict:
        """Called first, while eval mode holds the running averages."""
        return self._record(model, [v for v in self.views if VIEWS[v][1] == "running"])

    def arrays(self) -> dict[str, np.ndarray]:
        """Per view ``(evals, 3, units)``; and ``bn_abs_gamma`` ``(evals, units)`` for a
        network with batch norm."""
        out = {view: np.stack(v) for view, v in self.series.items()}
        if self.gamma:
            out["bn_abs_gamma"] = np.stack(self.gamma)
        return out


def steps_to_reach(rows: list[dict], level: float, key: str = "test_acc") -> int | None:
    for r in rows:
        if r.get(key) is not None and r[key] >= level:
            return r["step"]
    return None


def stability(steps: np.ndarray, pct: np.ndarray) -> dict[str, float]:
    """How much the sigmoid inputs of one view move after the first ``EARLY_FRACTION`` of
    training. ``pct``: ``(evals, 3, units)`` percentiles (15, 50, 85) at ``steps``.

    Per unit, over the evaluations after the early phase: the standard deviation of its
    median (``median_std``), how far its median moved from the start of that window to the
    end (``median_drift``), the same for the 85th - 15th width (``width_std``), and its final
    width; each the median over units. ``drift_in_widths`` is median_drift per unit divided
    by that unit's final width, so networks of different scale compare."""
    late = steps >= EARLY_FRACTION * steps[-1]
    p = pct[late]
    median, width = p[:, 1, :], p[:, 2, :] - p[:, 0, :]
    drift = np.abs(median[-1] - median[0])
    final_width = np.maximum(width[-1], 1e-12)
    return {
        "median_std": float(np.median(median.std(axis=0))),
        "median_drift": float(np.median(drift)),
        "width_std": float(np.median(width.std(axis=0))),
        "start_width": float(np.median(width[0])),
        "final_width": float(np.median(width[-1])),
        "drift_in_widths": float(np.median(drift / final_width)),
        "width_change": float(np.median((width[-1] - width[0]) / final_width)),
    }


def _train_one(job: dict) -> dict:
    """Train one network (in this process or a worker): the job's config in its directory,
    with the probe; returns what the outputs need (picklable)."""
    data = job.get("data") or _SHARED["data"]
    label = job["label"]
    views = tuple(k for k, v in VIEWS.items() if v[0] == label)
    probe = SigmoidInputProbe(data.test.x[:N_PROBE].astype(np.float32), views,
                              job["config"].batch_size)  # fmt: skip
    trainer = Trainer(job["config"], job["run_dir"], data=data, probe=probe,
                      progress=job["progress"], bar_options=job["bar_options"],
                      label=label, extra_eval_steps=early_eval_steps(job["config"]))  # fmt: skip
    start, cpu = time.perf_counter(), time.process_time()
    result = trainer.run()
    return {
        "label": label,
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu,  # what an idle core would take
        "rows": [r for r in result.metrics if "test_acc" in r],
        "steps": np.array(probe.steps),
        "arrays": probe.arrays(),
        "n_probe": len(probe.x),
    }


def early_eval_steps(config: TrainConfig, count: int = 24) -> list[int]:
    """Log-spaced steps before the first regular evaluation, so that panel (a)'s log axis
    shows the first hundreds of steps, where the two networks part."""
    return sorted({int(s) for s in np.geomspace(1, config.eval_every, count)} - {0})


_SHARED: dict = {}  # the dataset, inherited by forked workers instead of pickled to them


def default_jobs() -> int:
    """Both networks at once on two cores or more, where processes can fork."""
    can_fork = "fork" in multiprocessing.get_all_start_methods()
    return 2 if can_fork and (os.cpu_count() or 1) >= 2 else 1


def run(
    out_dir: str | Path,
    *,
    steps: int = DEFAULT_STEPS,
    dataset: str | None = None,
    data_dir: str | None = None,
    seed: int = 0,
    eval_stats: str = "population",
    jobs: int | None = None,
    progress: bool = True,
    log: Callable[[str], object] = print,
) -> Ioffe2015Result:
    """Train both networks, write everything to ``out_dir``; returns the summary.

    ``eval_stats``: what the BN network's test accuracy (the headline numbers) is taken
    with; the other is recorded too. ``jobs``: networks trained at once (default
    :func:`default_jobs`)."""
    from normgrad.errors import ConfigError

    report.require_at_least_one(steps=steps)
    if eval_stats not in EVAL_STATS:
        raise ConfigError(
            f"--eval-stats must be one of {', '.join(EVAL_STATS)}; got {eval_stats!r}"
        )
    jobs = default_jobs() if jobs is None else jobs
    report.require_at_least_one(jobs=jobs)
    report.pyplot()  # fail now, not after training, if matplotlib is missing
    report.check_output_dir(out_dir)  # before the dataset is read
    dataset = dataset or report.default_dataset(data_dir)
    data = load_dataset(dataset, data_dir)
    out = report.output_dir(out_dir)
    log(f"dataset: {dataset} ({data.source}), {len(data.train)} train / {len(data.test)} test")
    eval_every = max(1, steps // 100)
    work = []
    for position, (label, norm, subdir) in enumerate(NETWORKS):
        cfg = TrainConfig(
            dataset=dataset, data_dir=data_dir, norm=norm, steps=steps, seed=seed,
            eval_every=eval_every, checkpoint_every=max(steps // 5, 1), log_every=eval_every,
            eval_stats="population", **PAPER,
        )  # fmt: skip
        run_dir = out / subdir
        run_dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(run_dir, RUN_FILES)  # left by a killed earlier run
        atomic_write(run_dir / "config.json", cfg.to_json())
        bar_options = {"position": position, "leave": True, "dynamic_ncols": True}
        work.append({"label": label, "config": cfg, "run_dir": run_dir, "progress": progress,
                     "bar_options": bar_options})  # fmt: skip
    start = time.perf_counter()
    jobs = min(jobs, len(work))
    if jobs > 1:
        _SHARED["data"] = data
        try:
            context = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(jobs, mp_context=context) as pool:
                done = list(pool.map(_train_one, work))
        finally:
            _SHARED.clear()
    else:
        done = [_train_one(job | {"data": data}) for job in work]
    wall = time.perf_counter() - start
    return _write_outputs(out, done, dataset, data.source, steps, eval_stats, wall, jobs)


def _write_outputs(out: Path, done, dataset, source, steps, eval_stats, wall, jobs):
    runs = {d["label"]: d["rows"] for d in done}
    seconds = {d["label"]: d["seconds"] for d in done}
    cpu = {d["label"]: d["cpu_seconds"] for d in done}
    labels = [label for label, _, _ in NETWORKS]
    probe_steps = done[0]["steps"]
    n_probe = done[0]["n_probe"]
    arrays = {view: a for d in done for view, a in d["arrays"].items()}
    # The headline accuracy: the BN network as eval_stats says (the plain one has no choice).
    key = {"without BN": "test_acc",
           "with BN": "test_acc" if eval_stats == "population" else "test_acc_running"}  # fmt: skip
    other = "test_acc_running" if eval_stats == "population" else "test_acc"
    acc = {lbl: np.array([r[key[lbl]] for r in runs[lbl]]) for lbl in labels}
    acc_other = np.array([r[other] for r in runs["with BN"]])
    steps_axis = np.array([r["step"] for r in runs[labels[0]]])

    columns = [
        "step",
        *(f"test_acc ({lbl})" for lbl in labels),
        f"test_acc (with BN, {'running' if eval_stats == 'population' else 'population'})",
    ]
    pct_columns = [f"{view} unit {u} p{p}" for view in VIEWS for u in UNITS_SHOWN
                   for p in PERCENTILES]  # fmt: skip
    report.write_csv(
        out / "series.csv",
        columns + pct_columns,
        (
            [int(steps_axis[i]), *(acc[lbl][i] for lbl in labels), acc_other[i],
             *(arrays[view][i, k, u] for view in VIEWS for u in UNITS_SHOWN
               for k in range(len(PERCENTILES)))]
            for i in range(len(steps_axis))
        ),
    )  # fmt: skip
    with atomic_open(out / "sigmoid_inputs.npz", "wb") as fh:
        np.savez_compressed(fh, steps=probe_steps, percentiles=np.array(PERCENTILES),
                            **arrays)  # fmt: skip
    stab = {view: stability(probe_steps, arrays[view]) for view in VIEWS}
    if "bn_abs_gamma" in arrays:
        g = np.median(arrays["bn_abs_gamma"], axis=1)
        late = np.flatnonzero(probe_steps >= EARLY_FRACTION * probe_steps[-1])[0]
        stab["gamma"] = {"first": float(g[0]), "start": float(g[late]), "end": float(g[-1])}
    _plot(out, dataset, steps_axis, acc, acc_other, eval_stats, probe_steps, arrays, n_probe)

    final = {lbl: float(acc[lbl][-1]) for lbl in labels}
    levels = sorted({round(max(final.values()) * f, 2) for f in (0.8, 0.9, 0.95, 0.98)})
    keyed = {lbl: [{"step": int(s), "a": float(a)} for s, a in zip(steps_axis, acc[lbl],
                                                                    strict=True)]
             for lbl in labels}  # fmt: skip
    reach = {lvl: {lbl: steps_to_reach(keyed[lbl], lvl, "a") for lbl in labels} for lvl in levels}
    lines = _report_lines(dataset, source, steps, eval_stats, final, acc_other, seconds, wall,
                          jobs, reach, stab, cpu, n_probe)  # fmt: skip
    report.write_report(out / "report.md", lines)
    return Ioffe2015Result(dataset, final, seconds, reach, stab, wall, jobs, cpu)


def _fmt(step) -> str:
    return "not reached" if step is None else f"{step:,}"


def _report_lines(dataset, source, steps, eval_stats, final, acc_other, seconds, wall, jobs,
                  reach, stab, cpu, n_probe) -> list[str]:  # fmt: skip
    labels = list(final)
    other_name = "running averages" if eval_stats == "population" else "population statistics"
    headline = "population statistics" if eval_stats == "population" else "running averages"
    summary = [
        ["final test accuracy", *(f"{final[lbl]:.4f}" for lbl in labels)],
        *(
            [f"steps to reach {lvl:.2f}", *(_fmt(reach[lvl][lbl]) for lbl in labels)]
            for lvl in reach
        ),
        ["training time (wall)", *(f"{seconds[lbl]:.1f} s" for lbl in labels)],
        ["training time (CPU)", *(f"{cpu[lbl]:.1f} s" for lbl in labels)],
    ]
    columns = [Column(""), *(Column(lbl, align="right") for lbl in labels)]
    stab_rows = [
        [VIEWS[v][2], f"{s['median_std']:.3f}", f"{s['median_drift']:.3f}",
         f"{s['drift_in_widths']:.2f}", f"{s['width_std']:.3f}", f"{s['start_width']:.2f}",
         f"{s['final_width']:.2f}", f"{s['width_change']:+.2f}"]
        for v, s in stab.items() if v in VIEWS
    ]  # fmt: skip
    stab_cols = [Column("network, statistics"), *(Column(t, align="right") for t in (
        "std of median", "drift of median", "drift / width", "std of width",
        "width, start", "width, end", "width change / width"))]  # fmt: skip
    dataset_words = {
        "mnist": "MNIST, the paper's own dataset",
        "fashion-mnist": "Fashion-MNIST (same format as MNIST: 28x28 grey images, 10 classes, "
        "60,000 train / 10,000 test; clothing instead of digits, and harder: a plain MLP "
        "reaches about 0.88 here where it reaches about 0.98 on MNIST)",
        "digits": "scikit-learn's 8x8 digits (1,500 train / 297 test images of 64 pixels; "
        "MNIST and Fashion-MNIST were not available)",
    }[dataset]
    return [
        "# Batch normalization, Ioffe & Szegedy (2015), Figure 1: reproduced by normgrad",
        "",
        f"**Dataset: {dataset}** ({source}): {dataset_words}. The paper used MNIST.",
        "",
        "Setting as in the paper (section 4.1): 3 fully connected hidden layers of 100 sigmoid "
        "units, softmax cross-entropy, minibatches of 60, 50,000 steps, batch norm before each "
        "sigmoid in the second network. Two numbers the paper leaves open were chosen by a "
        f'sweep: initial weights N(0, {PAPER["weight_scale"]}^2) ("small random Gaussian '
        f'values") and SGD at learning rate {PAPER["lr"]}. This run: {steps:,} steps per '
        "network, float32, the same initial weights and data order for both networks.",
        "",
        "## (a) Test accuracy",
        "",
        "**Paper:** the batch-normalized network has the higher test accuracy throughout "
        "training and gets there faster.",
        "",
        f"**This run**, the BN network evaluated with {headline}"
        + (" (the paper's Algorithm 2):" if eval_stats == "population" else ":"),
        "",
        report.markdown_table(columns, summary),
        "",
        f"With {other_name} instead, the BN network's final test accuracy is "
        f"{acc_other[-1]:.4f} ({acc_other[-1] - final['with BN']:+.4f}).",
        "",
        "![test accuracy](fig1a_accuracy.png)",
        "",
        "## (b, c) The inputs to the sigmoids",
        "",
        "**Paper:** for one typical sigmoid of the last hidden layer, the 15th, 50th and "
        "85th percentiles of its input over training. Without batch norm the distribution "
        '"changes significantly over time, both in its mean and the variance"; with batch '
        'norm (the training network, batch statistics) it is "much more stable as training '
        'progresses".',
        "",
        f"**This run:** the same percentiles for every one of the 100 units of the last hidden "
        f"layer, over {n_probe} fixed test images; the BN network as the inference network "
        "(population statistics) and as the training network (the same images in "
        "mini-batches of 60, batch statistics), and, for comparison, as the inference "
        "network with running averages. Per unit, over the evaluations after the first "
        f"{EARLY_FRACTION:.0%} of training (the early transient left out): the standard "
        "deviation of its median; how far its median moved (first to last of those "
        "evaluations) and that drift in units of the unit's final 15-85 width; the standard "
        "deviation of the width; the width at the start and the end of that window, and its "
        "change in units of the final width. Each is the median over the 100 units:",
        "",
        report.markdown_table(stab_cols, stab_rows),
        "",
        "![sigmoid inputs](fig1bc_sigmoid_input.png)",
        "",
        "## What reproduces and what does not",
        "",
        *_verdict(final, reach, stab, dataset),
        "",
        "## How it ran",
        "",
        f"Both networks trained in {wall:.1f} s wall time ({jobs} process"
        f"{'es' if jobs > 1 else ''} at once, on {os.cpu_count()} cores with a load average "
        f"of {os.getloadavg()[1]:.1f} over the last 5 minutes), BLAS and OpenMP limited to "
        "one thread per process with threadpoolctl: the matrices here (60 x 784 by 784 x 100 "
        "at most) are too small for a second thread to pay for its synchronization. Each "
        "process's CPU time (table above) is about what it takes on a core of its own; on a busy "
        "machine the wall time is longer. The series are in "
        "series.csv (accuracies; units 0-3) and sigmoid_inputs.npz (every unit); each run's "
        "config, metrics, checkpoint and model are in no_bn/ and bn/ (bn/model.npz holds the "
        "population statistics).",
    ]


def _verdict(final, reach, stab, dataset) -> list[str]:
    """Sentences computed from the numbers, so the report says only what the data show."""
    lines = []
    bn_better = final["with BN"] > final["without BN"]
    faster = [lvl for lvl, r in reach.items() if r["with BN"] is not None
              and (r["without BN"] is None or r["with BN"] < r["without BN"])]  # fmt: skip
    lines.append(
        f"- Accuracy: {'reproduces' if bn_better else 'does not reproduce'}. The BN network "
        f"ends at {final['with BN']:.4f} against {final['without BN']:.4f}, and reaches "
        f"{len(faster)} of the {len(reach)} accuracy levels above sooner."
        + ("" if dataset == "mnist" else
           " The accuracies themselves are not the paper's: the dataset is not MNIST.")
    )  # fmt: skip
    plain = stab["no_bn"]
    for view in ("bn_batch", "bn_population", "bn_running"):
        bn = stab[view]
        location = (bn["drift_in_widths"] < plain["drift_in_widths"]
                    and bn["median_std"] < plain["median_std"])  # fmt: skip
        spread = (abs(bn["width_change"]) < abs(plain["width_change"])
                  and bn["width_std"] < plain["width_std"])  # fmt: skip
        verdict = {(True, True): "reproduces", (False, False): "does not reproduce"}.get(
            (location, spread),
            "reproduces for the location (median), not for the spread (width)"
            if location
            else "reproduces for the spread (width), not for the location (median)",
        )
        lines.append(
            f"- Stability, {VIEWS[view][2].split(' ', 1)[1]}: {verdict}. Each unit's median "
            f"moves {bn['drift_in_widths']:.2f} of its final 15-85 width after the early "
            f"phase, against {plain['drift_in_widths']:.2f} without BN; the standard deviation "
            f"of the median over time is {bn['median_std']:.3f} against "
            f"{plain['median_std']:.3f}. The width changes by {bn['width_change']:+.2f} of "
            f"its final value ({bn['start_width']:.2f} to {bn['final_width']:.2f}) against "
            f"{plain['width_change']:+.2f} ({plain['start_width']:.2f} to "
            f"{plain['final_width']:.2f}) without BN."
        )
    pop, run = stab["bn_population"], stab["bn_running"]
    noisier = run["median_std"] > pop["median_std"]
    lines.append(
        "- Population statistics against running averages: the running averages (momentum "
        "0.1, batches of 60) follow the weights with a lag and carry the noise of the last "
        "few batches; population statistics are those of the weights at the evaluation, "
        "over 50 batches. Here the running averages make each unit's median "
        f"{'noisier' if noisier else 'no noisier'} over time ({run['median_std']:.3f} against "
        f"{pop['median_std']:.3f})."
    )
    gamma, tr = stab.get("gamma"), stab["bn_batch"]
    if gamma is not None:
        lines.append(
            "- Why: in training batch norm sets every unit's input over its mini-batch to "
            "mean beta and standard deviation |gamma| (nearly: eps), so that distribution can "
            "move only as gamma and beta train, and its 15-85 width is about 2.07 |gamma| for "
            "a normal shape. The last layer's |gamma| (median over units) went from "
            f"{gamma['first']:.2f} at step 0 to {gamma['start']:.2f} at the end of the early "
            f"phase and {gamma['end']:.2f} at the end ({gamma['end'] / gamma['start'] - 1:+.0%} "
            "over the window); the training network's width went from "
            f"{tr['start_width']:.2f} to {tr['final_width']:.2f} "
            f"({tr['final_width'] / tr['start_width'] - 1:+.0%}). Without batch norm nothing "
            "holds a unit's location or width: both follow every change of the weights below."
        )
    if abs(tr["width_change"]) >= abs(plain["width_change"]):
        lines.append(
            "- The paper's Figure 1(c) shows no such widening. This run differs from the paper "
            "in the dataset"
            + ("" if dataset == "mnist" else f" ({dataset}, not MNIST)")
            + " and in the two settings the paper does not give (learning rate, initial weight "
            "scale); which of them makes gamma grow here, this run alone cannot tell."
        )
    return lines


def _plot(
    out: Path, dataset, steps, acc, acc_other, eval_stats, probe_steps, arrays, n_probe: int
) -> None:
    plt = report.pyplot()
    other_name = "running averages" if eval_stats == "population" else "population stats"
    headline = "population stats" if eval_stats == "population" else "running averages"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    first = steps > 0
    for ax, log in zip(axes, (False, True), strict=True):
        for label, values in acc.items():
            name = label if label == "without BN" else f"{label} ({headline})"
            ax.plot(steps[first], values[first], label=name)
        ax.plot(steps[first], acc_other[first], "--", lw=1, color="C1",
                label=f"with BN ({other_name})")  # fmt: skip
        ax.set_xlabel("training step" + (" (log scale)" if log else ""))
        ax.grid(alpha=0.3)
        if log:
            ax.set_xscale("log")
    # Linear axis: the paper's view, from where both curves are past their first 2%;
    # the log axis shows the climb from the start.
    later = steps >= 0.02 * steps[-1]
    lo = min(min(v[later].min() for v in acc.values()), acc_other[later].min())
    axes[0].set_ylim(max(lo - 0.02, 0.0), 1.0)
    axes[1].set_ylim(0.0, 1.0)
    axes[0].set_ylabel("test accuracy")
    axes[0].set_title(f"(a) test accuracy, {dataset}")
    axes[1].set_title("(a) the same on a log axis: the first steps")
    axes[0].legend(loc="lower right")
    fig.tight_layout()
    report.save_figure(fig, out / "fig1a_accuracy.png")

    views = list(VIEWS)
    fig, axes = plt.subplots(2, len(views), figsize=(4.3 * len(views), 8), sharey="row",
                             sharex=True)  # fmt: skip
    for col, view in enumerate(views):
        pct = arrays[view]  # (evals, 3, units)
        top, bottom = axes[0, col], axes[1, col]
        for i, unit in enumerate(UNITS_SHOWN):
            color = f"C{i}"
            top.fill_between(probe_steps, pct[:, 0, unit], pct[:, 2, unit], color=color,
                             alpha=0.15, lw=0)  # fmt: skip
            top.plot(probe_steps, pct[:, 1, unit], color=color, lw=1.2, label=f"unit {unit}")
        top.set_title(VIEWS[view][2], fontsize=10)
        median = pct[:, 1, :] - pct[-1, 1, :]  # every unit's median relative to its final one
        lo_q, mid, hi_q = np.percentile(median, (10, 50, 90), axis=1)
        bottom.fill_between(probe_steps, lo_q, hi_q, color="C7", alpha=0.3, lw=0,
                            label="10th-90th percentile over units")  # fmt: skip
        bottom.plot(probe_steps, mid, color="k", lw=1, label="median over units")
        bottom.axhline(0, color="k", lw=0.5)
        bottom.set_xlabel("training step")
        for ax in (top, bottom):
            ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("sigmoid input: 15th-85th percentile (band), 50th (line)")
    axes[1, 0].set_ylabel("each unit's 50th percentile\nminus its final value")
    axes[0, 0].legend(loc="lower left", fontsize=8)
    axes[1, 0].legend(loc="lower right", fontsize=8)
    fig.suptitle(f"Inputs to the last hidden layer's sigmoids over training ({dataset}, "
                 f"{n_probe} fixed test images); top: units {', '.join(map(str, UNITS_SHOWN))};"
                 " bottom: all 100 units", fontsize=11)  # fmt: skip
    fig.tight_layout()
    report.save_figure(fig, out / "fig1bc_sigmoid_input.png")
