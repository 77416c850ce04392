"""``normgrad bench``: the ops' speed, side by side, against PyTorch and the memory floor.

Every op is run through the table (:mod:`normgrad.core.table`): the staged backward, the
NumPy closed form, the fused Numba kernels and the op's ``torch.nn.functional`` function.
Everything is measured in one process and one run, interleaved (each repetition runs every
method once, in turn), and reported as medians with their interquartile range (IQR); a
ratio is the median of the per-repetition ratios, so the two methods it compares ran
seconds apart. The floor is cache-aware (docs/design.md §11): a training step moves 5
transfers of x (read x, write y; read x and dy, write dx) when one reduction group fits in
a core's cache, 8 when it does not (x and dy are read twice), and an eval forward 2; the
floor is ``transfers * x.nbytes / B`` with B the streaming bandwidth of a STREAM-style
triad measured at the start and at the end of the run with all cores (the floors use the
higher). Each timed call follows an untimed call of the same method and a write of a buffer
twice the size of the caches: it runs from memory, with its allocations settled as in a
loop of its own (:func:`_cache_evictor`). The report says
which floor each row uses and why, and warns when the machine was busy (the load average,
a floor beaten by a kernel, a bandwidth that moved). Timings never appear in tests.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

import normgrad as ng
from normgrad import backends as kernels
from normgrad.core.table import OpSpec, get_op
from normgrad.progress import progress_bar
from normgrad.tools.table import Column, format_table

#: Batch norm's shapes (label, shape, channel_axis), timed in train and eval mode.
FULL_SHAPES = [
    ("(256, 1024)", (256, 1024), 1),
    ("(4096, 1024)", (4096, 1024), 1),
    ("(65536, 256)", (65536, 256), 1),
    ("NCHW (32, 64, 56, 56)", (32, 64, 56, 56), 1),
    ("NHWC (32, 56, 56, 64)", (32, 56, 56, 64), -1),
]
QUICK_SHAPES = FULL_SHAPES[:2]
#: The other ops (op, label, shape, axis option), one training step each.
OTHER_OPS = [
    ("layer_norm", "(256, 1024)", (256, 1024), {}),
    ("layer_norm", "(4096, 1024)", (4096, 1024), {}),
    ("group_norm", "NCHW (32, 64, 56, 56)", (32, 64, 56, 56), {"num_groups": 4}),
    ("instance_norm", "NCHW (32, 64, 56, 56)", (32, 64, 56, 56), {}),
    ("rms_norm", "(4096, 1024)", (4096, 1024), {}),
]
#: The load average (1 minute) above which the machine counts as busy before a run.
BUSY_LOAD = 0.5
#: A kernel faster than this fraction of the floor means the floor was measured low.
BELOW_FLOOR = 0.95


@dataclass
class Row:
    """One op, shape, dtype and mode: every method's times, and the floor they are held to.

    ``times_ms`` are medians and ``iqr_ms`` interquartile ranges over ``samples_ms``;
    ``ratios`` maps ``"a/b"`` to the median and IQR of the per-repetition ratios.
    """

    op: str
    shape: str
    dtype: str
    mode: str  # "train" (forward + backward) or "eval" (forward)
    floor_ms: float
    floor_transfers: int = 8
    floor_reason: str = ""
    nbytes: int = 0
    times_ms: dict[str, float] = field(default_factory=dict)
    iqr_ms: dict[str, float] = field(default_factory=dict)
    samples_ms: dict[str, list[float]] = field(default_factory=dict)
    ratios: dict[str, dict[str, float]] = field(default_factory=dict)
    first_call_ms: dict[str, float] = field(default_factory=dict)  # includes Numba's compile
    peak_extra: dict[str, float] = field(default_factory=dict)  # in units of x.nbytes
    load_average: float = 0.0  # 1-minute load average after the row


def machine() -> dict:
    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "numpy": np.__version__,
        "normgrad": ng.__version__,
    }
    try:
        with open("/proc/cpuinfo") as fh:
            info["cpu"] = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), "?"
            )
    except OSError:
        info["cpu"] = platform.processor() or "?"
    from normgrad.backends import cpu

    info["caches"] = cpu.describe()
    info["per_core_cache_bytes"], info["per_core_cache_from"] = cpu.per_core_cache()
    if kernels.numba_available():
        import numba

        info["numba"] = numba.__version__
        info["numba_threads"] = numba.get_num_threads()
    torch = _torch()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    return info


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def triad_bandwidth(n: int = 1 << 24, reps: int = 7) -> tuple[float, str]:
    """Bytes/second of ``a = b + s * c`` over float64 arrays far larger than the caches,
    counting 24 bytes per element as STREAM does; all cores via Numba when it is there."""
    b = np.random.default_rng(0).random(n)
    c = np.random.default_rng(1).random(n)
    a = np.empty_like(b)
    if kernels.numba_available():
        from numba import njit, prange

        @njit(parallel=True, cache=True)
        def triad(a, b, c, s):
            for i in prange(a.size):
                a[i] = b[i] + s * c[i]

        how = "Numba, all cores"
    else:

        def triad(a, b, c, s):
            np.multiply(c, s, out=a)
            a += b

        how = "NumPy, one core (install normgrad[fast] for all cores)"
    triad(a, b, c, 3.0)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        triad(a, b, c, 3.0)
        times.append(time.perf_counter() - t)
    return 24 * n / min(times), how


def _methods(spec: OpSpec, x, gamma, beta, dy, options: dict, mode: str) -> dict[str, Callable]:
    """The contenders for one row, each a function running one forward (+ backward)."""
    if mode == "eval":  # with running statistics
        rm, rv = np.zeros(gamma.shape, x.dtype), np.ones(gamma.shape, x.dtype)
        options = options | {"training": False, "running_mean": rm, "running_var": rv}

    def ours(backend: str, staged: bool = False) -> Callable:
        backward = spec.backward_staged if staged else spec.backward

        def step():
            y, cache = spec.forward(x, gamma, beta, backend=backend, **options)
            return y if mode == "eval" else backward(dy, cache)

        return step

    out: dict[str, Callable] = {}
    if mode == "train":
        out["staged"] = ours("numpy", staged=True)
    out["numpy closed form"] = ours("numpy")
    if kernels.numba_available():
        out["fused (numba)"] = ours("numba")
    torch = _torch()
    if torch is not None:
        out["pytorch"] = _torch_method(torch, spec, x, gamma, beta, dy, options, mode)
    return out


def _torch_method(torch, spec: OpSpec, x, gamma, beta, dy, options: dict, mode: str):
    """PyTorch's function for the op on the same arrays (shared memory, no copies: a
    channels-last x reaches PyTorch's channels-last kernel as such)."""
    from normgrad.reference.pytorch import functional

    train = mode == "train"

    def tensor(a):
        return None if a is None else torch.from_numpy(a).requires_grad_(train)

    xt, g, b, dyt = tensor(x), tensor(gamma), tensor(beta), torch.from_numpy(dy)
    kw = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in options.items()}

    def step():
        if not train:
            with torch.no_grad():
                return functional(spec, xt, g, b, **kw)
        y = functional(spec, xt, g, b, **kw)
        xt.grad = g.grad = None
        if b is not None:
            b.grad = None
        y.backward(dyt)
        return xt.grad

    return step


