"""``normgrad verify``: every op and layout, each derivation held against the others.

For each case (op, layout, shape, variance convention, train/eval), over every op of the
table (:mod:`normgrad.core.table`), it runs the forward pass, then compares

- ``staged``: the staged backward (docs/design.md §3) against the closed form (§4, §6),
- ``numeric``: the closed form against central differences (:mod:`normgrad.gradcheck`),
- ``torch y`` / ``torch grad``: the forward output and the gradients against PyTorch's
  autograd (:mod:`normgrad.reference.pytorch`), when torch is installed,

as normwise relative errors (``max|a - b| / max|b|``), float64. Then the second
derivatives (:mod:`normgrad.core.double_backward`) against central differences of the
backward, the autodiff engine differentiating its own backward, and PyTorch's double
backward; the three published derivations (:mod:`normgrad.reference.writeups`) against
the library; and the precision claims (large means, float16; §10). Every number printed
is computed in this run; a row fails when an error exceeds its tolerance.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

import normgrad as ng
from normgrad.core.table import OpSpec, get_op
from normgrad.gradcheck import check_gradients, max_rel_error
from normgrad.reference import writeups
from normgrad.reference.pytorch import double_backward_reference, reference, torch_available
from normgrad.tools.table import Column, Table

#: Tolerances for float64 results (normwise relative error).
TOL_STAGED = 1e-10
TOL_NUMERIC = 1e-7
TOL_TORCH = 1e-12
#: Second derivatives against central differences of the backward (the issue's bound).
TOL_SECOND_NUMERIC = 1e-8
#: Where PyTorch 2.13 (CPU, float64) cannot take the double backward at all: a shift
#: without a scale (weight=None, bias given). Layer norm's matches pytorch/pytorch#79705
#: (open: "gradgradcheck fails for torch.native_layer_norm" with weight=None and a bias);
#: group norm's first backward already fails ("tensor does not have a device"), with or
#: without create_graph; no PyTorch issue about it was found.
PYTORCH_FAILS = {
    "layer_norm": "pytorch/pytorch#79705",
    "group_norm": "its first backward fails too; no PyTorch issue found",
}


@dataclass(frozen=True)
class Case:
    """One op/layout/convention to verify."""

    op: str
    layout: str
    shape: tuple[int, ...]
    variance: str = "biased"  # or "bessel" (ops that allow it)
    mode: str = "train"  # or "eval" (ops with running statistics)
    affine: bool = True
    options: dict = field(default_factory=dict)  # channel_axis / normalized_ndim / num_groups

    @property
    def spec(self) -> OpSpec:
        return get_op(self.op)


def cases() -> list[Case]:
    bn, ln, gn, inorm, rms = "batch_norm", "layer_norm", "group_norm", "instance_norm", "rms_norm"
    last = {"channel_axis": -1}
    return [
        Case(bn, "(N, D)", (8, 5)),
        Case(bn, "(N, D)", (8, 5), variance="bessel"),
        Case(bn, "(N, D)", (8, 5), mode="eval"),
        Case(bn, "(N, D) no affine", (8, 5), affine=False),
        Case(bn, "(N, C, L)", (4, 3, 5)),
        Case(bn, "(N, C, H, W)", (2, 3, 4, 4)),
        Case(bn, "(N, C, H, W)", (2, 3, 4, 4), mode="eval"),
        Case(bn, "(N, C, D, H, W)", (2, 2, 3, 2, 2)),
        Case(bn, "(N, L, C)", (4, 5, 3), options=last),
        Case(bn, "(N, H, W, C)", (2, 4, 4, 3), options=last),
        Case(bn, "(N, H, W, C)", (2, 4, 4, 3), variance="bessel", options=last),
        Case(ln, "(N, D)", (5, 6)),
        Case(ln, "(N, D)", (5, 6), variance="bessel"),
        Case(ln, "(N, C, H, W) / 3", (2, 3, 2, 2), options={"normalized_ndim": 3}),
        Case(gn, "(N, C, H, W) G=3", (2, 6, 3, 3), options={"num_groups": 3}),
        Case(gn, "(N, C, H, W) G=3", (2, 6, 3, 3), variance="bessel", options={"num_groups": 3}),
        Case(gn, "(N, C, H, W) G=1", (2, 4, 2, 3), options={"num_groups": 1}),
        Case(gn, "(N, C, L) G=C", (3, 4, 5), options={"num_groups": 4}),
        Case(inorm, "(N, C, L)", (3, 2, 5)),
        Case(inorm, "(N, C, H, W)", (2, 3, 4, 4)),
        Case(inorm, "(N, C, H, W)", (2, 3, 4, 4), variance="bessel"),
        Case(rms, "(N, D)", (5, 6)),
        Case(rms, "(N, D) no affine", (5, 6), affine=False),
        Case(rms, "(N, L, D)", (3, 4, 6)),
        Case(rms, "(N, C, H, W) / 3", (2, 3, 2, 2), options={"normalized_ndim": 3}),
    ]


@dataclass
class Row:
    """A line of the report: named errors with their tolerances."""

    section: str
    label: str
    errors: dict[str, tuple[float, float]]  # name -> (error, tolerance)
    note: str = ""
    #: True for a negative control: the row passes only if every error *exceeds* its bound.
    expect_mismatch: bool = False

    def ok(self, err: float, tol: float) -> bool:
        return err > tol if self.expect_mismatch else err <= tol

    @property
    def passed(self) -> bool:
        return all(self.ok(err, tol) for err, tol in self.errors.values())


def _worst(ours, theirs) -> float:
    """The largest error over the gradients both sides have (None: no such parameter)."""
    return max(max_rel_error(a, b) for a, b in zip(ours, theirs, strict=True) if a is not None)


def run_case(case: Case, rng: np.random.Generator, use_torch: bool) -> Row:
    spec = case.spec
    x = rng.standard_normal(case.shape) * 1.5 + 0.5
    p = spec.param_shape(case.shape, **case.options)
    gamma = rng.standard_normal(p) + 1.0 if case.affine else None
    beta = rng.standard_normal(p) if case.affine and spec.has_beta else None
    dy = rng.standard_normal(case.shape)
    kw = dict(case.options, bessel=case.variance == "bessel")
    if case.mode == "eval":
        kw |= {"training": False, "running_mean": rng.standard_normal(p)}
        kw["running_var"] = rng.uniform(0.5, 2.0, p)

    def f(x, gamma, beta):
        return spec.forward(x, gamma, beta, **kw)[0]

    y, cache = spec.forward(x, gamma, beta, **kw)
    grads = spec.backward(dy, cache)
    errors = {"staged": (_worst(spec.backward_staged(dy, cache), grads), TOL_STAGED)}
    results = check_gradients(
        f,
        {"x": x, "gamma": gamma, "beta": beta},
        dy,
        dict(zip(("x", "gamma", "beta"), grads, strict=True)),
        rtol=TOL_NUMERIC,
        raise_on_failure=False,
    )
    errors["numeric"] = (max(r.max_rel_error for r in results), TOL_NUMERIC)
    if use_torch:
        # PyTorch updates running statistics in place: it gets copies.
        ref_kw = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in kw.items()}
        ty, *tgrads = reference(spec, x, gamma, beta, dy, **ref_kw)
        errors["torch y"] = (max_rel_error(y, ty), TOL_TORCH)
        errors["torch grad"] = (_worst(grads, tgrads), TOL_TORCH)
    variance = case.variance if spec.bessel_allowed else "-"
    mode = case.mode if spec.running_stats else "-"
    label = f"{case.op:<13} {case.layout:<18} {variance:<6} {mode:<5}"
    return Row("ops", label, errors)


def second_derivative_rows(rng: np.random.Generator, use_torch: bool) -> list[Row]:
    """The double backward of each op (one case per op, Bessel, eval mode, no affine):
    ``numeric`` differentiates the closed-form backward by central differences, ``autodiff``
    runs the engine's backward with ``create_graph=True`` and differentiates it again, and
    ``torch`` is ``torch.autograd.grad`` of PyTorch's own first backward. A disagreement
    with PyTorch fails the row and says so."""
    from normgrad.autodiff import Tensor, norm

    picked = [(c, True) for c in cases() if c.layout in ("(N, D)", "(N, C, H, W)",
              "(N, H, W, C)", "(N, C, H, W) G=3", "(N, C, L)", "(N, D) no affine")]  # fmt: skip
    # A shift without a scale: PyTorch's layer and group norm fail there (see PYTORCH_FAILS).
    picked += [(Case("layer_norm", "(N, D) beta only", (5, 6)), False),
               (Case("group_norm", "(N, C, L) beta only", (3, 4, 5),
                     options={"num_groups": 2}), False)]  # fmt: skip
    rows = []
    for case, scale in picked:
        spec = case.spec
        x = rng.standard_normal(case.shape) * 1.5 + 0.5
        p = spec.param_shape(case.shape, **case.options)
        gamma = rng.standard_normal(p) + 1.0 if case.affine and scale else None
        beta = rng.standard_normal(p) if case.affine and spec.has_beta else None
        dy, ddx = rng.standard_normal(case.shape), rng.standard_normal(case.shape)
        ddgamma = None if gamma is None else rng.standard_normal(p)
        ddbeta = None if beta is None else rng.standard_normal(p)
        kw = dict(case.options, bessel=case.variance == "bessel")
        if case.mode == "eval":
            kw |= {"training": False, "running_mean": rng.standard_normal(p),
                   "running_var": rng.uniform(0.5, 2.0, p)}  # fmt: skip
        _, cache = spec.forward(x, gamma, beta, **kw)
        ours = spec.double_backward(dy, cache, ddx, ddgamma, ddbeta)

        def backward_of(x, dy, gamma=None, spec=spec, kw=kw, beta=beta):
            grads = spec.backward(dy, spec.forward(x, gamma, beta, **kw)[1])
            return np.concatenate([g.ravel() for g in grads if g is not None])

        cot = np.concatenate([c.ravel() for c in (ddx, ddgamma, ddbeta) if c is not None])
        inputs = {"x": x, "gamma": gamma, "dy": dy}
        results = check_gradients(
            backward_of, {k: v for k, v in inputs.items() if v is not None}, cot,
            {k: g for k, g in zip(("x", "gamma", "dy"), ours, strict=True) if g is not None},
            rtol=TOL_SECOND_NUMERIC, raise_on_failure=False,
        )  # fmt: skip
        errors = {"numeric": (max(r.max_rel_error for r in results), TOL_SECOND_NUMERIC)}
        if case.mode == "train":
            xt, dyt = Tensor(x), Tensor(dy)
            gt = None if gamma is None else Tensor(gamma)
            bt = None if beta is None else Tensor(beta)
            norm(spec, xt, gt, bt, **kw).backward(dyt, create_graph=True)
            second = (xt.grad * ddx).sum()
            for t, c in ((gt, ddgamma), (bt, ddbeta)):
                if t is not None:
                    second = second + (t.grad * c).sum()
            second.backward()
            engine = (xt.grad, None if gt is None else gt.grad, dyt.grad)
            errors["autodiff"] = (_worst(ours, engine), TOL_TORCH)
        note = ""
        if use_torch:
            ref = {k: v.copy() if isinstance(v, np.ndarray) else v for k, v in kw.items()}
            try:
                theirs = double_backward_reference(spec, x, gamma, beta, dy, ddx, ddgamma,
                                                   ddbeta, **ref)  # fmt: skip
            except RuntimeError as exc:  # PyTorch's own failure, reported, not normgrad's
                first_line = str(exc).splitlines()[0][:70]
                note = f"PyTorch raises: {first_line}"
                known = PYTORCH_FAILS.get(spec.name)
                note += f" ({known})" if known and gamma is None and beta is not None else ""
            else:
                errors["torch"] = (_worst(ours, theirs), TOL_TORCH)
                if errors["torch"][0] > TOL_TORCH:
                    note = "PyTorch's double backward disagrees with the closed form and autodiff"
        variance = case.variance if spec.bessel_allowed else "-"
        mode = case.mode if spec.running_stats else "-"
        label = f"{case.op:<13} {case.layout:<18} {variance:<6} {mode:<5}"
        rows.append(Row("second derivatives", label, errors, note))
    return rows


def writeup_rows(rng: np.random.Generator) -> list[Row]:
    """The three published derivations (docs/sources.md) against the library, on the
    Bessel-corrected formula's own example size (7, 5)."""
    x = rng.standard_normal((7, 5)) * 2 + 1
    gamma, beta = rng.standard_normal(5) + 1, rng.standard_normal(5)
    dy = rng.standard_normal((7, 5))
    eps = 1e-5
    _, cache = ng.batch_norm_forward(x, gamma, beta, eps=eps)
    ours = ng.batch_norm_backward(dy, cache)
    _, cache_b = ng.batch_norm_forward(x, gamma, beta, eps=eps, bessel=True)
    ours_bessel = ng.batch_norm_backward(dy, cache_b)
    _, walk_cache = writeups.graph_walk_forward(x, gamma, beta, eps)

    staged = _worst(writeups.graph_walk_backward(dy, walk_cache), ours)
    closed = _worst(writeups.closed_form_backward(dy, walk_cache), ours)

    def bessel_formula_error(variance: str, expected) -> float:
        dx = writeups.bessel_formula_backward(dy, x, gamma, eps, variance=variance)[0]
        return max_rel_error(dx, expected[0])

    section = "write-ups"
    return [
        Row(section, "staged backward (Kratzert), verbatim", {"vs normgrad": (staged, TOL_STAGED)}),
        Row(section, "closed form (Thorey)", {"vs normgrad": (closed, TOL_STAGED)}),
        Row(
            section,
            "Bessel-corrected formula with the Bessel-corrected variance",
            {"vs bessel=True": (bessel_formula_error("bessel", ours_bessel), TOL_STAGED)},
            "matches: the n/(n-1) factor belongs to the Bessel-corrected variance",
        ),
        # A negative control: the formula must NOT match the biased gradient.
        Row(
            section,
            "Bessel-corrected formula with the biased variance",
            {"vs bessel=False": (bessel_formula_error("biased", ours), 1e-3)},
            "differs (as it must: the write-up's forward is biased but its formula is not)",
            expect_mismatch=True,
        ),
    ]


