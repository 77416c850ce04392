"""Numerical gradient checking: the one checker every test and ``normgrad verify`` use.

In the spirit of Chainer's ``gradient_check``: give a function, its inputs, an upstream
gradient ``dout`` and the analytic gradients you want checked; the checker differentiates
the scalar ``L = sum(f(**inputs) * dout)`` by central differences and compares::

    results = check_gradients(
        lambda x, gamma, beta: normgrad.batch_norm_forward(x, gamma, beta)[0],
        {"x": x, "gamma": gamma, "beta": beta},
        dout,
        {"x": dx, "gamma": dgamma, "beta": dbeta},
    )

Two error measures are reported:

- ``max_rel_error`` (pass/fail): ``max|a - n| / max(max|a|, max|n|)``, the error relative
  to the gradient's scale. It does not blow up on elements that are zero up to rounding,
  which batch norm's dx has plenty of (its sum over the batch is exactly zero).
  An optional ``atol`` adds an absolute allowance, ``max|a - n| <= atol + rtol * scale``:
  for gradients that are small *by cancellation* (batch norm with two values per channel,
  where dx is O(eps / var)), the right yardstick is the size of the terms that cancel, which
  the caller knows and passes as ``atol``.
- ``rel_error``: the CS231n course's elementwise measure,
  ``max(|a - n| / max(1e-8, |a| + |n|))``, shown because learners know it.

Large arrays are checked along random directions (``mode="directional"``): the numeric
directional derivative ``(L(x + h v) - L(x - h v)) / 2h`` against ``<analytic, v>``, as
Chainer's ``check_backward`` does; :func:`check_directional` moves every input at once
along one random direction, Chainer's own check. Inputs are never modified: perturbations
are made on copies.

The tolerance model. A central difference errs in two ways: by
truncation, ``O(h^2)`` relative, which ``rtol`` covers; and by the rounding of the loss,
which does not shrink with ``h``: ``L`` is a sum of ``f(x) * dout`` terms, each rounded in
``f``'s output dtype, so the difference of two losses can be off by about
``eps_out * S`` with ``S = sum|f(x) * dout|``, and the derivative by ``eps_out * S / 2h``.
That *rounding allowance* (times :data:`ROUNDING_SAFETY`) is added to the absolute
tolerance; it grows with the problem's size and magnitude (``S``) and with a coarser dtype,
and is printed in every report. Per dtype, the defaults (:data:`DTYPE_DEFAULTS`) set ``h``
near ``eps^(1/3)`` and ``rtol`` to what that step's truncation allows. The step actually
taken is the difference of the perturbed values *as stored* (``(x + h) - (x - h)`` rounded
in x's dtype), so a float32 input is differentiated over the step it really got.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "GradcheckError",
    "GradcheckResult",
    "assert_close",
    "check_directional",
    "check_gradients",
    "directional_derivative",
    "max_rel_error",
    "numerical_gradient",
    "rel_error",
    "rounding_allowance",
    "within",
]

#: Default step and tolerance for float64 inputs. Central differences have truncation error
#: ~h^2 and rounding error ~1e-16 / h; h = 1e-5 balances them at ~1e-10 relative.
DEFAULT_H = 1e-5
DEFAULT_RTOL = 1e-7
#: ``(h, rtol)`` by the coarser of the perturbed input's dtype and f's output dtype. The
#: rounding allowance falls as 1/h and truncation grows as h^2, so the coarser the dtype the
#: larger the step (near eps^(1/3) times the inputs' scale, for inputs of order 1), and
#: rtol is what that step's truncation leaves. In float16 only gross mistakes (a wrong sign,
#: a missing term) stand out of the output's rounding.
DTYPE_DEFAULTS = {
    np.dtype(np.float64): (DEFAULT_H, DEFAULT_RTOL),
    np.dtype(np.float32): (1e-2, 1e-3),
    np.dtype(np.float16): (1e-1, 1e-2),
}
#: The rounding allowance is this many times ``eps_out * S / 2h``: a sum of S's terms'
#: rounding errors, with room for the few roundings each output value went through.
ROUNDING_SAFETY = 4.0
#: Arrays with more elements than this are checked along random directions by default.
MAX_FULL_SIZE = 4096


def rel_error(x, y) -> float:
    """The CS231n course's relative error: ``max(|x - y| / max(1e-8, |x| + |y|))``."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.size == 0:
        return 0.0
    return float(np.max(np.abs(x - y) / np.maximum(1e-8, np.abs(x) + np.abs(y))))


