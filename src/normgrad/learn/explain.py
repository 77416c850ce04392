"""``normgrad explain``: the backward pass, one graph node at a time, on a small example.

The walk is the staged backward (Kratzert's computational-graph walk; docs/design.md §3,
and §6 for RMS norm; the write-up itself in docs/sources.md). Its nodes, their step
numbers, formulas and local rules come from the table of ops (:mod:`normgrad.core.table`);
this module adds only the words that explain each node, keyed by the node's name, so any
op in the table can be explained.

Every number printed comes from the library on the example: the staged backward's own
intermediate gradients (:func:`normgrad.staged_backward` with ``return_steps=True``), the
closed form, the autodiff engine and central differences.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np

from normgrad.core.staged import staged_backward
from normgrad.core.table import Node, OpSpec
from normgrad.gradcheck import DEFAULT_H, numerical_gradient
from normgrad.learn.examples import Example

WIDTH = 80

# What each node does to the gradient on the way back, in words, keyed by Node.name ("x",
# the input, is step 0). The placeholders are filled per example: {R} the reduced axes,
# {P} the axes gamma and beta are broadcast over, {M} the number of values per group ({M1}
# is M - 1), {xmu} the value that was squared and scaled ("xmu", or "x" for an op that
# does not centre), {dself} the gradient arriving at the node, {readers} the steps that
# read the node's value.
NODE_WORDS = {
    "out": "An addition passes its gradient on unchanged: d(a+b)/da = d(a+b)/db = 1. "
    "beta was broadcast over {P}, so its gradient is summed there: dbeta = sum(dout).",
    "gammax": "A product sends each factor the incoming gradient times the other factor: "
    "d(ab)/da = b. So dxhat = {dself} * gamma, and dgamma = sum({dself} * xhat), summed "
    "over {P} because gamma was broadcast there.",
    "xhat": "The same product rule. ivar is one number per group, so its gradient is summed "
    "over {R}: divar = sum(dxhat * {xmu}); and dxmu1 = dxhat * ivar.",
    "ivar": "d(1/a)/da = -1/a^2: dsqrtvar = -divar / sqrtvar^2.",
    "sqrtvar": "d sqrt(a)/da = 1 / (2 sqrt(a)); eps is a constant and gets no gradient: "
    "dvar = dsqrtvar / (2 sqrt(var + eps)).",
    "var": "A mean spreads its gradient evenly: each of the {M} values it averaged gets "
    "dvar / {M}: dsq = dvar / {M}, broadcast back over {R}.",
    "sq": "d(a^2)/da = 2a: dxmu2 = 2 * {xmu} * dsq.",
    "xmu": "xmu fed two nodes ({readers}), so the two gradients that reach it are added: "
    "dxmu1 + dxmu2. Then d(a-b)/da = 1 sends that on to x as dx1, and d(a-b)/db = -1 sends "
    "minus its sum over {R} to mu: dmu = -sum(dxmu1 + dxmu2).",
    "mu": "Like the variance (step 4): each of the {M} values averaged gets dmu / {M}: "
    "dx2 = dmu / {M}.",
    "x": "x fed two nodes ({readers}), so its two gradients are added.",
}

# With Bessel's correction the variance node divides by M - 1 instead; nothing else changes.
BESSEL_VAR_WORDS = (
    "With Bessel's correction var = sum(sq) / (M - 1): a sum, then a division by "
    "M - 1 = {M1}, so each of the {M} values gets dvar / {M1}, not dvar / {M}. This is the "
    "only change anywhere in the backward pass."
)

# Said once, before the walk, for an op that does not centre (RMS norm).
UNCENTERED_WORDS = (
    "{title} does not centre: there is no mu and no xmu. x itself is squared (step 3) and "
    "scaled (step 7), var is the mean of squares, and the walk has no steps 1 and 2. The "
    "staged backward keeps the names dxmu1 and dxmu2 for the two gradients that reach x."
)


def _node_words(node: Node | None, spec: OpSpec, bessel: bool) -> str:
    """The words for ``node`` (None: step 0, the input x), looked up by its name.

    The last node is always named ``out``. Where the op has no shift (RMS norm) it is the
    scale, ``out = gamma * xhat``, so it gets the scale's words, not the shift's.
    """
    if node is None:
        return NODE_WORDS["x"]
    if node.name == "var" and bessel:
        return BESSEL_VAR_WORDS
    if node.name == "out" and not spec.has_beta:
        return NODE_WORDS["gammax"]
    return NODE_WORDS[node.name]


def _readers(nodes: tuple[Node, ...], name: str) -> str:
    """The steps whose formula reads ``name``, in words: ``"step 3 and step 7"``."""
    steps = [n.step for n in nodes if name in re.findall(r"[A-Za-z_]\w*", n.expr.partition("=")[2])]
    return " and ".join(f"step {s}" for s in steps)


def _wrap(text: str, indent: int = 2) -> str:
    pad = " " * indent
    return textwrap.fill(
        text, WIDTH, initial_indent=pad, subsequent_indent=pad, break_on_hyphens=False
    )


def _array(a: np.ndarray, indent: int = 4) -> str:
    a = np.asarray(a)
    if a.ndim > 1 and a.shape[0] == 1 and a.size == a.shape[-1]:
        a = a.reshape(-1)  # a per-channel row, shown flat
    body = np.array2string(
        a,
        precision=4,
        suppress_small=True,
        max_line_width=WIDTH - indent,
        floatmode="maxprec_equal",
    )
    return textwrap.indent(body, " " * indent)


def _axes_words(axes: tuple[int, ...], layout) -> str:
    """Axes of the layout's view of x, in words."""
    if layout.work_shape == layout.x_shape and axes == (0,):
        return "the batch (axis 0, N)"
    view = f" of x viewed as {layout.work_shape}" if layout.work_shape != layout.x_shape else ""
    if len(axes) == 1:
        return f"axis {axes[0]}{view}"
    return f"axes ({', '.join(str(a) for a in axes)}){view}"