def precision_rows(rng: np.random.Generator, use_torch: bool) -> list[Row]:
    """Large means and float16: the variance must survive a mean that dwarfs the spread."""
    rows = []
    for dtype, mean, n in ((np.float64, 1e6, 4096), (np.float32, 1e3, 2**20)):
        x = (mean + rng.standard_normal((n, 2))).astype(dtype)
        y, _ = ng.batch_norm_forward(x, None, None)
        std = float(y.astype(np.float64).std(axis=0).min())
        note = ""
        if use_torch and dtype == np.float32:
            import torch

            ty = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, training=True)
            note = f"PyTorch {torch.__version__} on the same input: std {ty.numpy().std():.3f}"
        label = f"batch_norm {np.dtype(dtype).name}, x = {mean:.0e} + N(0,1), ({n}, 2)"
        rows.append(Row("precision", label, {"|std(y) - 1|": (abs(std - 1.0), 1e-3)}, note))
    x16 = (rng.standard_normal((64, 8)) * 3 + 10).astype(np.float16)
    y16, _ = ng.batch_norm_forward(x16, None, None)
    y64, _ = ng.batch_norm_forward(x16.astype(np.float64), None, None)
    ok_dtype = y16.dtype == np.float16
    # float16 has an 11-bit significand: rounding the result costs up to 2^-11 relative.
    rows.append(
        Row(
            "precision",
            "batch_norm float16 in, float32 inside, float16 out",
            {"vs float64": (max_rel_error(y16, y64), 2.0**-10)},
            "" if ok_dtype else f"output dtype {y16.dtype}, expected float16",
        )
    )
    if not ok_dtype:
        rows[-1].errors["dtype"] = (1.0, 0.0)
    return rows