def max_rel_error(actual, expected) -> float:
    """Normwise relative error ``max|a - e| / max(max|a|, max|e|)``; 0 when both are 0."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.shape != e.shape:
        raise ValueError(f"cannot compare arrays of shapes {a.shape} and {e.shape}")
    if a.size == 0:
        return 0.0
    diff = np.max(np.abs(a - e))
    scale = max(np.max(np.abs(a)), np.max(np.abs(e)))
    if not np.isfinite(diff):
        return float("inf")
    return float(diff / scale) if scale > 0 else 0.0


def within(actual, expected, *, rtol: float, atol: float = 0.0) -> bool:
    """``max|a - e| <= atol + rtol * max(max|a|, max|e|)``; NaN never passes."""
    a, e = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if a.size == 0:
        return True
    diff = np.max(np.abs(a - e))
    scale = max(np.max(np.abs(a)), np.max(np.abs(e)))
    return bool(diff <= atol + rtol * scale)


def _loss(f: Callable, inputs: Mapping[str, np.ndarray], dout: np.ndarray) -> float:
    out = np.asarray(f(**inputs), dtype=np.float64)
    if out.shape != dout.shape:
        raise ValueError(f"f returned shape {out.shape} but dout has shape {dout.shape}")
    return float(np.sum(out * dout))


def _perturbable(a) -> np.ndarray:
    """A copy of ``a`` that can hold ``a + h``: integer and boolean inputs become float64
    (perturbing an integer array in place would truncate every step to 0)."""
    a = np.asarray(a)
    return a.astype(np.float64) if a.dtype.kind not in "fc" else a.copy()


def numerical_gradient(
    f: Callable, inputs: Mapping[str, np.ndarray], wrt: str, dout, *, h: float = DEFAULT_H
) -> np.ndarray:
    """Central-difference gradient of ``sum(f(**inputs) * dout)`` with respect to ``inputs[wrt]``.

    Costs two evaluations of ``f`` per element of ``inputs[wrt]``.
    """
    dout = np.asarray(dout, np.float64)
    work = dict(inputs)
    x = _perturbable(inputs[wrt])  # a copy: never the caller's array
    work[wrt] = x
    grad = np.zeros(x.shape, np.float64)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        up = float(x[idx])  # the perturbed value as stored, rounded in x's dtype
        plus = _loss(f, work, dout)
        x[idx] = old - h
        down = float(x[idx])
        minus = _loss(f, work, dout)
        x[idx] = old
        if up == down:
            raise ValueError(
                f"h={h:g} is below the resolution of {x.dtype} at {wrt}{list(idx)} = {old}: "
                "pass a larger h"
            )
        grad[idx] = (plus - minus) / (up - down)
    return grad


def directional_derivative(
    f: Callable,
    inputs: Mapping[str, np.ndarray],
    wrt: str,
    dout,
    direction: np.ndarray,
    *,
    h: float = DEFAULT_H,
) -> float:
    """Directional derivative ``(L(x + h v) - L(x - h v)) / 2h`` along ``v = direction``.

    ``L = sum(f(**inputs) * dout)`` and ``x = inputs[wrt]``.
    """
    dout = np.asarray(dout, np.float64)
    x = np.asarray(inputs[wrt])
    if x.dtype.kind not in "fc":  # integers cannot hold x +- h v: differentiate in float64
        x = x.astype(np.float64)
    step = (h * direction).astype(x.dtype)
    plus = _loss(f, {**inputs, wrt: x + step}, dout)
    minus = _loss(f, {**inputs, wrt: x - step}, dout)
    return (plus - minus) / (2 * h)


def _directional(f, inputs, names, dout, directions, h):
    """``(numeric, effective directions)`` along ``directions`` (one per name) at once:
    every named input moves by ``h * v`` as stored in its own dtype, and each effective
    direction is the step actually taken, over 2h, so ``<analytic, v_eff>`` is what the
    numeric derivative estimates."""
    plus, minus, effective = dict(inputs), dict(inputs), {}
    for name in names:
        x = np.asarray(inputs[name])
        step = (h * directions[name]).astype(x.dtype)
        plus[name], minus[name] = x + step, x - step
        effective[name] = (plus[name].astype(np.float64) - minus[name]) / (2 * h)
    return (_loss(f, plus, dout) - _loss(f, minus, dout)) / (2 * h), effective


def _precision(*dtypes) -> np.dtype:
    """The coarsest floating dtype among ``dtypes`` (others count as float64)."""
    floats = [np.dtype(d) for d in dtypes if np.dtype(d) in DTYPE_DEFAULTS]
    return max(floats, key=lambda d: np.finfo(d).eps, default=np.dtype(np.float64))


def rounding_allowance(out: np.ndarray, dout, h: float) -> float:
    """The absolute error a central difference of ``L = sum(out * dout)`` can have from
    rounding alone: ``ROUNDING_SAFETY * eps_out * sum|out * dout| / (2h)``, with
    ``eps_out`` the machine epsilon of ``out``'s dtype (see the module docstring)."""
    out = np.asarray(out)
    eps_out = np.finfo(_precision(out.dtype)).eps
    scale = float(np.sum(np.abs(out.astype(np.float64) * np.asarray(dout, np.float64))))
    return ROUNDING_SAFETY * eps_out * scale / (2 * h)