def _difference(a, b, floor: float = 0.0) -> float:
    """``max|a - b|`` relative to the gradient's scale: the largest of ``max|a|``,
    ``max|b|`` and ``floor``; 0 when all are 0."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))), floor)
    return float(np.max(np.abs(a - b))) / scale if scale > 0 else 0.0


def _eps_words(eps: float) -> str:
    if eps == np.finfo(np.float64).eps:
        return f"eps = {eps:.3g}, the machine epsilon of float64"
    return f"eps = {eps:g}"


def _closed_form(ex: Example, spec: OpSpec, layout) -> list[str]:
    """The closed form's formula for dx, in the example's variance convention."""
    section = "§4" if spec.centered else "§6"
    out = ["", f"The closed form (docs/design.md {section}) gives the same dx in one line:"]
    if not spec.centered:
        out.append("  dx = (ivar / M) * (M*dxhat - xhat * sum(dxhat * xhat))")
        out.append(
            _wrap(
                "There is no - sum(dxhat) term: nothing was subtracted, so no gradient flows "
                "back through a mean. The remaining term is the path through the mean of "
                "squares (steps 6 to 3)."
            )
        )
    elif ex.bessel:
        out.append("  dx = (ivar / M) * (M*dxhat - sum(dxhat) - M/(M-1) * xhat*sum(dxhat*xhat))")
        out.append(
            _wrap(
                "Where the n/(n-1) comes from: the mean path (steps 2 and 1) still divides by "
                "M, but the variance path (steps 4 and 3) now divides by M - 1. Taking ivar / M "
                "out of both leaves M/(M-1) on the variance term. This is the Bessel-corrected "
                "formula's factor (docs/design.md §5). It is exact for this variance and wrong "
                "for the biased one, which is where that write-up's own forward pass starts."
            )
        )
    else:
        out.append("  dx = (ivar / M) * (M*dxhat - sum(dxhat) - xhat * sum(dxhat * xhat))")
    # Where statistics and parameters share their axes (batch norm), the two sums are
    # gamma * dbeta and gamma * dgamma: the form Thorey writes.
    if layout.channel_axis is not None and spec.has_beta:
        factor = "M/(M-1) * " if ex.bessel else ""
        out.append(
            f"  ({spec.title.lower()}: dx = gamma*ivar/M * (M*dout - dbeta - {factor}xhat*dgamma))"
        )
    return out


def _check(ex: Example, cache, staged: dict, closed: dict) -> list[str]:
    """The four-way check: the staged backward, autodiff and central differences, each
    against the closed form; ends with "All four agree." or a line saying they differ.
    ``staged`` and ``closed`` are the gradients by input name (``"x"``, ``"gamma"``,
    ``"beta"``; None where the op has no such input)."""
    out = ["", "Check: four derivations of the same gradients, max|a - b| / scale:"]
    _auto_out, *tensors = ex.autodiff()
    autodiff_grads = {t.name: t.grad for t in tensors if t is not None}
    f = ex.forward_fn()
    # The step in x follows the smallest root sqrt(var + eps): y curves sharply in x where a
    # group's values are (nearly) equal, and a fixed step would measure the finite
    # difference's own error. y is linear in gamma and beta; they keep the default step.
    steps_h = {"x": DEFAULT_H * min(1.0, float(np.min(1.0 / cache.inv_std)))}
    numeric = {
        name: numerical_gradient(f, ex.inputs, name, ex.dout, h=steps_h.get(name, DEFAULT_H))
        for name in ex.inputs
    }
    # Each gradient is a sum of terms that can cancel to nothing (dx with one value per
    # group; dgamma when dout is constant over a group), so differences are measured
    # against the size of those terms as well as against the gradients themselves.
    size = float(np.max(np.abs(ex.dout)))
    floors = {
        "x": size * float(np.max(np.abs(ex.gamma)) * np.max(cache.inv_std)),
        "gamma": size * float(np.max(np.abs(cache.xhat))),
        "beta": size,
    }
    rows = [
        ("the staged backward (above)", staged, 1e-10),
        ("autodiff (normgrad.autodiff)", autodiff_grads, 1e-10),
        ("central differences", numeric, 1e-6),
    ]
    all_ok = True
    for label, grads, tol in rows:
        err = max(_difference(grads[name], closed[name], floors[name]) for name in ex.inputs)
        ok = err <= tol
        all_ok &= ok
        out.append(f"  {label:<34} vs the closed form {err:8.1e}  {'agree' if ok else 'DIFFER'}")
    terms = {"x": "|dout * gamma * ivar| for dx", "gamma": "|dout * xhat| for dgamma"}
    terms["beta"] = "|dout| for dbeta"
    out.append(
        _wrap(
            "(scale: the largest of max|a|, max|b| and the size of the terms the gradient "
            f"sums, which can cancel: {', '.join(terms[name] for name in ex.inputs)}.)"
        )
    )
    out.append("")
    out.append(
        "All four agree." if all_ok else "The derivations DIFFER: this is a bug in normgrad."
    )
    return out


def explain(ex: Example) -> str:
    """The whole walk as one string, lines at most 80 characters, ending with the check
    ``"All four agree."`` (or a line saying the derivations differ)."""
    spec = ex.spec
    nodes = spec.nodes(ex.bessel)
    _y, cache = ex.forward()
    dx, dgamma, dbeta, steps = staged_backward(ex.dout, cache, return_steps=True)
    layout = cache.layout
    m = layout.count
    reduce = _axes_words(layout.reduce_axes, layout)
    fmt = {
        "R": reduce,
        "P": _axes_words(layout.param_sum_axes, layout),
        "M": str(m),
        "M1": str(m - 1),
        "xmu": "xmu" if spec.centered else "x",
    }
    if not spec.centered:
        statistic = "the mean of squares (nothing subtracted)"
    elif ex.bessel:
        statistic = "variance Bessel-corrected (/ (M - 1))"
    else:
        statistic = "variance biased (/ M)"
    options = "".join(f", {k}={v}" for k, v in ex.options.items() if v != spec.option_default)

    out: list[str] = []
    title = f"{spec.title} backward, one graph node at a time (the staged backward)"
    out += [title, "=" * len(title)]
    out.append(
        _wrap(
            f"x has shape {ex.x.shape}{options}; statistics {spec.groups}, over {reduce}, "
            f"M = {m} values per group; {statistic}; {_eps_words(ex.eps)}. The graph and its "
            "step numbers are Kratzert's computational-graph walk (docs/design.md §3, "
            "docs/sources.md).",
            0,
        )
    )
    out.append("")
    for name, value in ex.inputs.items():
        out += [f"{name}:", _array(value)]
    out += ["dout (the upstream gradient):", _array(ex.dout), ""]
    out.append("Forward pass, node by node:")
    for node in nodes:
        line = f"  step {node.step}  {node.expr:<28} {node.what}"
        out.append(line if len(line) <= WIDTH else f"  step {node.step}  {node.expr}")
    if not spec.centered:
        out += ["", _wrap(UNCENTERED_WORDS.format(title=spec.title), 0)]
    out += [
        "",
        f"Backward pass, from the output (step {nodes[-1].step}) back to the input (step 0):",
    ]

    by_step = {node.step: node for node in nodes}
    for step in steps:
        out += ["", f"step {step.number}  {step.node}"]
        node = by_step.get(step.number)  # None at step 0, the input x
        name = node.name if node is not None else "x"
        words = _node_words(node, spec, ex.bessel)
        dself = "dout" if node is nodes[-1] else f"d{name}"
        out.append(_wrap(words.format(**fmt, readers=_readers(nodes, name), dself=dself)))
        if step.meets:
            out.append(f"  >> two gradients meet here and are added: {step.meets}")
        for grad_name, grad in step.grads.items():
            out.append(f"  {grad_name}:")
            out.append(_array(grad))

    closed = spec.backward(ex.dout, cache)  # (dx, dgamma, dbeta); dbeta None without a shift
    out += _closed_form(ex, spec, layout)
    out.append("  dx =")
    out.append(_array(closed[0]))

    staged = dict(zip(("x", "gamma", "beta"), (dx, dgamma, dbeta), strict=True))
    out += _check(ex, cache, staged, dict(zip(("x", "gamma", "beta"), closed, strict=True)))
    return "\n".join(out)