def run_verify(seed: int = 0, use_torch: bool | None = None, on_row=None) -> list[Row]:
    """Run every check; ``on_row(row)`` is called as each row completes."""
    if use_torch is None:
        use_torch = torch_available()
    rng = np.random.default_rng(seed)
    rows: list[Row] = []

    def add(row: Row) -> None:
        rows.append(row)
        if on_row:
            on_row(row)

    for case in cases():
        add(run_case(case, rng, use_torch))
    for row in second_derivative_rows(rng, use_torch):
        add(row)
    for row in writeup_rows(rng):
        add(row)
    for row in precision_rows(rng, use_torch):
        add(row)
    return rows


OPS_COLUMNS = ("staged", "numeric", "torch y", "torch grad")
#: The sections are printed row by row as they are computed, so the columns have fixed
#: widths (the project's table printer keeps titles at least two spaces apart).
_CASE_TITLE = f"{'op':<13} {'layout':<18} {'var':<6} {'mode':<5}"
OPS_TABLE = Table(
    [Column("", width=4), Column(_CASE_TITLE),
     *(Column(c, align="right", width=8) for c in OPS_COLUMNS)]
)  # fmt: skip
#: Width of the label of a row in the other sections.
LABEL = 60
OTHER_TABLE = Table([Column("", width=4), Column("", width=LABEL), Column("")])


