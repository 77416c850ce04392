"""``normgrad check``: grade a learner's course-API normalization functions.

The learner's module defines some of ``batchnorm_forward``, ``batchnorm_backward``,
``batchnorm_backward_alt``, ``layernorm_forward``/``_backward``,
``spatial_batchnorm_forward``/``_backward``, ``spatial_groupnorm_forward``/``_backward``
(the course's API; docs/sources.md) and ``rmsnorm_forward``/``_backward``, which the
course does not have and normgrad defines in its style:

- ``rmsnorm_forward(x, gamma, rn_param) -> (out, cache)``: RMS norm of x of shape (N, D)
  over its last axis, ``out = gamma * x / sqrt(mean(x^2) + eps)``, gamma of shape (D,),
  no beta. ``rn_param`` is a dict; ``rn_param.get("eps", 1e-5)`` is eps, the default the
  course's other layers use. (normgrad's own ``rms_norm_forward`` defaults to the machine
  epsilon, as PyTorch does; the grader always passes eps, so the default is not graded.)
- ``rmsnorm_backward(dout, cache) -> (dx, dgamma)``.

Each forward is compared with the reference (the op of the table of ops it computes) on
several cases (shapes, random inputs, eps values, N = 1 or 2, D = 1, large means or
values, gamma with zeros), and each backward is run *through the learner's own forward*
(their cache is theirs) and compared with the reference gradients.

A wrong result is held against the known mistakes (:mod:`normgrad.learn.mistakes`), and the
closest is named when it matches. A function that raises, returns the wrong shapes or
returns NaN gets one clear line with its traceback trimmed to the learner's file; the
grader itself does not crash.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
import textwrap
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from normgrad.core.layout import NormLayout
from normgrad.core.table import OpSpec, get_op
from normgrad.gradcheck import max_rel_error, within
from normgrad.learn import mistakes

#: A result passes at this normwise relative error (float64 implementations reach ~1e-12).
RTOL = 1e-7
#: A mistake is named when the learner's output matches it to rounding.
MATCH_RTOL = 1e-9


class UsageError(Exception):
    """Bad command-line input: a one-line message, exit code 2."""


# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Case:
    """One input to grade on.

    Attributes:
        name: shown in the report (``"N=1"``, ``"large mean"``).
        shape: x's shape.
        seed: seeds x, gamma, beta, dout and the running statistics.
        eps: passed in the course's param dict.
        mean: added to x (a large mean tests the centring's precision).
        scale: multiplies x (large or small values; small ones make eps matter).
        zero_gamma: every other gamma is 0.
        groups: the number of groups, for group norm.
    """

    name: str
    shape: tuple[int, ...]
    seed: int = 0
    eps: float = 1e-5
    mean: float = 0.0
    scale: float = 1.0
    zero_gamma: bool = False
    groups: int = 2


def _no_options(case: Case) -> dict:
    return {}


@dataclass(frozen=True)
class Family:
    """A forward function of the course's API and its backward(s), with the op of the table
    they compute (the reference) and how the course calls them.

    Attributes:
        forward: the forward's name, e.g. ``"batchnorm_forward"``.
        backwards: the backwards graded through that forward.
        op: the table's entry the family computes; its ``has_beta`` says whether the course
            passes beta and returns dbeta, its ``running_stats`` whether the param dict
            carries running statistics and a test mode.
        cases: the inputs to grade on.
        api_param_shape: x's shape -> the shape gamma (and beta) are passed in.
        options: a case -> the op's axis keyword for it (``{"num_groups": 2}``).
        takes_groups: the forward takes the number of groups before its param dict.
    """

    forward: str
    backwards: tuple[str, ...]
    op: OpSpec
    cases: tuple[Case, ...]
    api_param_shape: Callable[[tuple[int, ...]], tuple[int, ...]]
    options: Callable[[Case], dict] = _no_options
    takes_groups: bool = False

    @property
    def grad_names(self) -> tuple[str, ...]:
        """What the backward returns: ``(dx, dgamma, dbeta)``, or ``(dx, dgamma)``."""
        return ("dx", "dgamma", "dbeta") if self.op.has_beta else ("dx", "dgamma")

    def layout(self, shape: tuple[int, ...], case: Case) -> NormLayout:
        return self.op.layout(shape, **self.options(case))

    def reference(self, x, gamma, beta, case: Case, **kwargs):
        """The library's ``(y, cache)`` on the NumPy backend (beta ignored without a shift)."""
        beta = beta if self.op.has_beta else None
        return self.op.forward(
            x, gamma, beta, eps=case.eps, backend="numpy", **self.options(case), **kwargs
        )

    def call_forward(self, fn, x, gamma, beta, case: Case, param: dict):
        api = self.api_param_shape(x.shape)
        args = [x, gamma.reshape(api)]
        if self.op.has_beta:
            args.append(beta.reshape(api))
        if self.takes_groups:
            args.append(case.groups)
        return fn(*args, param)


def _bn_cases():
    return (
        Case("4x5", (4, 5)),
        Case("10x8 seed 1", (10, 8), seed=1),
        Case("N=2", (2, 4), seed=2),
        Case("D=1", (6, 1), seed=3),
        Case("large mean", (8, 3), seed=4, mean=1e4),
        Case("gamma zeros", (5, 4), seed=5, zero_gamma=True),
        Case("eps=0.1", (6, 3), seed=6, eps=0.1),
    )


def _per_channel(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[1],)


FAMILIES = {
    "batchnorm": Family(
        "batchnorm_forward",
        ("batchnorm_backward", "batchnorm_backward_alt"),
        get_op("batch_norm"),
        _bn_cases(),
        _per_channel,
    ),
    "layernorm": Family(
        "layernorm_forward",
        ("layernorm_backward",),
        get_op("layer_norm"),
        (
            Case("4x5", (4, 5)),
            Case("3x8 seed 1", (3, 8), seed=1),
            Case("D=2", (5, 2), seed=2),
            Case("N=1", (1, 6), seed=3),
            Case("large mean", (4, 6), seed=4, mean=1e4),
            Case("gamma zeros", (4, 5), seed=5, zero_gamma=True),
            Case("eps=0.1", (4, 5), seed=6, eps=0.1),
        ),
        _per_channel,
    ),
    "spatial_batchnorm": Family(
        "spatial_batchnorm_forward",
        ("spatial_batchnorm_backward",),
        get_op("batch_norm"),
        (
            Case("2x3x4x5", (2, 3, 4, 5)),
            Case("N=2 1x1", (2, 3, 1, 1), seed=1),
            Case("C=1", (3, 1, 2, 3), seed=2),
            Case("large mean", (2, 2, 3, 3), seed=3, mean=1e4),
            Case("gamma zeros", (2, 4, 2, 2), seed=4, zero_gamma=True),
            Case("eps=0.1", (2, 3, 2, 2), seed=5, eps=0.1),
        ),
        _per_channel,
    ),
    "spatial_groupnorm": Family(
        "spatial_groupnorm_forward",
        ("spatial_groupnorm_backward",),
        get_op("group_norm"),
        (
            Case("2x6x4x5 G=2", (2, 6, 4, 5), groups=2),
            Case("G=1", (2, 4, 2, 3), seed=1, groups=1),
            Case("G=C", (2, 4, 2, 3), seed=2, groups=4),
            Case("large mean", (2, 4, 3, 3), seed=3, mean=1e4, groups=2),
            Case("gamma zeros", (1, 6, 2, 2), seed=4, zero_gamma=True, groups=3),
            Case("eps=0.1", (2, 4, 2, 2), seed=5, eps=0.1, groups=2),
        ),
        lambda shape: (1, shape[1], 1, 1),
        options=lambda case: {"num_groups": case.groups},
        takes_groups=True,
    ),
    "rmsnorm": Family(
        "rmsnorm_forward",
        ("rmsnorm_backward",),
        get_op("rms_norm"),
        (
            Case("4x5", (4, 5)),
            Case("3x8 seed 1", (3, 8), seed=1),
            Case("N=1", (1, 6), seed=2),
            Case("D=1", (5, 1), seed=3),
            Case("large values", (4, 6), seed=4, scale=1e4),
            Case("small values", (4, 6), seed=5, scale=1e-3),  # eps matters here
            Case("large mean", (4, 6), seed=6, mean=1e4),
            Case("gamma zeros", (4, 5), seed=7, zero_gamma=True),
            Case("eps=0.1", (4, 5), seed=8, eps=0.1),
        ),
        _per_channel,
    ),
}

GRADABLE = tuple(name for fam in FAMILIES.values() for name in (fam.forward, *fam.backwards))


def _family_of(name: str) -> Family:
    return next(f for f in FAMILIES.values() if name == f.forward or name in f.backwards)


# --------------------------------------------------------------------------- loading


def parse_target(target: str) -> tuple[Path, str | None]:
    """``FILE.py`` or ``FILE.py:NAME`` -> (path, name or None)."""
    path, sep, name = target.rpartition(":") if ":" in target else (target, "", "")
    if not sep:
        return Path(target), None
    if not path or not name.isidentifier():
        raise UsageError(f"malformed target {target!r}: expected FILE.py or FILE.py:NAME")
    if name not in GRADABLE:
        raise UsageError(
            f"{name!r} is not a function the grader knows; one of: {', '.join(GRADABLE)}"
        )
    return Path(path), name


def load_module(path: Path):
    """Import the learner's file as a module; any failure is a UsageError with one line."""
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    spec = importlib.util.spec_from_file_location(f"_normgrad_learner_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise UsageError(f"cannot import {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(path.resolve().parent))  # let it import its neighbours
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise UsageError(f"{path} does not parse: {exc.msg} (line {exc.lineno})") from None
    except BaseException as exc:
        where = _learner_frames(exc, path)
        raise UsageError(f"{path} failed to import: {type(exc).__name__}: {exc}{where}") from None
    finally:
        sys.path.remove(str(path.resolve().parent))
    return module


def _learner_frames(exc: BaseException, path: Path) -> str:
    """The learner's own lines of a traceback, e.g. ' (at student.py:12: dx = ...)'."""
    frames = [
        f
        for f in traceback.extract_tb(exc.__traceback__)
        if Path(f.filename).resolve() == path.resolve()
    ]
    if not frames:
        return ""
    f = frames[-1]
    return f" (at {path.name}:{f.lineno}: {f.line})" if f.line else f" (at {path.name}:{f.lineno})"


# --------------------------------------------------------------------------- grading


@dataclass
class Row:
    function: str
    case: str
    output: str
    error: float | None
    passed: bool
    message: str = ""  # what went wrong, one line
    diagnosis: str = ""  # the mistake it looks like
    mistake: str = ""  # its short name, for autograders

    def to_json(self) -> dict:
        d = asdict(self)
        if d["error"] is not None and not np.isfinite(d["error"]):
            d["error"] = None
        return d


@dataclass
class Inputs:
    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    dout: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray


def make_inputs(case: Case, fam: Family) -> Inputs:
    """Seeded inputs for ``case``; gamma, beta and the running statistics are flat, of the
    op's parameter size (reshaped to the course's shape when the learner is called)."""
    rng = np.random.default_rng(case.seed)
    c = math.prod(fam.op.param_shape(case.shape, **fam.options(case)))
    x = case.mean + case.scale * rng.normal(0.5, 2.0, case.shape)
    gamma = rng.normal(1.0, 0.5, c)
    if case.zero_gamma:
        gamma[::2] = 0.0
    return Inputs(
        x,
        gamma,
        rng.normal(0.0, 1.0, c),
        rng.normal(0.0, 1.0, case.shape),
        rng.normal(0.0, 1.0, c),
        rng.uniform(0.5, 2.0, c),
    )


class LearnerFailed(Exception):
    """The learner's function raised or returned something unusable; the message says so."""


def _call(fn, name: str, path: Path, *args):
    try:
        return fn(*args)
    except Exception as exc:
        raise LearnerFailed(
            f"{name} raised {type(exc).__name__}: {exc}{_learner_frames(exc, path)}"
        ) from None


def _as_array(name: str, value) -> np.ndarray:
    """A learner's result as a finite float64 array, or a LearnerFailed saying why not."""
    if value is None:
        raise LearnerFailed(f"{name} is None")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise LearnerFailed(f"{name} is not an array: got {type(value).__name__}") from None
    if not np.all(np.isfinite(arr)):
        bad = "NaN" if np.isnan(arr).any() else "Inf"
        raise LearnerFailed(f"{name} contains {bad}")
    return arr


def _check_array(name: str, value, shape: tuple[int, ...]) -> np.ndarray:
    arr = _as_array(name, value)
    if arr.shape != shape:
        raise LearnerFailed(f"{name} has shape {arr.shape}, expected {shape}")
    return arr


def _unpack(value, names: tuple[str, ...], fn_name: str):
    if not isinstance(value, tuple | list) or len(value) != len(names):
        got = f"a {type(value).__name__}"
        if isinstance(value, tuple | list):
            got += f" of {len(value)}"
        raise LearnerFailed(f"{fn_name} returned {got}; expected ({', '.join(names)})")
    return value


def _run_forward(fam: Family, fn, path: Path, case: Case, inp: Inputs, param: dict):
    """The learner's ``(out, cache)`` on a copy of x; LearnerFailed if unusable."""
    x = inp.x.copy()  # the learner may scribble over its input
    result = _call(fam.call_forward, fam.forward, path, fn, x, inp.gamma, inp.beta, case, param)
    out, cache = _unpack(result, ("out", "cache"), fam.forward)
    return _check_array("out", out, inp.x.shape), cache


def _diagnose(actual: dict[str, np.ndarray], variants: dict[str, list]) -> tuple[str, str]:
    """Name the known mistake whose outputs match ``actual`` best, if one matches."""
    best = (np.inf, "")
    for name, candidates in variants.items():
        for cand in candidates:
            errs = []
            for key, value in actual.items():
                expected = cand[key]
                errs.append(
                    np.inf
                    if np.shape(value) != np.shape(expected)
                    else max_rel_error(value, expected)
                )
            err = max(errs)
            if err < best[0]:
                best = (err, name)
    err, name = best
    if name and err <= MATCH_RTOL:
        return name, f"looks like {mistakes.MISTAKES[name].description} (matches to {err:.0e})"
    return "", "matches none of the known mistakes"


def _grade_values(function, case, outputs: dict, expected: dict, variants, scales) -> list[Row]:
    """One row per output; a failing row is diagnosed against the variants."""
    rows = []
    failed = {}
    for key, value in outputs.items():
        err = (
            max_rel_error(value, expected[key])
            if np.shape(value) == np.shape(expected[key])
            else np.inf
        )
        ok = np.isfinite(err) and within(
            value, expected[key], rtol=RTOL, atol=RTOL * scales.get(key, 0.0)
        )
        rows.append(Row(function, case.name, key, err, bool(ok)))
        if not ok:
            failed[key] = value
    if failed and variants:
        mistake, text = _diagnose(failed, variants)
        for row in rows:
            if not row.passed:
                row.mistake, row.diagnosis = mistake, text
    return rows


def _reshape_params(grads, fam: Family, layout: NormLayout) -> dict[str, np.ndarray]:
    """``(dx, dgamma[, dbeta])`` by name, only those the family's backward returns, with
    the parameter gradients in the API's shape. A mistake's unsummed gradient (x's shape)
    keeps its shape, even where its size is the parameters' (N = 1)."""
    api = fam.api_param_shape(layout.x_shape)

    def fit(a):
        return a.reshape(api) if a.shape == layout.param_shape else a

    named = dict(zip(("dx", "dgamma", "dbeta"), grads, strict=True))
    return {k: named[k] if k == "dx" else fit(named[k]) for k in fam.grad_names}


def grade_forward(fam: Family, fn, path: Path, case: Case) -> tuple[list[Row], object]:
    """Rows for one forward case, and the learner's cache (None if it failed)."""
    inp = make_inputs(case, fam)
    x = inp.x
    beta = inp.beta if fam.op.has_beta else None
    layout = fam.layout(x.shape, case)
    param = {"mode": "train", "eps": case.eps}
    if fam.op.running_stats:
        param |= {"momentum": 0.9, "running_mean": inp.running_mean.copy()}
        param["running_var"] = inp.running_var.copy()
    try:
        out, cache = _run_forward(fam, fn, path, case, inp, param)
    except LearnerFailed as exc:
        return [Row(fam.forward, case.name, "out", None, False, str(exc))], None
    y, ref_cache = fam.reference(x, inp.gamma, beta, case)
    variants = mistakes.forward_variants(layout, x, inp.gamma, beta, case.eps)
    variants = {name: [{"out": v} for v in outs] for name, outs in variants.items()}
    rows = _grade_values(fam.forward, case, {"out": out}, {"out": y}, variants, {})
    if fam.op.running_stats:
        rows += _grade_running(fam, case, param, inp, ref_cache)
        rows += _grade_test_mode(fam, fn, path, case, inp)
    return rows, cache


def _grade_running(fam, case, param, inp: Inputs, ref_cache) -> list[Row]:
    """The course's running statistics: momentum weights the old value, and the running
    variance is the biased batch variance (docs/design.md §8)."""
    c = inp.gamma.shape
    batch_mean = ref_cache.mean.reshape(c)
    biased = ref_cache.var.reshape(c)
    unbiased = biased * ref_cache.count / max(ref_cache.count - 1, 1)
    m = 0.9
    expected = {
        "running_mean": m * inp.running_mean + (1 - m) * batch_mean,
        "running_var": m * inp.running_var + (1 - m) * biased,
    }
    variants = {
        "momentum_reversed": [
            {
                "running_mean": (1 - m) * inp.running_mean + m * batch_mean,
                "running_var": (1 - m) * inp.running_var + m * biased,
            }
        ],
        "unbiased_running_var": [
            {
                "running_mean": expected["running_mean"],
                "running_var": m * inp.running_var + (1 - m) * unbiased,
            }
        ],
    }
    try:
        got = {k: _check_array(f"bn_param[{k!r}]", param.get(k), c) for k in expected}
    except LearnerFailed as exc:
        return [Row(fam.forward, case.name, "running stats", None, False, str(exc))]
    return _grade_values(fam.forward, case, got, expected, variants, {})


def _grade_test_mode(fam, fn, path, case, inp: Inputs) -> list[Row]:
    param = {"mode": "test", "eps": case.eps, "running_mean": inp.running_mean.copy()}
    param["running_var"] = inp.running_var.copy()
    try:
        out, _ = _run_forward(fam, fn, path, case, inp, param)
    except LearnerFailed as exc:
        return [Row(fam.forward, case.name, "out (test)", None, False, str(exc))]
    y, _ = fam.reference(
        inp.x, inp.gamma, inp.beta, case, training=False,
        running_mean=inp.running_mean.copy(), running_var=inp.running_var.copy(),
    )  # fmt: skip
    return _grade_values(fam.forward, case, {"out (test)": out}, {"out (test)": y}, {}, {})


def grade_backward(fam: Family, name: str, fn, path: Path, case: Case, cache) -> list[Row]:
    inp = make_inputs(case, fam)
    x, dout = inp.x, inp.dout
    beta = inp.beta if fam.op.has_beta else None
    layout = fam.layout(x.shape, case)
    try:
        result = _unpack(_call(fn, name, path, dout.copy(), cache), fam.grad_names, name)
        # A wrongly shaped dgamma/dbeta is graded (and diagnosed), not refused.
        got = {"dx": _check_array("dx", result[0], x.shape)}
        for key, value in zip(fam.grad_names[1:], result[1:], strict=True):
            got[key] = _as_array(key, value)
    except LearnerFailed as exc:
        return [Row(name, case.name, "grads", None, False, str(exc))]
    _, ref_cache = fam.reference(x, inp.gamma, beta, case)
    expected = _reshape_params(fam.op.backward(dout, ref_cache), fam, layout)
    variants = {
        k: [_reshape_params(g, fam, layout) for g in gs]
        for k, gs in mistakes.backward_variants(layout, x, inp.gamma, beta, dout, case.eps).items()
    }
    # dx is a difference of terms of size |dout * gamma| / std, which can cancel (N = 2).
    scale = float(np.max(np.abs(dout)) * np.max(np.abs(inp.gamma)) * np.max(ref_cache.inv_std))
    rows = _grade_values(name, case, got, expected, variants, {"dx": scale})
    for row in rows:  # a wrongly shaped dgamma/dbeta says so, even when it is diagnosed
        have, want = np.shape(got[row.output]), np.shape(expected[row.output])
        if have != want:
            row.message = f"{row.output} has shape {have}, expected {want}"
    return rows


def grade(path: Path, only: str | None = None) -> list[Row]:
    """Grade every gradable function ``path`` defines (or just ``only``)."""
    module = load_module(path)
    defined = [n for n in GRADABLE if callable(getattr(module, n, None))]
    if only is not None:
        if only not in defined:
            raise UsageError(f"{path} does not define {only}")
        fam = _family_of(only)
        if only != fam.forward and fam.forward not in defined:
            raise UsageError(
                f"{only} is graded through the learner's {fam.forward}, "
                f"which {path} does not define"
            )
        names = [only]
    else:
        if not defined:
            raise UsageError(
                f"{path} defines none of the functions the grader knows: {', '.join(GRADABLE)}"
            )
        names = defined
    rows: list[Row] = []
    for fam in FAMILIES.values():
        wanted = [n for n in (fam.forward, *fam.backwards) if n in names]
        if not wanted:
            continue
        forward = getattr(module, fam.forward, None)
        for case in fam.cases:
            if forward is None:
                for n in wanted:
                    rows.append(
                        Row(
                            n,
                            case.name,
                            "-",
                            None,
                            False,
                            f"needs {fam.forward} for its cache, which is not defined",
                        )
                    )
                continue
            fwd_rows, cache = grade_forward(fam, forward, path, case)
            if fam.forward in wanted:
                rows += fwd_rows
            for n in wanted:
                if n == fam.forward:
                    continue
                if cache is None:
                    rows.append(
                        Row(
                            n,
                            case.name,
                            "-",
                            None,
                            False,
                            f"skipped: {fam.forward} failed on this case",
                        )
                    )
                    continue
                rows += grade_backward(fam, n, getattr(module, n), path, case, cache)
    return rows


# --------------------------------------------------------------------------- report


def format_rows(rows: list[Row]) -> str:
    """The table: passing outputs of one (function, case) share a line; failures get their own,
    followed by what went wrong and the mistake it looks like."""
    head = f"{'function':<28}{'case':<13}{'output':<20}{'rel error':>10}  result"
    lines = [head, "-" * len(head)]

    def err_text(e):
        return "-" if e is None else ("inf" if not np.isfinite(e) else f"{e:.1e}")

    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.function, r.case), []).append(r)
    for (function, case), group in groups.items():
        passing = [r for r in group if r.passed]
        if passing:
            outputs = "all" if len(passing) == len(group) else " ".join(r.output for r in passing)
            worst = max(r.error for r in passing)
            lines.append(f"{function:<28}{case:<13}{outputs:<20}{err_text(worst):>10}  pass")
        notes: list[str] = []  # said once per (function, case), under its failures
        for r in group:
            if r.passed:
                continue
            lines.append(f"{function:<28}{case:<13}{r.output:<20}{err_text(r.error):>10}  FAIL")
            notes += [t for t in (r.message, r.diagnosis) if t and t not in notes]
        for text in notes:
            lines.append(
                textwrap.fill(text, 79, initial_indent="    -> ", subsequent_indent=" " * 7)
            )
    failed = sum(not r.passed for r in rows)
    lines += ["", f"{len(rows) - failed} passed, {failed} failed"]
    return "\n".join(lines)


def rows_to_json(rows: list[Row]) -> str:
    return json.dumps([r.to_json() for r in rows], indent=2)


__all__ = ["FAMILIES", "GRADABLE", "Row", "UsageError", "format_rows", "grade", "parse_target"]
