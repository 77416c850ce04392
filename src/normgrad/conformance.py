"""``normgrad conformance``: hard inputs through every installed framework, against float64.

Each case is an input that breaks careless arithmetic: float32 with a mean 1e4 times the
spread (at several N and layouts), float16, two values per channel, a constant channel,
an eps far below and far above the variance. Every framework installed runs the same
input in its own dtype: normgrad's NumPy and Numba backends, PyTorch's CPU kernels,
JAX/Flax and Keras (any backend) when installed. Their outputs, gradients and running
statistics are measured against a float64 two-pass ground truth computed here from the
same (rounded) input, independently of normgrad's own code:

    mu = mean(x), var = mean((x - mu)^2), y = (x - mu) / sqrt(var + eps)   (gamma 1, beta 0)
    dx = r (dy - mean(dy) - xhat mean(dy xhat)), dgamma = sum(dy xhat), dbeta = sum(dy)

Errors: ``y`` is ``max|y - y_true|``, in units of the output's standard deviation (gamma
is 1); the gradients are normwise relative (``max|a - t| / max|t|``); the running
statistics (one update with the batch weighted 1, so they are the batch's own mean and
variance, in each framework's own convention: unbiased for PyTorch and normgrad, biased
for Flax and Keras) are relative to ``max(|t|, std)``. A framework that refuses a case, or
has no such op, shows its reason instead of a number.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import platform
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

import normgrad as ng
from normgrad.tools.table import Column, Table

__all__ = ["CASES", "FRAMEWORKS", "Case", "format_report", "run_conformance", "to_json"]


@dataclass(frozen=True)
class Case:
    """One hard input.

    Attributes:
        label: what it is, for the table.
        op: the op's name in the table of ops.
        shape: x's shape.
        dtype: the dtype every framework gets x in.
        mean, std: x = mean + std * N(0, 1) (``constant``: channel 0 is all ``mean``).
        eps: added to the variance.
        options: the op's axis keyword (normgrad's terms).
    """

    label: str
    op: str
    shape: tuple[int, ...]
    dtype: str = "float32"
    mean: float = 1e4
    std: float = 1.0
    eps: float = 1e-5
    options: dict = field(default_factory=dict)
    constant: bool = False

    @property
    def layout(self):
        return ng.get_op(self.op).layout(self.shape, **self.options)


LAST = {"channel_axis": -1}
CASES: list[Case] = [
    Case("BN (N, C) N=2^10, mean 1e4", "batch_norm", (1024, 8)),
    Case("BN (N, C) N=2^14, mean 1e4", "batch_norm", (16384, 8)),
    Case("BN (N, C) N=2^18, mean 1e4", "batch_norm", (262144, 4)),
    Case("BN NCHW, mean 1e4", "batch_norm", (32, 8, 32, 32)),
    Case("BN NHWC, mean 1e4", "batch_norm", (32, 32, 32, 8), options=LAST),
    Case("LN, mean 1e4", "layer_norm", (256, 1024)),
    Case("GN G=4, mean 1e4", "group_norm", (32, 8, 32, 32), options={"num_groups": 4}),
    Case("IN, mean 1e4", "instance_norm", (16, 8, 32, 32)),
    Case("RMS, mean 1e4", "rms_norm", (256, 1024), eps=1e-6),
    Case("BN (N, C) mean 0", "batch_norm", (16384, 8), mean=0.0),
    Case("LN mean 0", "layer_norm", (256, 1024), mean=0.0),
    Case("BN float16, mean 100", "batch_norm", (4096, 8), dtype="float16", mean=100.0),
    Case("LN float16, mean 100", "layer_norm", (256, 1024), dtype="float16", mean=100.0),
    Case("BN N=2", "batch_norm", (2, 64), mean=3.0),
    Case("BN constant channel", "batch_norm", (64, 4), mean=3.0, constant=True),
    Case("BN tiny eps 1e-12, std 1e-3", "batch_norm", (4096, 8), mean=1.0, std=1e-3, eps=1e-12),
    Case("BN large eps 10", "batch_norm", (4096, 8), mean=1.0, std=1.0, eps=10.0),
]


def quick_cases() -> list[Case]:
    """The same cases with at most 2^16 elements each (N divided by 4 until they fit; a
    label that names N names the N used), for a first look and the test suite."""
    out = []
    for case in CASES:
        shape = case.shape
        while math.prod(shape) > 1 << 16 and shape[0] > 2:
            shape = (shape[0] // 4, *shape[1:])
        label = re.sub(r"N=2\^\d+", f"N=2^{int(math.log2(shape[0]))}", case.label)
        out.append(
            Case(
                label,
                case.op,
                shape,
                case.dtype,
                case.mean,
                case.std,
                case.eps,
                case.options,
                case.constant,
            )
        )
    return out


#: Results of one framework on one case: name -> error, or a reason it has none.
Result = dict[str, float | str]
QUANTITIES = ("y", "dx", "dgamma", "dbeta", "running_mean", "running_var")


# --------------------------------------------------------------------------- inputs, truth


def make_input(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, dy)``: x in the case's dtype, dy float64 (each framework rounds it itself)."""
    rng = np.random.default_rng(seed)
    x = case.mean + case.std * rng.standard_normal(case.shape)
    if case.constant:  # channel 0 (batch norm's channel axis) holds one value
        x[(slice(None), 0)] = case.mean
    return x.astype(case.dtype), rng.standard_normal(case.shape)