def _peak_extra(f: Callable, nbytes: int) -> float:
    tracemalloc.start()
    try:
        f()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / nbytes


def _size(nbytes: float) -> str:
    for unit, scale in (("M", 1 << 20), ("K", 1 << 10)):
        if nbytes >= scale:
            return f"{nbytes / scale:.0f}{unit}"
    return f"{nbytes:.0f}B"


def traffic_floor(spec: OpSpec, shape, options: dict, dtype, mode: str, cache_bytes: int):
    """``(transfers of x, why)``: the least memory traffic one step can move (docs/design.md
    §11). A training step moves 2 forward and 3 backward when one reduction group (with dy
    beside it, backward) fits in ``cache_bytes``, else 3 and 5; an eval forward moves 2."""
    if mode == "eval":
        return 2, "eval: read x, write y"
    layout = spec.layout(shape, **options)
    item = np.dtype(dtype).itemsize
    if layout.channel_axis is not None:
        axis = layout.channel_axis
        a = int(np.prod(shape[:axis], dtype=np.int64))
        b = int(np.prod(shape[axis + 1 :], dtype=np.int64))
        if b == 1:  # (N, C) and channels-last: columns share cache lines
            from normgrad.backends.cpu import LINE_BYTES

            what, group = "a block of columns one cache line wide", a * LINE_BYTES
        else:
            what, group = "a channel", a * b * item
    else:
        what, group = "a group", layout.count * item
    fwd = 2 if group <= cache_bytes else 3
    bwd = 3 if 2 * group <= cache_bytes else 5
    fits = {True: "fits", False: "does not fit"}
    reason = (
        f"{fwd} + {bwd}: {what} ({_size(group)}) {fits[fwd == 2]} in {_size(cache_bytes)}, "
        f"with dy ({_size(2 * group)}) {fits[bwd == 3]}"
    )
    return fwd + bwd, reason