def section_header(section: str) -> str:
    """The title line of a section; the ops section gets column names."""
    if section != "ops":
        return f"[{section}]"
    return "[ops]\n" + OPS_TABLE.header()


def _cell(err: float, ok: bool) -> str:
    """An error, marked with '!' when it is outside its bound."""
    return f"{err:.1e}" + ("" if ok else "!")


def format_row(row: Row) -> str:
    """One line per row; a '!' marks an error outside its bound."""
    status = "ok" if row.passed else "FAIL"
    if row.section == "ops":
        cells = [
            _cell(*row.errors[name][:1], row.ok(*row.errors[name])) if name in row.errors else "-"
            for name in OPS_COLUMNS
        ]
        line = OPS_TABLE.row([status, row.label, *cells])
    else:
        errors = "  ".join(
            f"{name} {_cell(err, row.ok(err, tol))}" for name, (err, tol) in row.errors.items()
        )
        line = OTHER_TABLE.row([status, row.label, errors])
    if row.note:
        line += f"\n      {row.note}"
    return line


def header(use_torch: bool) -> str:
    import platform

    torch_part = "normgrad vs PyTorch" if use_torch else "PyTorch skipped (not installed or off)"
    lines = [
        f"normgrad {ng.__version__} verify  -  numpy {np.__version__}, python "
        f"{platform.python_version()}",
        "float64, normwise relative errors max|a - b| / max|b| of: the staged backward vs",
        f"the closed form, the closed form vs central differences, {torch_part}.",
        f"Tolerances: staged {TOL_STAGED:g}, numeric {TOL_NUMERIC:g}, PyTorch {TOL_TORCH:g};",
        f"second derivatives: numeric {TOL_SECOND_NUMERIC:g}, autodiff and PyTorch {TOL_TORCH:g}.",
    ]
    if use_torch:
        import torch

        lines[0] += f", torch {torch.__version__}"
    return "\n".join(lines)


def rows_to_json(rows: list[Row]) -> str:
    return json.dumps(
        [
            {
                "section": r.section,
                "label": " ".join(r.label.split()),
                "passed": r.passed,
                "errors": {k: {"error": e, "tolerance": t} for k, (e, t) in r.errors.items()},
                "note": r.note,
            }
            for r in rows
        ],
        indent=2,
    )