def ground_truth(case: Case, x: np.ndarray, dy: np.ndarray) -> dict[str, np.ndarray]:
    """float64 two-pass statistics and closed-form gradients of the rounded input, from
    plain NumPy over the op's reduced axes (gamma = 1, beta = 0)."""
    layout = case.layout
    xw = x.astype(np.float64).reshape(layout.work_shape)
    dyw = dy.reshape(layout.work_shape)
    axes, m = layout.reduce_axes, layout.count
    mu = xw.mean(axis=axes, keepdims=True) if layout.centered else np.zeros(layout.stats_shape)
    var = ((xw - mu) ** 2).mean(axis=axes, keepdims=True)
    r = 1.0 / np.sqrt(var + case.eps)
    xhat = (xw - mu) * r
    mean_dy = dyw.mean(axis=axes, keepdims=True) if layout.centered else 0.0
    dx = r * (dyw - mean_dy - xhat * (dyw * xhat).mean(axis=axes, keepdims=True))
    psum = layout.param_sum_axes
    out = {
        "y": xhat.reshape(case.shape),
        "dx": dx.reshape(case.shape),
        "dgamma": (dyw * xhat).sum(axis=psum).reshape(layout.param_shape),
        "dbeta": dyw.sum(axis=psum).reshape(layout.param_shape),
    }
    if case.op == "batch_norm":
        out["running_mean"] = mu.reshape(layout.param_shape)
        out["running_var_biased"] = var.reshape(layout.param_shape)
        out["running_var_unbiased"] = (var * m / (m - 1)).reshape(layout.param_shape)
    return out


def _errors(case: Case, got: dict, truth: dict, var_convention: str) -> Result:
    std = math.sqrt(float(np.max(truth.get("running_var_biased", np.ones(1)))))
    result: Result = {}
    for q in QUANTITIES:
        if q.startswith("running") and case.op != "batch_norm":
            continue
        value = got.get(q)
        if isinstance(value, str) or value is None:
            result[q] = value or "-"
            continue
        key = f"running_var_{var_convention}" if q == "running_var" else q
        t = truth[key]
        a = np.asarray(value, np.float64).reshape(t.shape)
        if not np.all(np.isfinite(a)):
            result[q] = float("inf")
            continue
        diff = float(np.max(np.abs(a - t))) if a.size else 0.0
        if q == "y":
            result[q] = diff
        elif q.startswith("running"):
            result[q] = diff / max(float(np.max(np.abs(t))), std, 1e-300)
        else:
            scale = float(np.max(np.abs(t)))
            result[q] = diff / scale if scale > 0 else diff
    return result


# --------------------------------------------------------------------------- frameworks