def _mismatch_lines(expected, actual, labels: tuple[str, str]) -> list[str]:
    """Where two arrays differ most, and both arrays (abbreviated), for failure reports."""
    if expected.size == 0:
        return []
    diff = np.abs(np.asarray(expected, np.float64) - np.asarray(actual, np.float64))
    worst = np.unravel_index(int(np.nanargmax(diff)), diff.shape) if diff.ndim else ()
    opts = {"precision": 6, "threshold": 40, "edgeitems": 3}
    width = max(len(lbl) for lbl in labels) + 1
    return [
        f"  worst at index {tuple(int(i) for i in worst)}: {labels[0]} "
        f"{expected[worst]:.10g}, {labels[1]} {actual[worst]:.10g}",
        *(
            f"  {(lbl + ':').ljust(width)} " + np.array2string(arr, **opts).replace("\n", " ")
            for lbl, arr in zip(labels, (expected, actual), strict=False)
        ),
    ]


@dataclass
class GradcheckResult:
    """The comparison of one analytic gradient with its numerical estimate."""

    name: str
    mode: str  # "full" or "directional"
    numeric: np.ndarray  # the gradient, or the directional derivatives
    analytic: np.ndarray  # the gradient, or <analytic, v> per direction
    max_rel_error: float
    rel_error: float
    rtol: float
    h: float
    atol: float = 0.0
    allowance: float = 0.0  # the rounding allowance of the tolerance model (absolute)

    @property
    def passed(self) -> bool:
        return within(self.analytic, self.numeric, rtol=self.rtol, atol=self.atol + self.allowance)

    def report(self) -> str:
        verdict = "ok" if self.passed else "FAILED"
        lines = [
            f"gradient wrt {self.name!r} ({self.mode}, {self.numeric.size} values): {verdict}",
            f"  max_rel_error {self.max_rel_error:.3e} (tolerance {self.rtol:.1e}"
            + (f" + atol {self.atol:.1e}" if self.atol else "")
            + (f" + rounding allowance {self.allowance:.1e}), " if self.allowance else "), ")
            + f"course rel_error {self.rel_error:.3e}, h = {self.h:.1e}",
        ]
        if not self.passed:
            lines += _mismatch_lines(self.numeric, self.analytic, ("numeric", "analytic"))
        return "\n".join(lines)


class GradcheckError(AssertionError):
    """Raised by :func:`check_gradients` when a gradient fails; the message is the report."""

    def __init__(self, results: list[GradcheckResult]):
        self.results = results
        super().__init__("\n".join(r.report() for r in results))