def _quartiles(values: list[float]) -> tuple[float, float]:
    """(median, interquartile range)."""
    q1, q2, q3 = np.percentile(values, [25, 50, 75])
    return float(q2), float(q3 - q1)


#: The per-repetition ratios reported, by method name (numerator, denominator).
RATIO_METHODS = (("numpy closed form", "pytorch"), ("fused (numba)", "pytorch"))


def _cache_evictor() -> Callable[[], None]:
    """A function that pushes every array out of the caches (it writes a buffer twice the
    size of the largest cache, at least 64 MiB), run before each timed call.

    Each timed call is preceded by an untimed call of the same method and then by this:
    the call finds memory as it would in a loop of its own (the previous results freed and
    their pages reused; measured: after the NumPy method's temporaries, the next method's
    16 MB output took 546 page faults per call) and its inputs in memory, not in cache, so
    every method is timed in the conditions the memory-traffic floor assumes."""
    from normgrad.backends.cpu import cache_levels

    largest = max((c.size for c in cache_levels()), default=0)
    junk = np.zeros(max(2 * largest, 64 << 20) // 8)

    def evict() -> None:
        np.add(junk, 1.0, out=junk)

    return evict


def measure_row(
    op, label, shape, options, dtype, mode, bandwidth, reps, cache_bytes=None, evict=None
) -> Row:
    """One row: every method timed ``reps`` times, interleaved; ``evict`` is the run's
    :func:`_cache_evictor` (one is made if not given)."""
    spec = get_op(op)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    p = spec.param_shape(shape, **options)
    gamma = rng.standard_normal(p).astype(dtype)
    beta = rng.standard_normal(p).astype(dtype) if spec.has_beta else None
    methods = _methods(spec, x, gamma, beta, dy, options, mode)
    if cache_bytes is None:
        from normgrad.backends.cpu import per_core_cache

        cache_bytes = per_core_cache()[0]
    transfers, reason = traffic_floor(spec, shape, options, dtype, mode, cache_bytes)
    floor_ms = 1e3 * transfers * x.nbytes / bandwidth
    row = Row(spec.name, label, np.dtype(dtype).name, mode, floor_ms, transfers, reason, x.nbytes)
    for name, f in methods.items():  # warm-up, timed: it holds Numba's compile or cache load
        t = time.perf_counter()
        f()
        row.first_call_ms[name] = 1e3 * (time.perf_counter() - t)
    samples: dict[str, list[float]] = {name: [] for name in methods}
    evict = evict or _cache_evictor()
    for _ in range(reps):
        for name, f in methods.items():
            f()  # untimed: see _cache_evictor
            evict()
            t = time.perf_counter()
            f()
            samples[name].append(1e3 * (time.perf_counter() - t))
    row.samples_ms = samples
    for name, values in samples.items():
        row.times_ms[name], row.iqr_ms[name] = _quartiles(values)
    for a, b in RATIO_METHODS:
        if a in samples and b in samples:
            per_rep = [u / v for u, v in zip(samples[a], samples[b], strict=True)]
            median, iqr = _quartiles(per_rep)
            row.ratios[f"{a}/{b}"] = {"median": median, "iqr": iqr}
    row.peak_extra = {k: _peak_extra(f, x.nbytes) for k, f in methods.items() if k != "pytorch"}
    row.load_average = os.getloadavg()[0]
    return row


def benchmark_jobs(quick: bool) -> list[tuple]:
    """The rows to measure: (op, label, shape, options, dtype, mode)."""
    shapes = QUICK_SHAPES if quick else FULL_SHAPES
    dtypes = (np.float32,) if quick else (np.float32, np.float64)
    jobs = [("batch_norm", lbl, s, {"channel_axis": a}, dt, mode) for lbl, s, a in shapes
            for dt in dtypes for mode in ("train", "eval")]  # fmt: skip
    jobs += [(op, lbl, s, opts, dt, "train") for op, lbl, s, opts in OTHER_OPS for dt in dtypes]
    return jobs


def load_warnings(result: dict) -> list[str]:
    """Why the timings of ``result`` may not be those of an idle machine."""
    out = []
    cpus = result["machine"]["cpus"] or 1
    before = result["load_average_before"]
    if before > BUSY_LOAD:
        out.append(
            f"the machine was busy before the run (load average {before:.2f} on {cpus} cpus): "
            f"timings include other work; rerun on an idle machine for figures to quote"
        )
    start, end = result["bandwidth_GBps"], result.get("bandwidth_end_GBps", 0.0)
    if end and abs(end - start) > 0.15 * max(start, end):
        out.append(
            f"the streaming bandwidth moved from {start:.1f} to {end:.1f} GB/s during the run"
        )
    for r in result["rows"]:
        for name, t in r["times_ms"].items():
            if t < BELOW_FLOOR * r["floor_ms"]:
                out.append(
                    f"{name} ran {r['op']} {r['shape']} {r['dtype']} {r['mode']} in "
                    f"{t / r['floor_ms']:.2f}x its floor: the bandwidth was measured low "
                    f"(the machine was busier during the triad than during the kernel)"
                )
    return out


def run(quick: bool = False, progress: bool = True, reps: int | None = None) -> dict:
    torch = _torch()
    if torch is not None and kernels.numba_available():
        import numba

        torch.set_num_threads(numba.get_num_threads())  # the same thread count for both
    reps = reps or (7 if quick else 15)
    load_before = os.getloadavg()[0]
    bandwidth, how = triad_bandwidth()
    jobs = benchmark_jobs(quick)
    try:  # a benchmark runs without a bar rather than not at all
        bar = progress_bar(total=len(jobs) + 1, desc="bench", enabled=progress)
    except ImportError:
        bar = progress_bar(total=len(jobs) + 1, enabled=False)
    rows = []
    evict = _cache_evictor()  # one buffer for the run, not one per row
    with bar:
        for job in jobs:
            rows.append(measure_row(*job, bandwidth=bandwidth, reps=reps, evict=evict))
            bar.update(1)
        network = train_benchmark(steps=100 if quick else 300, reps=3)
        bar.update(1)
    bandwidth_end, _ = triad_bandwidth()
    # The floors use the higher of the two measurements: on a shared machine the bandwidth
    # moves (18.7 to 46.6 GB/s between runs here), and a floor from a low reading would
    # flatter every kernel.
    best = max(bandwidth, bandwidth_end)
    for row in rows:
        row.floor_ms *= bandwidth / best
    result = {
        "machine": machine(),
        "bandwidth_GBps": bandwidth / 1e9,
        "bandwidth_end_GBps": bandwidth_end / 1e9,
        "bandwidth_method": how,
        "bandwidth_floor_GBps": best / 1e9,
        "load_average_before": load_before,
        "reps": reps,
        "rows": [asdict(r) for r in rows],
        "train": network,
    }
    result["warnings"] = load_warnings(result)
    return result


#: The methods, by the name ``times_ms`` keys them with, and their column titles.
METHODS = {"staged": "staged", "numpy closed form": "numpy", "fused (numba)": "fused",
           "pytorch": "torch"}  # fmt: skip
#: The ratio columns, (numerator, denominator) by column title.
RATIOS = (("numpy", "torch"), ("fused", "torch"), ("fused", "floor"), ("torch", "floor"))
KEY = ("op", "shape", "dtype", "mode")


def _table(titles, rows, left: int = len(KEY)) -> list[str]:
    """The project's table printer: the first ``left`` columns aligned left, the rest right."""
    columns = [Column(t, align="left" if i < left else "right") for i, t in enumerate(titles)]
    return format_table(columns, rows).splitlines()


def _number(value: float | None, spread: float | None = None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if spread is None else f"{value:.2f} ({spread:.2f})"


def _machine_lines(result: dict) -> list[str]:
    m = result["machine"]
    cache = m.get("per_core_cache_bytes")
    lines = [
        f"normgrad bench on {m.get('cpu', '?')} ({m['cpus']} cpus)",
        f"caches: {m.get('caches', '?')}; the floor counts {_size(cache) if cache else '?'} per "
        f"core ({m.get('per_core_cache_from', '?')})",
        f"python {m['python']}, numpy {m['numpy']}, numba {m.get('numba', '-')} "
        f"({m.get('numba_threads', '-')} threads), torch {m.get('torch', '-')} "
        f"({m.get('torch_threads', '-')} threads)",
        f"streaming bandwidth {result['bandwidth_GBps']:.1f} GB/s at the start, "
        f"{result.get('bandwidth_end_GBps', 0.0):.1f} at the end ({result['bandwidth_method']}); "
        f"the floors use {result.get('bandwidth_floor_GBps', result['bandwidth_GBps']):.1f}",
        f"load average {result.get('load_average_before', 0.0):.2f} before the run, at most "
        f"{max((r.get('load_average', 0.0) for r in result['rows']), default=0.0):.2f} during it",
    ]
    lines += [f"WARNING: {w}" for w in result.get("warnings", [])]
    return lines


def format_kernel_tables(result: dict) -> list[str]:
    """The floors, the times and the ratios, one row per op, shape, dtype and mode."""
    n = result["reps"]
    lines = ["floor used per row (transfers of x; docs/design.md §11)"]
    columns = [Column(t) for t in KEY] + [Column("transfers", align="right"), Column("why")]
    floors = [[r[k] for k in KEY] + [str(r.get("floor_transfers", "-")), r.get("floor_reason")]
              for r in result["rows"]]  # fmt: skip
    lines += format_table(columns, floors).splitlines()
    times, ratios = [], []
    for r in result["rows"]:
        key = [r[k] for k in KEY]
        iqr = r.get("iqr_ms", {})
        t = {METHODS[k]: v for k, v in r["times_ms"].items()}
        q = {METHODS[k]: iqr.get(k) for k in r["times_ms"]}
        floor = r["floor_ms"]
        times.append(
            key + [_number(floor)] + [_number(t.get(c), q.get(c)) for c in METHODS.values()]
        )
        per_rep = {}
        for k, v in r.get("ratios", {}).items():  # keyed by method names: use column titles
            a, b = k.split("/")
            per_rep[f"{METHODS[a]}/{METHODS[b]}"] = v
        cells = []
        for a, b in RATIOS:
            if b == "floor":
                cells.append(_number(t[a] / floor, q[a] / floor) if t.get(a) else "-")
            else:
                v = per_rep.get(f"{a}/{b}")
                cells.append(_number(v["median"], v["iqr"]) if v else "-")
        ratios.append(key + cells)
    lines += ["", f"time in ms: median of {n} interleaved runs (interquartile range)"]
    lines += _table((*KEY, "floor", *METHODS.values()), times)
    lines += [
        "",
        "ratios: median of the per-run ratios (interquartile range); x/floor from medians",
    ]
    lines += _table((*KEY, *(f"{a}/{b}" for a, b in RATIOS)), ratios)
    lines += ["", "peak extra memory, multiples of x.nbytes (tracemalloc; PyTorch is not traced):"]
    for r in result["rows"]:
        if r["mode"] == "train" and r["dtype"] == "float32":
            extras = ", ".join(f"{k} {v:.1f}" for k, v in r["peak_extra"].items())
            lines.append(f"  {r['op']} {r['shape']}: {extras}")
    first = [r["first_call_ms"].get("fused (numba)", 0.0) for r in result["rows"]]
    if any(first):
        lines += [
            "",
            f"fused first calls (JIT compile, or loading Numba's on-disk cache): "
            f"{sum(first) / 1e3:.1f} s in all, the slowest {max(first) / 1e3:.1f} s",
        ]
    return lines


def format_network(result: dict) -> list[str]:
    """The training section of the full run: ``bench --train``'s table, shorter runs."""
    return format_train_report(result["train"]).splitlines()[2:]


def format_report(result: dict) -> str:
    """The whole report: the machine, then one section per part of the run."""
    sections = [_machine_lines(result), format_kernel_tables(result), format_network(result)]
    return "\n\n".join("\n".join(section) for section in sections)


def to_json(result: dict) -> str:
    return json.dumps(result, indent=2)


# --------------------------------------------------------------------------- training


#: The two networks of ``normgrad reproduce ioffe2015``, by label: (--norm, has batch norm).
TRAIN_NETWORKS = (("without BN", None), ("with BN", "batch_norm"))


def _ours_trainer(norm, x, y, steps):
    """``steps`` SGD steps of the paper's network in normgrad (the trainer's own step)."""
    from normgrad.nn import SGD, FullyConnectedNet, softmax_cross_entropy

    net = FullyConnectedNet(784, [100] * 3, 10, normalization=norm, activation="sigmoid",
                            weight_scale=0.1, dtype=np.float32)  # fmt: skip
    opt = SGD(net, lr=0.1)

    def run():
        for i in range(steps):
            k = i % len(x)
            net.backward(softmax_cross_entropy(net.forward(x[k]), y[k])[1])
            opt.step()

    return run


def _torch_trainer(torch, norm, x, y, steps):
    layers = []
    for d_in, d_out in ((784, 100), (100, 100), (100, 100)):
        layers.append(torch.nn.Linear(d_in, d_out))
        if norm:
            layers.append(torch.nn.BatchNorm1d(d_out))
        layers.append(torch.nn.Sigmoid())
    model = torch.nn.Sequential(*layers, torch.nn.Linear(100, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def run():
        for i in range(steps):
            k = i % len(x)
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[k]), yt[k]).backward()
            opt.step()

    return run


def _matmul_floor(x, steps):
    """Only the matrix products of the paper's network's step (4 forward, 4 weight
    gradients, 3 input gradients), same shapes and dtype: what no framework can skip."""
    rng = np.random.default_rng(1)
    dims = (784, 100, 100, 100, 10)
    weights = [rng.random((a, b), dtype=np.float32) for a, b in itertools.pairwise(dims)]
    inputs = [None] + [rng.random((60, a), dtype=np.float32) for a in dims[1:-1]]
    douts = [rng.random((60, w.shape[1]), dtype=np.float32) for w in weights]
    grads = [np.empty_like(w) for w in weights]

    def run():
        for i in range(steps):
            inputs[0] = x[i % len(x)]
            for h, w, d, g in zip(inputs, weights, douts, grads, strict=True):
                h @ w
                np.matmul(h.T, d, out=g)
            for w, d in zip(weights[1:], douts[1:], strict=True):
                d @ w.T

    return run


def train_benchmark(steps: int = 1000, reps: int = 5, progress: bool = False) -> dict:
    """Training steps per second of the paper's two networks (784-100x3-10, sigmoid,
    batch 60, float32, SGD): normgrad with one BLAS thread (as the trainer runs) against
    PyTorch at every thread count from 1 to the number of cores, interleaved (each
    repetition runs every contender once, in turn); medians of ``reps`` runs of ``steps``
    steps. Reports samples/s, PyTorch's best thread count, and each step's time."""
    from normgrad.train.trainer import blas_threads

    rng = np.random.default_rng(0)
    x = rng.random((50, 60, 784), dtype=np.float32)
    y = rng.integers(0, 10, (50, 60))
    torch = _torch()
    cpus = os.cpu_count() or 1
    contenders = {}  # (network, who, threads) -> run
    for label, norm in TRAIN_NETWORKS:
        contenders[(label, "normgrad", 1)] = _ours_trainer(norm, x, y, steps)
        if torch is not None:
            for threads in range(1, cpus + 1):
                contenders[(label, "pytorch", threads)] = _torch_trainer(torch, norm, x, y, steps)
    contenders[("matmul floor", "normgrad", 1)] = _matmul_floor(x, steps)
    samples = {key: [] for key in contenders}
    torch_threads = torch.get_num_threads() if torch is not None else None
    bar = progress_bar(total=reps + 1, desc="bench --train", enabled=progress)
    try:
        with bar:
            for rep in range(reps + 1):  # the first round warms up (Numba's cache, BLAS)
                for key, run in contenders.items():
                    _, who, threads = key
                    if who == "pytorch":
                        torch.set_num_threads(threads)
                    with blas_threads(threads if who == "normgrad" else None):
                        t = time.perf_counter()
                        run()
                        elapsed = time.perf_counter() - t
                    if rep:
                        samples[key].append(elapsed)
                bar.update(1)
    finally:
        if torch is not None:
            torch.set_num_threads(torch_threads)
    step_ms = {key: 1e3 * statistics.median(v) / steps for key, v in samples.items()}
    rows = []
    for label, _ in TRAIN_NETWORKS:
        ours = step_ms[(label, "normgrad", 1)]
        row = {"network": label, "normgrad_step_ms": ours,
               "normgrad_samples_per_s": 60e3 / ours}  # fmt: skip
        theirs = {k[2]: v for k, v in step_ms.items() if k[0] == label and k[1] == "pytorch"}
        if theirs:
            best = min(theirs, key=theirs.get)
            row |= {"pytorch_step_ms_by_threads": theirs, "pytorch_best_threads": best,
                    "pytorch_step_ms": theirs[best],
                    "pytorch_samples_per_s": 60e3 / theirs[best]}  # fmt: skip
        rows.append(row)
    from normgrad.nn import batch_norm_2d

    small = "fused Numba loops" if batch_norm_2d.fused_available() else "NumPy"
    return {"machine": machine(), "steps": steps, "reps": reps, "rows": rows,
            "batch_norm_small_step": small,
            "matmul_floor_ms": step_ms[("matmul floor", "normgrad", 1)],
            "load_average": os.getloadavg()}  # fmt: skip


def format_train_report(result: dict) -> str:
    m = result["machine"]
    load = ", ".join(f"{v:.2f}" for v in result["load_average"])
    lines = [
        f"normgrad bench --train on {m.get('cpu', '?')} ({m['cpus']} cpus), load average "
        f"{load} at the end",
        f"python {m['python']}, numpy {m['numpy']}, numba {m.get('numba', '-')}, torch "
        f"{m.get('torch', '-')}",
        f"the paper's networks (784-100x3-10, sigmoid, batch 60, float32, SGD); medians of "
        f"{result['reps']} interleaved runs of {result['steps']} steps; normgrad with 1 BLAS "
        f"thread and batch norm's (N, C) step on {result['batch_norm_small_step']}, PyTorch "
        "at its best thread count",
        "",
    ]
    rows, plain = [], None
    for r in result["rows"]:
        plain = plain or r["normgrad_step_ms"]
        torch_cells = ["-", "-", "-", "-"]
        if "pytorch_step_ms" in r:
            by = ", ".join(f"{t}: {v:.3f}" for t, v in r["pytorch_step_ms_by_threads"].items())
            ratio = r["normgrad_samples_per_s"] / r["pytorch_samples_per_s"]
            torch_cells = [f"{r['pytorch_step_ms']:.3f}", f"{r['pytorch_samples_per_s']:,.0f}",
                           by, f"{ratio:.2f}"]  # fmt: skip
        rows.append([r["network"], f"{r['normgrad_step_ms']:.3f}",
                     f"{r['normgrad_samples_per_s']:,.0f}", *torch_cells,
                     f"{r['normgrad_step_ms'] / plain:.2f}"])  # fmt: skip
    titles = ("network", "normgrad ms/step", "normgrad samples/s", "torch ms/step",
              "torch samples/s", "torch ms/step by threads", "normgrad/torch samples/s",
              "step / plain step")  # fmt: skip
    lines += _table(titles, rows, left=1)
    floor = result["matmul_floor_ms"]
    lines += [
        "",
        f"matmul floor (the step's 11 matrix products alone, NumPy's BLAS, 1 thread): "
        f"{floor:.3f} ms/step = {60e3 / floor:,.0f} samples/s; normgrad's step is "
        + ", ".join(f"{r['network']} {r['normgrad_step_ms'] / floor:.2f}x" for r in result["rows"])
        + " of it",
    ]
    return "\n".join(lines)