@dataclass(frozen=True)
class Framework:
    """A framework: how to tell it is there, its version, and how it runs a case.

    ``run(case, x, dy) -> dict`` returns float64 arrays (or a reason string) for the
    quantities it has; ``var_convention`` names the variance its running statistics keep.
    """

    name: str
    modules: tuple[str, ...]
    version: Callable[[], str]
    run: Callable[[Case, np.ndarray, np.ndarray], dict]
    var_convention: str = "unbiased"
    extra: str = ""

    def installed(self) -> bool:
        return all(importlib.util.find_spec(m) is not None for m in self.modules)


def _normgrad_run(backend: str):
    def run(case: Case, x: np.ndarray, dy: np.ndarray) -> dict:
        spec = ng.get_op(case.op)
        c = spec.param_shape(case.shape, **case.options)
        gamma = np.ones(c, x.dtype)
        beta = np.zeros(c, x.dtype) if spec.has_beta else None
        kw = dict(case.options, eps=case.eps, backend=backend)
        running = None
        if spec.running_stats:  # one update weighted 1: the batch's own statistics
            running = (np.zeros(c, np.float64), np.ones(c, np.float64))
            kw |= {"running_mean": running[0], "running_var": running[1], "momentum": 1.0}
        y, cache = spec.forward(x, gamma, beta, **kw)
        dx, dgamma, dbeta = spec.backward(dy.astype(x.dtype), cache)
        out = {"y": y, "dx": dx, "dgamma": dgamma, "dbeta": dbeta if spec.has_beta else "-"}
        if running is not None:
            out |= {"running_mean": running[0], "running_var": running[1]}
        return out

    return run


def _torch_run(case: Case, x: np.ndarray, dy: np.ndarray) -> dict:
    import torch

    from normgrad.reference.pytorch import functional

    spec = ng.get_op(case.op)
    c = spec.param_shape(case.shape, **case.options)
    dtype = getattr(torch, case.dtype)
    xt = torch.tensor(x, requires_grad=True)
    gt = torch.ones(c, dtype=dtype, requires_grad=True)
    bt = torch.zeros(c, dtype=dtype, requires_grad=True) if spec.has_beta else None
    kw = dict(case.options, eps=case.eps)
    running = None
    if spec.running_stats:
        running = (torch.zeros(c, dtype=dtype), torch.ones(c, dtype=dtype))
        kw |= {"running_mean": running[0], "running_var": running[1], "momentum": 1.0}
    yt = functional(spec, xt, gt, bt, **kw)
    yt.backward(torch.tensor(dy, dtype=dtype))
    out = {
        "y": yt.detach().numpy(),
        "dx": xt.grad.numpy(),
        "dgamma": gt.grad.numpy(),
        "dbeta": bt.grad.numpy() if bt is not None else "-",
    }
    if running is not None:
        out |= {"running_mean": running[0].numpy(), "running_var": running[1].numpy()}
    return out


def _flax_run(case: Case, x: np.ndarray, dy: np.ndarray) -> dict:
    """Flax's linen layers with their defaults (``use_fast_variance`` included), gamma 1
    and beta 0 (their initial values); gradients by ``jax.vjp``."""
    from flax import linen

    layout = case.layout
    nd = len(case.shape)
    if case.op == "batch_norm":
        axis = case.options.get("channel_axis", 1) % nd
        layer = linen.BatchNorm(
            use_running_average=False, axis=axis, momentum=0.0, epsilon=case.eps
        )
    elif case.op == "layer_norm":
        layer = linen.LayerNorm(epsilon=case.eps)
    elif case.op == "rms_norm":
        layer = linen.RMSNorm(epsilon=case.eps)
    elif case.op in ("group_norm", "instance_norm"):  # Flax's are channels-last
        layer = (
            linen.GroupNorm(num_groups=case.options["num_groups"], epsilon=case.eps)
            if case.op == "group_norm"
            else linen.InstanceNorm(epsilon=case.eps)
        )
        moved = _flax_grads(layer, np.moveaxis(x, 1, -1), np.moveaxis(dy, 1, -1), layout, False)
        moved["y"], moved["dx"] = (np.moveaxis(moved[k], -1, 1) for k in ("y", "dx"))
        return moved
    else:
        return dict.fromkeys(("y", "dx", "dgamma", "dbeta"), "no such layer")
    return _flax_grads(layer, x, dy, layout, case.op == "batch_norm")