def check_gradients(
    f: Callable,
    inputs: Mapping[str, np.ndarray],
    dout,
    analytic: Mapping[str, np.ndarray],
    *,
    h: float | None = None,
    rtol: float | None = None,
    atol: float | Mapping[str, float] = 0.0,
    rounding: bool = True,
    mode: str = "auto",
    num_directions: int = 4,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> list[GradcheckResult]:
    """Check analytic gradients of ``sum(f(**inputs) * dout)`` against central differences.

    Args:
        f: called as ``f(**inputs)``; returns an array of ``dout``'s shape.
        inputs: the arguments of ``f`` by name (use float64 for meaningful checks).
        dout: upstream gradient.
        analytic: the gradients to check, by input name (None values are skipped).
        h: finite-difference step; None: by dtype (:data:`DTYPE_DEFAULTS`), the coarser of
            the input's and f's output's.
        rtol: largest ``max_rel_error`` that passes; None: by dtype, as ``h``.
        atol: absolute allowance added to ``rtol * scale`` (a number, or one per input name).
        rounding: add the rounding allowance of the tolerance model
            (:func:`rounding_allowance`) to ``atol``; False checks ``rtol``/``atol`` alone.
        mode: ``"full"`` (every element), ``"directional"`` (``num_directions`` random
            directions) or ``"auto"`` (full up to ``MAX_FULL_SIZE`` elements).
        seed: seeds the random directions.
        raise_on_failure: raise :class:`GradcheckError` with the report if any check fails.

    Returns:
        One :class:`GradcheckResult` per checked gradient.
    """
    if mode not in ("auto", "full", "directional"):
        raise ValueError(f"mode must be 'auto', 'full' or 'directional'; got {mode!r}")
    rng = np.random.default_rng(seed)
    dout = np.asarray(dout, np.float64)
    out = np.asarray(f(**inputs))
    results = []
    for name, grad in analytic.items():
        if grad is None:
            continue
        if name not in inputs:
            raise ValueError(f"analytic gradient {name!r} is not one of the inputs {list(inputs)}")
        x = np.asarray(inputs[name])
        grad = np.asarray(grad, np.float64)
        if grad.shape != x.shape:
            raise ValueError(
                f"analytic gradient {name!r} has shape {grad.shape}, input has {x.shape}"
            )
        use = mode if mode != "auto" else ("full" if x.size <= MAX_FULL_SIZE else "directional")
        step, tol = _defaults(h, rtol, x.dtype, out.dtype)
        if use == "full":
            numeric = numerical_gradient(f, inputs, name, dout, h=step)
            ana = grad
        else:
            numeric, ana = [], []
            for _ in range(num_directions):
                d = {name: rng.standard_normal(x.shape)}
                value, effective = _directional(f, inputs, (name,), dout, d, step)
                numeric.append(value)
                ana.append(np.sum(grad * effective[name]))
            numeric, ana = np.array(numeric), np.array(ana)
        results.append(
            GradcheckResult(
                name,
                use,
                numeric,
                ana,
                max_rel_error(ana, numeric),
                rel_error(ana, numeric),
                tol,
                step,
                atol if not isinstance(atol, Mapping) else atol.get(name, 0.0),
                rounding_allowance(out, dout, step) if rounding else 0.0,
            )
        )
    if raise_on_failure and not all(r.passed for r in results):
        raise GradcheckError(results)
    return results


def _defaults(h, rtol, *dtypes) -> tuple[float, float]:
    """``(h, rtol)``: the given ones, or the defaults of the coarsest of ``dtypes``."""
    default_h, default_rtol = DTYPE_DEFAULTS[_precision(*dtypes)]
    return (default_h if h is None else h), (default_rtol if rtol is None else rtol)


def check_directional(
    f: Callable,
    inputs: Mapping[str, np.ndarray],
    dout,
    analytic: Mapping[str, np.ndarray],
    *,
    h: float | None = None,
    rtol: float | None = None,
    atol: float = 0.0,
    rounding: bool = True,
    num_directions: int = 4,
    seed: int = 0,
    raise_on_failure: bool = True,
) -> GradcheckResult:
    """Chainer's check: move *every* input with an analytic gradient at once, along
    ``num_directions`` random directions, and compare ``(L(p + hv) - L(p - hv)) / 2h`` with
    ``sum_k <analytic_k, v_k>``. Cheap at any size (two evaluations per direction) and
    blind to no input; a gradient wrong in one input shows in every direction. Same
    tolerance model as :func:`check_gradients`; returns one result named ``"all inputs"``.
    """
    names = [k for k, g in analytic.items() if g is not None]
    unknown = [k for k in names if k not in inputs]
    if unknown:
        raise ValueError(
            f"analytic gradient {unknown[0]!r} is not one of the inputs {list(inputs)}"
        )
    rng = np.random.default_rng(seed)
    dout = np.asarray(dout, np.float64)
    out = np.asarray(f(**inputs))
    step, tol = _defaults(h, rtol, out.dtype, *(np.asarray(inputs[k]).dtype for k in names))
    numeric, ana = [], []
    for _ in range(num_directions):
        dirs = {k: rng.standard_normal(np.shape(inputs[k])) for k in names}
        value, effective = _directional(f, inputs, names, dout, dirs, step)
        numeric.append(value)
        ana.append(sum(np.sum(np.asarray(analytic[k], np.float64) * effective[k]) for k in names))
    numeric, ana = np.array(numeric), np.array(ana)
    result = GradcheckResult(
        "all inputs", "directional", numeric, ana, max_rel_error(ana, numeric),
        rel_error(ana, numeric), tol, step, atol,
        rounding_allowance(out, dout, step) if rounding else 0.0,
    )  # fmt: skip
    if raise_on_failure and not result.passed:
        raise GradcheckError([result])
    return result


def assert_close(actual, expected, *, rtol: float, atol: float = 0.0, name: str = "value") -> float:
    """Assert ``max|a - e| <= atol + rtol * scale`` (see :func:`within`); return max_rel_error.

    Used wherever two derivations (staged vs closed form, normgrad vs PyTorch) are compared,
    so every comparison in the project reports failures the same way.
    """
    if actual is None or expected is None:
        if actual is None and expected is None:
            return 0.0
        raise AssertionError(f"{name}: one result is None and the other is not")
    a, e = np.asarray(actual), np.asarray(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {a.shape} differs from expected {e.shape}")
    err = max_rel_error(a, e)
    if not within(a, e, rtol=rtol, atol=atol):
        lines = [
            f"{name}: max_rel_error {err:.3e} exceeds tolerance {rtol:.1e}"
            + (f" + atol {atol:.1e} " if atol else " ")
            + f"(course rel_error {rel_error(a, e):.3e})",
            *_mismatch_lines(e, a, ("expected", "actual")),
        ]
        raise AssertionError("\n".join(lines))
    return err
