"""``normgrad check``: grade a learner's course-API normalization functions.

The learner's module (or notebook) defines some of ``batchnorm_forward``,
``batchnorm_backward``, ``batchnorm_backward_alt``, ``layernorm_forward``/``_backward``,
``spatial_batchnorm_forward``/``_backward``, ``spatial_groupnorm_forward``/``_backward``
(the course's API; docs/sources.md) and ``rmsnorm_forward``/``_backward``, which the
course does not have and normgrad defines in its style:

- ``rmsnorm_forward(x, gamma, rn_param) -> (out, cache)``: RMS norm of x of shape (N, D)
  over its last axis, ``out = gamma * x / sqrt(mean(x^2) + eps)``, gamma of shape (D,),
  no beta. ``rn_param.get("eps", 1e-5)`` is eps, the default the course's other layers use.
- ``rmsnorm_backward(dout, cache) -> (dx, dgamma)``.

Each forward is compared with the reference (the op of the table of ops it computes) on
several cases (shapes, random inputs, eps and momentum values, N = 1 or 2, D = 1, large
means or values, gamma with zeros), in train mode, its running statistics, and in test
mode; each backward is run *through the learner's own forward* (their cache is theirs).
A backward on a case where the learner's forward is wrong is reported as depending on it.

A wrong result is held against the known mistakes (:mod:`normgrad.learn.mistakes`), and
the closest is named when it matches. Right values in the wrong shape (``keepdims=True``)
are reported as such. Every learner call runs isolated (:mod:`normgrad.learn.isolation`):
fresh copies of everything it receives, a time limit, every exception caught; writing
into its inputs or cache is a finding. The result is a :class:`~normgrad.learn.report.Report`:
one verdict per function.

Every course year's API is accepted: spatial gamma/beta of shape (C,) or (1, C, 1, 1)
(the grader tries the other when the first does not work), ``bn_param`` read with ``[]``
or ``.get``, any cache type, files that import course siblings (imported by
:mod:`normgrad.learn.loading` with the package root on ``sys.path``, as the course
notebook does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from normgrad.core.layout import NormLayout
from normgrad.core.table import OpSpec, get_op
from normgrad.gradcheck import max_rel_error, within
from normgrad.learn import isolation, mistakes
from normgrad.learn.loading import DEFAULT_TIMEOUT, LearnerPath, UsageError, load_module
from normgrad.learn.report import FunctionReport, Report, Row, format_rows, name_mistake

#: A result passes at this normwise relative error (float64 implementations reach ~1e-12).
RTOL = 1e-7
#: A mistake is named when the learner's output matches it to rounding.
MATCH_RTOL = 1e-9


# --------------------------------------------------------------------------- families


@dataclass(frozen=True)
class Case:
    """One input to grade on.

    Attributes:
        name: shown in the report (``"N=1"``, ``"large mean"``).
        shape: x's shape.
        seed: seeds x, gamma, beta, dout and the running statistics.
        eps: passed in the course's param dict.
        momentum: passed in bn_param (varied, so that a forward that ignores it fails).
        mean: added to x (a large mean tests the centring's precision).
        scale: multiplies x (large or small values; small ones make eps matter).
        zero_gamma: every other gamma is 0.
        groups: the number of groups, for group norm.
    """

    name: str
    shape: tuple[int, ...]
    seed: int = 0
    eps: float = 1e-5
    momentum: float = 0.9
    mean: float = 0.0
    scale: float = 1.0
    zero_gamma: bool = False
    groups: int = 2


def _no_options(case: Case) -> dict:
    return {}


def _per_channel(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (shape[1],)


def _channel_bcast(shape: tuple[int, ...]) -> tuple[int, ...]:
    return (1, shape[1]) + (1,) * (len(shape) - 2)


_API_WORDS = {_per_channel: "(C,)", _channel_bcast: "(1, C, 1, 1)"}


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
        api_param_shapes: x's shape -> the shapes gamma (and beta) may be passed in, the
            usual one first (course years differ for the spatial layers).
        options: a case -> the op's axis keyword for it (``{"num_groups": 2}``).
        takes_groups: the forward takes the number of groups before its param dict.
    """

    forward: str
    backwards: tuple[str, ...]
    op: OpSpec
    cases: tuple[Case, ...]
    api_param_shapes: tuple[Callable[[tuple[int, ...]], tuple[int, ...]], ...]
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


def _bn_cases():
    return (
        Case("4x5", (4, 5)),
        Case("10x8", (10, 8), seed=1, momentum=0.7),
        Case("N=2", (2, 4), seed=2, momentum=0.95),
        Case("D=1", (6, 1), seed=3),
        Case("large mean", (8, 3), seed=4, mean=1e4, momentum=0.8),
        Case("gamma zeros", (5, 4), seed=5, zero_gamma=True, momentum=0.6),
        Case("eps=0.1", (6, 3), seed=6, eps=0.1),
    )


FAMILIES = {
    "batchnorm": Family(
        "batchnorm_forward",
        ("batchnorm_backward", "batchnorm_backward_alt"),
        get_op("batch_norm"),
        _bn_cases(),
        (_per_channel,),
    ),
    "layernorm": Family(
        "layernorm_forward",
        ("layernorm_backward",),
        get_op("layer_norm"),
        (
            Case("4x5", (4, 5)),
            Case("3x8", (3, 8), seed=1),
            Case("D=2", (5, 2), seed=2),
            Case("N=1", (1, 6), seed=3),
            Case("large mean", (4, 6), seed=4, mean=1e4),
            Case("gamma zeros", (4, 5), seed=5, zero_gamma=True),
            Case("eps=0.1", (4, 5), seed=6, eps=0.1),
        ),
        (_per_channel,),
    ),
    "spatial_batchnorm": Family(
        "spatial_batchnorm_forward",
        ("spatial_batchnorm_backward",),
        get_op("batch_norm"),
        (
            Case("2x3x4x5", (2, 3, 4, 5)),
            Case("N=2 1x1", (2, 3, 1, 1), seed=1, momentum=0.7),
            Case("C=1", (3, 1, 2, 3), seed=2, momentum=0.95),
            Case("large mean", (2, 2, 3, 3), seed=3, mean=1e4, momentum=0.8),
            Case("gamma zeros", (2, 4, 2, 3), seed=4, zero_gamma=True),
            Case("eps=0.1", (2, 3, 2, 4), seed=5, eps=0.1, momentum=0.6),
        ),
        (_per_channel, _channel_bcast),
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
            Case("gamma zeros", (1, 6, 2, 3), seed=4, zero_gamma=True, groups=3),
            Case("eps=0.1", (2, 4, 2, 3), seed=5, eps=0.1, groups=2),
        ),
        (_channel_bcast, _per_channel),
        options=lambda case: {"num_groups": case.groups},
        takes_groups=True,
    ),
    "rmsnorm": Family(
        "rmsnorm_forward",
        ("rmsnorm_backward",),
        get_op("rms_norm"),
        (
            Case("4x5", (4, 5)),
            Case("3x8", (3, 8), seed=1),
            Case("N=1", (1, 6), seed=2),
            Case("D=1", (5, 1), seed=3),
            Case("large values", (4, 6), seed=4, scale=1e4),
            Case("small values", (4, 6), seed=5, scale=1e-3),  # eps matters here
            Case("large mean", (4, 6), seed=6, mean=1e4),
            Case("gamma zeros", (4, 5), seed=7, zero_gamma=True),
            Case("eps=0.1", (4, 5), seed=8, eps=0.1),
        ),
        (_per_channel,),
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


# --------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """One case's inputs (gamma, beta and the running statistics flat, of the op's
    parameter size) and the reference's results for them. Read-only: the learner only
    ever gets copies."""

    x: np.ndarray
    gamma: np.ndarray
    beta: np.ndarray
    dout: np.ndarray
    running_mean: np.ndarray
    running_var: np.ndarray
    layout: NormLayout
    y: np.ndarray
    ref_cache: object
    grads: dict = field(default_factory=dict)
    y_test: np.ndarray | None = None  # test mode's output, for an op with running statistics


def make_inputs(case: Case, fam: Family) -> Inputs:
    """Seeded inputs for ``case`` and the reference's output and gradients."""
    rng = np.random.default_rng(case.seed)
    c = math.prod(fam.op.param_shape(case.shape, **fam.options(case)))
    x = case.mean + case.scale * rng.normal(0.5, 2.0, case.shape)
    gamma = rng.normal(1.0, 0.5, c)
    if case.zero_gamma:
        gamma[::2] = 0.0
    beta, dout = rng.normal(0.0, 1.0, c), rng.normal(0.0, 1.0, case.shape)
    running_mean, running_var = rng.normal(0.0, 1.0, c), rng.uniform(0.5, 2.0, c)
    y, ref_cache = fam.reference(x, gamma, beta, case)
    dx, dgamma, dbeta = fam.op.backward(dout, ref_cache)
    arrays = [x, gamma, beta, dout, running_mean, running_var, y]
    for a in arrays:
        a.setflags(write=False)
    layout = fam.layout(case.shape, case)
    grads = {"dx": dx, "dgamma": dgamma, "dbeta": dbeta}
    y_test = None
    if fam.op.running_stats:
        y_test, _ = fam.reference(
            x, gamma, beta, case, training=False,
            running_mean=running_mean.copy(), running_var=running_var.copy(),
        )  # fmt: skip
    return Inputs(*arrays[:6], layout, y, ref_cache, grads, y_test)


_INPUTS: dict[tuple[str, Case], Inputs] = {}


def _inputs(fam: Family, case: Case) -> Inputs:
    key = (fam.forward, case)
    if key not in _INPUTS:
        _INPUTS[key] = make_inputs(case, fam)
    return _INPUTS[key]


# --------------------------------------------------------------------------- comparing


def _worst(got: np.ndarray, expected: np.ndarray) -> tuple[str, str, str]:
    """Where the two differ most: (index, got there, expected there)."""
    idx = np.unravel_index(int(np.argmax(np.abs(got - expected))), got.shape)
    where = "[" + ", ".join(str(int(i)) for i in idx) + "]" if got.ndim else ""
    return where, f"{got[idx]:.6g}", f"{expected[idx]:.6g}"


def _as_array(name: str, value):
    """A learner's result as a float64 array; (None, why) when it is not one."""
    if value is None:
        return None, f"{name} is None"
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return None, f"{name} is not an array: got {type(value).__name__}"
    if not np.all(np.isfinite(arr)):
        return None, f"{name} contains {'NaN' if np.isnan(arr).any() else 'Inf'}"
    return arr, ""


def _shape_cause(got: tuple, want: tuple, key: str) -> str:
    if tuple(n for n in got if n != 1) == tuple(n for n in want if n != 1):
        if len(got) > len(want):
            return "likely keepdims=True in a sum or mean"
        if key.startswith("d"):
            return f"{key} must have the shape of what it is the gradient of: reshape it"
        return "reshape it"
    return "reshape it"


def _compare(key: str, value, expected: np.ndarray, atol_scale: float, by_value=False) -> Row:
    """One output against its expected value: pass, wrong values or wrong shape."""
    arr, why = _as_array(key, value)
    if arr is None:
        status = "not implemented" if value is None else "wrong values"
        return Row("", "", key, None, False, status, why, group=f"bad:{key}:{why}")
    atol = RTOL * atol_scale
    if by_value and arr.size == expected.size:
        arr = arr.reshape(expected.shape)
    if arr.shape != expected.shape:
        if arr.size == expected.size:
            flat = arr.reshape(expected.shape)
            if within(flat, expected, rtol=RTOL, atol=atol):
                cause = _shape_cause(arr.shape, expected.shape, key)
                msg = (
                    f"right values, wrong shape: {key} {arr.shape} returned, "
                    f"{expected.shape} expected ({cause})"
                )
                err = max_rel_error(flat, expected)
                return Row("", "", key, err, False, "wrong shape", msg, group=f"shape:{key}")
            if arr.ndim == 4 and within(arr.transpose(0, 3, 1, 2), expected, rtol=RTOL, atol=atol):
                msg = (
                    f"right values, wrong shape: {key} {arr.shape} returned in (N, H, W, C) "
                    f"order, {expected.shape} expected (transpose(0, 3, 1, 2) it back)"
                )
                return Row("", "", key, 0.0, False, "wrong shape", msg, group=f"shape:{key}")
        msg = f"{key} has shape {arr.shape}, expected {expected.shape}"
        row = Row("", "", key, None, False, "wrong shape", msg, group=f"shapes:{key}")
        row.value = arr
        return row
    err = max_rel_error(arr, expected)
    ok = within(arr, expected, rtol=RTOL, atol=atol)
    row = Row("", "", key, err, bool(ok), "pass" if ok else "wrong values")
    if not ok:
        row.index, row.got, row.expected = _worst(arr, expected)
        row.value = arr
    return row


def _match(value: np.ndarray, cand) -> float:
    cand = np.asarray(cand, dtype=np.float64)
    if value.shape != cand.shape:
        if value.size != cand.size:
            return np.inf
        value = value.reshape(cand.shape)
    return max_rel_error(value, cand)


def _diagnose(rows: list[Row], variants: Callable[[], dict[str, list[dict]]]) -> None:
    """Name the known mistakes whose outputs match the failing rows' values to rounding;
    ``variants`` is called only when there is something to diagnose. Every match is kept,
    in the catalogue's order (a case can be ambiguous: with G = C, grouping G channels
    is ignoring the groups); the report picks the one the function's other cases agree on."""
    failed = [r for r in rows if not r.passed and r.value is not None]
    if not failed:
        return
    matches = []
    for name, candidates in variants().items():
        if name in matches:
            continue
        for cand in candidates:
            if max(_match(r.value, cand[r.output]) for r in failed) <= MATCH_RTOL:
                matches.append(name)
                break
    for r in failed:
        if matches:
            r.candidates = matches
            name_mistake(r, matches[0])
            r.status = "wrong values"  # a mistake's values, whatever their shape
        elif r.status == "wrong values":
            r.diagnosis = f"{r.output}: matches none of the known mistakes"
            r.group = f"none:{r.output}"


def _also_wrong(rows: list[Row]) -> None:
    """On a case where one output has a named mistake, the outputs that match nothing are
    most likely its consequences (running statistics from the same wrong statistics)."""
    if any(r.mistake for r in rows):
        for r in rows:
            if r.group.startswith("none:"):
                r.diagnosis = f"{r.output} is wrong too, likely from the same mistake"
                r.group = f"also:{r.output}"


# --------------------------------------------------------------------------- grading


@dataclass
class _Learner:
    """The functions being graded and the files that are the learner's own."""

    functions: dict[str, Callable]
    files: frozenset[str]
    timeout: float
    timed_out: dict[str, str] = field(default_factory=dict)  # name -> its timeout message
    on_timeout: Callable[[str], None] | None = None  # told at once (the report comes later)

    def call(self, name: str, args: tuple) -> isolation.Outcome:
        """One call; a function that timed out once is not run again (each case would
        cost the whole time limit)."""
        if name in self.timed_out:
            return isolation.Outcome(None, "timed out", "not run again after it timed out")
        outcome = isolation.call(
            self.functions[name], args, name=name, files=self.files, timeout=self.timeout
        )
        if outcome.status == "timed out":
            self.timed_out[name] = outcome.message
            if self.on_timeout is not None:
                self.on_timeout(outcome.message)
        return outcome


def course_api(name: str) -> str:
    """How the course calls ``name``: ``"batchnorm_forward(x, gamma, beta, bn_param)"``."""
    fam = _family_of(name)
    if name != fam.forward:
        return f"{name}(dout, cache) -> ({', '.join(fam.grad_names)})"
    param = {"layernorm": "ln_param", "spatial_groupnorm": "gn_param", "rmsnorm": "rn_param"}
    key = next(k for k, f in FAMILIES.items() if f is fam)
    args = [
        "x",
        "gamma",
        *(["beta"] if fam.op.has_beta else []),
        *(["G"] if fam.takes_groups else []),
    ]
    return f"{name}({', '.join([*args, param.get(key, 'bn_param')])}) -> (out, cache)"


def _outcome_row(out: isolation.Outcome, output: str, name: str = "") -> Row:
    message = out.message
    if name and message.startswith(f"{name} raised TypeError") and " (at " not in message:
        message += f"; the course calls it as {course_api(name)}"  # it failed at the call
    group = f"{out.status}:{message.split(' (at ')[-1]}"
    return Row("", "", output, None, False, out.status, message, group=group)


def _unpack(value, names: tuple[str, ...], fn_name: str) -> tuple | str:
    """The learner's tuple, or a message saying what came back instead."""
    if isinstance(value, tuple | list) and len(value) == len(names):
        return tuple(value)
    got = f"a {type(value).__name__}"
    if isinstance(value, tuple | list):
        got += f" of {len(value)}"
    return f"{fn_name} returned {got}; expected ({', '.join(names)})"


def _all_none(value) -> bool:
    return value is None or (
        isinstance(value, tuple | list) and all(v is None for v in value) and len(value) > 0
    )


@dataclass
class _ForwardResult:
    rows: list[Row]
    cache: object = None  # the learner's cache, pristine (each backward gets a copy)
    has_cache: bool = False
    out_right: bool = False


class _FamilyGrader:
    """Grades one family's functions for one learner."""

    def __init__(self, fam: Family, learner: _Learner, notes: dict[str, list[str]]):
        self.fam, self.learner, self.notes = fam, learner, notes
        self.api = fam.api_param_shapes[0]

    def note(self, name: str, text: str) -> None:
        if text not in self.notes.setdefault(name, []):
            self.notes[name].append(text)

    # ---- forward

    def _param(self, case: Case, inp: Inputs, mode: str) -> dict:
        param = {"mode": mode, "eps": case.eps}
        if self.fam.op.running_stats:
            param |= {"momentum": case.momentum, "running_mean": inp.running_mean.copy()}
            param["running_var"] = inp.running_var.copy()
        return param

    def _call_forward(self, case: Case, inp: Inputs, mode: str, api=None):
        """The learner's forward on fresh copies: (its outcome, the param dict it was given)."""
        api = (api or self.api)(case.shape)
        args = [inp.x.copy(), inp.gamma.reshape(api).copy()]
        if self.fam.op.has_beta:
            args.append(inp.beta.reshape(api).copy())
        if self.fam.takes_groups:
            args.append(case.groups)
        param = self._param(case, inp, mode)
        outcome = self.learner.call(self.fam.forward, (*args, param))
        if outcome.printed:
            self.note(self.fam.forward, "prints while it runs (the output is not shown)")
        names = ("x", "gamma", "beta")
        originals = (inp.x, inp.gamma.reshape(api), inp.beta.reshape(api))
        for name, given, original in zip(names, args, originals, strict=False):
            if isinstance(given, np.ndarray) and not isolation.same(given, original):
                self.note(
                    self.fam.forward,
                    f"finding: writes into its argument {name} (the caller's array changes; "
                    f"compute a new array instead of {name} -= ... or {name} *= ...)",
                )
        return outcome, param

    def choose_api(self) -> None:
        """Spatial layers: pass gamma/beta in the shape the learner's forward works with.
        The usual shape is kept unless the other gives the right output where it does not,
        or an output of the right shape where it does not."""
        if len(self.fam.api_param_shapes) < 2:
            return
        case = self.fam.cases[0]
        inp = _inputs(self.fam, case)

        def score(api) -> int:  # 2: right values, 1: right shape, 0: neither
            outcome, _ = self._call_forward(case, inp, "train", api)
            pair = _unpack(outcome.value, ("out", "cache"), "") if outcome.ok else None
            if not isinstance(pair, tuple):
                return 0
            arr, _ = _as_array("out", pair[0])
            if arr is None or arr.shape != inp.y.shape:
                return 0
            return 2 if within(arr, inp.y, rtol=RTOL) else 1

        usual, other = self.fam.api_param_shapes[:2]
        first = score(usual)
        if first < 2 and score(other) > first:
            self.api = other
            self.note(
                self.fam.forward,
                f"takes gamma and beta of shape {_API_WORDS[other]} (another course year's "
                "shape); graded with those",
            )

    def forward(self, case: Case) -> _ForwardResult:
        fam, inp = self.fam, _inputs(self.fam, case)
        outcome, param = self._call_forward(case, inp, "train")
        if not outcome.ok:
            return _ForwardResult([self._row(case, _outcome_row(outcome, "out", fam.forward))])
        if _all_none(outcome.value):
            row = Row("", "", "out", None, False, "not implemented", f"{fam.forward} returns None")
            row.group = "not implemented"
            return _ForwardResult([self._row(case, row)])
        pair = _unpack(outcome.value, ("out", "cache"), fam.forward)
        if isinstance(pair, str):
            row = Row("", "", "out", None, False, "wrong values", pair, group=f"bad:{pair}")
            return _ForwardResult([self._row(case, row)])
        out, cache = pair
        row = self._row(case, _compare("out", out, inp.y, 0.0))
        x, beta = np.asarray(inp.x), inp.beta if fam.op.has_beta else None
        _diagnose(
            [row],
            lambda: {
                k: [{"out": v} for v in vs]
                for k, vs in mistakes.forward_variants(
                    inp.layout, x, inp.gamma, beta, case.eps
                ).items()
            },
        )
        if row.passed and case.mean and inp.layout.centered and row.error > 1e-13:
            naive = mistakes.naive_variance_forward(inp.layout, x, inp.gamma, beta, case.eps)
            if _match(np.asarray(out, dtype=np.float64), naive) < row.error / 10:
                self.note(
                    fam.forward,
                    f"note: {mistakes.NAIVE_VARIANCE} (case {case.name}: relative error "
                    f"{row.error:.0e})",
                )
        rows = [row]
        if fam.op.running_stats:
            rows += self._running(case, inp, param)
            rows += self._test_mode(case, inp)
        _also_wrong(rows)
        return _ForwardResult(rows, isolation.fresh(cache), True, row.passed)

    def _row(self, case: Case, row: Row, function: str | None = None) -> Row:
        row.function, row.case = function or self.fam.forward, case.name
        return row

    def _running(self, case: Case, inp: Inputs, param: dict) -> list[Row]:
        """The course's running statistics: momentum weights the old value, and the running
        variance is the biased batch variance (docs/design.md §8). Compared by value,
        whatever their shape."""
        c = inp.gamma.shape
        ref = inp.ref_cache
        batch_mean, biased, m = ref.mean.reshape(c), ref.var.reshape(c), case.momentum
        expected = {
            "running_mean": m * inp.running_mean + (1 - m) * batch_mean,
            "running_var": m * inp.running_var + (1 - m) * biased,
        }
        param = param if isinstance(param, dict) else {}
        rows = [
            self._row(case, _compare(k, param.get(k), expected[k], 0.0, by_value=True))
            for k in expected
        ]
        _diagnose(
            rows,
            lambda: mistakes.running_variants(
                inp.running_mean, inp.running_var, batch_mean, biased, ref.count, m, case.eps
            ),
        )
        return rows

    def _test_mode(self, case: Case, inp: Inputs) -> list[Row]:
        outcome, _ = self._call_forward(case, inp, "test")
        if not outcome.ok:
            return [self._row(case, _outcome_row(outcome, "out (test)", self.fam.forward))]
        pair = _unpack(outcome.value, ("out", "cache"), self.fam.forward)
        if isinstance(pair, str):
            row = Row("", "", "out (test)", None, False, "wrong values", pair, group=pair)
            return [self._row(case, row)]
        row = self._row(case, _compare("out (test)", pair[0], inp.y_test, 0.0))

        def variants():
            found = mistakes.test_mode_variants(
                inp.layout, np.asarray(inp.x), inp.gamma, inp.beta,
                inp.running_mean, inp.running_var, case.eps,
            )  # fmt: skip
            return {k: [{"out (test)": v} for v in vs] for k, vs in found.items()}

        _diagnose([row], variants)
        return [row]

    # ---- backward

    def backward(self, name: str, case: Case, fwd: _ForwardResult) -> list[Row]:
        fam, inp = self.fam, _inputs(self.fam, case)
        if not fwd.has_cache:
            row = Row("", "", "grads", None, False, "depends", f"{fam.forward} failed on this case")
            row.group = "depends"
            return [self._row(case, row, name)]
        dout = inp.dout.copy()
        cache = isolation.fresh(fwd.cache)
        outcome = self.learner.call(name, (dout, cache))
        if outcome.printed:
            self.note(name, "prints while it runs (the output is not shown)")
        if not isolation.same(dout, inp.dout):
            self.note(name, "finding: writes into its argument dout (the caller's array changes)")
        if cache is not fwd.cache and not isolation.same(cache, fwd.cache):
            self.note(
                name,
                "finding: writes into its cache (another backward, or a second call on the "
                "same cache, would get wrong values)",
            )
        if not outcome.ok:
            rows = [self._row(case, _outcome_row(outcome, "grads", name), name)]
        elif _all_none(outcome.value):
            row = Row("", "", "grads", None, False, "not implemented", f"{name} returns None")
            row.group = "not implemented"
            rows = [self._row(case, row, name)]
        else:
            result = _unpack(outcome.value, fam.grad_names, name)
            if isinstance(result, str):
                row = Row("", "", "grads", None, False, "wrong values", result, group=result)
                rows = [self._row(case, row, name)]
            else:
                rows = self._grade_grads(name, case, inp, result)
        if not fwd.out_right:
            for row in rows:
                if not row.passed:
                    row.status, row.group = "depends", "depends"
                    row.message = f"{fam.forward} is wrong on this case"
                    row.mistake = row.diagnosis = ""
        return rows

    def _grade_grads(self, name: str, case: Case, inp: Inputs, result: tuple) -> list[Row]:
        api = self.api(case.shape)
        expected = {"dx": inp.grads["dx"]}
        for key in self.fam.grad_names[1:]:
            expected[key] = inp.grads[key].reshape(api)
        # dx is a difference of terms of size |dout * gamma| / std, which can cancel (N = 2).
        ref = inp.ref_cache
        scale = float(np.max(np.abs(inp.dout)) * np.max(np.abs(inp.gamma)) * np.max(ref.inv_std))
        scales = {"dx": scale}
        rows = [
            self._row(case, _compare(k, v, expected[k], scales.get(k, 0.0)), name)
            for k, v in zip(self.fam.grad_names, result, strict=True)
        ]

        def variants():
            x, beta = np.asarray(inp.x), inp.beta if self.fam.op.has_beta else None
            found = mistakes.backward_variants(inp.layout, x, inp.gamma, beta, inp.dout, case.eps)
            out = {}
            for k, gs in found.items():
                out[k] = []
                for g in gs:
                    named = dict(zip(("dx", "dgamma", "dbeta"), g, strict=True))
                    out[k].append(
                        {
                            key: (
                                named[key].reshape(api)
                                if key != "dx" and named[key].shape == inp.layout.param_shape
                                else named[key]
                            )
                            for key in self.fam.grad_names
                        }
                    )
            return out

        _diagnose(rows, variants)
        return rows


def gradable_functions(ns: Mapping[str, object]) -> dict[str, Callable]:
    """The functions of ``ns`` (a module's or notebook's globals) the grader knows, by name."""
    return {n: ns[n] for n in GRADABLE if callable(ns.get(n))}


def _files_of(functions: Mapping[str, Callable], extra=()) -> frozenset[str]:
    files = set(extra)
    for fn in functions.values():
        code = getattr(fn, "__code__", None)
        if code is not None:
            files.add(code.co_filename)
    return frozenset(files)


def grade_functions(
    functions: Mapping[str, Callable],
    *,
    only: str | None = None,
    source: str = "",
    files: frozenset[str] = frozenset(),
    timeout: float = DEFAULT_TIMEOUT,
    on_timeout: Callable[[str], None] | None = None,
) -> Report:
    """Grade the gradable ``functions`` (name -> function), or just ``only``.

    ``files`` are the learner's own source files (tracebacks are trimmed to their lines);
    ``on_timeout`` is called with the message as soon as a call times out."""
    if not isinstance(timeout, int | float) or not timeout > 0:
        raise UsageError(f"timeout must be a positive number of seconds; got {timeout!r}")
    functions = {n: f for n, f in functions.items() if n in GRADABLE and callable(f)}
    where = source or "the given namespace"
    if only is not None:
        if only not in functions:
            raise UsageError(f"{where} does not define {only}")
        fam = _family_of(only)
        if only != fam.forward and fam.forward not in functions:
            raise UsageError(
                f"{only} is graded through the learner's {fam.forward}, which {where} "
                "does not define"
            )
        names = [only]
    else:
        if not functions:
            raise UsageError(
                f"{where} defines none of the functions the grader knows: {', '.join(GRADABLE)}"
            )
        names = list(functions)
    learner = _Learner(dict(functions), _files_of(functions, files), float(timeout))
    learner.on_timeout = on_timeout
    rows: list[Row] = []
    notes: dict[str, list[str]] = {}
    interrupted = False
    try:
        for fam in FAMILIES.values():
            wanted = [n for n in (fam.forward, *fam.backwards) if n in names]
            if wanted:
                rows += _grade_family(fam, wanted, learner, notes)
    except isolation.GradingInterrupted:
        interrupted = True
    reports = []
    for name in names:
        fam = _family_of(name)
        reports.append(
            FunctionReport.from_rows(
                name,
                [r for r in rows if r.function == name],
                notes.get(name, []),
                forward=fam.forward,
                n_cases=len(fam.cases),
            )
        )
    return Report(source, reports, interrupted=interrupted)


def _grade_family(fam: Family, wanted: list[str], learner: _Learner, notes) -> list[Row]:
    grader = _FamilyGrader(fam, learner, notes)
    rows: list[Row] = []
    if fam.forward not in learner.functions:
        for n in wanted:
            row = Row(n, "-", "-", None, False, "not graded", f"needs {fam.forward} for its cache")
            row.group = "not graded"
            rows.append(row)
        return rows
    grader.choose_api()
    for case in fam.cases:
        fwd = grader.forward(case)
        if fam.forward in wanted:
            rows += fwd.rows
        for n in wanted:
            if n != fam.forward:
                rows += grader.backward(n, case, fwd)
    return rows


def grade(
    path: Path | str,
    only: str | None = None,
    *,
    timeout: float = DEFAULT_TIMEOUT,
    on_timeout: Callable[[str], None] | None = None,
) -> Report:
    """Grade every gradable function the file ``path`` defines (or just ``only``); see
    :func:`grade_functions`."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    with LearnerPath(path) as pkg:
        module = load_module(path, timeout)
        functions = gradable_functions(vars(module))
        return grade_functions(
            functions, only=only, source=str(path), files=frozenset({str(pkg.path)}),
            timeout=timeout, on_timeout=on_timeout,
        )  # fmt: skip


__all__ = [
    "DEFAULT_TIMEOUT",
    "FAMILIES",
    "GRADABLE",
    "Report",
    "Row",
    "UsageError",
    "course_api",
    "format_rows",
    "grade",
    "grade_functions",
    "parse_target",
]