def _flax_grads(layer, x, dy, layout, batch_stats: bool) -> dict:
    """y, the gradients by ``jax.vjp`` and (batch norm) the updated batch statistics."""
    import jax
    import jax.numpy as jnp

    xj = jnp.asarray(x)
    variables = layer.init(jax.random.PRNGKey(0), xj)
    params = variables["params"]

    def apply(params, xin):
        if batch_stats:
            y, updates = layer.apply(
                {"params": params, **{k: v for k, v in variables.items() if k != "params"}},
                xin,
                mutable=["batch_stats"],
            )
            return y, updates
        return layer.apply({"params": params}, xin), {}

    (y, updates), vjp = jax.vjp(apply, params, xj, has_aux=False)
    dparams, dxj = vjp(
        (jnp.asarray(dy, dtype=y.dtype), jax.tree_util.tree_map(jnp.zeros_like, updates))
    )
    out = {
        "y": np.asarray(y),
        "dx": np.asarray(dxj),
        "dgamma": np.asarray(dparams["scale"]).reshape(layout.param_shape),
        "dbeta": (
            np.asarray(dparams["bias"]).reshape(layout.param_shape) if "bias" in dparams else "-"
        ),
    }
    if batch_stats:
        stats = updates["batch_stats"]
        out |= {"running_mean": np.asarray(stats["mean"]), "running_var": np.asarray(stats["var"])}
    return out


def _keras():
    """Keras 3, on JAX when TensorFlow (its default backend) is absent and JAX is there;
    ``KERAS_BACKEND`` chooses otherwise."""
    if importlib.util.find_spec("tensorflow") is None and importlib.util.find_spec("jax"):
        os.environ.setdefault("KERAS_BACKEND", "jax")
    return importlib.import_module("keras")


def _keras_run(case: Case, x: np.ndarray, dy: np.ndarray) -> dict:
    """Keras 3 layers (their defaults, gamma 1 and beta 0) in training mode; gradients by
    ``jax.vjp`` of the layer's ``stateless_call`` on the JAX backend (the only backend this
    module differentiates; others report the forward and running statistics alone)."""
    keras = _keras()
    nd = len(case.shape)
    if case.op == "batch_norm":
        axis = case.options.get("channel_axis", 1) % nd
        layer = keras.layers.BatchNormalization(axis=axis, momentum=0.0, epsilon=case.eps)
    elif case.op == "layer_norm":
        layer = keras.layers.LayerNormalization(axis=-1, epsilon=case.eps)
    elif case.op == "group_norm":
        layer = keras.layers.GroupNormalization(
            groups=case.options["num_groups"], axis=1, epsilon=case.eps
        )
    else:
        return dict.fromkeys(("y", "dx", "dgamma", "dbeta"), "no such layer")
    layer.build(case.shape)
    if keras.backend.backend() != "jax":
        y = layer(x, training=True)
        out = {"y": keras.ops.convert_to_numpy(y), "dx": "-", "dgamma": "-", "dbeta": "-"}
    else:
        import jax
        import jax.numpy as jnp

        trainable = [v.value for v in layer.trainable_variables]  # gamma, beta
        frozen = [v.value for v in layer.non_trainable_variables]  # moving statistics

        mode = {"training": True} if case.op == "batch_norm" else {}  # the others have none

        def call(trainable, xin):
            return layer.stateless_call(trainable, frozen, xin, **mode)

        (y, frozen_after), vjp = jax.vjp(call, trainable, jnp.asarray(x))
        (dgamma, dbeta), dxj = vjp(
            (jnp.asarray(dy, y.dtype), [jnp.zeros_like(v) for v in frozen_after])
        )
        out = {
            "y": np.asarray(y),
            "dx": np.asarray(dxj),
            "dgamma": np.asarray(dgamma),
            "dbeta": np.asarray(dbeta),
        }
        if case.op == "batch_norm":
            out |= {
                "running_mean": np.asarray(frozen_after[0]),
                "running_var": np.asarray(frozen_after[1]),
            }
    return out


def _version(module: str) -> Callable[[], str]:
    return lambda: getattr(importlib.import_module(module), "__version__", "?")


FRAMEWORKS: list[Framework] = [
    Framework("normgrad numpy", ("numpy",), lambda: ng.__version__, _normgrad_run("numpy")),
    Framework(
        "normgrad numba",
        ("numba",),
        _version("numba"),
        _normgrad_run("numba"),
        extra="normgrad[fast]",
    ),
    Framework("PyTorch CPU", ("torch",), _version("torch"), _torch_run, extra="normgrad[torch]"),
    Framework(
        "Flax", ("jax", "flax"), _version("flax"), _flax_run, "biased", extra="normgrad[frameworks]"
    ),
    Framework(
        "Keras",
        ("keras",),
        lambda: _keras().__version__,
        _keras_run,
        "biased",
        extra="normgrad[frameworks]",
    ),
]


# --------------------------------------------------------------------------- running


@dataclass
class Report:
    """Every framework's errors on every case, and what was not installed."""

    versions: dict[str, str]  # installed framework -> version
    missing: dict[str, str]  # not installed -> the extra that installs it
    results: dict[str, dict[str, Result]]  # case label -> framework -> errors
    environment: dict[str, str]


def run_conformance(
    cases: list[Case] | None = None, frameworks: list[Framework] | None = None, on_case=None
) -> Report:
    """Run every case through every installed framework; ``on_case(label)`` before each."""
    cases = CASES if cases is None else cases
    frameworks = FRAMEWORKS if frameworks is None else frameworks
    present = [f for f in frameworks if f.installed()]
    missing = {f.name: f.extra for f in frameworks if not f.installed()}
    versions = {f.name: f.version() for f in present}
    results: dict[str, dict[str, Result]] = {}
    for case in cases:
        if on_case:
            on_case(case.label)
        x, dy = make_input(case)
        truth = ground_truth(case, x, dy)
        row: dict[str, Result] = {}
        for fw in present:
            try:
                got = fw.run(case, x, dy)
            except Exception as exc:  # a framework's refusal is a result, shown as such
                reason = f"{type(exc).__name__}: {str(exc).splitlines()[0][:60]}"
                row[fw.name] = dict.fromkeys(QUANTITIES, reason)
                continue
            row[fw.name] = _errors(case, got, truth, fw.var_convention)
        results[case.label] = row
    env = {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "keras_backend": os.environ.get("KERAS_BACKEND", ""),
    }
    return Report(versions, missing, results, env)


def _cell(value) -> str:
    if isinstance(value, str):
        if value.startswith(("no such", "channels-last")):
            return "n/a"
        return value if len(value) <= 9 else "refused"
    return "inf" if not math.isfinite(value) else f"{value:.1e}"


def format_report(report: Report, quantities=("y", "dx", "running_var")) -> str:
    """One table per quantity: cases down, frameworks across; then versions, reasons."""
    names = list(report.versions)
    lines = [
        "normgrad conformance: errors against a float64 two-pass ground truth",
        "y: max|y - y_true| in std units; gradients: max|a - t| / max|t|; running "
        "statistics: relative to max(|t|, std)",
        "versions: " + ", ".join(f"{k} {v}" for k, v in report.versions.items()),
        f"python {report.environment['python']}, numpy {report.environment['numpy']}",
    ]
    if report.missing:
        lines.append(
            "not installed: "
            + ", ".join(f"{k} (pip install '{v}')" if v else k for k, v in report.missing.items())
        )
    reasons: dict[str, str] = {}
    for q in quantities:
        table = Table([Column(q, width=30), *(Column(n, align="right") for n in names)])
        rows = []
        for label, row in report.results.items():
            if q.startswith("running") and not label.startswith("BN"):
                continue
            cells = []
            for n in names:
                value = row.get(n, {}).get(q, "-")
                if isinstance(value, str) and len(value) > 9 and _cell(value) == "refused":
                    reasons[f"{n}, {label}"] = value
                cells.append(_cell(value))
            rows.append([label, *cells])
        if rows:
            lines += ["", table.render(rows)]
    if reasons:
        lines += ["", "refused:"] + [f"  {k}: {v}" for k, v in reasons.items()]
    return "\n".join(lines)


def to_json(report: Report) -> str:
    return json.dumps(
        {
            "versions": report.versions,
            "not_installed": report.missing,
            "environment": report.environment,
            "results": report.results,
        },
        indent=2,
        default=float,
    )
